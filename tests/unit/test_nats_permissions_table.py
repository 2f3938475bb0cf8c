"""The NATS permissions table (devstack/nats_permissions.py) and what is generated from it.

compose.yaml's NATS users and docs/nats-permissions.md must be exactly what the table
generates (`python -m devstack.nats_permissions --write` regenerates them); every service in
compose.yaml logs in as its own user with the password the NATS servers expect; the table
only names streams, buckets and object stores that provisioning creates. What the server
does with the permissions is tested in tests/integration/test_nats_permissions.py.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from devstack.nats_permissions import (
    ACCESS,
    COMPOSE_FILE,
    DOCS_FILE,
    KV_STREAM,
    OBJECT_STREAM,
    SERVICE_USERS,
    USERS,
    Provision,
    authorization_block,
    compose_with_current_block,
    docs_with_current_section,
    password_variable,
    permissions,
    provisioned_streams,
)
from shared import subjects as s
from shared.bus.provision import stream_configs

REGENERATE = "run: .venv/bin/python -m devstack.nats_permissions --write"


def compose() -> Any:
    return yaml.safe_load(COMPOSE_FILE.read_text())


def test_compose_users_are_the_generated_ones() -> None:
    text = COMPOSE_FILE.read_text()
    assert compose_with_current_block(text) == text, REGENERATE


def test_docs_tables_are_the_generated_ones() -> None:
    text = DOCS_FILE.read_text()
    assert docs_with_current_section(text) == text, REGENERATE


def test_compose_services_log_in_as_themselves_with_the_servers_passwords() -> None:
    services = compose()["services"]
    config = compose()["configs"]["nats-cluster"]["content"]
    for nats in ("nats-1", "nats-2", "nats-3"):
        env = services[nats]["environment"]
        for user in USERS:
            assert env[password_variable(user)].startswith("CHANGE-ME"), (nats, user)
            assert f"password: $${password_variable(user)}" in config  # $$: compose escape
    nats_env = services["nats-1"]["environment"]
    for user in SERVICE_USERS:
        env = services[user]["environment"]
        assert env["SHAMAN_NATS_USER"] == user
        assert env["SHAMAN_NATS_PASSWORD"] == nats_env[password_variable(user)]
    passwords = [nats_env[password_variable(user)] for user in USERS]
    assert len(set(passwords)) == len(USERS), "every user needs a password of its own"


def test_the_table_names_only_what_provisioning_creates() -> None:
    streams = set(provisioned_streams())
    for user, access in ACCESS.items():
        for stream, _durable in access.consume:
            assert stream in streams, user
        for stream in access.read_streams:
            assert stream in streams, user
        for bucket in (*access.kv_read, *access.kv_write):
            assert KV_STREAM.format(bucket=bucket) in streams, user
        for bucket in (*access.objects_read, *access.objects_write):
            assert OBJECT_STREAM.format(bucket=bucket) in streams, user


def test_services_publish_only_into_streams() -> None:
    """A service's publish grants are stream subjects (so every message is stored)."""
    stream_subjects = {subject for config in stream_configs(1) for subject in config.subjects or []}
    for user in SERVICE_USERS:
        for subject in ACCESS[user].publish:
            assert any(_within(subject, pattern) for pattern in stream_subjects), (user, subject)


def _within(subject: str, pattern: str) -> bool:
    regex = re.escape(pattern).replace(r"\*", r"[^.]+").replace(r"\>", r".+")
    return re.fullmatch(regex, subject) is not None or subject == pattern


def test_only_the_api_may_change_streams() -> None:
    updaters = [user for user, access in ACCESS.items() if access.provision is Provision.UPDATE]
    assert updaters == ["api"]
    for user in ("builder", "scheduler", "watcher"):
        perms = permissions(user)
        assert perms is not None
        assert not [p for p in perms.publish if ".STREAM.UPDATE." in p or ".STREAM.DELETE." in p]


@pytest.mark.parametrize("user", ["builder", "scheduler", "watcher", "client"])
def test_the_tokens_bucket_is_the_apis_alone(user: str) -> None:
    perms = permissions(user)
    assert perms is not None
    touching = [p for p in (*perms.publish, *perms.subscribe)
                if s.KV_TOKENS in p and not p.startswith("$JS.API.STREAM.CREATE.")]
    assert touching == []


def test_each_service_subscribes_to_its_own_inbox_only() -> None:
    for user in SERVICE_USERS:
        perms = permissions(user)
        assert perms is not None
        inboxes = [p for p in perms.subscribe if p.startswith(s.INBOX_ROOT)]
        assert inboxes == [f"{s.inbox_prefix(user)}.>"]


def test_the_client_may_request_deploys_and_follow_the_timeline_only() -> None:
    perms = permissions("client")
    assert perms is not None
    assert perms.publish == (f"{s.REQUESTS_ROOT}.*.deploy",)
    assert perms.subscribe == ("_INBOX.>", s.EVENTS_ALL)
    assert permissions("admin") is None


def test_the_config_block_needs_every_password_and_quotes_them() -> None:
    passwords = {user: f"pw-{user}" for user in USERS}
    block = authorization_block(passwords)
    assert block.count("user: ") == len(USERS)
    assert 'password: "pw-api"' in block
    del passwords["client"]
    with pytest.raises(ValueError, match="client"):
        authorization_block(passwords)


def test_the_docs_page_is_linked_from_operations() -> None:
    operations = (Path(DOCS_FILE).parent / "operations.md").read_text()
    assert "nats-permissions.md" in operations
