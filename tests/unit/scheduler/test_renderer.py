"""The job renderer: golden files of the rendered JSON, determinism, conventions."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import msgspec
import pytest

from services.scheduler.renderer import (
    META_SPEC,
    JobRenderer,
    RenderError,
    RenderSettings,
    canonical_json,
    secrets_template,
    spec_hash,
)
from shared.records import (
    AppRecord,
    AppSpec,
    HealthCheck,
    ProcessSpec,
    ReleaseRecord,
    RolloutPolicy,
    SecretsPin,
)

GOLDEN = Path(__file__).parent / "golden"
FIXED = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
DIGEST = "sha256:" + "3f2c1a9e" * 8
IMAGE = f"127.0.0.1:5000/hello@{DIGEST}"


def app_record(name: str = "hello", instances: int = 2, **process: object) -> AppRecord:
    return AppRecord(
        spec=AppSpec(name=name, instances=instances, process=ProcessSpec(**process)),  # type: ignore[arg-type]
        created_at=FIXED,
    )


def release(
    app: str = "hello", version: int = 3, *, secrets: SecretsPin | None = None,
    config: dict[str, str] | None = None, process: ProcessSpec | None = None,
    image: str = IMAGE,
) -> ReleaseRecord:
    return ReleaseRecord(
        app=app, version=version, kind="deploy", description="Deploy 3f2c1a9",
        created_by="alice", deploy_id="d-123", image=image, digest=DIGEST,
        config=config or {}, secrets=secrets, process=process or ProcessSpec(),
        created_at=FIXED,
    )


def check_golden(name: str, job: dict[str, object]) -> None:
    """Compare with golden/<name>.json; a missing file is written (review it, commit it)."""
    path = GOLDEN / f"{name}.json"
    rendered = canonical_json(job, indent=2)
    if not path.exists():
        path.write_bytes(rendered)
        pytest.fail(f"golden file {path.name} was missing and has been written: review it")
    assert rendered.decode() == path.read_text(), f"rendering changed: compare with {path}"


def test_minimal_release_matches_golden() -> None:
    job = JobRenderer().render(app_record(instances=1), release(version=1))
    check_golden("minimal", job)


def test_full_release_matches_golden() -> None:
    process = ProcessSpec(
        port=9000, command="/bin/server", args=["--verbose", "--port", "9000"], cpu_mhz=250,
        memory_mb=512, health=HealthCheck(path="/ready", interval_s=0.5, timeout_s=0.25),
        rollout=RolloutPolicy(canaries=1, max_parallel=2, min_healthy_time_s=0.2,
                              healthy_deadline_s=30, progress_deadline_s=60),
        domains=["hello.example.com", "www.hello.example.com"],
    )
    rel = release(
        version=7, config={"LOG_LEVEL": "debug", "PORT": "1", "GREETING": "hi \"there\""},
        secrets=SecretsPin(version=4, keys=["DB_PASSWORD", "API_KEY"]), process=process,
    )
    settings = RenderSettings(namespace="apps", datacenters=("dc1", "dc2"),
                              vault_role="apps-role")
    job = JobRenderer(settings).render(app_record(instances=3), rel)
    check_golden("full", job)


def test_rendering_is_byte_identical_for_the_same_inputs() -> None:
    secrets = SecretsPin(version=2, keys=["B", "A"])
    one = JobRenderer().render_json(app_record(), release(secrets=secrets,
                                                           config={"Z": "1", "A": "2"}))
    # Same content built in another order (dict and list order must not matter).
    two = JobRenderer().render_json(
        app_record(), release(secrets=SecretsPin(version=2, keys=["A", "B"]),
                              config={"A": "2", "Z": "1"}),
    )
    assert one == two
    assert b"2025" not in one  # no timestamps (created_at never reaches the job)


def test_conventions() -> None:
    # The process spec comes from the release (pinned), the count from the app record.
    job = JobRenderer().render(app_record(instances=4, port=1234),
                               release(process=ProcessSpec(port=8081)))
    assert job["ID"] == job["Name"] == "hello"
    meta = job["Meta"]
    assert meta["shaman_app"] == "hello"
    assert meta["shaman_release"] == "3"
    assert meta["shaman_deploy_id"] == "d-123"
    (group,) = job["TaskGroups"]
    assert group["Name"] == "web" and group["Count"] == 4
    assert group["Networks"] == [{"DynamicPorts": [{"Label": "http", "To": 8081}]}]
    assert group["Update"]["AutoRevert"] is False
    (task,) = group["Tasks"]
    assert task["Name"] == "app" and task["Driver"] == "docker"
    assert task["Config"]["image"] == IMAGE
    assert task["Env"]["PORT"] == "8081"
    (service,) = group["Services"]
    assert service["Provider"] == "nomad" and service["PortLabel"] == "http"
    assert service["Checks"][0]["Type"] == "http"
    assert "traefik.http.routers.hello.rule=Host(`hello.localhost`)" in service["Tags"]
    assert "Templates" not in task and "Vault" not in task


def test_secrets_render_as_template_with_pinned_version_and_no_values() -> None:
    rel = release(secrets=SecretsPin(version=5, keys=["DB_PASSWORD"]))
    job = JobRenderer(RenderSettings(vault_role="r1")).render(app_record(), rel)
    task = job["TaskGroups"][0]["Tasks"][0]
    (template,) = task["Templates"]
    assert template["DestPath"] == "secrets/app.env"
    assert template["Envvars"] is True and template["ChangeMode"] == "restart"
    assert 'secret "secret/data/shaman/apps/hello?version=5"' in template["EmbeddedTmpl"]
    assert "DB_PASSWORD={{ .Data.data.DB_PASSWORD | toJSON }}" in template["EmbeddedTmpl"]
    assert task["Vault"] == {"Role": "r1"}
    assert "DB_PASSWORD" not in task["Env"]


def test_secret_key_names_cannot_inject_template_syntax() -> None:
    with pytest.raises(RenderError):
        secrets_template("secret", "hello", 1, ["X }}{{ evil"])


def test_config_cannot_move_the_port() -> None:
    job = JobRenderer().render(app_record(port=8080), release(config={"PORT": "1"}))
    assert job["TaskGroups"][0]["Tasks"][0]["Env"]["PORT"] == "8080"


def test_count_and_release_change_the_spec_hash() -> None:
    base = JobRenderer().render(app_record(instances=1), release())
    scaled = JobRenderer().render(app_record(instances=2), release())
    newer = JobRenderer().render(app_record(instances=1), release(version=4))
    hashes = {base["Meta"][META_SPEC], scaled["Meta"][META_SPEC], newer["Meta"][META_SPEC]}
    assert len(hashes) == 3
    assert spec_hash(base) == base["Meta"][META_SPEC]


def test_release_without_image_is_not_rendered() -> None:
    with pytest.raises(RenderError):
        JobRenderer().render(app_record(), release(image=""))


def test_golden_files_are_valid_json() -> None:
    for path in GOLDEN.glob("*.json"):
        json.loads(path.read_text())
    assert msgspec.json.decode(canonical_json({"b": 1, "a": [2]})) == {"a": [2], "b": 1}
