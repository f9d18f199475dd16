"""Investigate and Look workload (`python -m distill_jobs.evaluate --input URI`).

Not built yet: see issue #5.
"""

from __future__ import annotations

from distill_jobs.runner import not_built, stage_main

work = not_built("distill_jobs.evaluate", 5)


def main() -> int:
    return stage_main(work)


if __name__ == "__main__":
    raise SystemExit(main())
