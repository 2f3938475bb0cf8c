"""compose.yaml parses, names every service, and every variable it sets is one the code reads."""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic_settings import BaseSettings

from shared.settings import ApiSettings, BuilderSettings, SchedulerSettings, WatcherSettings

ROOT = Path(__file__).resolve().parents[3]
SERVICES: dict[str, type[BaseSettings]] = {
    "api": ApiSettings,
    "builder": BuilderSettings,
    "scheduler": SchedulerSettings,
    "watcher": WatcherSettings,
}


def env_names(settings: type[BaseSettings]) -> set[str]:
    """The environment variables a settings class reads."""
    prefix = settings.model_config.get("env_prefix", "")
    names = set()
    for name, field in settings.model_fields.items():
        alias = field.validation_alias
        choices = getattr(alias, "choices", None)
        if choices:
            names.update(str(c) for c in choices)
        else:
            names.add(f"{prefix}{name}".upper())
    return names


def test_compose_names_every_service_and_only_known_variables() -> None:
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    services = compose["services"]
    for needed in ("nats-1", "nats-2", "nats-3", "nomad", "openbao", "registry", "traefik"):
        assert needed in services
    for service, settings in SERVICES.items():
        assert service in services, f"compose.yaml lacks the {service} service"
        env = services[service]["environment"]
        unknown = set(env) - env_names(settings)
        assert not unknown, f"{service} sets variables its code never reads: {unknown}"
        for required in ("NATS_URL", "SHAMAN_HTTP_ADDR"):
            assert required in env, f"{service} lacks {required}"
    for service in ("api", "scheduler", "watcher"):  # the api reads the apps' task logs
        assert {"NOMAD_ADDR", "NOMAD_TOKEN"} <= set(services[service]["environment"])
    assert "sync_interval: always" in compose["configs"]["nats-cluster"]["content"]
