"""The distillation loss of student training: hard-label cross-entropy mixed with a
temperature-scaled divergence from the teacher's top-k soft labels.

Soft labels are the teacher's top-k candidates per position, not its full distribution,
so both distributions are restricted to the teacher's top-k support and renormalised
there: reverse KL and JSD compare the student's mass with the teacher's token by token,
which needs a support where both are defined (outside the top-k the teacher's
probability is unknown, not zero).

Encoding of soft labels: ``teacher_topk_ids`` ``[B, L, K]`` int64 with ``-1`` in an empty
slot (a position where the teacher gave fewer than K candidates; all ``-1`` means the
position has no soft label), and ``teacher_topk_logprobs`` ``[B, L, K]`` float, the
teacher's logprobs at temperature 1 (values in empty slots are ignored).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100  # label of a position with no hard label (prompt, padding)
EMPTY_SLOT = -1  # teacher_topk_ids entry of a slot without a candidate
DIVERGENCES = ("forward_kl", "reverse_kl", "jsd")


@dataclass(frozen=True)
class LossParts:
    """One batch's loss and the parts it is made of.

    Attributes:
        total: ``alpha * hard + (1 - alpha) * soft`` (just ``hard`` without soft labels);
            the tensor to call ``backward()`` on.
        hard: cross-entropy on the hard labels, mean over labelled tokens (detached).
        soft: the ``T**2``-scaled divergence, mean over positions with a soft label
            (detached); None when the batch has no soft label.
    """

    total: torch.Tensor
    hard: torch.Tensor
    soft: torch.Tensor | None


def distillation_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    teacher_topk_ids: torch.Tensor | None = None,
    teacher_topk_logprobs: torch.Tensor | None = None,
    *,
    alpha: float,
    temperature: float,
    divergence: str,
    jsd_beta: float = 0.5,
) -> LossParts:
    """``alpha * CE + (1 - alpha) * T**2 * D(teacher || student)``.

    Args:
        logits: student logits ``[B, L, V]``, already aligned with ``labels`` (the caller
            shifts them).
        labels: ``[B, L]`` token ids; ``-100`` marks a position without a hard label.
        teacher_topk_ids: ``[B, L, K]`` candidate ids, ``-1`` in empty slots; None for
            training on hard labels only.
        teacher_topk_logprobs: ``[B, L, K]`` the teacher's logprobs (temperature 1).
        alpha: weight of the hard-label cross-entropy, in [0, 1].
        temperature: softening temperature T (> 0) of both distributions.
        divergence: ``forward_kl`` (KL(p||q)), ``reverse_kl`` (KL(q||p)) or ``jsd``.
        jsd_beta: beta of the generalised JSD (GKD), strictly between 0 and 1.

    Returns:
        The loss and its parts. Without soft labels (none given, or no labelled position
        with a candidate) ``total`` is the cross-entropy whatever ``alpha`` is.

    Raises:
        ValueError: an unknown divergence, or a setting out of range.
    """
    if divergence not in DIVERGENCES:
        raise ValueError(f"divergence {divergence!r} is not one of {', '.join(DIVERGENCES)}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    if temperature <= 0.0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if not 0.0 < jsd_beta < 1.0:
        # At 0 or 1 the mixture equals one side and the JSD is identically zero.
        raise ValueError(f"jsd_beta must be strictly between 0 and 1, got {jsd_beta}")
    if (teacher_topk_ids is None) != (teacher_topk_logprobs is None):
        raise ValueError("teacher_topk_ids and teacher_topk_logprobs go together")

    labelled = labels != IGNORE_INDEX
    hard = _cross_entropy(logits, labels, labelled)
    if teacher_topk_ids is None or teacher_topk_logprobs is None:
        return LossParts(total=hard, hard=hard.detach(), soft=None)
    slots = teacher_topk_ids != EMPTY_SLOT  # [B, L, K]
    positions = labelled & slots.any(dim=-1)  # [B, L]
    if not bool(positions.any()):
        return LossParts(total=hard, hard=hard.detach(), soft=None)

    # Gather the K candidates before selecting positions: [B, L, K] is small, [N, V] is not.
    student = logits.gather(-1, teacher_topk_ids.clamp(min=0))[positions].float()
    mask = slots[positions]
    log_p = _masked_log_softmax(teacher_topk_logprobs[positions].float() / temperature, mask)
    log_q = _masked_log_softmax(student / temperature, mask)
    per_position = _divergence(divergence, log_p=log_p, log_q=log_q, mask=mask, beta=jsd_beta)
    soft = temperature**2 * per_position.mean()
    total = alpha * hard + (1.0 - alpha) * soft
    return LossParts(total=total, hard=hard.detach(), soft=soft.detach())


def _cross_entropy(
    logits: torch.Tensor, labels: torch.Tensor, labelled: torch.Tensor
) -> torch.Tensor:
    """Mean CE over labelled tokens, in float32; 0 (not NaN) when none is labelled."""
    summed = F.cross_entropy(
        logits.float().flatten(0, -2), labels.flatten(), ignore_index=IGNORE_INDEX, reduction="sum"
    )
    return summed / labelled.sum().clamp(min=1)


def _masked_log_softmax(scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """log_softmax over the slots in ``mask``; 0 (finite) in the others.

    The 0 keeps masked slots out of every later product without an ``inf``: a ``where``
    over ``inf`` still sends NaN gradients through the branch it did not pick.
    """
    log_probs = torch.log_softmax(scores.masked_fill(~mask, float("-inf")), dim=-1)
    return torch.where(mask, log_probs, torch.zeros_like(log_probs))


def _kl(log_a: torch.Tensor, log_b: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """KL(a||b) per position from log-probabilities; masked slots add exactly 0."""
    a = torch.where(mask, log_a.exp(), torch.zeros_like(log_a))
    return (a * (log_a - log_b)).sum(dim=-1)


def _divergence(
    name: str, *, log_p: torch.Tensor, log_q: torch.Tensor, mask: torch.Tensor, beta: float
) -> torch.Tensor:
    """Per-position divergence of teacher p and student q, shape ``[N]``."""
    if name == "forward_kl":
        return _kl(log_p, log_q, mask)
    if name == "reverse_kl":
        return _kl(log_q, log_p, mask)
    # log M by logsumexp: stays finite where p or q underflows to 0 in a slot.
    log_m = torch.logsumexp(
        torch.stack([log_p + math.log(beta), log_q + math.log(1.0 - beta)]), dim=0
    )
    return beta * _kl(log_p, log_m, mask) + (1.0 - beta) * _kl(log_q, log_m, mask)
