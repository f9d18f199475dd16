"""How sure the student is of an answer, from its own token probabilities.

Both measures come from the distribution the student generated with (its raw logits'
softmax, as :class:`~distill_jobs.teachers.generation.LocalGenerator` reports it), over
the output tokens only; the end-of-sequence token is not one of them.

- ``mean_logprob``: the mean log-probability of the tokens it chose. Greedy decoding
  picks the most likely token, so a low mean says no token stood out. Confident when
  ``>= threshold``.
- ``entropy``: the mean, over output positions, of the entropy (nats) of the whole
  next-token distribution at that position, ``-sum_v p(v) log p(v)`` over the full
  vocabulary (not a top-k approximation). Confident when ``<= threshold``.

An answer with no tokens has no evidence either way and is not confident.
"""

from __future__ import annotations

from statistics import fmean

from distill_jobs.teachers.generation import Generation

MEAN_LOGPROB, ENTROPY = "mean_logprob", "entropy"


def confidence(generation: Generation, *, rule: str) -> float | None:
    """The ``rule``'s measure of ``generation``, or None when it has no output tokens.

    Raises:
        ValueError: an unknown rule, or entropies asked of a generation without them.
    """
    if rule == MEAN_LOGPROB:
        values = generation.token_logprobs
    elif rule == ENTROPY:
        if generation.token_entropies is None:
            raise ValueError("the entropy rule needs a generation made with entropies=True")
        values = generation.token_entropies
    else:
        raise ValueError(f"unknown confidence rule {rule!r}: {MEAN_LOGPROB} or {ENTROPY}")
    return fmean(values) if values else None


def is_confident(value: float | None, *, rule: str, threshold: float) -> bool:
    """Whether ``value`` clears the bar: high log-probability, or low entropy."""
    if value is None:
        return False
    return value >= threshold if rule == MEAN_LOGPROB else value <= threshold
