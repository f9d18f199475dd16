"""``python -m distill_operator``: the command line as kopf.operator's keyword arguments."""

from __future__ import annotations

import socket
import subprocess
import sys

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


def test_metrics_are_served_only_when_asked_and_logs_are_text_unless_asked() -> None:
    defaults = parse_args([])
    assert defaults.metrics_address is None and defaults.log_format == "text"
    chart = parse_args(["--metrics-address", "0.0.0.0:8081", "--log-format", "json"])
    assert chart.metrics_address == ("0.0.0.0", 8081) and chart.log_format == "json"
    assert parse_args(["--metrics-address", "[::]:9000"]).metrics_address == ("::", 9000)
    assert parse_args(["--metrics-address", ""]).metrics_address is None


@pytest.mark.parametrize(
    "argv",
    [
        ["--metrics-address", "8081"],
        ["--metrics-address", "0.0.0.0:http"],
        ["--metrics-address", "0.0.0.0:70000"],
        ["--metrics-address", ":8081"],
        ["--log-format", "yaml"],
    ],
)
def test_bad_metrics_addresses_and_log_formats_are_refused_by_name(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        parse_args(argv)
    assert argv[0] in capsys.readouterr().err


def test_a_metrics_port_already_in_use_stops_the_operator_with_one_clear_line() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "distill_operator", "--metrics-address", f"127.0.0.1:{port}"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert result.returncode == 1
    assert result.stderr.strip().startswith(
        f"distill-operator: cannot serve metrics on 127.0.0.1:{port}:"
    )
    assert "Traceback" not in result.stderr
