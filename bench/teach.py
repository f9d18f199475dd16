"""Teacher-output collection throughput: Ray Data (batched) vs a one-prompt-at-a-time loop.

Both answer the same prompts with the same tiny model, greedy, capturing the same top-k
logprobs, each on one CPU thread (a Ray actor with one CPU runs torch on one thread; the
loop is given the same). The Ray Data path is ``distill_jobs.collect.collect``, exactly
as Teach runs it. Two Ray Data figures are reported:

- end to end: the whole ``collect()`` call, actor start-up and model load included;
- steady state: after the first batch arrived (start-up excluded, as it is from the
  loop, whose model is loaded before the clock starts).

``python bench/teach.py [--prompts 512] [--max-tokens 32] [--batch-size 64]``
writes ``bench/results/teach.json`` and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from distill_jobs.collect import Progress, collect
from distill_jobs.records import PromptRecord, prompt_hash
from distill_jobs.tiny import build_tiny_model

RESULTS = Path(__file__).resolve().parent / "results"
TOPICS = ("plus", "minus", "times", "sum of", "difference of")


@dataclass(frozen=True)
class Throughput:
    """One path's figures."""

    path: str
    prompts: int
    output_tokens: int
    seconds: float

    @property
    def prompts_per_second(self) -> float:
        return self.prompts / self.seconds

    @property
    def tokens_per_second(self) -> float:
        return self.output_tokens / self.seconds


def make_prompts(*, count: int, seed: int) -> list[PromptRecord]:
    """Distinct arithmetic questions of varied length."""
    rng = random.Random(seed)
    prompts = []
    for index in range(count):
        words = " ".join(rng.choice(TOPICS) for _ in range(rng.randint(1, 6)))
        text = f"Question {index}: what is {rng.randint(0, 999)} {words} {rng.randint(0, 99)}?"
        prompts.append(
            PromptRecord(
                id=prompt_hash(text), messages=[{"role": "user", "content": text}], prompt_text=text
            )
        )
    return prompts


def in_process(
    *, model_dir: Path, prompts: list[PromptRecord], max_tokens: int, top_k: int, batch_size: int
) -> tuple[Throughput, Throughput]:
    """The naive loop (one ``generate`` per prompt: collection without batching), and the
    same generator batched without Ray, measured back to back on one thread."""
    import torch

    from distill_jobs.teachers.generation import LocalGenerator

    torch.set_num_threads(1)  # what a one-CPU Ray actor gets
    generator = LocalGenerator.load(model=str(model_dir), device="cpu")
    generator.generate(conversations=[prompts[0].messages], max_new_tokens=2, top_k=top_k)
    figures = []
    for path, size in (("naive loop", 1), ("batched, no ray", batch_size)):
        started = time.perf_counter()
        tokens = 0
        for start in range(0, len(prompts), size):
            generations = generator.generate(
                conversations=[p.messages for p in prompts[start : start + size]],
                max_new_tokens=max_tokens,
                top_k=top_k,
            )
            tokens += sum(generation.output_tokens for generation in generations)
        figures.append(Throughput(path, len(prompts), tokens, time.perf_counter() - started))
    return figures[0], figures[1]


def ray_data(
    *,
    model_dir: Path,
    prompts: list[PromptRecord],
    max_tokens: int,
    top_k: int,
    batch_size: int,
    replicas: int,
    work_dir: Path,
) -> tuple[Throughput, Throughput]:
    """``collect()`` over the prompts; returns (end to end, steady state)."""
    from distill_jobs.raycluster import connect

    connect(num_cpus=os.cpu_count())  # the cluster is infrastructure: not timed
    prompts_path = work_dir / "prompts.jsonl"
    prompts_path.write_text("".join(p.model_dump_json() + "\n" for p in prompts))
    progress: list[Progress] = []
    try:
        report = collect(
            prompts_uri=str(prompts_path),
            out_uri=(work_dir / "teach").as_uri(),
            teacher={"backend": "hf", "model": str(model_dir), "topLogprobs": top_k},
            teach={"maxOutputTokens": max_tokens, "batchSize": batch_size, "temperature": 0.0},
            api_key=None,
            replicas=replicas,
            on_progress=progress.append,
        )
    finally:
        import ray

        ray.shutdown()  # idle Ray processes would otherwise tax the loops measured next
    assert report.answered == len(prompts) and report.failed == 0, report
    end_to_end = Throughput(
        "ray data, end to end", len(prompts), report.output_tokens, report.seconds
    )
    first, last = progress[0], progress[-1]
    steady = Throughput(
        "ray data, steady state",
        last.answered - first.answered,
        last.output_tokens - first.output_tokens,
        last.elapsed_seconds - first.elapsed_seconds,
    )
    return end_to_end, steady


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--prompts", type=int, default=512)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--top-logprobs", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--replicas", type=int, default=1)
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--out", type=Path, default=RESULTS / "teach.json")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

    RESULTS.mkdir(parents=True, exist_ok=True)
    model_dir = build_tiny_model(
        directory=RESULTS / f"model-{args.preset}", seed=0, preset=args.preset
    )
    prompts = make_prompts(count=args.prompts, seed=0)
    # Ray's socket paths must stay short: a private temp dir under /tmp.
    work_dir = Path(tempfile.mkdtemp(prefix="bench-teach-", dir="/tmp"))
    os.environ.setdefault("RAY_TMPDIR", str(work_dir))
    try:
        end_to_end, steady = ray_data(
            model_dir=model_dir,
            prompts=prompts,
            max_tokens=args.max_tokens,
            top_k=args.top_logprobs,
            batch_size=args.batch_size,
            replicas=args.replicas,
            work_dir=work_dir,
        )
        naive, batched = in_process(
            model_dir=model_dir,
            prompts=prompts,
            max_tokens=args.max_tokens,
            top_k=args.top_logprobs,
            batch_size=args.batch_size,
        )
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)

    rows = [naive, batched, end_to_end, steady]
    print(
        f"{'path':<24}{'prompts':>9}{'tokens':>9}{'seconds':>10}{'prompts/s':>11}"
        f"{'tokens/s':>10}{'speed-up':>10}"
    )
    for row in rows:
        print(
            f"{row.path:<24}{row.prompts:>9}{row.output_tokens:>9}{row.seconds:>10.2f}"
            f"{row.prompts_per_second:>11.1f}{row.tokens_per_second:>10.1f}"
            f"{row.prompts_per_second / naive.prompts_per_second:>9.1f}x"
        )
    results = {
        "settings": {
            **vars(args),
            "out": str(args.out),
            "machine": platform.machine(),
            "cpus": os.cpu_count(),
            # Shared machines: the load says how much of the CPU the run really had.
            "load_average_after": os.getloadavg(),
        },
        "paths": [
            {
                **asdict(row),
                "prompts_per_second": row.prompts_per_second,
                "tokens_per_second": row.tokens_per_second,
                "speedup_vs_naive": row.prompts_per_second / naive.prompts_per_second,
            }
            for row in rows
        ],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
