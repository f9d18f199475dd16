"""Look's slice verdict and the DISTILL debugging map, as pure functions."""

from __future__ import annotations

import pytest

from distill_jobs.evaluation.diagnosis import diagnose
from distill_jobs.evaluation.slices import CriticalBar, Judgement, SliceRow, judge, slice_table

BAR = 0.9


def row(
    name: str,
    *,
    student: float | None,
    teacher: float | None = 1.0,
    held_out: int = 20,
    threshold: float | None = None,
    critical: bool = False,
    training_rows: int = 100,
    min_count: int | None = None,
) -> SliceRow:
    target = threshold if threshold is not None else BAR
    passes = None if not critical else student is not None and student >= target
    return SliceRow(
        slice=name,
        held_out=held_out if student is not None else 0,
        student_score=student,
        teacher_score=teacher if student is not None else None,
        agreement=0.5 if student is not None else None,
        threshold=target if critical else None,
        critical=critical,
        passes=passes,
        training_rows=training_rows,
        disagreements=0,
        min_count=(min_count or 50) if critical else None,
    )


def test_a_passing_table_without_a_weak_slice_has_no_diagnosis() -> None:
    rows = [row("billing", student=0.95, critical=True), row("chat", student=0.85)]
    assert diagnose(rows, overall=0.92, bar_threshold=BAR) is None


def test_weak_overall_and_on_half_the_slices_is_broad_weakness_in_the_data() -> None:
    rows = [
        row("billing", student=0.5, critical=True),
        row("chat", student=0.6),
        row("faq", student=0.95),
        row("orders", student=0.97),
    ]
    diagnosis = diagnose(rows, overall=0.75, bar_threshold=BAR)
    assert diagnosis is not None
    assert (diagnosis.stage, diagnosis.reason) == ("Source", "BroadWeakness")
    assert "overall 0.75 < 0.9 (short by 0.15)" in diagnosis.message
    assert "2 of 4 slices below the bar (billing, chat)" in diagnosis.message


def test_a_slice_the_teacher_itself_gets_wrong_points_at_teach() -> None:
    rows = [
        row("refund-fraud", student=0.4, teacher=0.5, threshold=0.85, critical=True),
        row("chat", student=0.95),
        row("faq", student=0.96),
    ]
    diagnosis = diagnose(rows, overall=0.91, bar_threshold=BAR)
    assert diagnosis is not None
    assert (diagnosis.stage, diagnosis.reason) == ("Teach", "TeacherWrongOnSlice")
    assert "refund-fraud: the teacher itself scores 0.5 < 0.85" in diagnosis.message


def test_a_critical_slice_with_fewer_training_rows_than_its_min_count_points_at_source() -> None:
    rows = [
        row("refund-fraud", student=0.4, critical=True, training_rows=12, min_count=50),
        row("chat", student=0.95),
        row("faq", student=0.96),
    ]
    diagnosis = diagnose(rows, overall=0.91, bar_threshold=BAR)
    assert diagnosis is not None
    assert (diagnosis.stage, diagnosis.reason) == ("Source", "SliceUnderCovered")
    assert "12 training rows < minCount 50" in diagnosis.message


def test_a_slice_with_few_held_out_prompts_points_at_look() -> None:
    rows = [
        row("refund-fraud", student=0.4, critical=True, held_out=4),
        row("chat", student=0.95),
        row("faq", student=0.96),
    ]
    diagnosis = diagnose(rows, overall=0.93, bar_threshold=BAR)
    assert diagnosis is not None
    assert (diagnosis.stage, diagnosis.reason) == ("Look", "SliceTooSmallToJudge")
    assert "4 held-out prompts < 10" in diagnosis.message


def test_a_covered_slice_the_teacher_gets_right_and_the_student_wrong_points_at_iterate() -> None:
    rows = [
        row("refund-fraud", student=0.4, teacher=0.97, critical=True, threshold=0.85),
        row("chat", student=0.95),
        row("faq", student=0.96),
    ]
    diagnosis = diagnose(rows, overall=0.91, bar_threshold=BAR)
    assert diagnosis is not None
    assert (diagnosis.stage, diagnosis.reason) == ("Iterate", "StudentTooWeakOnSlice")
    assert "refund-fraud: student 0.4 < 0.85 while the teacher scores 0.97" in diagnosis.message


def test_a_slice_that_is_not_critical_counts_only_when_far_below_the_bar() -> None:
    slightly = [row("chat", student=0.85), row("faq", student=0.99), row("orders", student=0.99)]
    assert diagnose(slightly, overall=0.95, bar_threshold=BAR) is None
    far = [row("chat", student=0.6), row("faq", student=0.99), row("orders", student=0.99)]
    diagnosis = diagnose(far, overall=0.93, bar_threshold=BAR)  # the project passes
    assert diagnosis is not None and diagnosis.stage == "Iterate"
    assert diagnosis.message.startswith("chat: student 0.6 < 0.9")


def test_the_earliest_question_names_the_stage_and_every_failing_slice_is_in_the_message() -> None:
    rows = [
        row("billing", student=0.5, teacher=0.98, critical=True),
        row("refund-fraud", student=0.4, teacher=0.5, critical=True, threshold=0.85),
        row("chat", student=0.95),
        row("faq", student=0.96),
        row("orders", student=0.97),
    ]
    diagnosis = diagnose(rows, overall=0.91, bar_threshold=BAR)
    assert diagnosis is not None
    assert diagnosis.stage == "Teach"
    assert diagnosis.message.startswith("refund-fraud: the teacher itself")
    assert "also billing: student 0.5 < 0.9" in diagnosis.message
    assert "(Iterate)" in diagnosis.message


def test_a_critical_slice_without_held_out_prompts_fails_and_cannot_be_judged() -> None:
    rows = [row("refund-fraud", student=None, critical=True), row("chat", student=0.95)]
    met, failures = judge(rows, overall=0.95, bar_threshold=BAR)
    assert not met
    assert failures == ["refund-fraud: no held-out prompts: cannot be judged"]
    diagnosis = diagnose(rows, overall=0.95, bar_threshold=BAR)
    assert diagnosis is not None
    assert (diagnosis.stage, diagnosis.reason) == ("Look", "SliceTooSmallToJudge")


def test_the_verdict_names_every_failing_slice_and_the_overall_gap() -> None:
    rows = [
        row("refund-fraud", student=0.4, threshold=0.85, critical=True),
        row("billing", student=0.95, critical=True),
        row("chat", student=0.2),  # not critical: weighs on the overall score only
    ]
    met, failures = judge(rows, overall=0.88, bar_threshold=BAR)
    assert not met
    assert "; ".join(failures) == (
        "refund-fraud 0.4 < 0.85 (short by 0.45); overall 0.88 < 0.9 (short by 0.02)"
    )
    assert judge(rows[1:2], overall=0.95, bar_threshold=BAR) == (True, [])


def test_the_slice_table_puts_critical_slices_first_and_counts_agreement() -> None:
    def judged(slice_: str, student: float, teacher: float, agrees: bool) -> Judgement:
        return Judgement(
            id=f"{slice_}-{student}-{agrees}",
            slice=slice_,
            student_score=student,
            teacher_score=teacher,
            agrees=agrees,
        )

    judgements = [
        judged("chat", 1.0, 1.0, True),
        judged("chat", 0.0, 1.0, False),
        judged("zz-critical", 1.0, 0.0, False),
    ]
    rows = slice_table(
        judgements,
        critical=[
            CriticalBar(name="zz-critical", threshold=0.85, min_count=50),
            CriticalBar(name="absent", threshold=0.9, min_count=50),
        ],
        training_rows={"chat": 7, "zz-critical": 60},
    )
    assert [r.slice for r in rows] == ["absent", "zz-critical", "chat"]
    absent, critical, chat = rows
    assert (absent.held_out, absent.passes, absent.student_score) == (0, False, None)
    assert (critical.passes, critical.threshold, critical.training_rows) == (True, 0.85, 60)
    assert chat.as_dict() == {
        "slice": "chat",
        "held_out": 2,
        "student_score": 0.5,
        "teacher_score": 1.0,
        "agreement": 0.5,
        "threshold": None,
        "critical": False,
        "passes": None,
        "training_rows": 7,
        "disagreements": 1,
    }
    assert chat.student_score == pytest.approx(0.5)
