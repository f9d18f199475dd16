"""``distill plan``: what applying a new spec to a live project would run again.

Nothing here works out a stage's input itself. The real machine (:func:`machine.reconcile`)
is run pass after pass on a fresh status for the new spec, and every job it asks for is
answered at once with a result made up on the spot:

* a unit whose input (hash and result location) is the live unit's gets the live unit's
  own outcome, so what is chosen later (Investigate's verdict, Iterate's student) comes
  out as it did: ``reuse``;
* any other unit gets an outcome that carries the project furthest (an alternative
  misses the bar, a student candidate clears it, any other stage succeeds), so the plan
  shows every stage the change can reach: ``re-run``.

The fresh status carries the live ``lifecycle`` (its re-distillation count is Source's
traffic snapshot) and ``serving`` (the live student, which decides whether Launch has
anything to roll out, and the router, whose input decides whether it restarts). The
simulation stops at Launch. It is pure: no API is called.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import yaml

from distill_jobs.contract import StageResult
from distill_operator import machine, naming
from distill_operator.api import (
    CandidateStatus,
    JobRunStatus,
    LifecycleStatus,
    Phase,
    ProjectSpec,
    ProjectStatus,
    Stage,
    StageState,
    StageStatus,
)
from distill_operator.errors import PermanentError
from distill_operator.reconciler import parse_spec, parse_status
from distill_operator.stages import BY_STAGE, RUN_ORDER, launch

REUSE, RERUN, CHECKED = "reuse", "re-run", "checked"
# Where a student trained only in the simulation would be: never a live student's uri.
NEW_STUDENT = "(new)"
# The simulation's clock. No timer of the live status is carried over, so any instant does.
_CLOCK = datetime(2000, 1, 1, tzinfo=UTC)
# Each stage takes a pass to start and one to take its result (a report one more).
_MAX_PASSES = 4 * len(RUN_ORDER)
# Attempt failures the machine records itself: such a unit wrote no result, so even an
# unchanged input runs again.
_NO_RESULT = frozenset({"JobFailed", "DeadlineExceeded", "LaunchRefused"})
_PART_NOUN = {Stage.INVESTIGATE: "alternative", Stage.ITERATE: "candidate"}
# How a part that runs again is assumed to come out (see _Simulation._made_up).
_ASSUMED = {
    Stage.INVESTIGATE: "assuming re-run alternatives miss the bar",
    Stage.ITERATE: "assuming re-run candidates clear the bar",
}


class InvalidSpec(PermanentError):
    """The new spec would be refused by the API server; the message names the field."""


@dataclass(frozen=True)
class PlanRow:
    """One line of the plan.

    Attributes:
        stage: a stage, a part of one (``Iterate/tiny``), ``Launch/router``, or
            ``project`` (when the change is picked up).
        plan: reuse, re-run, checked (the operator decides it itself), fails, skipped or
            not reached; for the router: starts, restarts or keeps running; for the
            project: waits or suspends.
        why: in words: which part of its input changed, or what it re-uses.
        reads: the spec sections the stage's input is made of (on the stage's row only).
        input_hash: its input hash under the new spec, for a unit that runs a job.
        live_input_hash: the live unit's input hash.
    """

    stage: str
    plan: str
    why: str
    reads: tuple[str, ...] = ()
    input_hash: str | None = None
    live_input_hash: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "stage": self.stage,
            "plan": self.plan,
            "why": self.why,
            "reads": list(self.reads),
            "inputHash": self.input_hash,
            "liveInputHash": self.live_input_hash,
        }


def spec_of(text: str) -> dict[str, Any]:
    """The spec in a YAML file: a whole DistillationProject manifest, or its spec alone."""
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise InvalidSpec(f"not YAML: {error}") from error
    if not isinstance(document, dict):
        raise InvalidSpec("expected a DistillationProject manifest or its spec (a mapping)")
    if "spec" in document and ("kind" in document or "apiVersion" in document):
        document = document["spec"]
        if not isinstance(document, dict):
            raise InvalidSpec("spec: expected a mapping")
    return document


def plan(project_body: dict[str, Any], new_spec: dict[str, Any]) -> list[PlanRow]:
    """What applying ``new_spec`` to the project ``project_body`` (as the API server
    returns it: metadata, spec, status) would re-use and run again, stage by stage.

    Raises:
        InvalidSpec: the new spec would be refused.
    """
    spec, error = parse_spec(new_spec)
    if spec is None:
        raise InvalidSpec(error or "the spec is invalid")
    meta = project_body["metadata"]
    simulation = _Simulation(
        spec=spec,
        old_spec=parse_spec(project_body.get("spec") or {})[0],
        live=parse_status(project_body.get("status")),
        project=f"{meta['namespace']}/{meta['name']}",
        uid=meta.get("uid", ""),
    )
    final = simulation.run()
    return [*_project_rows(simulation.live, final), *simulation.rows(final)]


@dataclass(frozen=True)
class _Judged:
    """What the plan says of one unit that runs a job, and the result it was fed."""

    plan: str
    why: str
    result: StageResult
    input_hash: str
    live_input_hash: str | None


@dataclass
class _Simulation:
    spec: ProjectSpec
    old_spec: ProjectSpec | None  # None when the live spec no longer validates
    live: ProjectStatus
    project: str  # namespace/name
    uid: str
    judged: dict[tuple[Stage, str | None], _Judged] = field(default_factory=dict)

    def run(self) -> ProjectStatus:
        """Reconcile until Launch decides, or the project stops before it."""
        serving = self.live.serving.model_copy(deep=True) if self.live.serving else None
        status = ProjectStatus(lifecycle=_quiet(self.live.lifecycle), serving=serving)
        for _ in range(_MAX_PASSES):
            results = {}
            for stage, unit in _job_units(status):
                key = (stage, _part_of(unit))
                if key not in self.judged:
                    self.judged[key] = self._judge(status, stage, unit)
                assert unit.result_uri is not None
                results[unit.result_uri] = self.judged[key].result
            obs = machine.Observations(
                now=_CLOCK,
                generation=1,
                project=self.project,
                project_uid=self.uid,
                results=results,
                reports=self._reports(status),
            )
            after = machine.reconcile(self.spec, status, obs, machine.Settings()).status
            launched = _entry(after, Stage.LAUNCH).state != StageState.PENDING
            stopped = after.phase.is_terminal() or after.phase == Phase.SUSPENDED
            if launched or stopped or after == status:
                return after
            status = after
        return status

    def _reports(self, status: ProjectStatus) -> dict[str, str]:
        """Every report the machine waits for, as published from the unit's input."""
        name = self.project.split("/", 1)[1]
        wanted = set(machine.wanted_reports(status, name=name))
        reports = {}
        for entry in status.stages:
            config_map = naming.report_name(project=name, stage=entry.name)
            if config_map in wanted and entry.input_hash is not None:
                reports[config_map] = entry.input_hash
        return reports

    # --- one unit ----------------------------------------------------------------------
    def _judge(self, status: ProjectStatus, stage: Stage, unit: JobRunStatus) -> _Judged:
        part = _part_of(unit)
        live = _live_unit(self.live, stage, part)
        assert unit.input_hash is not None
        live_hash = live.input_hash if live else None
        if live is not None and _re_usable(live, unit):
            result = _live_outcome(stage, unit, live) or self._made_up(stage, part, unit, live)
            return _Judged(REUSE, _reuse_why(live), result, unit.input_hash, live_hash)
        why = self._rerun_why(status, stage, part, unit, live)
        result = self._made_up(stage, part, unit, live)
        return _Judged(RERUN, why, result, unit.input_hash, live_hash)

    def _rerun_why(
        self,
        status: ProjectStatus,
        stage: Stage,
        part: str | None,
        unit: JobRunStatus,
        live: JobRunStatus | None,
    ) -> str:
        old = _excerpt(self.old_spec, stage, part) if self.old_spec else None
        if live is None or live.input_hash is None:
            new_part = part is not None and self.old_spec is not None and old is None
            return (
                f"a new {_PART_NOUN.get(stage, 'part')}" if new_part else "no earlier run in status"
            )
        reasons = []
        changed = _changed_paths(old, _excerpt(self.spec, stage, part)) if old else []
        if changed:
            reasons.append(f"its input changed: {_listed(changed)}")
        # An upstream stage that runs again, or is not done in the live project (a running
        # Source of a re-distillation), hands this unit a result it was not built on.
        upstream = [
            s.value
            for s in BY_STAGE[stage].upstream
            if _entry(status, s).result_uri != _entry(self.live, s).result_uri
            or _entry(self.live, s).state != StageState.SUCCEEDED
        ]
        if upstream:
            reasons.append(f"a new {_and(upstream)} result")
        if reasons:
            return "; ".join(reasons)
        snapshot = self.live.lifecycle.redistillations
        if live.input_hash != unit.input_hash and stage == Stage.SOURCE and snapshot:
            return f"its input changed (traffic snapshot {snapshot})"
        if live.input_hash != unit.input_hash:
            return "its input changed"
        if live.result_uri != unit.result_uri:
            return "its result is not where spec.artifacts.uri now points"
        return f"its last attempt left no result ({live.reason})"

    def _made_up(
        self, stage: Stage, part: str | None, unit: JobRunStatus, live: JobRunStatus | None
    ) -> StageResult:
        """An outcome that carries the project furthest, with the old numbers."""
        metrics: dict[str, Any] = dict(live.metrics) if live else {}
        artifacts: dict[str, str] = {}
        met, reason, message = True, "Planned", "assumed to succeed"
        if stage == Stage.INVESTIGATE:
            met, reason, message = False, "BarMissed", f"{part} assumed to miss the bar"
        elif stage == Stage.ITERATE:
            declared = next(c.parameters for c in self.spec.students.candidates if c.name == part)
            if declared is not None:
                metrics["parameters"] = declared
            artifacts["student"] = NEW_STUDENT
            reason, message = "ClearsBar", f"{part} assumed to clear the bar"
        if BY_STAGE[stage].report:
            artifacts["summary"] = NEW_STUDENT
        return _result(stage, unit, met, reason, message, metrics, artifacts)

    # --- the rows ----------------------------------------------------------------------
    def rows(self, final: ProjectStatus) -> list[PlanRow]:
        stop = (
            "the project is suspended"
            if final.phase == Phase.SUSPENDED
            else f"the project stops at {final.stage} ({final.phase})"
        )
        rows: list[PlanRow] = []
        for stage in RUN_ORDER:
            definition, entry = BY_STAGE[stage], _entry(final, stage)
            if stage == Stage.LAUNCH:
                rows += [self._launch_row(final, entry, stop), *self._router_rows(final)]
            elif definition.workload is None:
                rows.append(_decided_row(entry, stop))
            elif definition.parts is not None:
                rows += self._parts_rows(final, entry, stop)
            else:
                rows.append(self._unit_row(stage, None, entry, stop))
        return rows

    def _unit_row(self, stage: Stage, part: str | None, unit: JobRunStatus, stop: str) -> PlanRow:
        label = f"{stage.value}/{part}" if part else stage.value
        reads = () if part else BY_STAGE[stage].reads  # a part reads what its stage row says
        judged = self.judged.get((stage, part))
        if judged is None:
            return _not_run_row(label, unit, stop, reads)
        return PlanRow(
            label, judged.plan, judged.why, reads, judged.input_hash, judged.live_input_hash
        )

    def _parts_rows(self, final: ProjectStatus, entry: StageStatus, stop: str) -> list[PlanRow]:
        stage = entry.name
        parts = [self._unit_row(stage, c.name, c, stop) for c in entry.candidates]
        if not parts:
            return [_not_run_row(stage.value, entry, stop, BY_STAGE[stage].reads)]
        rerun = [row.stage.split("/", 1)[1] for row in parts if row.plan == RERUN]
        if rerun:
            done = f"{_and(rerun)} re-run{'s' if len(rerun) == 1 else ''}"
        else:
            done = f"every {_PART_NOUN.get(stage, 'part')} re-uses its result"
        outcome = entry.reason
        student = final.student
        if stage == Stage.ITERATE and student is not None and entry.state == StageState.SUCCEEDED:
            outcome = f"chooses {student.name}"
        if rerun and stage in _ASSUMED:
            outcome += f" ({_ASSUMED[stage]})"
        why = f"{done}; {outcome}"
        row = PlanRow(stage.value, RERUN if rerun else REUSE, why, BY_STAGE[stage].reads)
        return [row, *parts]

    def _launch_row(self, final: ProjectStatus, entry: StageStatus, stop: str) -> PlanRow:
        serving = final.serving
        if entry.state == StageState.RUNNING and serving and serving.candidate:
            steps = " -> ".join(launch.step_name(s) for s in launch.steps_of(self.spec))
            return PlanRow("Launch", RERUN, f"rolls out {serving.candidate.name} ({steps})")
        if entry.state != StageState.SUCCEEDED:
            return _not_run_row("Launch", entry, stop, ())
        why = f"nothing to roll out ({entry.reason})"
        changed = self._launch_changes(final)
        if changed:
            return PlanRow("Launch", RERUN, f"{why}; {changed}")
        return PlanRow("Launch", REUSE, why)

    def _launch_changes(self, final: ProjectStatus) -> str:
        """What a change to spec.launch does to a student that keeps serving."""
        if self.old_spec is None or final.serving is None:
            return ""
        old = self.old_spec.model_dump(mode="json", by_alias=True, exclude_none=True)["launch"]
        new = self.spec.model_dump(mode="json", by_alias=True, exclude_none=True)["launch"]
        old.pop("router", None)  # the router has a row of its own
        new.pop("router", None)
        changed = _changed_paths(old, new, "launch")
        if not changed:
            return ""
        routed = launch.routing(self.old_spec, final.serving) != launch.routing(
            self.spec, final.serving
        )
        effect = "the router gets the new routing at once" if routed else "for the next rollout"
        return f"{_listed(changed)} changed: {effect}"

    def _router_rows(self, final: ProjectStatus) -> list[PlanRow]:
        router = final.serving.router if final.serving else None
        if router is None:
            return []
        live = self.live.serving.router if self.live.serving else None
        live_hash = live.input_hash if live else None
        reads = tuple(launch.router_excerpt(self.spec))

        def row(plan: str, why: str) -> list[PlanRow]:
            return [PlanRow("Launch/router", plan, why, reads, router.input_hash, live_hash)]

        if live is None:
            return row("starts", "the first rollout starts the router")
        if live_hash == router.input_hash:
            kept = "keeps running" if live.state == StageState.RUNNING else f"stays {live.state}"
            return row(kept, "unchanged input")
        changed = (
            _changed_paths(launch.router_excerpt(self.old_spec), launch.router_excerpt(self.spec))
            if self.old_spec
            else []
        )
        why = f"its input changed: {_listed(changed)}" if changed else "its input changed"
        return row("restarts", why)


# --- helpers -------------------------------------------------------------------------------
def _project_rows(live: ProjectStatus, final: ProjectStatus) -> list[PlanRow]:
    """When the change is picked up: a running stage finishes first."""
    rows = []
    running = next((e.name for e in live.stages if e.state == StageState.RUNNING), None)
    if running is not None:
        why = f"applied now, picked up when {running} ends"
        if live.pending_generation is not None:
            why += f" (instead of generation {live.pending_generation}, which waits for it too)"
        rows.append(PlanRow("project", "waits", why))
    if final.phase == Phase.SUSPENDED:
        rows.append(PlanRow("project", "suspends", "spec.suspend: no stage job starts"))
    return rows


def _quiet(lifecycle: LifecycleStatus) -> LifecycleStatus:
    """The live lifecycle without its timers: its re-distillation count is Source's
    snapshot, but a due schedule or drift check must not fire inside the simulation."""
    return lifecycle.model_copy(
        deep=True,
        update={"next_scheduled_at": None, "next_drift_check_at": None, "drift_check": None},
    )


def _job_units(status: ProjectStatus) -> Iterator[tuple[Stage, JobRunStatus]]:
    """The running units that have a job, with the stage each belongs to."""
    for entry in status.stages:
        if entry.state == StageState.RUNNING:
            for unit in (entry, *entry.candidates):
                if unit.state == StageState.RUNNING and unit.job is not None:
                    yield entry.name, unit


def _part_of(unit: JobRunStatus) -> str | None:
    return unit.name if isinstance(unit, CandidateStatus) else None


def _entry(status: ProjectStatus, stage: Stage) -> StageStatus:
    found = next((e for e in status.stages if e.name == stage), None)
    return found if found is not None else StageStatus(name=stage)


def _live_unit(live: ProjectStatus, stage: Stage, part: str | None) -> JobRunStatus | None:
    entry = _entry(live, stage)
    if part is None:
        return entry
    return next((c for c in entry.candidates if c.name == part), None)


def _re_usable(live: JobRunStatus, unit: JobRunStatus) -> bool:
    """The machine re-uses the result found where the unit's result belongs."""
    same = (live.input_hash, live.result_uri) == (unit.input_hash, unit.result_uri)
    return same and not (live.state == StageState.FAILED and live.reason in _NO_RESULT)


def _reuse_why(live: JobRunStatus) -> str:
    if live.state == StageState.RUNNING:
        return "unchanged input: re-uses the result of the job running now"
    if live.state in (StageState.SUCCEEDED, StageState.FAILED):
        return f"unchanged input: re-uses its result ({live.state}: {live.reason})"
    return "unchanged input: re-uses its earlier result"


def _live_outcome(stage: Stage, unit: JobRunStatus, live: JobRunStatus) -> StageResult | None:
    """The live unit's own outcome, as the result it was concluded from; None while it
    is not known (still running, or reset by a loop back)."""
    if live.state not in (StageState.SUCCEEDED, StageState.FAILED):
        return None
    artifacts = {}
    if isinstance(live, CandidateStatus) and live.student_uri:
        artifacts["student"] = live.student_uri
    if BY_STAGE[stage].report:
        artifacts["summary"] = "(re-used)"
    met = live.state == StageState.SUCCEEDED
    return _result(stage, unit, met, live.reason, live.message, dict(live.metrics), artifacts)


def _result(
    stage: Stage,
    unit: JobRunStatus,
    met: bool,
    reason: str,
    message: str,
    metrics: dict[str, Any],
    artifacts: dict[str, str],
) -> StageResult:
    return StageResult.model_validate(
        {
            "stage": stage.value,
            "input_hash": unit.input_hash,
            "exitConditionMet": met,
            "reason": reason,
            "message": message,
            "metrics": metrics,
            "artifacts": artifacts,
        }
    )


def _excerpt(spec: ProjectSpec, stage: Stage, part: str | None) -> dict[str, Any] | None:
    """The spec excerpt a unit's input is made of (None: the spec has no such part)."""
    definition = BY_STAGE[stage]
    if part is None or definition.parts is None:
        return definition.spec_excerpt(spec)
    return dict(definition.parts(spec)).get(part)


def _decided_row(entry: StageStatus, stop: str) -> PlanRow:
    """A stage the operator decides itself (Define)."""
    if entry.state == StageState.SUCCEEDED:
        return PlanRow(entry.name.value, CHECKED, entry.message)
    return _not_run_row(entry.name.value, entry, stop, ())


def _not_run_row(label: str, unit: JobRunStatus, stop: str, reads: Sequence[str]) -> PlanRow:
    if unit.state == StageState.SKIPPED:
        return PlanRow(label, "skipped", unit.message, tuple(reads))
    if unit.state == StageState.FAILED:
        return PlanRow(label, "fails", f"{unit.reason}: {unit.message}", tuple(reads))
    return PlanRow(label, "not reached", stop, tuple(reads))


def _changed_paths(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Dotted paths at which ``new`` differs from ``old``; named list items by name."""
    if old == new:
        return []
    if isinstance(old, dict) and isinstance(new, dict):
        keys = [*new, *(key for key in old if key not in new)]
        return [
            path
            for key in keys
            for path in _changed_paths(old.get(key), new.get(key), f"{prefix}.{key}".lstrip("."))
        ]
    if _named(old) and _named(new):
        olds, news = {i["name"]: i for i in old}, {i["name"]: i for i in new}
        names = [*news, *(name for name in olds if name not in news)]
        paths = [
            path
            for name in names
            for path in _changed_paths(olds.get(name), news.get(name), f"{prefix}[{name}]")
        ]
        return paths or [prefix]  # the same items in another order
    return [prefix]


def _named(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(i, dict) and "name" in i for i in value)


def _and(names: Sequence[str]) -> str:
    """``a``, ``a and b``, ``a, b and c``."""
    return " and ".join(filter(None, (", ".join(names[:-1]), names[-1])))


def _listed(paths: Sequence[str], limit: int = 3) -> str:
    shown = ", ".join(paths[:limit])
    return f"{shown} and {len(paths) - limit} more" if len(paths) > limit else shown
