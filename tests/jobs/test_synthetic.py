"""The synthetic support-ticket task and its teachers: what the demo and the benchmark rely on.

Traffic must look like traffic to Source (distinct prompts, no near-duplicates, the rare
slice at its share), labels must be learnable from the words, and a teacher trained in
code must be genuinely better than an untrained model, or deliberately blind where asked.
Teachers here are the ``tiny`` preset trained for a few seconds: the real demo teacher
(``base``) takes a minute and is measured by hand, not in this suite.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from distill_jobs import synthetic
from distill_jobs.records import prompt_hash
from distill_jobs.sourcing.prompts import FieldNames, Prompt, Signer, extract_prompt, near_group
from distill_jobs.sourcing.selection import Candidate, deduplicate
from distill_jobs.synthetic import RARE_INTENT, TrainedTeacher, decide_intent, train_teacher

# A quick teacher: the tiny preset learns the task well enough in a few seconds.
QUICK = {"preset": "tiny", "sample": 1200, "steps": 150, "learning_rate": 1e-2, "warmup_steps": 10}
EVALUATION_TICKETS = 200


def read_traffic(paths: list[Path]) -> list[dict[str, object]]:
    return [json.loads(line) for path in paths for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def teacher_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("teacher-cache")


@pytest.fixture(scope="module")
def quick_teacher(teacher_cache: Path, single_torch_thread: None) -> TrainedTeacher:
    directory = teacher_cache.parent / "quick-teacher"
    return train_teacher(directory, cache_dir=teacher_cache, **QUICK)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def held_out() -> list[synthetic.Ticket]:
    return synthetic.held_out_tickets(count=EVALUATION_TICKETS, seed=11)


def test_traffic_is_chat_jsonl_with_the_rare_intent_at_its_share(tmp_path: Path) -> None:
    paths = synthetic.write_traffic(tmp_path / "traffic", rows=2000, seed=3)
    rows = read_traffic(paths)

    assert len(paths) == 2 and len(rows) == 2000
    shares = Counter(str(row["slice"]) for row in rows)
    assert shares[RARE_INTENT] == 60  # 3% of 2000
    assert set(shares) == set(synthetic.INTENTS)
    common = [count for name, count in shares.items() if name != RARE_INTENT]
    assert min(common) > 3 * shares[RARE_INTENT]  # every other intent is far commoner
    for row in rows[:50]:
        assert row["reference"] == row["slice"]
        assert row["messages"] == [{"role": "user", "content": row["messages"][0]["content"]}]  # type: ignore[index]


def test_traffic_is_reproducible_from_its_seed_and_differs_across_seeds(tmp_path: Path) -> None:
    first = read_traffic(synthetic.write_traffic(tmp_path / "a", rows=300, seed=5))
    again = read_traffic(synthetic.write_traffic(tmp_path / "b", rows=300, seed=5))
    other = read_traffic(synthetic.write_traffic(tmp_path / "c", rows=300, seed=6))

    assert first == again
    texts = {row["messages"][0]["content"] for row in first}  # type: ignore[index]
    assert not texts & {row["messages"][0]["content"] for row in other}  # type: ignore[index]


def test_every_prompt_is_distinct_and_survives_sources_near_duplicate_check(
    tmp_path: Path,
) -> None:
    rows = read_traffic(synthetic.write_traffic(tmp_path, rows=1500, seed=0))
    fields = FieldNames(prompt="prompt", reference="reference", slice="slice")
    signer = Signer()
    candidates = []
    for position, row in enumerate(rows):
        prompt = extract_prompt(row, fields=fields)
        assert isinstance(prompt, Prompt)
        candidates.append(
            Candidate(
                position=position,
                id=prompt_hash(prompt.prompt_text),
                slice=str(row["slice"]),
                group=near_group(prompt.system_text),
                signature=signer.sign(prompt.user_text),
            )
        )

    assert len({candidate.id for candidate in candidates}) == len(rows)
    kept = deduplicate(candidates, threshold=0.9)  # Source's default threshold
    assert (kept.exact_duplicates, kept.near_duplicates) == (0, 0)
    # Even at a stricter threshold almost nothing would go: no prompt is a near-copy.
    assert len(deduplicate(candidates, threshold=0.8).kept) >= 0.995 * len(rows)


def test_every_label_is_decided_by_the_keywords_of_its_intent_alone() -> None:
    tickets = synthetic.generate_tickets(count=3000, rng=synthetic.stream("traffic", 9))

    assert all(decide_intent(ticket.text) == ticket.intent for ticket in tickets)
    for intent, (keywords, phrases) in synthetic.INTENTS.items():
        others = set().union(*(k for name, (k, _) in synthetic.INTENTS.items() if name != intent))
        assert not keywords & others, f"{intent} shares keywords with another intent"
        assert all(decide_intent(phrase) == intent for phrase in phrases)


def test_the_teachers_own_sample_and_evaluation_prompts_are_not_traffic() -> None:
    traffic = synthetic.generate_tickets(count=2000, rng=synthetic.stream("traffic", 0))
    teacher = synthetic.generate_tickets(count=2000, rng=synthetic.stream("teacher", 0))
    evaluation = synthetic.held_out_tickets(count=2000, seed=0)

    texts = [{ticket.text for ticket in tickets} for tickets in (traffic, teacher, evaluation)]
    assert not texts[0] & texts[1] and not texts[0] & texts[2] and not texts[1] & texts[2]


def test_a_trained_teacher_beats_an_untrained_model_on_held_out_prompts(
    quick_teacher: TrainedTeacher, held_out: list[synthetic.Ticket], tmp_path: Path
) -> None:
    from distill_jobs.tiny import build_tiny_model

    untrained = build_tiny_model(directory=tmp_path / "untrained", seed=0, preset="tiny")
    trained_score = synthetic.evaluate(quick_teacher.path, held_out)
    untrained_score = synthetic.evaluate(untrained, held_out)

    assert not quick_teacher.cached and quick_teacher.final_loss < 0.1
    assert trained_score.exact_match >= 0.8, trained_score
    assert untrained_score.exact_match <= 0.05
    assert set(trained_score.by_slice) == set(synthetic.INTENTS)


def test_a_teacher_blind_to_a_slice_is_wrong_there_and_right_elsewhere(
    held_out: list[synthetic.Ticket], tmp_path: Path, single_torch_thread: None
) -> None:
    blind = train_teacher(tmp_path / "blind", blind_slices=(RARE_INTENT,), **QUICK)  # type: ignore[arg-type]
    score = synthetic.evaluate(blind.path, held_out)

    assert score.by_slice[RARE_INTENT] == 0.0
    seen = [value for name, value in score.by_slice.items() if name != RARE_INTENT]
    assert sum(seen) / len(seen) >= 0.8, score


def test_the_cache_reuses_a_trained_teacher_and_keeps_recipes_apart(
    quick_teacher: TrainedTeacher, teacher_cache: Path, tmp_path: Path
) -> None:
    again = train_teacher(tmp_path / "again", cache_dir=teacher_cache, **QUICK)  # type: ignore[arg-type]

    assert again.cached and again.seconds == quick_teacher.seconds
    weights = "model.safetensors"
    assert (again.path / weights).read_bytes() == (quick_teacher.path / weights).read_bytes()
    assert [p.name for p in teacher_cache.iterdir()] == [
        f"teacher-{synthetic.TeacherRecipe(**QUICK).key()}"  # type: ignore[arg-type]
    ]
    # The directory already holds this teacher: returned as is; another recipe is refused.
    assert train_teacher(again.path, **QUICK).cached  # type: ignore[arg-type]
    with pytest.raises(FileExistsError, match="another teacher"):
        train_teacher(again.path, **{**QUICK, "seed": 1})  # type: ignore[arg-type]


def test_the_command_line_writes_traffic_a_teacher_and_an_off_the_shelf_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], single_torch_thread: None
) -> None:
    out = tmp_path / "demo"
    argv = ["--out", str(out), "--rows", "400", "--teacher-preset", "tiny", "--teacher-steps",
            "20", "--cache", str(tmp_path / "cache"), "--threads", "1"]  # fmt: skip
    assert synthetic.main(argv) == 0

    printed = capsys.readouterr().out
    assert "traffic: 400 rows" in printed and "12 refund-fraud" in printed
    assert (out / "teacher" / "model.safetensors").exists()
    assert (out / "teacher" / synthetic.TEACHER_BUILD_FILE).exists()
    assert (out / "off-the-shelf" / "model.safetensors").exists()
    assert sorted(p.name for p in (out / "traffic").iterdir()) == [
        "traffic-00.jsonl",
        "traffic-01.jsonl",
    ]
