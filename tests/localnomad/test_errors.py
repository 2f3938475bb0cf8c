"""Contract: bad input gets Nomad's status code and a plain-text body; the server keeps serving."""

from __future__ import annotations

import json

import nomad
import pytest
import requests
from nomad.api import exceptions as nx

from .conftest import REAL_NOMAD, service_job


def post(url: str, path: str, data: bytes | str, method: str = "POST") -> requests.Response:
    return requests.request(method, f"{url}{path}", data=data, timeout=10,
                            headers={"Content-Type": "application/json"})


def assert_plain(resp: requests.Response, status: int, text: str, prefix: bool = False) -> None:
    assert resp.status_code == status, resp.text
    assert resp.headers["Content-Type"].startswith("text/plain")
    if prefix:
        assert resp.text.startswith(text), resp.text
    else:
        assert resp.text == text


def test_malformed_and_shapeless_bodies(nomad_url: str, job_id: str) -> None:
    assert post(nomad_url, "/v1/jobs", b'{"Job": {"ID": ').status_code == 400
    assert_plain(post(nomad_url, "/v1/jobs", b""), 400, "Request body is empty")
    assert_plain(post(nomad_url, "/v1/jobs", b'{"ID": "x", "TaskGroups": []}'), 400,
                 "Job must be specified")
    assert_plain(post(nomad_url, "/v1/jobs", b'{"Job": {"Name": "x"}}'), 400,
                 "Job ID hasn't been provided")
    bad_type = post(nomad_url, "/v1/jobs", b'{"Job": {"ID": "x", "Priority": "high"}}')
    assert bad_type.status_code == 400 and "cannot unmarshal string" in bad_type.text
    body = json.dumps({"Job": service_job(job_id)})
    assert_plain(post(nomad_url, "/v1/job/other-name", body), 400, "Job ID does not match name")
    assert_plain(post(nomad_url, "/v1/jobs", b'{"Job": {"ID": "x"}}'), 500,
                 "1 error occurred:\n\t* Missing job task groups\n\n")


def test_unknown_objects(client: nomad.Nomad, nomad_url: str) -> None:
    with pytest.raises(nx.URLNotFoundNomadException) as exc:
        client.job.get_job("no-such-job")
    assert exc.value.nomad_resp.text == "job not found"
    assert_plain(requests.get(f"{nomad_url}/v1/job/no-such-job/versions", timeout=5), 404,
                 "job versions not found")
    assert client.job.get_deployment("no-such-job") is None
    assert client.job.get_allocations("no-such-job") == []
    missing = "00000000-0000-0000-0000-000000000000"
    assert_plain(requests.get(f"{nomad_url}/v1/deployment/{missing}", timeout=5), 404,
                 "deployment not found")
    assert_plain(requests.get(f"{nomad_url}/v1/evaluation/{missing}", timeout=5), 404,
                 "eval not found")
    with pytest.raises(nx.BaseNomadException) as exc:
        client.deployment.fail_deployment(missing)
    assert exc.value.nomad_resp.status_code == 500
    assert exc.value.nomad_resp.text == "deployment not found"
    resp = post(nomad_url, f"/v1/deployment/pause/{missing}", b'{"Pause": true}')
    assert_plain(resp, 400, "DeploymentID must be specified")
    resp = post(nomad_url, f"/v1/deployment/pause/{missing}",
                b'{"DeploymentID": "abc", "Pause": true}')
    assert_plain(resp, 400, "Deployment ID does not match")


def test_wrong_verb_and_cas_and_server_keeps_serving(client: nomad.Nomad, nomad_url: str,
                                                     job_id: str) -> None:
    resp = requests.delete(f"{nomad_url}/v1/jobs", timeout=5)
    assert_plain(resp, 405, "Invalid method")
    client.jobs.register_job({"Job": service_job(job_id, count=1)})
    with pytest.raises(nx.BaseNomadException) as exc:
        client.jobs.register_job({"Job": service_job(job_id, count=1), "EnforceIndex": True,
                                  "JobModifyIndex": 1})
    assert exc.value.nomad_resp.status_code == 500
    assert exc.value.nomad_resp.text.startswith("Enforcing job modify index 1: job exists "
                                                "with conflicting job modify index: ")
    assert requests.get(f"{nomad_url}/v1/status/leader", timeout=5).json()
    client.job.deregister_job(job_id, purge=True)


@pytest.mark.skipif(bool(REAL_NOMAD), reason="localnomad's body limit")
def test_oversized_body(nomad_url: str) -> None:
    big = b'{"Job": {"ID": "big", "Meta": {"x": "' + b"a" * (17 * 1024 * 1024) + b'"}}}'
    assert_plain(post(nomad_url, "/v1/jobs", big), 413, "http: request body too large")
    assert requests.get(f"{nomad_url}/v1/status/leader", timeout=5).status_code == 200


def test_case_insensitive_keys_and_unknown_keys(client: nomad.Nomad, nomad_url: str,
                                                job_id: str) -> None:
    body = (f'{{"job": {{"id": "{job_id}", "type": "service", "NoSuchField": 1, "taskgroups": '
            '[{"name": "g", "count": 1, "tasks": [{"name": "t", "driver": "docker", '
            '"config": {"image": "x:1", "Keep_Case": true}, "env": {"lower_key": "v"}}]}]}}')
    resp = post(nomad_url, "/v1/jobs", body)
    assert resp.status_code == 200, resp.text
    job = client.job.get_job(job_id)
    task = job["TaskGroups"][0]["Tasks"][0]
    assert task["Config"] == {"image": "x:1", "Keep_Case": True}
    assert task["Env"] == {"lower_key": "v"}
    assert "NoSuchField" not in job
    client.job.deregister_job(job_id, purge=True)


def test_status_agent_nodes(client: nomad.Nomad, nomad_url: str) -> None:
    assert requests.get(f"{nomad_url}/v1/status/leader", timeout=5).json()
    assert requests.get(f"{nomad_url}/v1/status/peers", timeout=5).json()
    assert client.agent.get_agent()["config"]["Region"]
    nodes = client.nodes.get_nodes()
    assert nodes and nodes[0]["Status"] == "ready"
    node = client.node.get_node(nodes[0]["ID"])
    assert node["Drivers"]["docker"]["Healthy"] is True


def test_allocation_pagination(client: nomad.Nomad, nomad_url: str, job_id: str) -> None:
    client.jobs.register_job({"Job": service_job(job_id, count=3)})
    prefix_allocs = sorted(client.job.get_allocations(job_id), key=lambda a: a["CreateIndex"])
    assert len(prefix_allocs) == 3
    seen: list[str] = []
    token = ""
    for _ in range(10):
        params = {"per_page": "2", "filter": f'JobID == "{job_id}"'}
        if token:
            params["next_token"] = token
        resp = requests.get(f"{nomad_url}/v1/allocations", params=params, timeout=5)
        seen += [a["ID"] for a in resp.json()]
        token = resp.headers.get("X-Nomad-NextToken", "")
        if not token:
            break
    assert sorted(seen) == sorted(a["ID"] for a in prefix_allocs)
    assert len(seen) == 3
    client.job.deregister_job(job_id, purge=True)
