"""The bar's quality metrics against values worked out by hand."""

from __future__ import annotations

import pytest

from distill_jobs.metrics import METRICS, MetricError, score, score_one

# Used as python metrics through their module:function references.
THIS_MODULE = __name__
NOT_CALLABLE = 0.5


def length_ratio(prediction: str, reference: str | None) -> float:
    return len(prediction) / len(reference or "x")


def raises_on_everything(prediction: str, reference: str | None) -> float:
    raise RuntimeError("scorer is broken")


@pytest.mark.parametrize(
    ("prediction", "reference", "expected"),
    [
        ("  42 \n", "42", 1.0),
        ("a  b\n\tc", "a b c", 1.0),
        ("Paris", "paris", 0.0),  # case-sensitive
        ("42.", "42", 0.0),
    ],
)
def test_exact_match_ignores_only_whitespace(
    prediction: str, reference: str, expected: float
) -> None:
    assert score_one(metric="exact_match", prediction=prediction, reference=reference) == expected


@pytest.mark.parametrize(
    ("prediction", "reference", "expected"),
    [
        ('{"label": "Positive", "why": "upbeat"}', "positive", 1.0),
        ("Negative\nbecause the review complains", " NEGATIVE ", 1.0),
        ('{"label": 1}', "1", 1.0),  # a non-string label compares as its JSON text
        ('{"label": "spam"}', '{"label": "ham"}', 0.0),
        ("positive", "negative", 0.0),
        ('{"sentiment": "positive"}\nmore', "positive", 0.0),  # no label key: first line
    ],
)
def test_accuracy_compares_labels(prediction: str, reference: str, expected: float) -> None:
    assert score_one(metric="accuracy", prediction=prediction, reference=reference) == expected


@pytest.mark.parametrize(
    ("prediction", "reference", "expected"),
    [
        ("the cat sat", "the cat", 0.8),  # P 2/3, R 1
        ("The cat, sat!", "the cat", 0.8),  # case and punctuation do not count
        ("a a a", "a", 0.5),  # P 1/3, R 1: repeats count once per match
        ("dog", "the cat", 0.0),
        ("", "", 1.0),
        ("", "cat", 0.0),
    ],
)
def test_token_f1(prediction: str, reference: str, expected: float) -> None:
    assert score_one(metric="token_f1", prediction=prediction, reference=reference) == (
        pytest.approx(expected)
    )


@pytest.mark.parametrize(
    ("prediction", "reference", "expected"),
    [
        # LCS "the cat on mat" = 4 of 6 and 6: P = R = 2/3.
        ("the cat sat on the mat", "the cat lay on a mat", 2 / 3),
        # LCS "a c" = 2: P 2/4, R 2/3, F1 = 4/7.
        ("a b c d", "a c e", 4 / 7),
        # Order matters (token F1 would give 1): LCS 1 of 2 and 2.
        ("c a", "a c", 0.5),
        ("The Cat", "the cat", 1.0),
        ("", "x", 0.0),
    ],
)
def test_rouge_l(prediction: str, reference: str, expected: float) -> None:
    assert score_one(metric="rouge_l", prediction=prediction, reference=reference) == (
        pytest.approx(expected)
    )


@pytest.mark.parametrize(
    ("prediction", "expected"),
    [('{"a": [1, 2]}', 1.0), (" 3 ", 1.0), ('{"a": ', 0.0), ("{'a': 1}", 0.0), ("", 0.0)],
)
def test_json_validity_needs_no_reference(prediction: str, expected: float) -> None:
    assert score_one(metric="json_validity", prediction=prediction, reference=None) == expected


def test_python_metric_calls_the_function_and_clips_to_unit_interval() -> None:
    function = f"{THIS_MODULE}:length_ratio"
    assert score_one(metric="python", prediction="ab", reference="abcd", function=function) == 0.5
    assert score_one(metric="python", prediction="abcd", reference="a", function=function) == 1.0


@pytest.mark.parametrize(
    "function",
    [
        "no_such_module_for_metrics:score",
        f"{THIS_MODULE}:no_such_function",
        f"{THIS_MODULE}:NOT_CALLABLE",
        "not a reference",
        None,
    ],
)
def test_python_metric_with_a_bad_reference_names_it(function: str | None) -> None:
    with pytest.raises(MetricError, match=r"bar\.metricFunction") as raised:
        score_one(metric="python", prediction="a", reference="a", function=function)
    assert str(function) in str(raised.value)


def test_python_metric_that_raises_is_a_metric_error() -> None:
    with pytest.raises(MetricError, match="scorer is broken"):
        score_one(
            metric="python",
            prediction="a",
            reference="a",
            function=f"{THIS_MODULE}:raises_on_everything",
        )


def test_llm_judge_is_not_a_metric_yet() -> None:
    with pytest.raises(MetricError, match="unknown metric"):
        score_one(metric="llm_judge", prediction="a", reference="a")


def test_unknown_metric_lists_the_known_ones() -> None:
    with pytest.raises(MetricError, match="exact_match, accuracy, token_f1") as raised:
        score_one(metric="bleu", prediction="a", reference="a")
    assert all(name in str(raised.value) for name in METRICS)


@pytest.mark.parametrize("metric", ["exact_match", "accuracy", "token_f1", "rouge_l"])
def test_metric_that_needs_a_reference_refuses_none(metric: str) -> None:
    with pytest.raises(MetricError, match="needs a reference"):
        score_one(metric=metric, prediction="a", reference=None)


def test_metric_error_is_a_value_error() -> None:
    assert issubclass(MetricError, ValueError)


def test_score_is_the_mean_over_answers() -> None:
    mean = score(
        metric="exact_match",
        predictions=["1", "2", " 3 ", "4"],
        references=["1", "3", "3", "5"],
    )
    assert mean == 0.5


def test_score_of_nothing_is_refused() -> None:
    with pytest.raises(ValueError, match="no predictions"):
        score(metric="exact_match", predictions=[], references=[])


def test_score_refuses_mismatched_lengths() -> None:
    with pytest.raises(ValueError, match="2 predictions but 1 references"):
        score(metric="exact_match", predictions=["a", "b"], references=["a"])
