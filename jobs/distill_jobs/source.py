"""Source workload (`python -m distill_jobs.source --input URI`): not built yet, see issue #3."""

from __future__ import annotations

from distill_jobs.runner import not_built, stage_main

work = not_built("distill_jobs.source", 3)


def main() -> int:
    return stage_main(work)


if __name__ == "__main__":
    raise SystemExit(main())
