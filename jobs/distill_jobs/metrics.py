"""The quality metrics a spec's ``bar.metric`` names, each a score in [0, 1] per answer.

- ``exact_match``: equal after stripping and collapsing whitespace (case-sensitive).
- ``accuracy``: equal labels. The label of a text is the top-level ``"label"`` value when
  the text is a JSON object with that key, else its first line; either way stripped and
  case-folded (a non-string JSON value is compared as its JSON text).
- ``token_f1``: SQuAD-style token F1 over lower-cased whitespace tokens with
  punctuation removed (articles are kept).
- ``rouge_l``: F1 of the longest common subsequence of lower-cased whitespace tokens.
- ``json_validity``: 1 when the prediction parses as JSON; the reference is not used.
- ``python``: the user's ``module:function`` called with ``(prediction, reference)``,
  its result clipped to [0, 1].

For token_f1 and rouge_l two empty texts agree (1) and one empty text scores 0.
"""

from __future__ import annotations

import json
import math
import string
from collections import Counter
from collections.abc import Callable, Sequence

from distill_jobs.filters import VerifierNotFound, import_function

METRICS = (
    "exact_match",
    "accuracy",
    "token_f1",
    "rouge_l",
    "json_validity",
    "python",
)
# The metrics that compare an answer with a reference: json_validity needs none, and a
# python metric gets whatever there is (None included) and decides itself.
REFERENCE_METRICS = frozenset({"exact_match", "accuracy", "token_f1", "rouge_l"})
_PUNCTUATION = str.maketrans("", "", string.punctuation)

Scorer = Callable[[str, str | None], float]


class MetricError(ValueError):
    """A metric that cannot be computed as asked: unknown, or a bad reference or function."""


def score_one(
    *, metric: str, prediction: str, reference: str | None, function: str | None = None
) -> float:
    """One answer's score in [0, 1].

    Args:
        metric: one of :data:`METRICS`.
        prediction: the student's answer.
        reference: the expected answer (None only for metrics that need none).
        function: for ``python``, the scoring function as ``module:function``.

    Raises:
        MetricError: unknown metric, a missing reference, a python function that cannot
            be imported or fails.
    """
    return scorer(metric=metric, function=function)(prediction, reference)


def score(
    *,
    metric: str,
    predictions: Sequence[str],
    references: Sequence[str | None],
    function: str | None = None,
) -> float:
    """Mean score over answers (see :func:`score_one`).

    Raises:
        ValueError: no answers, or predictions and references of different lengths.
        MetricError: as :func:`score_one`.
    """
    if not predictions:
        raise ValueError("no predictions to score")
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
    scoring = scorer(metric=metric, function=function)  # import a python function once
    return sum(scoring(p, r) for p, r in zip(predictions, references, strict=True)) / len(
        predictions
    )


def scorer(*, metric: str, function: str | None = None) -> Scorer:
    """The ``(prediction, reference) -> float`` function of ``metric``.

    Raises:
        MetricError: as :func:`score_one` (a bad python function is found here).
    """
    if metric == "python":
        return _python_scorer(function)
    if metric == "json_validity":
        return lambda prediction, _: float(_parses_as_json(prediction))
    compare = _NEEDS_REFERENCE.get(metric)
    if compare is None:
        raise MetricError(f"unknown metric {metric!r}; known: {', '.join(METRICS)}")

    def with_reference(prediction: str, reference: str | None) -> float:
        if reference is None:
            raise MetricError(f"metric {metric} needs a reference answer, and this one has none")
        return compare(prediction, reference)

    return with_reference


def exact_match(prediction: str, reference: str) -> float:
    return float(prediction.split() == reference.split())


def accuracy(prediction: str, reference: str) -> float:
    return float(_label(prediction) == _label(reference))


def token_f1(prediction: str, reference: str) -> float:
    predicted, expected = _f1_tokens(prediction), _f1_tokens(reference)
    if not predicted or not expected:
        return float(predicted == expected)
    common = sum((Counter(predicted) & Counter(expected)).values())
    return _f1(common, len(predicted), len(expected))


def rouge_l(prediction: str, reference: str) -> float:
    predicted, expected = prediction.lower().split(), reference.lower().split()
    if not predicted or not expected:
        return float(predicted == expected)
    # LCS by dynamic programming, one row at a time.
    previous = [0] * (len(expected) + 1)
    for token in predicted:
        current = [0]
        for j, other in enumerate(expected):
            current.append(previous[j] + 1 if token == other else max(previous[j + 1], current[j]))
        previous = current
    return _f1(previous[-1], len(predicted), len(expected))


_NEEDS_REFERENCE: dict[str, Callable[[str, str], float]] = {
    "exact_match": exact_match,
    "accuracy": accuracy,
    "token_f1": token_f1,
    "rouge_l": rouge_l,
}


def _f1(common: int, predicted: int, expected: int) -> float:
    if common == 0:
        return 0.0
    precision, recall = common / predicted, common / expected
    return 2 * precision * recall / (precision + recall)


def _f1_tokens(text: str) -> list[str]:
    return text.lower().translate(_PUNCTUATION).split()


def _parses_as_json(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:  # JSONDecodeError, and the rare UnicodeDecodeError
        return False
    return True


def _label(text: str) -> str:
    try:
        parsed = json.loads(text)
    except ValueError:
        parsed = None
    if isinstance(parsed, dict) and "label" in parsed:
        value = parsed["label"]
        label = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    else:
        label = text.strip().split("\n", 1)[0]
    return label.strip().casefold()


def _python_scorer(function: str | None) -> Scorer:
    try:
        user_function = import_function(function, field=f"bar.metricFunction {function!r}")
    except VerifierNotFound as error:
        raise MetricError(str(error)) from None

    def call(prediction: str, reference: str | None) -> float:
        try:
            value = float(user_function(prediction, reference))
        except Exception as error:  # the user's code: any failure is theirs to see
            raise MetricError(
                f"bar.metricFunction {function} failed: {type(error).__name__}: {error}"
            ) from error
        if math.isnan(value):
            raise MetricError(f"bar.metricFunction {function} returned NaN")
        return min(1.0, max(0.0, value))

    return call
