"""The ``hf`` backend: a local Hugging Face causal LM answering batches of prompts."""

from __future__ import annotations

from collections.abc import Sequence

from distill_jobs.records import PromptRecord, TeacherRecord
from distill_jobs.teachers.errors import AnswerFailure, FailureReason, TeacherBatchError
from distill_jobs.teachers.generation import Generation, LocalGenerator, tokenizer_identity
from distill_jobs.teachers.settings import TeacherSettings


class HFTeacher:
    """The ``hf`` backend: a local causal LM answering batches of prompts."""

    def __init__(self, *, settings: TeacherSettings, device: str | None = None) -> None:
        self.settings = settings
        self.name = settings.name
        self._generator = LocalGenerator.load(model=settings.model, device=device)
        self.tokenizer_id: str | None = tokenizer_identity(self._generator.tokenizer)
        self.retries = 0  # a local model is never retried; kept for the common interface

    def answer(self, records: Sequence[PromptRecord]) -> list[TeacherRecord]:
        """Answer ``records`` in batches of ``batchSize``.

        Raises:
            TeacherBatchError: some records were not answered (it carries the others).
        """
        answered: list[TeacherRecord] = []
        failures: list[AnswerFailure] = []
        fitting = self._within_context(records, failures)
        step = self.settings.batch_size
        for start in range(0, len(fitting), step):
            self._answer_splitting(fitting[start : start + step], answered, failures)
        if failures:
            order = {record.id: index for index, record in enumerate(records)}
            answered.sort(key=lambda answer: order[answer.id])
            raise TeacherBatchError(answered=answered, failures=failures)
        return answered

    def close(self) -> None:
        """Nothing to release; the model goes with the object."""

    def _within_context(
        self, records: Sequence[PromptRecord], failures: list[AnswerFailure]
    ) -> list[PromptRecord]:
        limit = self._generator.max_positions
        if limit is None:
            return list(records)
        lengths = self._generator.prompt_lengths(conversations=[r.messages for r in records])
        fitting = []
        for record, length in zip(records, lengths, strict=True):
            if length + self.settings.max_output_tokens <= limit:
                fitting.append(record)
            else:
                failures.append(
                    AnswerFailure(
                        id=record.id,
                        reason=FailureReason.PROMPT_TOO_LONG,
                        message=f"{length} prompt tokens + maxOutputTokens "
                        f"{self.settings.max_output_tokens} exceed the model's {limit}",
                    )
                )
        return fitting

    def _answer_splitting(
        self,
        records: list[PromptRecord],
        answered: list[TeacherRecord],
        failures: list[AnswerFailure],
    ) -> None:
        """Generate for a batch; if it raises, halve it, so one bad prompt (or an
        out-of-memory batch) costs only itself."""
        try:
            generations = self._generator.generate(
                conversations=[record.messages for record in records],
                max_new_tokens=self.settings.max_output_tokens,
                temperature=self.settings.temperature,
                top_k=self.settings.top_logprobs,
            )
        except (RuntimeError, ValueError, IndexError) as error:
            if len(records) > 1:
                half = len(records) // 2
                self._answer_splitting(records[:half], answered, failures)
                self._answer_splitting(records[half:], answered, failures)
                return
            failures.append(
                AnswerFailure(
                    id=records[0].id,
                    reason=FailureReason.GENERATION_ERROR,
                    message=f"{type(error).__name__}: {error}",
                )
            )
            return
        answered.extend(
            self._record(record, generation)
            for record, generation in zip(records, generations, strict=True)
        )

    def _record(self, record: PromptRecord, generation: Generation) -> TeacherRecord:
        return TeacherRecord(
            id=record.id,
            messages=record.messages,
            slice=record.slice,
            reference=record.reference,
            output=generation.text,
            top_logprobs=generation.top_logprobs,
            output_token_ids=list(generation.token_ids),
            teacher=self.name,
            tokenizer=self.tokenizer_id,
            finish_reason=generation.finish_reason,
            output_tokens=generation.output_tokens,
            input_tokens=generation.prompt_tokens,
        )
