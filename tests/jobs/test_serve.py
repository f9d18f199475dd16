"""Launch's router against real components: tiny models, the local API server, HTTP.

The router runs in this process on loopback (:class:`RouterThread`) and, once, as
``python -m distill_jobs.serve`` in a subprocess. The routing is steered the way the
operator steers it, by writing ``routing.json``; what the operator reads back is the
``/metrics`` exposition, parsed with prometheus_client as it parses it.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from distill_jobs import serve
from distill_jobs.contract import (
    ENDPOINT_FILE,
    METRIC_COMPARISONS,
    METRIC_FALLBACKS,
    METRIC_LATENCY,
    METRIC_REQUESTS,
    METRIC_REVISION,
    TEACHER_API_KEY_ENV,
    Endpoint,
    Routing,
    StageInput,
    read_model,
    read_result,
    routing_uri,
    write_model,
)
from distill_jobs.serving import Router, RouterSettings, RouterThread, open_router_teacher
from distill_jobs.serving.decisions import stable_share
from distill_jobs.serving.local import LocalModel
from distill_jobs.serving.teacher import LocalTeacher

from .conftest import SERVED_MODEL

PROJECT = "tests/router"
# Short polls and batch windows are settings of the router, not changed production code.
FAST = RouterSettings(poll_seconds=0.05, batch_window_seconds=0.002, device="cpu")
PROMPTS = [f"What is {n} plus {3 * n + 1}?" for n in range(6)]
WAIT_S = 30.0


@pytest.fixture(scope="module")
def other_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A second tiny model: other weights, the same vocabulary (a different student)."""
    from distill_jobs.tiny import build_tiny_model

    return build_tiny_model(directory=tmp_path_factory.mktemp("other") / "model", seed=1)


@pytest.fixture
def artifacts(tmp_path: Path) -> str:
    return (tmp_path / "artifacts").as_uri()


@pytest.fixture
def start_router(
    tiny_generator: Any, tiny_model_dir: Path, artifacts: str
) -> Iterator[Callable[..., RouterThread]]:
    """``start_router(teacher=None)``: a router on loopback whose teacher is the tiny
    model (shared with the session) unless another is given; stopped after the test."""
    with ExitStack() as routers:

        def start(teacher: Any = None, settings: RouterSettings = FAST) -> RouterThread:
            if teacher is None:
                model = LocalModel(
                    generator=tiny_generator,
                    name=f"hf:{tiny_model_dir}",
                    max_batch=8,
                    window_seconds=settings.batch_window_seconds,
                )
                teacher = LocalTeacher(model)
            router = Router(
                teacher=teacher,
                artifacts_uri=artifacts,
                project=PROJECT,
                settings=settings,
            )
            return routers.enter_context(RouterThread(router))

        yield start


def set_routing(artifacts: str, **fields: Any) -> Routing:
    """Write routing.json as the operator does; a bar every answer clears unless given."""
    bar = 1000.0 if fields.get("confidence_rule") == "entropy" else -1000.0
    routing = Routing(**{"confidence_threshold": bar, **fields})
    write_model(routing, routing_uri(artifacts_uri=artifacts, project=PROJECT))
    return routing


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=WAIT_S) as response:
        return json.load(response)


def post(url: str, body: bytes, headers: dict[str, str] | None = None) -> tuple[int, Any, Any]:
    """POST ``body``; returns (status, headers, JSON body), error statuses included."""
    request = urllib.request.Request(
        f"{url}/v1/chat/completions",
        data=body,
        headers={"Content-Type": "application/json", **(headers or {})},
    )
    try:
        with urllib.request.urlopen(request, timeout=WAIT_S) as response:
            return response.status, response.headers, json.load(response)
    except urllib.error.HTTPError as error:
        return error.code, error.headers, json.load(error)


def chat(url: str, text: str, *, max_tokens: int = 6, **fields: Any) -> dict[str, Any]:
    """One chat completion that must succeed."""
    headers = fields.pop("headers", None)
    body = {"model": PROJECT, "messages": [{"role": "user", "content": text}], **fields}
    status, response_headers, answer = post(
        url, json.dumps({**body, "max_tokens": max_tokens}).encode(), headers
    )
    assert status == 200, answer
    assert response_headers["X-Distill-Served-By"] == answer["distill"]["servedBy"]
    return dict(answer)


def samples(url: str) -> list[Any]:
    with urllib.request.urlopen(f"{url}/metrics", timeout=WAIT_S) as response:
        text = response.read().decode()
    return [s for family in text_string_to_metric_families(text) for s in family.samples]


def metric(url: str, name: str, **labels: str) -> float:
    """The sum of ``name``'s samples with ``labels`` (0 when there are none)."""
    return sum(
        s.value
        for s in samples(url)
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    )


def wait_for(what: Callable[[], bool], *, message: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not what():
        assert time.monotonic() < deadline, message
        time.sleep(0.02)


def wait_for_revision(url: str, revision: int) -> dict[str, Any]:
    wait_for(
        lambda: get_json(f"{url}/healthz")["revision"] == revision,
        message=f"revision {revision} never came in force",
    )
    return dict(get_json(f"{url}/healthz"))


def greedy_answer(generator: Any, text: str, *, max_tokens: int) -> str:
    """The answer Look and Iterate would record for ``text``."""
    from distill_jobs.training.measure import validation_answers

    conversation = [{"role": "user", "content": text}]
    return validation_answers(
        generator=generator, conversations=[conversation], max_new_tokens=max_tokens, batch_size=8
    )[0]


def test_before_any_routing_the_teacher_answers_in_openai_shape(
    start_router: Callable[..., RouterThread], tiny_generator: Any, tiny_model_dir: Path
) -> None:
    url = start_router().url

    answer = chat(url, PROMPTS[0], max_tokens=5)

    assert answer["object"] == "chat.completion" and answer["id"].startswith("chatcmpl-")
    assert answer["model"] == f"hf:{tiny_model_dir}"
    choice = answer["choices"][0]
    assert choice["message"]["role"] == "assistant"
    assert choice["message"]["content"] == greedy_answer(tiny_generator, PROMPTS[0], max_tokens=5)
    assert choice["finish_reason"] in ("stop", "length")
    assert answer["usage"]["completion_tokens"] <= 5 and answer["usage"]["prompt_tokens"] > 0
    assert answer["distill"] == {
        "servedBy": "teacher",
        "confidence": None,
        "fallback": False,
        "revision": 0,
    }
    assert get_json(f"{url}/v1/models")["data"][0]["id"] == PROJECT
    health = get_json(f"{url}/healthz")
    assert health["status"] == "ok" and health["mode"] == "teacher" and health["student"] is None
    assert metric(url, METRIC_REQUESTS, revision="0", served_by="teacher") == 1
    assert metric(url, METRIC_REVISION) == 0
    assert metric(url, f"{METRIC_LATENCY}_count", model="teacher") == 1


def test_full_serves_the_students_answer_as_it_was_evaluated(
    start_router: Callable[..., RouterThread], artifacts: str, other_model_dir: Path
) -> None:
    from distill_jobs.teachers.generation import LocalGenerator

    set_routing(artifacts, revision=1, mode="full", student=str(other_model_dir), student_name="s1")
    url = start_router().url
    health = wait_for_revision(url, 1)

    answers = [chat(url, text, max_tokens=7) for text in PROMPTS[:3]]

    assert health["student"] == {"name": "s1", "uri": str(other_model_dir)}
    student = LocalGenerator.load(model=str(other_model_dir), device="cpu")
    for text, answer in zip(PROMPTS[:3], answers, strict=True):
        assert answer["model"] == "s1"
        assert answer["distill"]["servedBy"] == "student" and not answer["distill"]["fallback"]
        assert answer["choices"][0]["message"]["content"] == greedy_answer(
            student, text, max_tokens=7
        )
    assert metric(url, METRIC_REQUESTS, revision="1", served_by="student") == 3
    assert metric(url, METRIC_REVISION) == 1


def test_shadow_compares_every_request_and_a_student_that_is_the_teacher_agrees(
    start_router: Callable[..., RouterThread],
    artifacts: str,
    tiny_model_dir: Path,
    other_model_dir: Path,
) -> None:
    set_routing(artifacts, revision=1, mode="shadow", student=str(tiny_model_dir))
    url = start_router().url
    wait_for_revision(url, 1)
    same = [chat(url, text) for text in PROMPTS[:3]]
    set_routing(artifacts, revision=2, mode="shadow", student=str(other_model_dir))
    wait_for_revision(url, 2)
    other = [chat(url, text) for text in PROMPTS[:3]]

    for answer in same + other:
        assert answer["distill"]["servedBy"] == "teacher"
        assert isinstance(answer["distill"]["confidence"], float)  # the student was asked
    assert metric(url, METRIC_COMPARISONS, revision="1", agree="true") == 3
    assert metric(url, METRIC_COMPARISONS, revision="1", agree="false") == 0
    # Other weights, other answers: every one compared, and they disagree.
    assert metric(url, METRIC_COMPARISONS, revision="2") == 3
    assert metric(url, METRIC_COMPARISONS, revision="2", agree="false") == 3
    assert metric(url, METRIC_REQUESTS, revision="2", served_by="teacher") == 3
    assert metric(url, METRIC_REQUESTS, revision="2", served_by="student") == 0


@pytest.mark.parametrize("rule", ["mean_logprob", "entropy"])
def test_a_request_the_student_is_unsure_of_falls_back_to_the_teacher(
    start_router: Callable[..., RouterThread], artifacts: str, other_model_dir: Path, rule: str
) -> None:
    student = {"student": str(other_model_dir), "confidence_rule": rule}
    set_routing(artifacts, revision=1, mode="shadow", **student)
    url = start_router().url
    wait_for_revision(url, 1)
    measured = {text: chat(url, text)["distill"]["confidence"] for text in PROMPTS}
    # Higher is surer for mean_logprob, lower for entropy.
    ranked = sorted(PROMPTS, key=measured.__getitem__, reverse=rule == "mean_logprob")
    sure, unsure = ranked[0], ranked[-1]
    assert measured[sure] != measured[unsure]
    threshold = (measured[sure] + measured[unsure]) / 2
    set_routing(artifacts, revision=2, mode="full", confidence_threshold=threshold, **student)
    wait_for_revision(url, 2)

    confident, fallback = chat(url, sure), chat(url, unsure)

    assert confident["distill"]["servedBy"] == "student"
    assert confident["distill"]["confidence"] == pytest.approx(measured[sure])
    assert fallback["distill"] == {
        "servedBy": "teacher",
        "confidence": pytest.approx(measured[unsure]),
        "fallback": True,
        "revision": 2,
    }
    assert fallback["model"].startswith("hf:")
    assert metric(url, METRIC_FALLBACKS, revision="2") == 1
    assert metric(url, METRIC_REQUESTS, revision="2", served_by="student") == 1
    assert metric(url, METRIC_REQUESTS, revision="2", served_by="teacher") == 1
    assert metric(url, METRIC_FALLBACKS, revision="1") == 0  # every answer cleared that bar


def test_a_canary_sends_its_share_and_the_same_request_id_always_the_same_way(
    start_router: Callable[..., RouterThread], artifacts: str, other_model_dir: Path
) -> None:
    student = str(other_model_dir)
    set_routing(artifacts, revision=1, mode="canary", percent=30, student=student, sample_rate=0)
    url = start_router().url
    wait_for_revision(url, 1)
    ids = [f"request-{n}" for n in range(40)]

    served = {
        key: chat(url, "hello", max_tokens=1, headers={"X-Request-Id": key})["distill"]["servedBy"]
        for key in ids
    }
    again = {
        key: chat(url, "hello", max_tokens=1, headers={"X-Request-Id": key})["distill"]["servedBy"]
        for key in ids[:10]
    }
    by_user = chat(url, "hello", max_tokens=1, user=ids[0], headers={"X-Request-Id": ids[1]})

    share = sum(by == "student" for by in served.values()) / len(ids)
    assert 0.15 <= share <= 0.45
    assert again == {key: served[key] for key in ids[:10]}
    assert served == {
        key: "student" if stable_share(key, purpose="canary") < 0.3 else "teacher" for key in ids
    }
    assert by_user["distill"]["servedBy"] == served[ids[0]]  # `user` wins over the header
    assert metric(url, METRIC_COMPARISONS) == 0  # sample_rate 0


def test_a_sampled_share_of_student_answers_is_compared_with_the_teacher(
    start_router: Callable[..., RouterThread], artifacts: str, tiny_model_dir: Path
) -> None:
    set_routing(artifacts, revision=1, mode="full", student=str(tiny_model_dir), sample_rate=1.0)
    url = start_router().url
    wait_for_revision(url, 1)

    for text in PROMPTS[:3]:
        assert chat(url, text)["distill"]["servedBy"] == "student"

    # Compared after the response has gone: the teacher is asked in the background.
    wait_for(
        lambda: metric(url, METRIC_COMPARISONS, revision="1", agree="true") == 3,
        message="three sampled comparisons, all agreeing (the student is the teacher)",
    )


def test_a_new_routing_is_picked_up_without_restart_and_counted_under_its_revision(
    start_router: Callable[..., RouterThread],
    artifacts: str,
    other_model_dir: Path,
    tmp_path: Path,
) -> None:
    set_routing(artifacts, revision=1, mode="teacher")
    url = start_router().url
    wait_for_revision(url, 1)
    chat(url, PROMPTS[0])
    chat(url, PROMPTS[1])
    set_routing(artifacts, revision=2, mode="full", student=str(other_model_dir))
    wait_for_revision(url, 2)
    chat(url, PROMPTS[2])

    # A student that cannot be loaded: revision 2 stays in force, and /healthz says why.
    set_routing(artifacts, revision=3, mode="full", student=str(tmp_path / "absent"))
    wait_for(
        lambda: bool(get_json(f"{url}/healthz")["problems"]),
        message="the failed load never showed in /healthz",
    )
    health = get_json(f"{url}/healthz")
    after_failure = chat(url, PROMPTS[3])
    # A rollback to the teacher is in force at once.
    set_routing(artifacts, revision=4, mode="teacher")
    wait_for_revision(url, 4)
    rolled_back = chat(url, PROMPTS[4])

    assert health["status"] == "degraded" and health["revision"] == 2
    assert health["latestRevision"] == 3 and "absent" in health["problems"][0]
    assert after_failure["distill"] == {**after_failure["distill"], "revision": 2}
    assert after_failure["distill"]["servedBy"] == "student"
    assert rolled_back["distill"]["servedBy"] == "teacher"
    assert get_json(f"{url}/healthz")["status"] == "ok"
    assert metric(url, METRIC_REQUESTS, revision="1", served_by="teacher") == 2
    assert metric(url, METRIC_REQUESTS, revision="2", served_by="student") == 2
    assert metric(url, METRIC_REQUESTS, revision="3") == 0
    assert metric(url, METRIC_REQUESTS, revision="4", served_by="teacher") == 1
    assert metric(url, METRIC_REVISION) == 4


def test_an_openai_teacher_behind_the_local_api_server_answers_and_is_compared(
    start_router: Callable[..., RouterThread],
    api_server: Any,
    artifacts: str,
    tiny_generator: Any,
    tiny_model_dir: Path,
) -> None:
    server = api_server()
    teacher = open_router_teacher(
        {"backend": "openai", "model": SERVED_MODEL, "endpoint": server.url},
        environ={TEACHER_API_KEY_ENV: "unused"},
    )
    url = start_router(teacher=teacher).url

    answers = [chat(url, PROMPTS[0], max_tokens=n) for n in (3, 6)]
    set_routing(artifacts, revision=1, mode="shadow", student=str(tiny_model_dir))
    wait_for_revision(url, 1)
    shadowed = chat(url, PROMPTS[1], max_tokens=6)

    for answer, limit in zip(answers, (3, 6), strict=True):
        assert answer["model"] == f"openai:{SERVED_MODEL}"
        assert answer["distill"]["servedBy"] == "teacher"
        assert answer["choices"][0]["message"]["content"] == greedy_answer(
            tiny_generator, PROMPTS[0], max_tokens=limit
        )  # each request's own max_tokens reaches the API
    assert shadowed["model"] == f"openai:{SERVED_MODEL}"
    assert metric(url, METRIC_COMPARISONS, revision="1", agree="true") == 1


def test_a_malformed_request_gets_400_in_openai_shape(
    start_router: Callable[..., RouterThread],
) -> None:
    url = start_router().url
    message = [{"role": "user", "content": "hi"}]
    bad = {
        "not JSON": b"{",
        "not an object": b"[1]",
        "no messages": json.dumps({"model": PROJECT}).encode(),
        "a message without a role": json.dumps({"messages": [{"content": "hi"}]}).encode(),
        "zero max_tokens": json.dumps({"messages": message, "max_tokens": 0}).encode(),
        "text max_tokens": json.dumps({"messages": message, "max_tokens": "8"}).encode(),
        "streaming": json.dumps({"messages": message, "stream": True}).encode(),
        "over the context": json.dumps({"messages": message, "max_tokens": 4000}).encode(),
    }

    for what, body in bad.items():
        status, _, answer = post(url, body)
        assert status == 400, what
        assert answer["error"]["type"] == "invalid_request_error", what
        assert answer["error"]["message"], what
    assert chat(url, "still serving")["distill"]["servedBy"] == "teacher"
    assert metric(url, METRIC_REQUESTS) == 1


def test_with_a_token_set_the_api_refuses_requests_without_it_and_probes_stay_open(
    start_router: Callable[..., RouterThread],
) -> None:
    url = start_router(settings=dataclasses.replace(FAST, token="s3cret")).url
    body = json.dumps({"model": PROJECT, "messages": [{"role": "user", "content": "hi"}]})
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret"}):
        status, response_headers, answer = post(url, body.encode(), headers)
        assert status == 401 and response_headers["WWW-Authenticate"] == "Bearer", headers
        assert answer["error"]["type"] == "invalid_request_error", answer
        assert "s3cret" not in json.dumps(answer)
    request = urllib.request.Request(f"{url}/v1/models")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=WAIT_S)
    assert refused.value.code == 401
    assert get_json(f"{url}/healthz")["status"] in ("ok", "degraded")  # the kubelet's probe
    assert metric(url, METRIC_REQUESTS) == 0, "the operator's scrape needs no token"

    status, _, answer = post(url, body.encode(), {"Authorization": "Bearer s3cret"})
    assert status == 200 and answer["distill"]["servedBy"] == "teacher"


def stage_input(
    root: Path, *, teacher: dict[str, Any], port: int = 0, max_output_tokens: int = 16
) -> StageInput:
    return StageInput(
        project=PROJECT,
        project_uid="uid-router",
        stage="Launch",
        attempt=2,
        spec={
            "teacher": teacher,
            "router": {"host": "127.0.0.1", "port": port},
            "maxOutputTokens": max_output_tokens,
        },
        artifacts_uri=(root / "artifacts").as_uri(),
    )


def test_the_workload_serves_until_sigterm_and_exits_zero(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    teacher = {"backend": "hf", "model": str(tiny_model_dir)}
    job = stage_input(tmp_path, teacher=teacher, max_output_tokens=1)
    set_routing(job.artifacts_uri, revision=1, mode="full", student=str(tiny_model_dir))
    input_path = tmp_path / "router-input.json"
    input_path.write_text(job.model_dump_json())
    endpoint_uri = f"{job.stage_dir()}/{ENDPOINT_FILE}"
    command = [sys.executable, "-m", "distill_jobs.serve", "--input", input_path.as_uri()]
    environment = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(
        [*command, "--poll-seconds", "0.05", "--device", "cpu"],
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_for(
            lambda: process.poll() is None and read_model(endpoint_uri, Endpoint) is not None,
            message="the router never wrote its endpoint",
        )
        endpoint = read_model(endpoint_uri, Endpoint)
        assert endpoint is not None and endpoint.attempt == 2
        assert endpoint.url.startswith("http://127.0.0.1:")
        wait_for_revision(endpoint.url, 1)
        answer = chat(endpoint.url, PROMPTS[0])
        longer = chat(endpoint.url, PROMPTS[0], max_tokens=64)
        unnamed = {"model": PROJECT, "messages": [{"role": "user", "content": PROMPTS[0]}]}
        _, _, trained_limit = post(endpoint.url, json.dumps(unnamed).encode())
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=WAIT_S)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert answer["distill"]["servedBy"] == "student"
    # A request naming no output limit gets Teach's (maxOutputTokens 1), not 512.
    assert longer["usage"]["completion_tokens"] > 1, "the student says more when let"
    assert trained_limit["usage"]["completion_tokens"] == 1, trained_limit
    assert process.returncode == 0, output[-4000:]
    assert read_result(job.result_uri()) is None  # a router that served writes no result


def test_a_teacher_that_cannot_be_loaded_fails_the_start_with_the_field_to_fix(
    tmp_path: Path,
) -> None:
    job = stage_input(tmp_path, teacher={"backend": "hf", "model": str(tmp_path / "absent")})
    input_path = tmp_path / "router-input.json"
    input_path.write_text(job.model_dump_json())

    assert serve.main(["--input", input_path.as_uri()]) == 1

    result = read_result(job.result_uri())
    assert result is not None and not result.exit_condition_met
    assert result.reason == "TeacherUnavailable"
    assert "spec.teacher.model" in result.message and "absent" in result.message
    assert read_model(f"{job.stage_dir()}/{ENDPOINT_FILE}", Endpoint) is None


def test_a_router_asked_for_a_token_it_did_not_get_does_not_start(
    tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DISTILL_ROUTER_TOKEN", raising=False)
    job = stage_input(tmp_path, teacher={"backend": "hf", "model": str(tiny_model_dir)})
    job.spec["router"]["tokenSecretRef"] = {"name": "router-token", "key": "token"}
    input_path = tmp_path / "router-input.json"
    input_path.write_text(job.model_dump_json())

    assert serve.main(["--input", input_path.as_uri(), "--device", "cpu"]) == 1

    result = read_result(job.result_uri())
    assert result is not None and result.reason == "RouterTokenMissing"
    assert (
        "spec.launch.router.tokenSecretRef" in result.message and "router-token" in result.message
    )
    assert read_model(f"{job.stage_dir()}/{ENDPOINT_FILE}", Endpoint) is None, "never served open"


def test_a_port_in_use_fails_the_start_with_the_field_to_fix(
    tmp_path: Path, tiny_model_dir: Path, single_torch_thread: None
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        job = stage_input(
            tmp_path, teacher={"backend": "hf", "model": str(tiny_model_dir)}, port=port
        )
        input_path = tmp_path / "router-input.json"
        input_path.write_text(job.model_dump_json())

        assert serve.main(["--input", input_path.as_uri(), "--device", "cpu"]) == 1

    result = read_result(job.result_uri())
    assert result is not None and result.reason == "RouterCannotBind"
    assert "spec.launch.router" in result.message and str(port) in result.message


def test_a_router_bound_to_every_interface_advertises_an_address_clients_can_use() -> None:
    pod = {"POD_IP": "10.1.2.3"}

    assert serve.advertised_host("127.0.0.1", environ=pod) == "127.0.0.1"
    assert serve.advertised_host("0.0.0.0", environ=pod) == "10.1.2.3"
    named = {**pod, "DISTILL_ADVERTISE_HOST": "router.svc"}
    assert serve.advertised_host("::", environ=named) == "router.svc"
    assert serve.advertised_host("0.0.0.0", environ={}) not in ("", "0.0.0.0")
    assert serve.endpoint_url("fd00::7", 8000) == "http://[fd00::7]:8000"
    assert serve.endpoint_url("10.1.2.3", 8000) == "http://10.1.2.3:8000"
