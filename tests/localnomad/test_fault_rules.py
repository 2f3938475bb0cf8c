"""localnomad's fault rules (`POST /_localnomad/faults`): hold rules and prefix rules.

A hold rule runs the request and then holds its answer, so a write commits while its
caller is still waiting (and, past the caller's timeout, never learns it did). Prefix
rules keep acting before the handler: a failed request never ran. Bad rule bodies are
a 400 that names the field. localnomad only: a real Nomad has no control surface.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import nomad
import pytest
import requests
from nomad.api import exceptions as nx

from .conftest import REAL_NOMAD, LocalNomadProcess, service_job, start_localnomad, wait_until

pytestmark = [pytest.mark.localnomad_only,
              pytest.mark.skipif(bool(REAL_NOMAD), reason="uses localnomad's fault rules")]


@pytest.fixture(scope="module")
def ln(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalNomadProcess]:
    """One private localnomad for the module (its rules must not reach other tests)."""
    data = tmp_path_factory.mktemp("localnomad-faults") / "data"
    data.mkdir()
    proc = start_localnomad(data)
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture
def url(ln: LocalNomadProcess) -> Iterator[str]:
    yield ln.url
    requests.delete(f"{ln.url}/_localnomad/faults", timeout=5).raise_for_status()


def add_rule(url: str, **rule: Any) -> requests.Response:
    return requests.post(f"{url}/_localnomad/faults", json=rule, timeout=5)


def job(url: str, job_id: str) -> dict[str, Any]:
    resp = requests.get(f"{url}/v1/job/{job_id}", timeout=5)
    resp.raise_for_status()
    return resp.json()  # type: ignore[no-any-return]


def register(url: str, job_id: str, release: str, timeout: float = 10) -> requests.Response:
    return requests.post(f"{url}/v1/job/{job_id}", timeout=timeout,
                         json={"Job": service_job(job_id, count=1, version_tag=release)})


def committed(url: str, job_id: str, release: str) -> bool:
    return bool(job(url, job_id)["Meta"]["release"] == release)


def test_held_register_commits_before_its_answer(url: str, job_id: str) -> None:
    register(url, job_id, "1").raise_for_status()
    assert add_rule(url, path=f"/v1/job/{job_id}", method="POST", respond_after_ms=3000,
                    times=1).json() == {"Faults": 1}
    # The plan of the same job is another path: answered at once, not held.
    started = time.monotonic()
    plan = requests.post(f"{url}/v1/job/{job_id}/plan", timeout=10,
                         json={"Job": service_job(job_id, count=1, version_tag="2"),
                               "Diff": True})
    assert plan.status_code == 200 and time.monotonic() - started < 1.0
    assert plan.json()["Diff"]["Type"] == "Edited"

    with ThreadPoolExecutor(1) as pool:
        started = time.monotonic()
        answer: Future[requests.Response] = pool.submit(register, url, job_id, "2")
        wait_until(lambda: committed(url, job_id, "2"), timeout=5, what="v2 committed")
        seen_after = time.monotonic() - started
        # The new version is stored and readable while its writer still waits.
        assert not answer.done(), f"answer already arrived after {seen_after:.2f}s"
        current = job(url, job_id)
        assert current["Version"] == 1
        versions = requests.get(f"{url}/v1/job/{job_id}/versions", timeout=5).json()
        assert [v["Version"] for v in versions["Versions"]] == [1, 0]
        resp = answer.result(timeout=10)
        assert time.monotonic() - started >= 3.0
    assert resp.status_code == 200
    assert resp.json()["JobModifyIndex"] == current["JobModifyIndex"]
    # `times: 1` is used up: the next register is answered at once.
    started = time.monotonic()
    register(url, job_id, "3").raise_for_status()
    assert time.monotonic() - started < 1.0


def test_answer_held_past_the_client_timeout_is_an_unknown_outcome(
        url: str, job_id: str) -> None:
    client = nomad.Nomad(host="127.0.0.1", port=int(url.rsplit(":", 1)[1]), timeout=0.5)
    client.job.register_job(job_id, {"Job": service_job(job_id, count=1, version_tag="1")})
    add_rule(url, path=f"/v1/job/{job_id}", method="POST",
             respond_after_ms=2000).raise_for_status()
    with pytest.raises(nx.BaseNomadException) as exc:
        client.job.register_job(job_id, {"Job": service_job(job_id, count=1, version_tag="2")})
    # python-nomad wraps the requests exception: a read timeout, not a refusal.
    assert isinstance(exc.value.nomad_resp, requests.Timeout), exc.value
    # The caller gave up, yet the write happened: a second version, once.
    assert committed(url, job_id, "2")
    assert job(url, job_id)["Version"] == 1
    # Reads of the same path (GET) are not held by a POST rule.
    started = time.monotonic()
    client.job.get_job(job_id)
    assert time.monotonic() - started < 0.5


def test_dropped_answer_resets_the_connection_after_the_commit(url: str, job_id: str) -> None:
    register(url, job_id, "1").raise_for_status()
    add_rule(url, path=f"/v1/job/{job_id}", method="post", respond_after_ms=300,
             drop=True).raise_for_status()
    started = time.monotonic()
    with pytest.raises(requests.ConnectionError):
        register(url, job_id, "2")
    assert time.monotonic() - started >= 0.3
    assert committed(url, job_id, "2")
    assert job(url, job_id)["Version"] == 1


def test_prefix_rules_act_before_the_handler(url: str, job_id: str) -> None:
    register(url, job_id, "1").raise_for_status()
    # A prefix matches the register and its plan alike; a failed request never ran.
    add_rule(url, prefix=f"/v1/job/{job_id}", method="POST", fail_next=2,
             status=500).raise_for_status()
    plan = requests.post(f"{url}/v1/job/{job_id}/plan", timeout=10,
                         json={"Job": service_job(job_id, count=1, version_tag="2")})
    assert (plan.status_code, plan.text) == (500, "localnomad: injected fault")
    failed = register(url, job_id, "2")
    assert (failed.status_code, failed.text) == (500, "localnomad: injected fault")
    assert committed(url, job_id, "1") and job(url, job_id)["Version"] == 0
    assert register(url, job_id, "2").status_code == 200
    assert job(url, job_id)["Version"] == 1
    # Latency comes before the handler: nothing is written while the request waits.
    add_rule(url, prefix=f"/v1/job/{job_id}", method="POST",
             latency_ms=800).raise_for_status()
    with ThreadPoolExecutor(1) as pool:
        started = time.monotonic()
        answer = pool.submit(register, url, job_id, "3")
        while time.monotonic() - started < 0.6:
            assert committed(url, job_id, "2")
        assert answer.result(timeout=10).status_code == 200
        assert time.monotonic() - started >= 0.8
    assert committed(url, job_id, "3")


@pytest.mark.parametrize(("body", "field"), [
    ({"path": "/v1/job/x"}, "respond_after_ms"),
    ({"path": "v1/job/x", "respond_after_ms": 10}, "path"),
    ({"path": "/v1/job/x", "respond_after_ms": "soon"}, "respond_after_ms"),
    ({"path": "/v1/job/x", "respond_after_ms": -1}, "respond_after_ms"),
    ({"path": "/v1/job/x", "respond_after_ms": 10, "fail_next": 1}, "fail_next"),
    ({"path": "/v1/job/x", "respond_after_ms": 10, "drop": "yes"}, "drop"),
    ({"path": "/v1/job/x", "respond_after_ms": 10, "times": 0}, "times"),
    ({"path": "/v1/job/x", "respond_after": 10}, "respond_after"),
    ({"respond_after_ms": 10}, "respond_after_ms"),
    ({"prefix": "/v1/", "drop": True}, "drop"),
    ({"prefix": "/v1/", "fail_next": -1}, "fail_next"),
    ({"prefix": "/v1/", "fail_next": "2"}, "fail_next"),
    ({"status": 42}, "status"),
    ({"latency_ms": -5}, "latency_ms"),
    ({"method": 5}, "method"),
    ({"prefix": "/_localnomad/"}, "prefix"),
])
def test_bad_rules_are_a_400_naming_the_field(url: str, body: dict[str, Any],
                                              field: str) -> None:
    resp = add_rule(url, **body)
    assert resp.status_code == 400, resp.text
    assert f"field {field!r}" in resp.text, resp.text
    # Nothing was added.
    assert add_rule(url, prefix="/v1/none").json() == {"Faults": 1}
