"""Renders an app's release as a Nomad job (JSON API shape), deterministically.

The same (app, release, settings) always gives the same dict and, through
`canonical_json`, byte-identical JSON: no timestamps, no random ids, sorted keys.
That is what makes a resubmission a no-op for Nomad and a golden-file test possible.

Conventions (docs/decisions/0001-deploy-flow.md, "Rendering conventions"): job ID =
app name; `Meta` carries `shaman_app`, `shaman_release`, `shaman_deploy_id` and
`shaman_spec` (a hash of the rest of the job, so the reconciler can tell a job edited
by hand from one it rendered from older inputs); one group `web` with the app's
instance count; a dynamic port `http` mapped to the app's port; task `app` on the
docker driver with the pinned image digest; config vars + `PORT` as env; a
Nomad-provider service with an HTTP check and Traefik tags (canaries get no routing
tags, so they take no traffic before promotion); the update block from the rollout
policy with `AutoRevert: false` (the platform decides rollback); secrets only as a
`template` reading Vault KV v2 at the release's pinned version, one line per pinned
key, plus a `vault` block naming the JWT role for workload identity.

Secret values never pass through here: only key names and a version.
This module does no I/O and decides nothing about whether to register.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from shared.records import ENV_NAME_RE, AppRecord, ReleaseRecord

GROUP = "web"
TASK = "app"
PORT_LABEL = "http"
SECRETS_DEST = "secrets/app.env"

META_APP = "shaman_app"
META_RELEASE = "shaman_release"
META_DEPLOY = "shaman_deploy_id"
META_SPEC = "shaman_spec"


class RenderError(ValueError):
    """The release cannot be rendered (no image yet, an invalid key name)."""


@dataclass(frozen=True)
class RenderSettings:
    """What the renderer needs from SchedulerSettings (kept small and hashable)."""

    namespace: str = "default"
    datacenters: tuple[str, ...] = ("*",)
    traefik_rule_template: str = "Host(`{domain}`)"
    default_domain_template: str = "{app}.localhost"
    vault_mount: str = "secret"
    vault_role: str = "shaman-app"
    restart_attempts: int = 2
    restart_delay_s: float = 2.0
    restart_interval_s: float = 1800.0


def _ns(seconds: float) -> int:
    """Nomad durations are int64 nanoseconds."""
    return round(seconds * 1_000_000_000)


def secrets_path(mount: str, app: str) -> str:
    """The app's KV v2 data path (the api writes secrets under `<mount>/shaman/apps/<app>`)."""
    return f"{mount}/data/shaman/apps/{app}"


def secrets_template(mount: str, app: str, version: int, keys: list[str]) -> str:
    """One `KEY={{ .Data.data.KEY | toJSON }}` line per pinned key, at the pinned version.

    Key names are checked against the env-name rule so that a name can never inject
    template syntax.
    """
    for key in keys:
        if not ENV_NAME_RE.match(key):
            raise RenderError(f"secret key name {key!r} is not a valid environment variable name")
    path = f"{secrets_path(mount, app)}?version={version}"
    lines = "".join(f"{key}={{{{ .Data.data.{key} | toJSON }}}}\n" for key in sorted(set(keys)))
    return f'{{{{ with secret "{path}" }}}}\n{lines}{{{{ end }}}}\n'


def canonical_json(job: dict[str, Any], *, indent: int | None = None) -> bytes:
    """Sorted keys, fixed separators, UTF-8: the same job is always the same bytes."""
    if indent is None:
        text = json.dumps(job, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    else:
        text = json.dumps(job, sort_keys=True, indent=indent, ensure_ascii=False) + "\n"
    return text.encode()


def spec_hash(job: dict[str, Any]) -> str:
    """A short hash of the job without its own `shaman_spec` meta entry."""
    meta = {k: v for k, v in (job.get("Meta") or {}).items() if k != META_SPEC}
    body = {**job, "Meta": meta}
    return hashlib.sha256(canonical_json(body)).hexdigest()[:16]


class JobRenderer:
    def __init__(self, settings: RenderSettings | None = None) -> None:
        self.settings = settings or RenderSettings()

    def render(self, app: AppRecord, release: ReleaseRecord) -> dict[str, Any]:
        """The Nomad job for `release` of `app` (count from the app record)."""
        name = app.spec.name
        if release.app != name:
            raise RenderError(f"release {release.app}.{release.version} is not a release of {name}")
        if not release.image:
            raise RenderError(f"release v{release.version} has no image yet")
        s = self.settings
        process = release.process

        env = dict(release.config)
        env["PORT"] = str(process.port)  # the platform's; a config var cannot move the port

        config: dict[str, Any] = {"image": release.image, "ports": [PORT_LABEL]}
        if process.command:
            config["command"] = process.command
        if process.args:
            config["args"] = list(process.args)

        task: dict[str, Any] = {
            "Name": TASK,
            "Driver": "docker",
            "Config": config,
            "Env": env,
            "Resources": {"CPU": process.cpu_mhz, "MemoryMB": process.memory_mb},
        }
        if release.secrets is not None and release.secrets.keys:
            task["Templates"] = [{
                "EmbeddedTmpl": secrets_template(
                    s.vault_mount, name, release.secrets.version, release.secrets.keys
                ),
                "DestPath": SECRETS_DEST,
                "Envvars": True,
                "ChangeMode": "restart",
                "ErrMissingKey": True,
            }]
            task["Vault"] = {"Role": s.vault_role}

        rollout = process.rollout
        health = process.health
        domains = list(process.domains) or [s.default_domain_template.format(app=name)]
        rule = " || ".join(
            s.traefik_rule_template.format(domain=d, app=name) for d in sorted(set(domains))
        )
        service = {
            "Name": name,
            "PortLabel": PORT_LABEL,
            "Provider": "nomad",
            "Tags": ["traefik.enable=true", f"traefik.http.routers.{name}.rule={rule}"],
            # An un-promoted canary is registered with these instead: no route, no traffic.
            "CanaryTags": ["traefik.enable=false", "shaman.canary=true"],
            "Checks": [{
                "Name": f"{name}-http",
                "Type": "http",
                "Path": health.path,
                "Interval": _ns(health.interval_s),
                "Timeout": _ns(health.timeout_s),
            }],
        }
        group: dict[str, Any] = {
            "Name": GROUP,
            "Count": app.spec.instances,
            "Networks": [{"DynamicPorts": [{"Label": PORT_LABEL, "To": process.port}]}],
            "Services": [service],
            "Update": {
                "MaxParallel": rollout.max_parallel,
                "HealthCheck": "checks",
                "MinHealthyTime": _ns(rollout.min_healthy_time_s),
                "HealthyDeadline": _ns(rollout.healthy_deadline_s),
                "ProgressDeadline": _ns(rollout.progress_deadline_s),
                "AutoRevert": False,
                # Nobody else promotes: canaries that pass their checks go ahead by themselves.
                "AutoPromote": rollout.canaries > 0,
                "Canary": rollout.canaries,
            },
            # Restarts come quickly so a crash on start is proven within seconds; the
            # attempts cap then fails the allocation (see SchedulerSettings).
            "RestartPolicy": {
                "Attempts": s.restart_attempts,
                "Interval": _ns(s.restart_interval_s),
                "Delay": _ns(s.restart_delay_s),
                "Mode": "fail",
            },
            "Tasks": [task],
        }
        job: dict[str, Any] = {
            "ID": name,
            "Name": name,
            "Type": "service",
            "Namespace": s.namespace,
            "Datacenters": list(s.datacenters),
            "Meta": {
                META_APP: name,
                META_RELEASE: str(release.version),
                META_DEPLOY: release.deploy_id,
            },
            "TaskGroups": [group],
        }
        job["Meta"][META_SPEC] = spec_hash(job)
        return job

    def render_json(self, app: AppRecord, release: ReleaseRecord) -> bytes:
        return canonical_json(self.render(app, release))
