"""A local model answering requests greedily, concurrent requests in one ``generate``.

The student, and an ``hf`` teacher, answer this way: through the
:class:`~distill_jobs.teachers.generation.Batcher` of the local API server, greedily and
without top-k logprobs, which is how Look and Iterate generate a model's answers
(:func:`distill_jobs.training.measure.validation_answers`): a served answer is the
answer that was evaluated.
"""

from __future__ import annotations

from typing import Any

from distill_jobs.serving.chat import Answer
from distill_jobs.teachers.generation import (
    Batcher,
    Generation,
    GenerationRequest,
    LocalGenerator,
)

GREEDY = 0.0


class PromptTooLong(ValueError):
    """The prompt and the output limit do not fit the model's context."""


class LocalModel:
    """A :class:`LocalGenerator` behind a :class:`Batcher`, answering greedily.

    Args:
        generator: the loaded model.
        name: what a completion's ``model`` says answered.
        max_batch: most requests in one generate call.
        window_seconds: how long a request waits for others to batch with.
    """

    def __init__(
        self, *, generator: LocalGenerator, name: str, max_batch: int, window_seconds: float
    ) -> None:
        self.generator = generator
        self.name = name
        self._batcher = Batcher(
            generator=generator, max_batch=max_batch, window_seconds=window_seconds
        )

    async def generate(
        self, conversation: list[dict[str, Any]], *, max_tokens: int, entropies: bool = False
    ) -> Generation:
        """The greedy answer to ``conversation``, with its token logprobs (and entropies).

        Raises:
            PromptTooLong: the prompt and ``max_tokens`` exceed the context.
        """
        self.check_fits(conversation, max_tokens=max_tokens)
        return await self._batcher.submit(
            GenerationRequest(
                conversation=conversation,
                max_new_tokens=max_tokens,
                temperature=GREEDY,
                top_k=0,
                entropies=entropies,
            )
        )

    def check_fits(self, conversation: list[dict[str, Any]], *, max_tokens: int) -> None:
        """Refuse a request before it joins a batch: one that overflows fails its batch.

        Raises:
            PromptTooLong: the prompt and ``max_tokens`` exceed the context.
        """
        limit = self.generator.max_positions
        if limit is None:
            return
        prompt_tokens = self.generator.prompt_lengths(conversations=[conversation])[0]
        if prompt_tokens + max_tokens > limit:
            raise PromptTooLong(
                f"{prompt_tokens} prompt tokens + max_tokens {max_tokens} exceed {self.name}'s "
                f"context of {limit}"
            )

    def answer_of(self, generation: Generation) -> Answer:
        return Answer(
            text=generation.text,
            finish_reason=generation.finish_reason,
            prompt_tokens=generation.prompt_tokens,
            output_tokens=generation.output_tokens,
            model=self.name,
        )

    async def close(self) -> None:
        await self._batcher.close()
