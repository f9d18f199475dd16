"""``python -m distill_operator``: the command line as kopf.operator's keyword arguments."""

from __future__ import annotations

import pytest

from distill_operator.__main__ import MAX_PRIORITY, operator_kwargs, parse_args

LIVENESS = "http://0.0.0.0:8080/healthz"


def kwargs_for(*argv: str) -> dict[str, object]:
    return operator_kwargs(parse_args(list(argv)))


def test_no_flags_run_cluster_wide_and_standalone() -> None:
    kwargs = kwargs_for()
    assert kwargs == {
        "clusterwide": True,
        "namespaces": [],
        "standalone": True,
        "peering_name": None,
        "liveness_endpoint": None,
    }
    assert kwargs_for("--all-namespaces", "--standalone") == kwargs


def test_namespaces_turn_off_cluster_scanning() -> None:
    kwargs = kwargs_for("-n", "team-a", "--namespace", "team-b", "--liveness", LIVENESS)
    settings = kwargs.pop("settings")
    assert settings.scanning.disabled is True  # type: ignore[attr-defined]
    assert kwargs == {
        "clusterwide": False,
        "namespaces": ["team-a", "team-b"],
        "standalone": True,
        "peering_name": None,
        "liveness_endpoint": LIVENESS,
    }


def test_peering_names_the_peering_and_draws_a_priority() -> None:
    kwargs = kwargs_for("-A", "--peering", "distill-operator", "--liveness", LIVENESS)
    priority = kwargs.pop("priority")
    assert isinstance(priority, int) and 0 <= priority <= MAX_PRIORITY
    assert kwargs == {
        "clusterwide": True,
        "namespaces": [],
        "standalone": False,
        "peering_name": "distill-operator",
        "liveness_endpoint": LIVENESS,
    }
    assert kwargs_for("--peering", "p", "--priority", "7")["priority"] == 7


@pytest.mark.parametrize(
    "argv",
    [
        ["--peering", "p", "--standalone"],
        ["--all-namespaces", "--namespace", "a"],
        ["--peering"],
    ],
)
def test_conflicting_or_incomplete_flags_are_refused(argv: list[str]) -> None:
    with pytest.raises(SystemExit):
        parse_args(argv)
