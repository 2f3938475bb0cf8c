"""One typed settings object per service, read from the environment here only.

Nothing else in the project reads os.environ. Standard variables keep their
usual names (NATS_URL, NOMAD_ADDR, NOMAD_TOKEN, NOMAD_NAMESPACE, VAULT_ADDR,
VAULT_TOKEN); Shaman's own start with SHAMAN_ (SHAMAN_HTTP_ADDR, ...).
Units are in the names (`_s` seconds, `_mb` MiB).
"""

from __future__ import annotations

import socket
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


def _env(name: str) -> AliasChoices:
    return AliasChoices(name)


_CONFIG = SettingsConfigDict(env_prefix="SHAMAN_", extra="ignore", populate_by_name=True)


class CommonSettings(BaseSettings):
    """Settings every service has."""

    model_config = _CONFIG

    nats_url: str = Field("nats://127.0.0.1:4222", validation_alias=_env("NATS_URL"))
    nats_user: str | None = Field(None, validation_alias=_env("SHAMAN_NATS_USER"))
    nats_password: SecretStr | None = Field(None, validation_alias=_env("SHAMAN_NATS_PASSWORD"))
    # Where the service serves /healthz and /metrics (the api: everything).
    http_addr: str = "127.0.0.1:8080"
    log_level: str = "info"
    log_format: Literal["json", "console"] = "json"
    # Stream replicas: 1 on one machine, 3 in production (docs/operations.md).
    stream_replicas: int = 1
    # Reconnect quickly after a NATS restart (the 2 s default dominates otherwise).
    nats_reconnect_wait_s: float = 0.25
    instance_id: str = Field(default_factory=lambda: socket.gethostname())
    # SHAMAN_UVLOOP=1 runs the service on uvloop (performance.md: +14-32 % on network paths).
    uvloop: bool = False
    # SHAMAN_CRASHPOINT, for fault tests only ("" in production; reliability.md §7): the
    # process exits at once (code 137, like kill -9) when it reaches this named point.
    # Each service checks the name against its own points at start (shared.crashpoints;
    # the lists are in docs/chaos.md).
    crashpoint: str = ""

    @property
    def http_host(self) -> str:
        return self.http_addr.rsplit(":", 1)[0]

    @property
    def http_port(self) -> int:
        return int(self.http_addr.rsplit(":", 1)[1])


class NomadSettings(BaseSettings):
    model_config = _CONFIG

    nomad_addr: str = Field("http://127.0.0.1:4646", validation_alias=_env("NOMAD_ADDR"))
    nomad_token: SecretStr | None = Field(None, validation_alias=_env("NOMAD_TOKEN"))
    nomad_namespace: str = Field("default", validation_alias=_env("NOMAD_NAMESPACE"))
    nomad_timeout_s: float = Field(10.0, validation_alias=_env("SHAMAN_NOMAD_TIMEOUT_S"))


class VaultSettings(BaseSettings):
    model_config = _CONFIG

    vault_addr: str = Field("http://127.0.0.1:8200", validation_alias=_env("VAULT_ADDR"))
    vault_token: SecretStr | None = Field(None, validation_alias=_env("VAULT_TOKEN"))
    vault_mount: str = Field("secret", validation_alias=_env("SHAMAN_VAULT_MOUNT"))


class ApiSettings(CommonSettings, NomadSettings, VaultSettings):
    admin_token: SecretStr | None = None  # SHAMAN_ADMIN_TOKEN: bootstrap admin
    registry: str = "127.0.0.1:5000"  # SHAMAN_REGISTRY
    max_body_bytes: int = 1024 * 1024  # JSON bodies
    max_upload_bytes: int = 200 * 1024 * 1024  # source tarballs
    idempotency_ttl_s: float = 24 * 3600
    rate_limit_per_s: float = 50.0  # per token
    rate_limit_burst: int = 200
    sse_keepalive_s: float = 15.0
    # Idle heartbeat of the JetStream followers behind SSE; a follower silent for three
    # of these (NATS restarted) is recreated from its last sequence.
    sse_heartbeat_s: float = 1.0
    # Comma-separated registries image deploys may name (SHAMAN_ALLOWED_REGISTRIES);
    # empty: any registry.
    allowed_registries: str = ""
    # How long a request may wait on NATS before answering 503.
    nats_request_timeout_s: float = 5.0
    # Source deploys (builds) a team may have pending or building at once; 0: no cap.
    team_build_cap: int = 0
    # Re-drive sweep: every this often, a source deploy still `pending` after one interval
    # whose build message is not in SHAMAN_BUILD_WORK has it queued again (0: no sweep).
    redrive_interval_s: float = 30.0
    # Before accepting a rollback to a version, ask its image's registry (HEAD manifest).
    registry_timeout_s: float = 3.0
    # GET /v1/apps/{app}/logs with follow=true: how often new allocations are looked for.
    logs_relist_s: float = 2.0


class BuilderSettings(CommonSettings, VaultSettings):
    http_addr: str = "127.0.0.1:8081"
    registry: str = "127.0.0.1:5000"
    # SHAMAN_BUILDER_STORAGE: buildah's storage; one per builder copy (never shared).
    builder_storage: str = ".shaman/containers"
    builder_concurrency: int = 1
    build_timeout_s: float = 900.0
    ack_wait_s: float = 30.0
    max_deliver: int = 5
    keep_releases: int = 10  # image retention: last N releases per app stay
    retention_interval_s: float = 3600.0  # how often the image clean-up runs (0: never)
    # Vault KV v2 path (under vault_mount) of the builder's own credentials:
    # <path>/git/<host> and <path>/registry/<host>, each {"username", "password"}.
    builder_vault_path: str = "shaman/builder"
    # Registries reached over plain HTTP without TLS checks besides loopback ones
    # (comma-separated host:port list).
    insecure_registries: str = ""
    allow_file_git_urls: bool = True  # file:// git sources (local repos; tests, devstack)
    log_flush_interval_s: float = 0.1  # build.log events: flush at least this often
    log_flush_lines: int = 50  # ... or when this many lines are waiting
    max_log_bytes: int = 8 * 1024 * 1024  # the stored build log is cut beyond this
    deploy_check_interval_s: float = 0.5  # how often a running build checks for supersede


class SchedulerSettings(CommonSettings, NomadSettings, VaultSettings):
    http_addr: str = "127.0.0.1:8082"
    registry: str = "127.0.0.1:5000"
    reconcile_concurrency: int = 4
    resync_interval_s: float = 30.0
    nomad_datacenters: str = "*"
    # Traefik routing tags; {app} and {domain} are filled in per app.
    traefik_rule_template: str = "Host(`{domain}`)"
    default_domain_template: str = "{app}.localhost"
    nomad_retry_deadline_s: float = 900.0
    ack_wait_s: float = 30.0
    max_deliver: int = 10
    # Release commands handled at once (different apps; one app is always serialized).
    command_concurrency: int = 16
    # How long a command handler waits for the first reconcile pass of its app before it
    # acks anyway (the work queue, the resync and the re-drive sweep carry on from there).
    command_reconcile_wait_s: float = 20.0
    # Vault JWT role rendered into each task's `vault` block (workload identity).
    vault_role: str = "shaman-app"
    # The task restart policy rendered into every job. Nomad's default waits 15 s before
    # a restart, which alone keeps a crashing release up for ~17 s before the second
    # failure proves it bad; the attempts cap (then the alloc fails) bounds the loop, and
    # the platform rolls a bad release back itself.
    task_restart_attempts: int = 2
    task_restart_delay_s: float = 2.0
    task_restart_interval_s: float = 1800.0
    # Work-queue retry curve after a failed reconcile pass (capped, with jitter).
    requeue_initial_s: float = 0.2
    requeue_max_s: float = 30.0
    # Re-drive sweep: deploys stuck before submission are enqueued again.
    redrive_interval_s: float = 60.0
    stuck_deploy_after_s: float = 600.0  # pending/building this long without change: reported
    # Before a rollback, check that the target's image is still in its registry.
    check_rollback_image: bool = True
    registry_timeout_s: float = 5.0


# No VaultSettings: the watcher holds no Vault token. No platform component may read app
# secret values (least privilege), so its failure explanations blank credential shapes
# only (docs/watcher.md).
class WatcherSettings(CommonSettings, NomadSettings):
    http_addr: str = "127.0.0.1:8083"
    relist_interval_s: float = 30.0
    stream_read_timeout_s: float = 90.0
    fail_fast_restarts: int = 2  # same task of the new version failing this often → fail now
    crash_loop_window_s: float = 300.0  # after healthy, crash-looping within this → rollback
    deadline_grace_s: float = 60.0  # past progress_deadline + this → platform fails it
    reconcile_concurrency: int = 4  # apps reconciled at once (never one app twice)
    checkpoint_interval_s: float = 1.0  # how often the stream position may be stored
    stream_backoff_max_s: float = 30.0  # cap of the reconnect backoff (jittered)
    explain_max_allocs: int = 3  # failed allocations explained per rollout.failed
    log_tail_bytes: int = 4096  # bytes of each task log read for an explanation
    rollback_republish_after_s: float = 30.0  # no rollback deploy by then → publish again
