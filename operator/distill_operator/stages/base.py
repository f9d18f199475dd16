"""What every stage declares: its exit condition, its workload, what it reads."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from distill_operator.api import CandidateStatus, Phase, ProjectSpec, Stage


@dataclass(frozen=True)
class Verdict:
    """A decision the operator makes itself: a stage's exit condition, or a refusal."""

    met: bool
    reason: str
    message: str
    outcome: Phase | None = None
    waits: bool = False  # not a failure: re-checked until the world changes


@dataclass(frozen=True)
class Facts:
    """What the operator observed outside the spec that in-operator checks need."""

    missing_secrets: tuple[str, ...] = ()


def _no_problem(spec: ProjectSpec, facts: Facts) -> Verdict | None:
    return None


def _no_accelerators(spec: ProjectSpec) -> float:
    return 0.0


def dumped_spec(spec: ProjectSpec) -> dict[str, Any]:
    """The spec as the camelCase JSON stage inputs are cut from, without what is only
    bookkeeping (``teacher.pricing``): a new price must not re-run a stage."""
    dumped = spec.model_dump(mode="json", by_alias=True, exclude_none=True)
    dumped["teacher"].pop("pricing", None)
    return dumped


@dataclass(frozen=True)
class StageDefinition:
    """One DISTILL stage as the machine sees it.

    Attributes:
        stage: which stage.
        exit_condition: the exit condition in words, for this spec.
        workload: the ``distill_jobs`` module its Ray job runs, or None when the
            operator decides the stage itself (``decide``).
        reads: top-level spec sections that go into the stage input (and its hash).
        upstream: earlier stages whose results the workload builds on.
        preflight: a user's mistake only the operator can see, found before any job.
        decide: the verdict of an in-operator stage.
        parts: splits the stage into parts that each run their own job (Iterate: one
            per student candidate), as (part name, spec excerpt) pairs in spec order.
            Each part's excerpt is its input, so adding a part leaves the others'
            input hashes, and so their results, as they were.
        choose: for a stage with parts, once every part is done: the part whose result
            becomes the stage's (or None), and the stage's verdict.
        report: its result's ``artifacts["summary"]`` (a JSON object of strings) is
            published as a ConfigMap before the stage concludes.
        serves: a long-running service (the router): no deadline; it writes a result
            only when it cannot start.
        accelerators: the GPUs an attempt's job requests, as far as the spec says; the
            cost ledger estimates an attempt that reported nothing with it.
    """

    stage: Stage
    exit_condition: Callable[[ProjectSpec], str]
    workload: str | None = None
    reads: tuple[str, ...] = ()
    upstream: tuple[Stage, ...] = ()
    preflight: Callable[[ProjectSpec, Facts], Verdict | None] = _no_problem
    decide: Callable[[ProjectSpec, Facts], Verdict] | None = None
    parts: Callable[[ProjectSpec], list[tuple[str, dict[str, Any]]]] | None = None
    choose: (
        Callable[[ProjectSpec, Sequence[CandidateStatus]], tuple[CandidateStatus | None, Verdict]]
        | None
    ) = None
    report: bool = False
    serves: bool = False
    accelerators: Callable[[ProjectSpec], float] = _no_accelerators

    def spec_excerpt(self, spec: ProjectSpec) -> dict[str, Any]:
        """The spec sections this stage reads: its input, and so its input hash."""
        dumped = dumped_spec(spec)
        return {section: dumped[section] for section in self.reads if section in dumped}
