"""Teach workload (``python -m distill_jobs.teach --input URI``).

Collects the teacher's answers to Source's training prompts and keeps the ones worth
training on. In order, each step able to stop the stage with a reason of its own:

1. the teacher's terms must be acknowledged (``TeacherTermsNotAcknowledged``);
2. verifiers must be usable (``VerifierNotFound``, ``VerifierInvalid``), an API teacher
   must have its key (``ApiKeyMissing``), Source's result and files must be readable
   (``SourceResultMissing``, ``SourceArtifactMissing``, ``SourceArtifactUnreadable``);
3. no held-out prompt may be among the training prompts (``HeldOutLeak``);
4. collection (:func:`distill_jobs.collect.collect`) into ``<stage dir>/outputs/``
   (JSONL parts; unanswered prompts in ``failures/``). It resumes: the stage dir is
   content-addressed by input hash, so a retried attempt finds the earlier attempts'
   outputs and asks the teacher only for the rest (``TeacherUnavailable`` when no
   request of the attempt was answered, ``ApiKeyRejected`` when all were refused for
   the key, ``TeacherModelNotFound``, ``CollectionIncomplete`` when more than
   :data:`MAX_FAILED_SHARE` of the prompts are still without an answer);
5. filtering (:mod:`distill_jobs.filters`) and the artifacts (``NothingKept`` when every
   output was dropped, else ``TeacherOutputsFiltered``).

Artifacts, all in the stage dir: ``train.jsonl`` (chat rows: the prompt's messages with
the teacher's answer appended, ``top_logprobs`` alongside; a prompt Source oversampled
appears once per copy), ``train.parquet`` (the same rows), ``dropped.jsonl``,
``review.jsonl`` / ``review.csv``, ``report.json`` (per-slice tables), and the
collector's ``outputs/`` (everything collected, kept or not) and ``failures/``.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from types import MappingProxyType
from typing import Any

import fsspec
from pydantic import ValidationError

from distill_jobs.collect import CollectionError, CollectionReport, collect
from distill_jobs.contract import Spend, StageInput, StageResult
from distill_jobs.filters import (
    DropReason,
    FilterOutcome,
    VerifierError,
    filter_outputs,
    settings_from_spec,
)
from distill_jobs.records import PromptRecord, TeacherRecord
from distill_jobs.runner import stage_main
from distill_jobs.teachers import ModelNotAvailableError, TeacherConfigError, TeacherError
from distill_jobs.teaching.artifacts import Row, write_artifacts
from distill_jobs.upstream import (
    StageFailure,
    read_held_out,
    read_jsonl,
    refuse_leaks,
    teacher_api_key,
    upstream_artifacts,
)

SOURCE_STAGE = "Source"
# Prompts that may stay unanswered (after the collector's own retries) before the stage
# fails rather than train on a set missing a sizeable part of what Source chose.
MAX_FAILED_SHARE = 0.1
REASON_OK = "TeacherOutputsFiltered"
# outputs/ and failures/ are the collector's directories of JSONL parts.
ARTIFACT_FILES = MappingProxyType(
    {
        "train": "train.jsonl",
        "train_parquet": "train.parquet",
        "review": "review.jsonl",
        "review_csv": "review.csv",
        "dropped": "dropped.jsonl",
        "report": "report.json",
        "outputs": "outputs",
        "failures": "failures",
    }
)


class TeachFailure(StageFailure):
    """Teach cannot pass: a user's mistake or a dependency that is not there."""


def stage_files(stage_dir: str) -> dict[str, str]:
    """URIs of everything Teach writes, by artifact name: all in its stage dir."""
    return {name: f"{stage_dir}/{file}" for name, file in ARTIFACT_FILES.items()}


def work(stage_input: StageInput) -> StageResult:
    """Teach: collect teacher outputs, verify and filter them, write the training set."""
    try:
        return teach(stage_input)
    except StageFailure as failure:
        return _result(
            stage_input,
            met=False,
            reason=failure.reason,
            message=str(failure),
            metrics=failure.metrics,
        )


def teach(stage_input: StageInput) -> StageResult:
    """The stage itself; a :class:`TeachFailure` says why it cannot pass."""
    teacher: Mapping[str, Any] = stage_input.spec.get("teacher") or {}
    teach_spec: Mapping[str, Any] = stage_input.spec.get("teach") or {}
    require_terms(teacher)
    try:
        settings = settings_from_spec(teach_spec, seed=stage_input.input_hash())
    except VerifierError as error:
        raise TeachFailure(error.reason, str(error)) from None
    api_key = teacher_api_key(teacher, environ=os.environ)
    source = source_artifacts(stage_input)
    rows = read_jsonl(source["train"], model=PromptRecord, what="Source's train")
    refuse_leaks(
        (row.id for row in rows),
        held_out=read_held_out(source["held_out_hashes"]),
        where="Source's train",
    )
    files = stage_files(stage_input.stage_dir())
    prompts = distinct_prompts(rows)
    collection = collect_outputs(
        train_uri=source["train"],
        stage_dir=stage_input.stage_dir(),
        teacher=teacher,
        teach=teach_spec,
        api_key=api_key,
    )
    answers = read_answers(files["outputs"])
    spent = attempt_spend(collection, answers=answers)
    check_collection(collection, prompts=prompts, answers=answers, teacher=teacher, spent=spent)
    outcome = filter_outputs(answers, prompts=prompts, settings=settings)
    copies = Counter(row.id for row in rows)
    train_rows = write_artifacts(outcome, prompts=prompts, copies=copies, files=files)
    return summarise(
        stage_input,
        outcome=outcome,
        collection=collection,
        prompts=len(prompts),
        train_rows=train_rows,
        files=files,
        spent=spent,
    )


# --- checks before any teacher is asked -------------------------------------------------


def require_terms(teacher: Mapping[str, Any]) -> None:
    """The teacher's terms must be acknowledged before anything is collected."""
    if teacher.get("termsAcknowledged") is not True:
        raise TeachFailure(
            "TeacherTermsNotAcknowledged",
            "spec.teacher.termsAcknowledged: confirm that the teacher's terms permit "
            "training on its outputs, then set it to true",
        )


def source_artifacts(stage_input: StageInput) -> Mapping[str, str]:
    """Source's artifact URIs, from its result (named in ``upstream.Source``)."""
    return upstream_artifacts(stage_input, stage=SOURCE_STAGE, names=("train", "held_out_hashes"))


def distinct_prompts(rows: Iterable[PromptRecord]) -> dict[str, PromptRecord]:
    """One prompt per id (Source's oversampled copies share their original's id)."""
    prompts: dict[str, PromptRecord] = {}
    for row in rows:
        if row.id not in prompts or row.copy_index < prompts[row.id].copy_index:
            prompts[row.id] = row
    return prompts


# --- collection -------------------------------------------------------------------------


def collect_outputs(
    *,
    train_uri: str,
    stage_dir: str,
    teacher: Mapping[str, Any],
    teach: Mapping[str, Any],
    api_key: str | None,
) -> CollectionReport:
    """Ask the teacher for every prompt not yet answered under the stage dir."""
    try:
        return collect(
            prompts_uri=train_uri,
            out_uri=stage_dir,
            teacher=dict(teacher),
            teach=dict(teach),
            api_key=api_key,
        )
    except CollectionError as error:
        raise unavailable(error.report, teacher=teacher) from None
    except Exception as error:
        cause = teacher_error(error)
        if isinstance(cause, ModelNotAvailableError):
            raise TeachFailure("TeacherModelNotFound", f"spec.teacher.model: {cause}") from None
        if isinstance(cause, TeacherConfigError):
            raise TeachFailure("TeacherMisconfigured", str(cause)) from None
        raise


def teacher_error(error: BaseException, *, depth: int = 6) -> TeacherError | None:
    """The teacher's own error behind ``error``, if any: Ray wraps what an actor raised
    (``ActorDiedError(RayTaskError(cause=...))``), chaining and args included."""
    if isinstance(error, TeacherError):
        return error
    if depth == 0:
        return None
    inner = [getattr(error, "cause", None), error.__cause__, error.__context__, *error.args]
    for candidate in inner:
        if isinstance(candidate, BaseException):
            found = teacher_error(candidate, depth=depth - 1)
            if found is not None:
                return found
    return None


def unavailable(report: CollectionReport, *, teacher: Mapping[str, Any]) -> TeachFailure:
    """No request of this attempt was answered: the teacher is down, or refuses the key."""
    reasons = _count_phrase(report.failed_by_reason)
    kept = f"; {report.resumed} answers from earlier attempts are kept" if report.resumed else ""
    if set(report.failed_by_reason) == {"auth_error"}:
        return TeachFailure(
            "ApiKeyRejected",
            f"spec.teacher.apiKeySecretRef: teacher {_teacher_name(teacher)} refused the API "
            f"key for all {report.failed} prompts; put a valid key in the Secret{kept}",
            metrics=_collection_metrics(report),
        )
    return TeachFailure(
        "TeacherUnavailable",
        f"teacher {_teacher_name(teacher)} answered none of {report.failed} prompts after "
        f"retries ({reasons}){kept}; a retry asks only for the rest",
        metrics=_collection_metrics(report),
    )


def read_answers(uri: str) -> list[TeacherRecord]:
    """One answer per prompt id from the collector's ``outputs/`` parts, in part order.

    The collector writes a row per oversampled copy (and may answer an id again after a
    torn write): the first row of an id is its answer; train.jsonl restores the copies.
    A torn last line of a part is skipped, as the collector skips it.
    """
    fs, path = fsspec.core.url_to_fs(uri)
    if not fs.exists(path):
        return []
    answers: dict[str, TeacherRecord] = {}
    for part in sorted(fs.glob(f"{path.rstrip('/')}/*.jsonl")):
        with fs.open(part, "r") as handle:
            for line in handle:
                try:
                    answer = TeacherRecord.model_validate_json(line)
                except ValidationError:
                    continue
                answers.setdefault(answer.id, answer)
    return list(answers.values())


def attempt_spend(report: CollectionReport, *, answers: Sequence[TeacherRecord]) -> Spend:
    """What this attempt reports for the cost ledger: its GPU time, and the tokens of
    every answer collected so far. Answers resumed from earlier attempts came from
    attempts that wrote no result (a result ends the stage), so none reported them."""
    return Spend(
        accelerator_seconds=report.spend().accelerator_seconds,
        teacher_input_tokens=sum(answer.input_tokens or 0 for answer in answers),
        teacher_output_tokens=sum(answer.output_tokens or 0 for answer in answers),
    )


def check_collection(
    report: CollectionReport,
    *,
    prompts: Mapping[str, PromptRecord],
    answers: Sequence[TeacherRecord],
    teacher: Mapping[str, Any],
    spent: Spend,
) -> None:
    """Fail when more than :data:`MAX_FAILED_SHARE` of the prompts are unanswered."""
    missing = len(prompts.keys() - {answer.id for answer in answers})
    if missing <= MAX_FAILED_SHARE * len(prompts):
        return
    raise TeachFailure(
        "CollectionIncomplete",
        f"{missing} of {len(prompts)} prompts have no answer from teacher "
        f"{_teacher_name(teacher)} ({_count_phrase(report.failed_by_reason) or 'none failed'} "
        f"in this attempt); more than {MAX_FAILED_SHARE:.0%} missing. The "
        f"{len(prompts) - missing} answers so far are kept and a retry asks only for the rest",
        metrics=_collection_metrics(report, spent=spent) | {"missing": missing},
    )


def _teacher_name(teacher: Mapping[str, Any]) -> str:
    name = f"{teacher.get('backend')}:{teacher.get('model')}"
    endpoint = teacher.get("endpoint")
    return f"{name} at {endpoint}" if endpoint else name


# --- artifacts ----------------------------------------------------------------------------


def summarise(
    stage_input: StageInput,
    *,
    outcome: FilterOutcome,
    collection: CollectionReport,
    prompts: int,
    train_rows: int,
    files: Mapping[str, str],
    spent: Spend,
) -> StageResult:
    """The result: passed when something was kept, with headline numbers and tables."""
    by_reason = outcome.dropped_by_reason()
    collected = len(outcome.kept) + len(outcome.dropped)
    metrics: Row = {
        **_collection_metrics(collection, spent=spent),
        "prompts": prompts,
        "collected": collected,
        "kept": len(outcome.kept),
        "dropped": len(outcome.dropped),
        "review_queued": len(outcome.review),
        "open_ended": sum(counts.open_ended for counts in outcome.slices.values()),
        "train_rows": train_rows,
        "verifier_errors": sum(outcome.verifier_errors.values()),
        **{f"dropped_{reason.value}": by_reason.get(reason.value, 0) for reason in DropReason},
        "slices": {name: counts.as_dict() for name, counts in sorted(outcome.slices.items())},
        "failed_by_reason": dict(collection.failed_by_reason),
    }
    artifacts = {name: uri for name, uri in files.items() if name != "failures"}
    if _exists(files["failures"]):  # the collector writes failures/ only when some failed
        artifacts["failures"] = files["failures"]
    if not outcome.kept:
        what = "no teacher outputs were collected"
        if collected:
            what = f"all {collected} teacher outputs were dropped ({_reason_phrase(by_reason)})"
        return _result(
            stage_input,
            met=False,
            reason="NothingKept",
            message=f"{what}; see {files['dropped']}",
            metrics=metrics,
            artifacts=artifacts,
        )
    return _result(
        stage_input,
        met=True,
        reason=REASON_OK,
        message=_kept_message(outcome, collected=collected, collection=collection),
        metrics=metrics,
        artifacts=artifacts,
    )


def _kept_message(outcome: FilterOutcome, *, collected: int, collection: CollectionReport) -> str:
    by_reason = outcome.dropped_by_reason()
    message = f"kept {len(outcome.kept)} of {collected}"
    if by_reason:
        message += f" (dropped {_reason_phrase(by_reason)})"
    message += f"; {len(outcome.review)} queued for review"
    if collection.failed:
        message += f"; {collection.failed} prompts unanswered (a retry asks for them)"
    return message


def _reason_phrase(by_reason: Mapping[str, int], *, top: int = 3) -> str:
    ranked = sorted(by_reason.items(), key=lambda item: (-item[1], item[0]))
    words = [f"{count} {DropReason(reason).phrase}" for reason, count in ranked[:top]]
    rest = sum(count for _, count in ranked[top:])
    return ", ".join(words + ([f"{rest} other"] if rest else []))


def _count_phrase(counts: Mapping[str, int]) -> str:
    return ", ".join(f"{reason}: {count}" for reason, count in sorted(counts.items()))


def _collection_metrics(report: CollectionReport, *, spent: Spend | None = None) -> Row:
    return {
        "answered": report.answered,
        "failed": report.failed,
        "resumed": report.resumed,
        "retries": report.retries,
        "output_tokens": report.output_tokens,
        "collect_seconds": report.seconds,
        # For the operator's cost ledger (status.cost): this run's, unless told more.
        **(spent or report.spend()).metrics(),
    }


def _result(
    stage_input: StageInput,
    *,
    met: bool,
    reason: str,
    message: str,
    metrics: Mapping[str, Any] | None = None,
    artifacts: Mapping[str, str] | None = None,
) -> StageResult:
    return StageResult(
        stage=stage_input.stage,
        input_hash=stage_input.input_hash(),
        exit_condition_met=met,
        reason=reason,
        message=message,
        metrics=dict(metrics or {}),
        artifacts=dict(artifacts or {}),
    )


def _exists(uri: str) -> bool:
    fs, path = fsspec.core.url_to_fs(uri)
    return bool(fs.exists(path))


def main() -> int:
    return stage_main(work)


if __name__ == "__main__":
    raise SystemExit(main())
