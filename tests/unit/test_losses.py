"""The distillation loss against values worked out by hand with plain ``math``."""

from __future__ import annotations

import math

import pytest
import torch

from distill_jobs.training.losses import DIVERGENCES, distillation_loss

# One position, V=4: student logits, its hard label, and the teacher's top-3.
STUDENT = [1.0, 2.0, 0.5, -1.0]
LABEL = 1
TOP_IDS = [1, 0, 2]
TOP_LOGPROBS = [-0.5, -1.5, -2.5]  # at temperature 1; the top-3 need not sum to 1
# A small KL is a difference of logs near 1: float32 keeps about 4 significant digits.
SOFT_REL = 1e-4


def softmax(values: list[float]) -> list[float]:
    exps = [math.exp(v) for v in values]
    return [e / sum(exps) for e in exps]


def kl(a: list[float], b: list[float]) -> float:
    return sum(x * math.log(x / y) for x, y in zip(a, b, strict=True) if x > 0)


def hand_cross_entropy(logits: list[float], label: int) -> float:
    return -math.log(softmax(logits)[label])


def hand_p_q(temperature: float) -> tuple[list[float], list[float]]:
    """Teacher p and student q on the teacher's top-3, each renormalised there."""
    p = softmax([lp / temperature for lp in TOP_LOGPROBS])
    q = softmax([STUDENT[i] / temperature for i in TOP_IDS])
    return p, q


def hand_divergence(name: str, temperature: float, beta: float = 0.5) -> float:
    p, q = hand_p_q(temperature)
    if name == "forward_kl":
        return kl(p, q)
    if name == "reverse_kl":
        return kl(q, p)
    m = [beta * x + (1 - beta) * y for x, y in zip(p, q, strict=True)]
    return beta * kl(p, m) + (1 - beta) * kl(q, m)


def one_position(
    *, ids: list[int] = TOP_IDS, logprobs: list[float] = TOP_LOGPROBS, label: int = LABEL
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    return (
        torch.tensor([[STUDENT]], requires_grad=True),
        torch.tensor([[label]]),
        torch.tensor([[ids]]),
        torch.tensor([[logprobs]]),
    )


def test_cross_entropy_alone_matches_hand_value_and_skips_prompt_tokens() -> None:
    logits = torch.tensor([[STUDENT, [3.0, 0.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0]]])
    labels = torch.tensor([[-100, 1, 2]])  # the first position is prompt
    parts = distillation_loss(logits, labels, alpha=0.3, temperature=2.0, divergence="jsd")
    expected = (
        hand_cross_entropy([3.0, 0.0, 0.0, 0.0], 1) + hand_cross_entropy([0.0, 0.0, 1.0, 0.0], 2)
    ) / 2
    assert parts.total.item() == pytest.approx(expected, rel=1e-6)
    assert parts.hard.item() == pytest.approx(expected, rel=1e-6)
    assert parts.soft is None


@pytest.mark.parametrize("divergence", ["forward_kl", "reverse_kl", "jsd"])
def test_soft_term_is_t_squared_times_hand_divergence(divergence: str) -> None:
    logits, labels, ids, logprobs = one_position()
    parts = distillation_loss(
        logits, labels, ids, logprobs, alpha=0.0, temperature=2.0, divergence=divergence
    )
    expected = 4.0 * hand_divergence(divergence, 2.0)
    assert expected > 1e-3  # the example is not trivially zero
    assert parts.soft is not None
    assert parts.soft.item() == pytest.approx(expected, rel=SOFT_REL)
    assert parts.total.item() == pytest.approx(expected, rel=SOFT_REL)  # alpha 0: soft only


def test_jsd_uses_beta_as_the_teacher_weight() -> None:
    logits, labels, ids, logprobs = one_position()
    parts = distillation_loss(
        logits, labels, ids, logprobs, alpha=0.0, temperature=1.0, divergence="jsd", jsd_beta=0.2
    )
    expected = hand_divergence("jsd", 1.0, beta=0.2)
    assert expected != pytest.approx(hand_divergence("jsd", 1.0, beta=0.8), rel=1e-3)
    assert parts.total.item() == pytest.approx(expected, rel=SOFT_REL)


def test_alpha_mixes_cross_entropy_and_soft_term() -> None:
    logits, labels, ids, logprobs = one_position()
    parts = distillation_loss(
        logits, labels, ids, logprobs, alpha=0.25, temperature=3.0, divergence="forward_kl"
    )
    hard = hand_cross_entropy(STUDENT, LABEL)
    soft = 9.0 * hand_divergence("forward_kl", 3.0)
    assert parts.hard.item() == pytest.approx(hard, rel=1e-6)
    assert parts.soft is not None and parts.soft.item() == pytest.approx(soft, rel=SOFT_REL)
    assert parts.total.item() == pytest.approx(0.25 * hard + 0.75 * soft, rel=SOFT_REL)


def test_alpha_one_is_exactly_the_cross_entropy_even_with_soft_labels() -> None:
    logits, labels, ids, logprobs = one_position()
    parts = distillation_loss(
        logits, labels, ids, logprobs, alpha=1.0, temperature=2.0, divergence="reverse_kl"
    )
    assert parts.total.item() == parts.hard.item()
    assert parts.total.item() == pytest.approx(hand_cross_entropy(STUDENT, LABEL), rel=1e-6)


def test_empty_slots_are_left_out_of_both_distributions() -> None:
    # Two real candidates; the empty slot carries garbage that must not count.
    logits, labels, ids, logprobs = one_position(ids=[1, -1, 0], logprobs=[-0.5, 50.0, -1.5])
    parts = distillation_loss(
        logits, labels, ids, logprobs, alpha=0.0, temperature=1.0, divergence="forward_kl"
    )
    p = softmax([-0.5, -1.5])
    q = softmax([STUDENT[1], STUDENT[0]])
    assert parts.total.item() == pytest.approx(kl(p, q), rel=SOFT_REL)


def test_soft_mean_counts_only_labelled_positions_with_candidates() -> None:
    logits = torch.tensor([[[9.0, -9.0, 0.0, 0.0], STUDENT, [0.0, 5.0, 0.0, -5.0]]])
    labels = torch.tensor([[-100, LABEL, 3]])
    ids = torch.tensor([[[1, 3, 2], TOP_IDS, [-1, -1, -1]]])  # prompt / soft / hard only
    logprobs = torch.tensor([[[-0.1, -3.0, -4.0], TOP_LOGPROBS, [0.0, 0.0, 0.0]]])
    parts = distillation_loss(
        logits, labels, ids, logprobs, alpha=0.0, temperature=1.0, divergence="reverse_kl"
    )
    assert parts.soft is not None
    assert parts.soft.item() == pytest.approx(hand_divergence("reverse_kl", 1.0), rel=SOFT_REL)


@pytest.mark.parametrize("with_ids", [False, True])
def test_without_soft_labels_the_loss_is_cross_entropy_whatever_alpha(with_ids: bool) -> None:
    logits, labels, ids, logprobs = one_position(ids=[-1, -1, -1])
    parts = distillation_loss(
        logits,
        labels,
        ids if with_ids else None,
        logprobs if with_ids else None,
        alpha=0.0,
        temperature=2.0,
        divergence="forward_kl",
    )
    assert parts.soft is None
    assert parts.total.item() == pytest.approx(hand_cross_entropy(STUDENT, LABEL), rel=1e-6)


@pytest.mark.parametrize("divergence", DIVERGENCES)
def test_gradients_are_finite_with_empty_slots(divergence: str) -> None:
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 8, requires_grad=True)
    labels = torch.tensor([[-100, 2, 5], [1, -100, 7]])
    ids = torch.tensor(
        [
            [[0, 1, 2], [2, -1, -1], [5, 4, -1]],
            [[1, 7, 3], [-1, -1, -1], [-1, -1, -1]],
        ]
    )
    logprobs = torch.full((2, 3, 3), float("nan"))  # empty slots hold garbage
    logprobs[ids >= 0] = -torch.rand(int((ids >= 0).sum())) * 3
    parts = distillation_loss(
        logits, labels, ids, logprobs, alpha=0.5, temperature=2.0, divergence=divergence
    )
    parts.total.backward()
    assert parts.soft is not None and torch.isfinite(parts.soft)
    assert logits.grad is not None and torch.isfinite(logits.grad).all()
    assert logits.grad.abs().sum() > 0


@pytest.mark.parametrize("divergence", DIVERGENCES)
def test_teacher_equal_to_student_gives_zero_divergence(divergence: str) -> None:
    # The teacher's full-vocabulary logprobs at the student's own logits: renormalised on
    # the top-3 they are exactly the student's q.
    full = torch.log_softmax(torch.tensor(STUDENT), dim=-1)
    logits, labels, ids, logprobs = one_position(logprobs=full[TOP_IDS].tolist())
    parts = distillation_loss(
        logits, labels, ids, logprobs, alpha=0.0, temperature=1.0, divergence=divergence
    )
    assert parts.soft is not None
    assert parts.soft.item() == pytest.approx(0.0, abs=1e-6)


def test_bf16_logits_under_autocast_give_float32_soft_term() -> None:
    logits, labels, ids, logprobs = one_position()  # STUDENT is exact in bfloat16
    with torch.autocast("cpu", dtype=torch.bfloat16):
        parts = distillation_loss(
            logits.detach().bfloat16(),
            labels,
            ids,
            logprobs.bfloat16(),
            alpha=0.0,
            temperature=2.0,
            divergence="forward_kl",
        )
    assert parts.soft is not None and parts.soft.dtype == torch.float32
    # TOP_LOGPROBS are exact in bfloat16 too, so only float32 rounding remains.
    assert parts.soft.item() == pytest.approx(
        4.0 * hand_divergence("forward_kl", 2.0), rel=SOFT_REL
    )


def test_batch_with_no_labelled_token_gives_zero_not_nan() -> None:
    logits, _, _, _ = one_position()
    parts = distillation_loss(
        logits, torch.tensor([[-100]]), alpha=1.0, temperature=1.0, divergence="jsd"
    )
    assert parts.total.item() == 0.0


def test_unknown_divergence_names_the_allowed_ones() -> None:
    logits, labels, _, _ = one_position()
    with pytest.raises(ValueError, match="forward_kl, reverse_kl, jsd"):
        distillation_loss(logits, labels, alpha=0.5, temperature=1.0, divergence="kl")


@pytest.mark.parametrize(
    "settings",
    [
        {"alpha": 1.5, "temperature": 1.0},
        {"alpha": 0.5, "temperature": 0.0},
        {"alpha": 0.5, "temperature": 1.0, "jsd_beta": 0.0},
    ],
)
def test_settings_out_of_range_are_refused(settings: dict[str, float]) -> None:
    logits, labels, _, _ = one_position()
    with pytest.raises(ValueError):
        distillation_loss(logits, labels, divergence="jsd", **settings)
