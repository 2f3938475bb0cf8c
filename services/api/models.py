"""Request bodies and response views of the HTTP API, as pydantic models.

The handlers validate every body with these models, and `GET /v1/openapi.json` is
generated from the same models, so the published schema cannot drift from what the
server accepts. Request models are strict (no "3" for 3) and reject unknown fields.
Validation messages name the rule, never the value: a value may be a secret pasted
into the wrong field.

Records (shared.records) stay msgspec structs; the `*View` models here are the public
shape of those records and say nothing the caller may not see (no token hashes, no
secret values).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    RootModel,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.config import JsonDict
from pydantic_core import PydanticCustomError

from services.api.git_source import check_git_ref, check_git_url
from services.api.image_ref import InvalidImageReference, parse_image_reference
from shared.records import APP_NAME_RE, ENV_NAME_RE, TEAM_RE

STRICT = ConfigDict(extra="forbid", strict=True)
MAX_CONFIG_VALUE_BYTES = 32 * 1024
MAX_SECRET_VALUE_BYTES = 64 * 1024
MAX_VARS = 256
_LABEL = r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?"
_DOMAIN = rf"^{_LABEL}(\.{_LABEL})*$"


def _app_name(value: str) -> str:
    if not APP_NAME_RE.match(value):
        raise PydanticCustomError(
            "dns_label",
            "must be a DNS label: lowercase letters, digits and '-', starting with a letter, "
            "at most 63 characters",
        )
    return value


def _team(value: str) -> str:
    if not TEAM_RE.match(value):
        raise PydanticCustomError(
            "team_name", "must be lowercase letters, digits and '-', at most 63 characters"
        )
    return value


def _image(value: str) -> str:
    try:
        parse_image_reference(value)
    except InvalidImageReference as exc:
        raise PydanticCustomError("image_reference", "invalid image reference: {why}",
                                  {"why": str(exc)}) from None
    return value


def _git_url(value: str) -> str:
    problem = check_git_url(value)
    if problem:
        raise PydanticCustomError("git_url", "git URL {why}", {"why": problem})
    return value


def _git_ref(value: str) -> str:
    problem = check_git_ref(value)
    if problem:
        raise PydanticCustomError("git_ref", "git ref {why}", {"why": problem})
    return value


def env_name_problem(name: str) -> str | None:
    if not ENV_NAME_RE.match(name) or len(name) > 256:
        return "must be an environment variable name: letters, digits and '_', not starting " \
               "with a digit"
    return None


def _health_path(value: str) -> str:
    if not value.startswith("/") or len(value) > 512 or any(c.isspace() for c in value):
        raise PydanticCustomError("health_path", "must be a URL path starting with '/'")
    return value


def _relative_path(value: str) -> str:
    if not value or value.startswith("/") or ".." in value.split("/") or len(value) > 512:
        raise PydanticCustomError("relative_path", "must be a relative path inside the source")
    return value


# The patterns also go into the JSON Schema (OpenAPI), while the validators give the
# friendlier messages.
AppName = Annotated[str, Field(json_schema_extra={"pattern": APP_NAME_RE.pattern}),
                    AfterValidator(_app_name)]
TeamName = Annotated[str, Field(json_schema_extra={"pattern": TEAM_RE.pattern}),
                     AfterValidator(_team)]
_ENV_NAMES: JsonDict = {"propertyNames": {"pattern": ENV_NAME_RE.pattern, "maxLength": 256}}
ImageRef = Annotated[str, Field(max_length=512), AfterValidator(_image)]
GitUrl = Annotated[str, AfterValidator(_git_url)]
GitRefName = Annotated[str, AfterValidator(_git_ref)]
Domain = Annotated[str, Field(pattern=_DOMAIN, max_length=253)]
Role = Literal["admin", "deployer", "viewer"]


# -- request bodies ------------------------------------------------------------------


class GitIn(BaseModel):
    model_config = STRICT
    url: GitUrl
    ref: GitRefName = "main"


class HealthIn(BaseModel):
    model_config = STRICT
    path: Annotated[str, Field(max_length=512, json_schema_extra={"pattern": r"^/\S*$"}),
                    AfterValidator(_health_path)] = "/health"
    # Nomad refuses checks more often than every second or with a shorter timeout
    # (minCheckInterval, minCheckTimeout: 1 s).
    interval_s: float = Field(10.0, ge=1, le=3600)
    timeout_s: float = Field(2.0, ge=1, le=300,
                             description="default 2, or interval_s when that is shorter")

    # Cross-field rules are field validators on the later field, so the error names it
    # (fields are validated in order; a field that already failed is not in info.data).
    @field_validator("timeout_s")
    @classmethod
    def _timeout_below_interval(cls, value: float, info: ValidationInfo) -> float:
        interval = info.data.get("interval_s")
        if interval is not None and value > interval:
            raise PydanticCustomError("timeout", "must not exceed interval_s")
        return value

    @model_validator(mode="after")
    def _default_timeout_fits(self) -> HealthIn:
        # Only the default is adjusted; a timeout given above the interval is refused.
        if "timeout_s" not in self.model_fields_set and self.timeout_s > self.interval_s:
            self.timeout_s = self.interval_s
        return self


class RolloutIn(BaseModel):
    model_config = STRICT
    canaries: int = Field(0, ge=0, le=100)
    max_parallel: int = Field(1, ge=1, le=100)
    min_healthy_time_s: float = Field(10.0, ge=0, le=3600)
    healthy_deadline_s: float = Field(300.0, gt=0, le=86400, validate_default=True)
    progress_deadline_s: float = Field(600.0, ge=0, le=86400, validate_default=True)

    # Nomad's UpdateStrategy.Validate refuses these combinations at register time; say
    # so now, naming the field.
    @field_validator("healthy_deadline_s")
    @classmethod
    def _after_min_healthy_time(cls, value: float, info: ValidationInfo) -> float:
        min_healthy = info.data.get("min_healthy_time_s")
        if min_healthy is not None and min_healthy >= value:
            raise PydanticCustomError(
                "rollout", "must be greater than min_healthy_time_s (Nomad's rule)"
            )
        return value

    @field_validator("progress_deadline_s")
    @classmethod
    def _after_healthy_deadline(cls, value: float, info: ValidationInfo) -> float:
        healthy = info.data.get("healthy_deadline_s")
        if value and healthy is not None and value <= healthy:
            raise PydanticCustomError(
                "rollout", "must be 0 (no deadline) or greater than healthy_deadline_s "
                "(Nomad's rule)"
            )
        return value


class AppCreate(BaseModel):
    """POST /v1/apps: what a developer fills in. All but `name` have defaults."""

    model_config = STRICT
    name: AppName
    team: TeamName | None = Field(None, description="defaults to the token's only team, "
                                  "or 'default'")
    image: ImageRef | None = Field(None, description="image repository (or reference) "
                                   "for image deploys")
    git: GitIn | None = None
    dockerfile: Annotated[str, AfterValidator(_relative_path)] = "Containerfile"
    port: int = Field(8080, ge=1, le=65535)
    instances: int = Field(1, ge=0, le=100)
    cpu_mhz: int = Field(100, ge=10, le=64000)
    memory_mb: int = Field(128, ge=16, le=262144)
    command: str | None = Field(None, min_length=1, max_length=1024)
    args: list[Annotated[str, Field(max_length=4096)]] = Field(default_factory=list,
                                                              max_length=64)
    health: HealthIn = Field(default_factory=lambda: HealthIn.model_validate({}))
    rollout: RolloutIn = Field(default_factory=lambda: RolloutIn.model_validate({}))
    domains: list[Domain] = Field(default_factory=list, max_length=20)
    auto_rollback: bool = True


class AppPatch(BaseModel):
    """PATCH /v1/apps/{app}: only the fields given change; process fields make a release."""

    model_config = STRICT
    team: TeamName | None = None
    image: ImageRef | None = None
    git: GitIn | None = None
    dockerfile: Annotated[str, AfterValidator(_relative_path)] | None = None
    port: int | None = Field(None, ge=1, le=65535)
    instances: int | None = Field(None, ge=0, le=100)
    cpu_mhz: int | None = Field(None, ge=10, le=64000)
    memory_mb: int | None = Field(None, ge=16, le=262144)
    command: str | None = Field(None, min_length=1, max_length=1024)
    args: list[Annotated[str, Field(max_length=4096)]] | None = Field(None, max_length=64)
    health: HealthIn | None = None
    rollout: RolloutIn | None = None
    domains: list[Domain] | None = Field(None, max_length=20)
    auto_rollback: bool | None = None


class DeployIn(BaseModel):
    """POST /v1/apps/{app}/deploys as JSON: exactly one of `image` and `git`.

    A gzip tarball body (Content-Type application/gzip) is the third kind of source.
    """

    model_config = STRICT
    image: ImageRef | None = None
    git: GitIn | None = None
    description: str | None = Field(None, max_length=200)


class ConfigPatch(RootModel[dict[str, Annotated[str, Field(max_length=MAX_CONFIG_VALUE_BYTES)]
                                 | None]]):
    """PATCH /v1/apps/{app}/config: {"KEY": "value"} sets, {"KEY": null} unsets."""

    model_config = ConfigDict(strict=True)
    root: dict[str, Annotated[str, Field(max_length=MAX_CONFIG_VALUE_BYTES)] | None] = Field(
        min_length=1, max_length=MAX_VARS, json_schema_extra=_ENV_NAMES
    )


class SecretsPut(RootModel[dict[str, Annotated[str, Field(max_length=MAX_SECRET_VALUE_BYTES)]]]):
    """PUT /v1/apps/{app}/secrets: {"KEY": "value"}; values are write-only."""

    model_config = ConfigDict(strict=True)
    root: dict[str, Annotated[str, Field(max_length=MAX_SECRET_VALUE_BYTES)]] = Field(
        min_length=1, max_length=MAX_VARS, json_schema_extra=_ENV_NAMES
    )


class RollbackIn(BaseModel):
    model_config = STRICT
    version: int | None = Field(None, ge=1, description="default: the last healthy release")


class ScaleIn(BaseModel):
    model_config = STRICT
    instances: int = Field(ge=0, le=100)


class TokenCreate(BaseModel):
    model_config = STRICT
    name: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9 ._@-]*$")
    role: Role
    teams: list[Annotated[str, Field(pattern=r"^(\*|[a-z0-9][a-z0-9-]{0,62})$")]] = Field(
        min_length=1, max_length=50, description="'*' means every team (admins only)"
    )
    expires_in_s: float | None = Field(None, gt=0, le=365 * 24 * 3600)


# -- response views -------------------------------------------------------------------


class ErrorItem(BaseModel):
    loc: str
    msg: str


class ErrorDetail(BaseModel):
    code: str
    message: str
    details: list[ErrorItem] | None = None


class ErrorBody(BaseModel):
    error: ErrorDetail


class GitView(BaseModel):
    url: str
    ref: str


class HealthView(BaseModel):
    path: str
    interval_s: float
    timeout_s: float


class RolloutView(BaseModel):
    canaries: int
    max_parallel: int
    min_healthy_time_s: float
    healthy_deadline_s: float
    progress_deadline_s: float


class AppView(BaseModel):
    name: str
    team: str
    image: str | None
    git: GitView | None
    dockerfile: str
    port: int
    instances: int
    cpu_mhz: int
    memory_mb: int
    command: str | None
    args: list[str]
    health: HealthView
    rollout: RolloutView
    domains: list[str]
    auto_rollback: bool
    state: str
    current_release: int | None
    last_healthy_release: int | None
    latest_deploy_id: str | None
    active_deploy_id: str | None
    created_at: datetime
    created_by: str


class AppList(BaseModel):
    apps: list[AppView]


class StatusChangeView(BaseModel):
    status: str
    time: datetime
    reason: str | None = None


class RollbackStateView(BaseModel):
    requested_at: datetime
    reason: str
    to_release: int | None = None
    deploy_id: str | None = None
    outcome: str | None = None


DeployStatusName = Literal["pending", "building", "deploying", "healthy", "failed",
                           "rolled_back", "superseded", "cancelled"]


class DeployView(BaseModel):
    id: str
    app: str
    kind: str
    status: DeployStatusName
    release: int | None
    reason: str | None
    source: str
    description: str
    requested_by: str
    created_at: datetime
    updated_at: datetime
    image: str | None
    digest: str | None
    superseded_by: str | None
    automatic: bool
    rollback_for: str | None
    rollback: RollbackStateView | None
    job_version: int | None
    history: list[StatusChangeView]


class DeployList(BaseModel):
    deploys: list[DeployView]


class SecretsPinView(BaseModel):
    version: int
    keys: list[str]


class ReleaseView(BaseModel):
    app: str
    version: int
    kind: str
    description: str
    created_by: str
    deploy_id: str
    image: str
    digest: str
    config: dict[str, str]
    secrets: SecretsPinView | None
    rollback_of: int | None
    created_at: datetime
    process: dict[str, Any]


class ReleaseList(BaseModel):
    releases: list[ReleaseView]


class SecretsView(BaseModel):
    app: str
    version: int | None = Field(description="the current Vault KV v2 version, None if never set")
    keys: list[str]


class ConfigView(BaseModel):
    app: str
    release: int | None
    config: dict[str, str]


class ScaleAccepted(BaseModel):
    app: str
    instances: int
    previous: int
    request_id: str


class AppChanged(BaseModel):
    """PATCH /v1/apps/{app}: the app, and the deploy when process fields changed."""

    app: AppView
    deploy: DeployView | None = None


class AppDeleted(BaseModel):
    app: str
    state: Literal["destroyed"]


class TokenView(BaseModel):
    id: str
    name: str
    role: Role
    teams: list[str]
    created_at: datetime
    created_by: str
    expires_at: datetime | None


class TokenCreated(TokenView):
    token: str = Field(description="the secret; shown once, never again")


class TokenList(BaseModel):
    tokens: list[TokenView]


class AuditEntryView(BaseModel):
    seq: int
    time: datetime
    action: str
    actor: str
    token_id: str | None
    app: str | None
    target: str | None
    method: str
    path: str
    status: int
    outcome: str
    remote: str | None
    request_id: str
    deploy_id: str | None = None


class AuditList(BaseModel):
    entries: list[AuditEntryView]


class HealthzView(BaseModel):
    status: str
    checks: dict[str, str]
    failed: list[str] | None = None
