"""Unit tests of localnomad's pure pieces: durations, decoding, templates, filters, diffs."""

from __future__ import annotations

import pytest

from devstack.localnomad import templates, wire
from devstack.localnomad.bexpr import FilterError, compile_filter
from devstack.localnomad.canonicalize import canonicalize_job, spec_key
from devstack.localnomad.durations import format_go_duration, parse_go_duration
from devstack.localnomad.validation import multierror


@pytest.mark.parametrize(("ns", "text"), [
    (0, "0s"), (200_000_000, "200ms"), (10_000_000_000, "10s"), (300_000_000_000, "5m0s"),
    (3_600_000_000_000, "1h0m0s"), (1_500_000_000, "1.5s"), (90_000_000_000, "1m30s"),
])
def test_go_durations(ns: int, text: str) -> None:
    assert format_go_duration(ns) == text
    assert parse_go_duration(text) == ns


def test_bad_go_duration() -> None:
    with pytest.raises(ValueError):
        parse_go_duration("soon")


def test_decode_is_case_insensitive_and_drops_unknown_keys() -> None:
    body = b'{"job": {"id": "a", "TASKGROUPS": [{"name": "g", "bogus": 1, "Meta": {"kEy": "v"}}]}}'
    req = wire.decode(body, wire.REGISTER_REQUEST)
    assert req == {"Job": {"ID": "a", "TaskGroups": [{"Name": "g", "Meta": {"kEy": "v"}}]}}


def test_decode_type_errors_read_like_go() -> None:
    with pytest.raises(wire.DecodeError, match="cannot unmarshal string"):
        wire.decode(b'{"Job": {"Priority": "x"}}', wire.REGISTER_REQUEST)
    with pytest.raises(wire.DecodeError, match="Request body is empty"):
        wire.decode(b"  ", wire.REGISTER_REQUEST)
    with pytest.raises(wire.DecodeError, match="Go value of type"):
        wire.decode(b"[]", wire.REGISTER_REQUEST)


def test_multierror_format() -> None:
    assert multierror(["a"]) == "1 error occurred:\n\t* a\n\n"
    assert multierror(["a", "b"]) == "2 errors occurred:\n\t* a\n\t* b\n\n"


def test_spec_key_ignores_read_only_fields() -> None:
    job = canonicalize_job({"ID": "j", "TaskGroups": [{"Name": "g", "Tasks": [
        {"Name": "t", "Driver": "docker", "Config": {"image": "x"}}]}]})
    changed = dict(job, Version=7, ModifyIndex=99, Stable=True, Status="running")
    assert spec_key(job) == spec_key(changed)
    assert spec_key(job) != spec_key(dict(job, Meta={"a": "b"}))


def test_template_subset() -> None:
    secret = {"Data": {"data": {"password": 'p"<&>', "user": "app"}}}
    src = ('{{ with secret "kv/data/web" }}PASS={{ .Data.data.password | toJSON }}\n'
           '{{- range $k, $v := .Data.data }} {{ $k }}={{ $v }}{{ end }}{{ end }}')
    out = templates.render(src, {"kv/data/web": secret})
    assert out == 'PASS="p\\"\\u003c\\u0026\\u003e" password=p"<&> user=app'
    assert templates.secret_paths(templates.parse(src)) == ["kv/data/web"]
    assert templates.render("{{ with secret \"x\" }}{{ .Data.nope }}{{ end }}",
                            {"x": {"Data": {}}}) == "<no value>"
    with pytest.raises(templates.TemplateError, match="no entry for key"):
        templates.render("{{ with secret \"x\" }}{{ .Data.nope }}{{ end }}",
                         {"x": {"Data": {}}}, missing_key_error=True)
    with pytest.raises(templates.TemplateError):
        templates.render("{{ with secret \"x\" }}unterminated", {})


def test_env_file_parsing() -> None:
    text = 'A=1\n# comment\nexport B="two words"\nC=\'lit $x\'\nD="x\\ny"\n'
    assert templates.parse_env_file(text) == {"A": "1", "B": "two words", "C": "lit $x",
                                              "D": "x\ny"}


def test_filter_expressions() -> None:
    obj = {"Status": "running", "JobSummary": {"Summary": {"web": {"Running": 2}}},
           "Datacenters": ["dc1"], "Meta": {"team": "a"}}
    assert compile_filter('Status == "running"')(obj)
    assert compile_filter('Status != "dead" and JobSummary.Summary.web.Running == 2')(obj)
    assert compile_filter('"dc1" in Datacenters')(obj)
    assert not compile_filter('Status == "dead" or Meta.team == "b"')(obj)
    assert compile_filter('not (Status == "dead")')(obj)
    with pytest.raises(FilterError):
        compile_filter('Status ==')


def test_incremental_snapshot_round_trip() -> None:
    from devstack.localnomad import persistence
    from devstack.localnomad.events import EventBroker
    from devstack.localnomad.state import State

    state = State(EventBroker())
    job = canonicalize_job({"ID": "j", "TaskGroups": [{"Name": "g", "Tasks": [
        {"Name": "t", "Driver": "docker", "Config": {"image": "x"}}]}]})
    txn = state.txn("JobRegistered")
    state.versions[("default", "j")] = [job]
    txn.put_job(job)
    alloc = {"ID": "a1", "Namespace": "default", "JobID": "j", "Job": job, "TaskGroup": "g",
             "DesiredStatus": "run", "ClientStatus": "pending", "CreateIndex": 0}
    txn.put_alloc(alloc)
    txn.commit()
    enc = persistence.SnapshotEncoder()
    first = enc.encode(state, "node")
    txn = state.txn("AllocationUpdated")
    alloc["ClientStatus"] = "running"
    txn.put_alloc(alloc)
    txn.commit()
    second = enc.encode(state, "node")
    assert first != second
    restored = State(EventBroker())
    assert persistence.restore(restored, second) == "node"
    assert restored.allocs["a1"]["ClientStatus"] == "running"
    assert restored.allocs["a1"]["Job"] is restored.jobs[("default", "j")]
    assert restored.index == state.index
    assert second == persistence.SnapshotEncoder().encode(state, "node")
