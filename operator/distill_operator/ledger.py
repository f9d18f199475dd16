"""The cost ledger: what each ended attempt spent, folded into ``status.cost``.

Pure functions over status models. The machine calls :func:`fold` once per attempt, at
the one transition where the attempt ends (its result read, its job found dead, stopped
at its deadline or by a loop back), so a restarted operator re-reading the same status
adds nothing twice: the transition has already happened there.
"""

from __future__ import annotations

from distill_jobs.contract import Spend as Reported
from distill_operator.api import CostLedger, ProjectSpec, Spend, Stage, StageCost
from distill_operator.api.spec import TeacherBackend

SECONDS_PER_HOUR = 3600.0
TOKENS_PER_MILLION = 1_000_000
DIGITS = 6  # status stays readable; sums of sub-micro amounts are noise


def price(spent: Reported, spec: ProjectSpec) -> float | None:
    """Accelerator-hours at ``pricePerAcceleratorHour`` plus tokens at the teacher's
    prices; None when an API teacher's tokens were spent that the spec gives no price
    for. A local (hf) teacher bills no tokens: its GPU time is its cost, unless
    ``teacher.pricing`` says otherwise (a chargeback per token)."""
    total = (
        spent.accelerator_seconds
        / SECONDS_PER_HOUR
        * (spec.students.training.price_per_accelerator_hour)
    )
    pricing = spec.teacher.pricing
    billed = spec.teacher.backend != TeacherBackend.HF
    for tokens, per_million in (
        (spent.teacher_input_tokens, pricing.input_per_million_tokens if pricing else None),
        (spent.teacher_output_tokens, pricing.output_per_million_tokens if pricing else None),
    ):
        if tokens and per_million is None and billed:
            return None
        total += tokens / TOKENS_PER_MILLION * (per_million or 0.0)
    return total


def fold(
    ledger: CostLedger | None,
    stage: Stage,
    spent: Reported,
    *,
    estimated: bool,
    spec: ProjectSpec,
) -> CostLedger:
    """The ledger with one more attempt of ``stage`` that spent ``spent``.

    Args:
        ledger: status.cost so far (None before the first attempt ended).
        stage: the stage the attempt belongs to.
        spent: what it spent.
        estimated: its accelerator time is the operator's estimate, not the job's report.
        spec: the prices in force when it ended.
    """
    ledger = ledger.model_copy(deep=True) if ledger else CostLedger()
    entry = next((e for e in ledger.stages if e.name == stage), None)
    attempt_price = price(spent, spec)
    if entry is None:
        entry = StageCost(name=stage, price=0.0)
        ledger.stages.append(entry)
        ledger.stages.sort(key=lambda e: list(Stage).index(e.name))
    entry.attempts += 1
    entry.accelerator_seconds = round(entry.accelerator_seconds + spent.accelerator_seconds, 3)
    if estimated:
        entry.estimated_accelerator_seconds = round(
            entry.estimated_accelerator_seconds + spent.accelerator_seconds, 3
        )
    entry.teacher_input_tokens += spent.teacher_input_tokens
    entry.teacher_output_tokens += spent.teacher_output_tokens
    # Once part of a stage's spend had no price, its sum has none: absent, never a guess.
    if entry.price is not None and attempt_price is not None:
        entry.price = round(entry.price + attempt_price, DIGITS)
    else:
        entry.price = None
    ledger.total = total(ledger.stages)
    return ledger


def total(stages: list[StageCost]) -> Spend:
    """The sum of the stages; priced only when every stage is."""
    prices = [entry.price for entry in stages]
    return Spend(
        accelerator_seconds=round(sum(e.accelerator_seconds for e in stages), 3),
        estimated_accelerator_seconds=round(
            sum(e.estimated_accelerator_seconds for e in stages), 3
        ),
        teacher_input_tokens=sum(e.teacher_input_tokens for e in stages),
        teacher_output_tokens=sum(e.teacher_output_tokens for e in stages),
        price=None if None in prices else round(sum(p for p in prices if p is not None), DIGITS),
    )
