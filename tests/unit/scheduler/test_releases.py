"""What a new release contains, rollback target order, and descriptions."""

from __future__ import annotations

import pytest

from services.scheduler import descriptions
from services.scheduler.releases import (
    adopt_release,
    apply_config,
    build_release,
    rollback_search_order,
    same_content,
    skip_release_number,
)
from shared.commands import ChangeConfig, ChangeProcess, ChangeSecrets, DeployImage, Rollback
from shared.records import AppRecord, AppSpec, ProcessSpec, ReleaseRecord, SecretsPin

DIGEST1 = "sha256:" + "1" * 64
DIGEST2 = "sha256:" + "3f2c1a9" + "e" * 57


def app(current: int | None = None, healthy: int | None = None, port: int = 8080) -> AppRecord:
    return AppRecord(spec=AppSpec(name="web", process=ProcessSpec(port=port)),
                     current_release=current, last_healthy_release=healthy,
                     next_release=(current or 0) + 1)


def v1() -> ReleaseRecord:
    return ReleaseRecord(
        app="web", version=1, kind="deploy", description="Deploy 1111111", created_by="a",
        deploy_id="d1", image=f"r/web@{DIGEST1}", digest=DIGEST1, config={"A": "1"},
        secrets=SecretsPin(version=1, keys=["S"]), process=ProcessSpec(port=7000),
    )


def test_deploy_keeps_config_and_secrets_and_takes_process_from_the_app() -> None:
    cmd = DeployImage(deploy_id="d2", app="web", image=f"r/web@{DIGEST2}", digest=DIGEST2,
                      description="", created_by="bob")
    rel = build_release(cmd, app=app(current=1, port=9000), version=2, base=v1())
    assert (rel.version, rel.kind, rel.deploy_id, rel.created_by) == (2, "deploy", "d2", "bob")
    assert rel.image == f"r/web@{DIGEST2}" and rel.digest == DIGEST2
    assert rel.config == {"A": "1"} and rel.secrets == SecretsPin(version=1, keys=["S"])
    assert rel.process.port == 9000
    assert rel.description == "Deploy 3f2c1a9"


def test_first_deploy_has_empty_config() -> None:
    cmd = DeployImage(deploy_id="d1", app="web", image="r/web@x", digest=DIGEST1,
                      description="Deploy from CI", created_by="ci")
    rel = build_release(cmd, app=app(), version=1, base=None)
    assert rel.config == {} and rel.secrets is None and rel.description == "Deploy from CI"


def test_config_change_sets_and_unsets() -> None:
    cmd = ChangeConfig(deploy_id="d3", app="web", set={"LOG_LEVEL": "debug"}, unset=["A"],
                       created_by="c")
    rel = build_release(cmd, app=app(current=1), version=2, base=v1())
    assert rel.config == {"LOG_LEVEL": "debug"}
    assert rel.image == v1().image and rel.secrets == v1().secrets
    assert rel.kind == "config" and rel.description == "Set LOG_LEVEL, unset A"


def test_config_before_any_image_gives_a_release_with_nothing_to_run() -> None:
    cmd = ChangeConfig(deploy_id="d1", app="web", set={"X": "1"}, unset=[], created_by="c")
    rel = build_release(cmd, app=app(), version=1, base=None)
    assert rel.image == "" and rel.config == {"X": "1"}


def test_secrets_change_pins_the_new_version_and_names() -> None:
    cmd = ChangeSecrets(deploy_id="d4", app="web", version=3, keys=["B", "A", "B"],
                        description="", created_by="c")
    rel = build_release(cmd, app=app(current=1), version=2, base=v1())
    assert rel.secrets == SecretsPin(version=3, keys=["A", "B"])
    assert rel.config == v1().config and rel.description == "Update secrets A, B"


def test_process_change_takes_the_app_spec() -> None:
    cmd = ChangeProcess(deploy_id="d5", app="web", description="Port 9000", created_by="c")
    rel = build_release(cmd, app=app(current=1, port=9000), version=2, base=v1())
    assert rel.process.port == 9000 and rel.description == "Port 9000"


def test_rollback_restores_image_config_secrets_and_process() -> None:
    current = ReleaseRecord(
        app="web", version=2, kind="config", description="x", created_by="a", deploy_id="d2",
        image=f"r/web@{DIGEST2}", digest=DIGEST2, config={"B": "2"},
        secrets=SecretsPin(version=9, keys=["T"]), process=ProcessSpec(port=1),
    )
    cmd = Rollback(deploy_id="d6", app="web", to_version=1, automatic=False, created_by="c")
    rel = build_release(cmd, app=app(current=2, port=5), version=3, base=current, target=v1())
    assert (rel.image, rel.digest, rel.config, rel.secrets, rel.process) == (
        v1().image, v1().digest, v1().config, v1().secrets, v1().process)
    assert rel.rollback_of == 1 and rel.kind == "rollback" and rel.description == "Rollback to v1"


def test_rollback_needs_a_target() -> None:
    cmd = Rollback(deploy_id="d6", app="web", to_version=None, automatic=False, created_by="c")
    with pytest.raises(ValueError):
        build_release(cmd, app=app(current=1), version=2, base=v1())


def test_apply_config_unset_then_set() -> None:
    assert apply_config({"A": "1", "B": "2"}, {"B": "3"}, ["A", "B"]) == {"B": "3"}


def test_rollback_search_order() -> None:
    assert rollback_search_order(app()) == []
    assert rollback_search_order(app(current=5, healthy=3)) == [3, 4, 2, 1]
    # The current release itself went healthy: look before it.
    assert rollback_search_order(app(current=3, healthy=3)) == [2, 1]
    assert rollback_search_order(app(current=1)) == []


def test_descriptions() -> None:
    assert descriptions.deploy_description(DIGEST2) == "Deploy 3f2c1a9"
    assert descriptions.deploy_description(DIGEST2, "Fix login\nmore text") == "Fix login"
    assert descriptions.config_description(["LOG_LEVEL"], ["DEBUG"]) == \
        "Set LOG_LEVEL, unset DEBUG"
    assert descriptions.config_description([], ["DEBUG"]) == "Unset DEBUG"
    assert descriptions.config_description([], []) == "Config unchanged"
    many = [f"K{i}" for i in range(8)]
    assert descriptions.config_description(many, []) == "Set K0, K1, K2, K3, K4 and 3 more"
    assert descriptions.rollback_description(7) == "Rollback to v7"
    assert descriptions.secrets_description([]) == "Remove all secrets"


def test_adopting_a_newer_release_makes_it_current() -> None:
    record = app(current=1)
    record.active_deploy_id = "d1"
    decision = adopt_release(record, 2, "d2")
    assert decision.changed and decision.current and decision.previous_active == "d1"
    assert (record.current_release, record.next_release, record.active_deploy_id) == (
        2, 3, "d2")
    # Again, for the same deploy: nothing to write.
    again = adopt_release(record, 2, "d2")
    assert not again.changed and again.current and again.previous_active is None


def test_adopting_an_older_release_supersedes_it_but_keeps_numbers_moving() -> None:
    record = app(current=5)
    record.active_deploy_id = "d5"
    record.next_release = 4  # a writer that skipped past 4 has not written yet
    decision = adopt_release(record, 4, "d4")
    assert not decision.current and decision.superseded_by == "d5"
    assert record.current_release == 5 and record.next_release == 5 and decision.changed


def test_first_release_of_an_app() -> None:
    record = app()
    decision = adopt_release(record, 1, "d1")
    assert decision.current and decision.previous_active is None
    assert (record.current_release, record.next_release) == (1, 2)


def test_skip_a_taken_release_number() -> None:
    record = app(current=2)  # next_release 3
    assert skip_release_number(record, 3) and record.next_release == 4
    assert not skip_release_number(record, 3) and record.next_release == 4


def test_same_content_compares_what_runs_not_who_or_why() -> None:
    image_a = DeployImage(deploy_id="d2", app="web", image=f"r/web@{DIGEST2}", digest=DIGEST2,
                          description="", created_by="bob")
    # Two image deploys from one base: another image-only release below ours changes
    # nothing in ours, so it need not be waited for.
    other = build_release(
        DeployImage(deploy_id="d3", app="web", image=f"r/web@{DIGEST1}", digest=DIGEST1,
                    description="", created_by="al"), app=app(current=1), version=2, base=v1())
    assert same_content(build_release(image_a, app=app(current=1), version=3, base=other),
                        build_release(image_a, app=app(current=1), version=3, base=v1()))
    # A config change below ours does change it.
    config = build_release(ChangeConfig(deploy_id="d3", app="web", set={"B": "2"}, unset=[],
                                        created_by="al"), app=app(current=1), version=2,
                           base=v1())
    assert not same_content(build_release(image_a, app=app(current=1), version=3, base=config),
                            build_release(image_a, app=app(current=1), version=3, base=v1()))
