"""Iterate's inputs, made for real: a tiny teacher answers synthetic prompts with top-k
logprobs, Teach's row format writes them, Source's result names the held-out prompts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from distill_jobs.contract import StageInput, StageResult, write_result
from distill_jobs.records import TeacherRecord, prompt_hash
from distill_jobs.store import write_json, write_jsonl
from distill_jobs.teachers.generation import tokenizer_identity
from distill_jobs.teaching.artifacts import chat_row

TOP_K = 4


def arithmetic_prompts(count: int, *, start: int = 0) -> list[tuple[str, str]]:
    """(question, answer) pairs of a tiny synthetic task."""
    pairs = [(a, (a * 7) % 50) for a in range(start, start + count)]
    return [(f"What is {a} plus {b}?", str(a + b)) for a, b in pairs]


def teacher_rows(generator: Any, prompts: list[tuple[str, str]], *, top_k: int = TOP_K) -> list:
    """Teach's training rows: the teacher's greedy answers with their top-k logprobs."""
    conversations = [[{"role": "user", "content": text}] for text, _ in prompts]
    generations = generator.generate(
        conversations=conversations, max_new_tokens=10, temperature=0.0, top_k=top_k
    )
    identity = tokenizer_identity(generator.tokenizer)
    rows = []
    for (text, answer), conversation, generation in zip(
        prompts, conversations, generations, strict=True
    ):
        record = TeacherRecord(
            id=prompt_hash(text),
            messages=conversation,
            slice="arithmetic",
            reference=answer,
            output=generation.text,
            top_logprobs=generation.top_logprobs if top_k else None,
            output_token_ids=list(generation.token_ids),
            teacher="hf:tiny-teacher",
            tokenizer=identity if top_k else None,
        )
        rows.append(chat_row(record, copy=0))
    return rows


def candidate_input(
    root: Path,
    *,
    rows: list[dict[str, Any]],
    held_out: list[str],
    candidate: dict[str, Any],
    training: dict[str, Any] | None = None,
    bar: dict[str, Any] | None = None,
) -> StageInput:
    """Upstream Source and Teach results in ``root`` and the Iterate input of one candidate."""
    artifacts = f"file://{root}/artifacts"
    source_dir, teach_dir = f"{artifacts}/upstream/source", f"{artifacts}/upstream/teach"
    write_json(f"{source_dir}/held_out_hashes.json", sorted(held_out))
    write_jsonl(f"{teach_dir}/train.jsonl", rows)
    for stage, directory, files in (
        ("Source", source_dir, {"held_out_hashes": "held_out_hashes.json"}),
        ("Teach", teach_dir, {"train": "train.jsonl"}),
    ):
        result = StageResult(
            stage=stage,
            input_hash="upstream",
            exitConditionMet=True,
            reason="Passed",
            message="made by the test",
            artifacts={name: f"{directory}/{file}" for name, file in files.items()},
        )
        write_result(result, f"{directory}/result.json")
    return StageInput(
        project="tests/iterate",
        project_uid="00000000-test",
        stage="Iterate",
        spec={
            "bar": bar
            or {
                "metric": "exact_match",
                "threshold": 0.0,
                "costPer1kRequests": 1000.0,
                "latencyP95Ms": 60000.0,
            },
            "students": {"training": training or {}, "candidate": candidate},
        },
        upstream={
            "Source": f"{source_dir}/result.json",
            "Teach": f"{teach_dir}/result.json",
        },
        artifacts_uri=artifacts,
    )


def held_out_ids(prompts: list[tuple[str, str]]) -> list[str]:
    return [prompt_hash(text) for text, _ in prompts]
