"""The environment a Shaman service is launched with: the contract its settings object reads.

One function, used by `shaman dev up` and by the test fixtures alike, so both launch the
services the same way. The variables (and only these) are the contract with `shared.settings`:

    NATS_URL, SHAMAN_NATS_USER, SHAMAN_NATS_PASSWORD, NOMAD_ADDR, NOMAD_TOKEN, NOMAD_NAMESPACE,
    VAULT_ADDR and VAULT_TOKEN (not the watcher), SHAMAN_REGISTRY, SHAMAN_HTTP_ADDR,
    SHAMAN_LOG_FORMAT, SHAMAN_LOG_LEVEL, SHAMAN_ADMIN_TOKEN (api), SHAMAN_BUILDER_STORAGE
    and CONTAINERS_CONF (builder)

Each service logs in to NATS as its own user (named after the service), held to the
permissions devstack/nats_permissions.py gives it.

Not here: the rest of the process environment (PATH, HOME, ...), which the launcher inherits.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from devstack.components.service import SERVICES

if TYPE_CHECKING:
    from devstack.stack import StackConfig


def service_env(config: StackConfig, service: str) -> dict[str, str]:
    """The contract variables for one of `api`, `builder`, `scheduler`, `watcher`."""
    if service not in SERVICES:
        raise ValueError(f"unknown service {service!r}; one of {', '.join(SERVICES)}")
    env = {
        "NATS_URL": config.nats_url,
        "SHAMAN_NATS_USER": service,
        "SHAMAN_NATS_PASSWORD": config.nats_password(service),
        "NOMAD_ADDR": config.nomad_addr,
        "NOMAD_TOKEN": config.nomad_token,
        "NOMAD_NAMESPACE": config.nomad_namespace,
        "VAULT_ADDR": config.vault_addr,
        "VAULT_TOKEN": config.vault_token(),
        "SHAMAN_REGISTRY": config.registry,
        "SHAMAN_HTTP_ADDR": config.http_addr(service),
        "SHAMAN_LOG_FORMAT": "json",
        "SHAMAN_LOG_LEVEL": "info",
    }
    if service == "watcher":
        # It reads no secrets, so it gets no Vault token, not even the dev one (least
        # privilege: a watcher holding it could read every app's values; docs/watcher.md).
        del env["VAULT_ADDR"], env["VAULT_TOKEN"]
    if service == "api":
        env["SHAMAN_ADMIN_TOKEN"] = config.admin_token()
    if service == "builder":
        storage = config.storage
        env["SHAMAN_BUILDER_STORAGE"] = str(storage.base)
        env["CONTAINERS_CONF"] = str(storage.conf_file)
    return env
