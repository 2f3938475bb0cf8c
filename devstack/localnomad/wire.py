"""Decoding request bodies the way Go's encoding/json does for Nomad's structs.

Go matches object keys to struct fields case-insensitively and drops unknown keys;
free-form maps (`Meta`, `Env`, driver `Config`) keep their keys verbatim. A value of
the wrong JSON type is a 400 with Go's `json: cannot unmarshal ...` text. This module
turns a parsed JSON value into dicts keyed by Nomad's canonical field names, using a
small schema of the structs Nomad defines in `api/*.go`. It applies no defaults
(see canonicalize.py) and validates nothing beyond JSON types.
"""

from __future__ import annotations

from typing import Any

import msgspec


class DecodeError(Exception):
    """A request body Go's decoder would reject (HTTP 400)."""


class Struct:
    """A Go struct: canonical field names and their value specs."""

    def __init__(self, go_name: str, **fields: Any) -> None:
        self.go_name = go_name
        self.fields: dict[str, Any] = fields
        self.by_lower = {name.lower(): name for name in fields}


class ListOf:
    def __init__(self, item: Any) -> None:
        self.item = item


class MapOf:
    def __init__(self, item: Any) -> None:
        self.item = item


# Scalar specs (name is the Go type used in error texts).
INT = "int64"
UINT = "uint64"
STR = "string"
BOOL = "bool"
FLOAT = "float64"
RAW = "raw"  # any JSON value kept verbatim (free-form maps, driver config)

STRS = ListOf(STR)
STRMAP = MapOf(STR)

PORT = Struct("Port", Label=STR, Value=INT, To=INT, HostNetwork=STR, IgnoreCollision=BOOL)
DNS = Struct("DNSConfig", Servers=STRS, Searches=STRS, Options=STRS)
NETWORK = Struct(
    "NetworkResource", Mode=STR, Device=STR, CIDR=STR, IP=STR, DNS=DNS,
    ReservedPorts=ListOf(PORT), DynamicPorts=ListOf(PORT), Hostname=STR, MBits=INT, CNI=RAW,
)
RESOURCES = Struct(
    "Resources", CPU=INT, Cores=INT, MemoryMB=INT, MemoryMaxMB=INT, DiskMB=INT,
    Networks=ListOf(NETWORK), Devices=RAW, NUMA=RAW, SecretsMB=INT, IOPS=INT,
)
CONSTRAINT = Struct("Constraint", LTarget=STR, RTarget=STR, Operand=STR)
AFFINITY = Struct("Affinity", LTarget=STR, RTarget=STR, Operand=STR, Weight=INT)
SPREAD = Struct("Spread", Attribute=STR, Weight=INT, SpreadTarget=RAW)
UPDATE = Struct(
    "UpdateStrategy", Stagger=INT, MaxParallel=INT, HealthCheck=STR, MinHealthyTime=INT,
    HealthyDeadline=INT, ProgressDeadline=INT, Canary=INT, AutoRevert=BOOL, AutoPromote=BOOL,
)
RESTART = Struct(
    "RestartPolicy", Interval=INT, Attempts=INT, Delay=INT, Mode=STR, RenderTemplates=BOOL,
)
RESCHEDULE = Struct(
    "ReschedulePolicy", Attempts=INT, Interval=INT, Delay=INT, DelayFunction=STR,
    MaxDelay=INT, Unlimited=BOOL,
)
CHECK_RESTART = Struct("CheckRestart", Limit=INT, Grace=INT, IgnoreWarnings=BOOL)
CHECK = Struct(
    "ServiceCheck", Name=STR, Type=STR, Command=STR, Args=STRS, Path=STR, Protocol=STR,
    PortLabel=STR, Expose=BOOL, AddressMode=STR, Interval=INT, Timeout=INT,
    InitialStatus=STR, TLSServerName=STR, TLSSkipVerify=BOOL, Header=RAW, Method=STR,
    CheckRestart=CHECK_RESTART, GRPCService=STR, GRPCUseTLS=BOOL, TaskName=STR,
    SuccessBeforePassing=INT, FailuresBeforeCritical=INT, FailuresBeforeWarning=INT,
    Body=STR, OnUpdate=STR,
)
SERVICE = Struct(
    "Service", Name=STR, Tags=STRS, CanaryTags=STRS, EnableTagOverride=BOOL, PortLabel=STR,
    AddressMode=STR, Address=STR, Checks=ListOf(CHECK), CheckRestart=CHECK_RESTART,
    Connect=RAW, Meta=STRMAP, CanaryMeta=STRMAP, TaggedAddresses=STRMAP, TaskName=STR,
    OnUpdate=STR, Identity=RAW, Provider=STR, Cluster=STR, Kind=STR,
)
TEMPLATE = Struct(
    "Template", SourcePath=STR, DestPath=STR, EmbeddedTmpl=STR, ChangeMode=STR,
    ChangeSignal=STR, ChangeScript=RAW, Once=BOOL, Splay=INT, Perms=STR, Uid=INT, Gid=INT,
    LeftDelim=STR, RightDelim=STR, Envvars=BOOL, VaultGrace=INT, Wait=RAW, ErrMissingKey=BOOL,
)
VAULT = Struct(
    "Vault", Policies=STRS, Role=STR, Namespace=STR, Cluster=STR, Env=BOOL, DisableFile=BOOL,
    ChangeMode=STR, ChangeSignal=STR, AllowTokenExpiration=BOOL,
)
IDENTITY = Struct(
    "WorkloadIdentity", Name=STR, Audience=STRS, ChangeMode=STR, ChangeSignal=STR, Env=BOOL,
    File=BOOL, Filepath=STR, ServiceName=STR, TTL=INT, ExtraClaims=STRMAP,
)
LOGCONFIG = Struct("LogConfig", MaxFiles=INT, MaxFileSizeMB=INT, Disabled=BOOL, Enabled=BOOL)
LIFECYCLE = Struct("TaskLifecycle", Hook=STR, Sidecar=BOOL)
TASK = Struct(
    "Task", Name=STR, Driver=STR, User=STR, Lifecycle=LIFECYCLE, Config=RAW,
    Constraints=ListOf(CONSTRAINT), Affinities=ListOf(AFFINITY), Env=STRMAP,
    Services=ListOf(SERVICE), Resources=RESOURCES, RestartPolicy=RESTART, Meta=STRMAP,
    KillTimeout=INT, LogConfig=LOGCONFIG, Artifacts=RAW, Vault=VAULT, Consul=RAW,
    Templates=ListOf(TEMPLATE), DispatchPayload=RAW, VolumeMounts=RAW, CSIPluginConfig=RAW,
    Leader=BOOL, ShutdownDelay=INT, KillSignal=STR, Kind=STR, ScalingPolicies=RAW,
    Identity=IDENTITY, Identities=ListOf(IDENTITY), Actions=RAW, Schedule=RAW, Secrets=RAW,
)
SCALING = Struct(
    "ScalingPolicy", ID=STR, Namespace=STR, Type=STR, Target=STRMAP, Min=INT, Max=INT,
    Policy=RAW, Enabled=BOOL, CreateIndex=UINT, ModifyIndex=UINT,
)
TASK_GROUP = Struct(
    "TaskGroup", Name=STR, Count=INT, Constraints=ListOf(CONSTRAINT),
    Affinities=ListOf(AFFINITY), Tasks=ListOf(TASK), Spreads=ListOf(SPREAD), Volumes=RAW,
    RestartPolicy=RESTART, Disconnect=RAW, ReschedulePolicy=RESCHEDULE, EphemeralDisk=RAW,
    Update=UPDATE, Migrate=RAW, Networks=ListOf(NETWORK), Meta=STRMAP,
    Services=ListOf(SERVICE), ShutdownDelay=INT, StopAfterClientDisconnect=INT,
    MaxClientDisconnect=INT, PreventRescheduleOnLost=BOOL, Scaling=SCALING, Consul=RAW,
    MaxRunDuration=INT,
)
JOB = Struct(
    "Job", Region=STR, Namespace=STR, ID=STR, Name=STR, Type=STR, Priority=INT,
    AllAtOnce=BOOL, Datacenters=STRS, NodePool=STR, Constraints=ListOf(CONSTRAINT),
    Affinities=ListOf(AFFINITY), TaskGroups=ListOf(TASK_GROUP), Update=UPDATE,
    Multiregion=RAW, Spreads=ListOf(SPREAD), Periodic=RAW, ParameterizedJob=RAW,
    Reschedule=RESCHEDULE, Migrate=RAW, Meta=STRMAP, ConsulToken=STR, VaultToken=STR,
    ConsulNamespace=STR, VaultNamespace=STR, NomadTokenID=STR, UI=RAW,
    Stop=BOOL, ParentID=STR, Dispatched=BOOL, DispatchIdempotencyToken=STR, Payload=RAW,
    Status=STR, StatusDescription=STR, Stable=BOOL, Version=UINT, SubmitTime=INT,
    CreateIndex=UINT, ModifyIndex=UINT, JobModifyIndex=UINT, VersionTag=RAW,
)
SUBMISSION = Struct("JobSubmission", Source=STR, Format=STR, VariableFlags=STRMAP, Variables=STR)

REGISTER_REQUEST = Struct(
    "JobRegisterRequest", Job=JOB, EnforceIndex=BOOL, JobModifyIndex=UINT,
    PolicyOverride=BOOL, PreserveCounts=BOOL, PreserveResources=BOOL, EvalPriority=INT,
    Submission=SUBMISSION, Region=STR, Namespace=STR, SecretID=STR,
)
PLAN_REQUEST = Struct(
    "JobPlanRequest", Job=JOB, Diff=BOOL, PolicyOverride=BOOL, Region=STR, Namespace=STR,
)
VALIDATE_REQUEST = Struct("JobValidateRequest", Job=JOB, Region=STR, Namespace=STR)
REVERT_REQUEST = Struct(
    "JobRevertRequest", JobID=STR, JobVersion=UINT, EnforcePriorVersion=UINT,
    ConsulToken=STR, VaultToken=STR, TaggedVersion=STR, Namespace=STR, Region=STR,
)
STABLE_REQUEST = Struct("JobStabilityRequest", JobID=STR, JobVersion=UINT, Stable=BOOL)
EVALUATE_REQUEST = Struct(
    "JobEvaluateRequest", JobID=STR, EvalOptions=Struct("EvalOptions", ForceReschedule=BOOL),
)
SCALE_REQUEST = Struct(
    "ScalingRequest", Count=INT, Target=STRMAP, Message=STR, Error=BOOL, Meta=RAW,
    PolicyOverride=BOOL, JobModifyIndex=UINT, EnforceIndex=BOOL,
)
DEPLOYMENT_FAIL = Struct("DeploymentFailRequest", DeploymentID=STR)
DEPLOYMENT_PAUSE = Struct("DeploymentPauseRequest", DeploymentID=STR, Pause=BOOL)
DEPLOYMENT_PROMOTE = Struct("DeploymentPromoteRequest", DeploymentID=STR, All=BOOL, Groups=STRS)
DEPLOYMENT_HEALTH = Struct(
    "DeploymentAllocHealthRequest", DeploymentID=STR, HealthyAllocationIDs=STRS,
    UnhealthyAllocationIDs=STRS,
)

_JSON_TYPE = {dict: "object", list: "array", str: "string", bool: "bool", int: "number",
              float: "number"}


def _type_error(value: Any, want: str, path: str) -> DecodeError:
    got = _JSON_TYPE.get(type(value), "value")
    if got == "bool" and want != BOOL:
        got = "bool"
    return DecodeError(f"json: cannot unmarshal {got} into Go struct field {path} of type {want}")


def _normalize(value: Any, spec: Any, path: str) -> Any:
    if value is None or spec == RAW:
        return value
    if isinstance(spec, Struct):
        if not isinstance(value, dict):
            return _raise(_type_error(value, "api." + spec.go_name, path))
        out: dict[str, Any] = {}
        for key, item in value.items():
            name = spec.by_lower.get(key.lower())
            if name is None:
                continue  # Go ignores unknown keys
            out[name] = _normalize(item, spec.fields[name], f"{spec.go_name}.{name}")
        return out
    if isinstance(spec, ListOf):
        if not isinstance(value, list):
            return _raise(_type_error(value, "[]" + _spec_name(spec.item), path))
        return [_normalize(v, spec.item, path) for v in value]
    if isinstance(spec, MapOf):
        if not isinstance(value, dict):
            return _raise(_type_error(value, "map[string]" + _spec_name(spec.item), path))
        return {k: _normalize(v, spec.item, path) for k, v in value.items()}
    if spec in (INT, UINT):
        if isinstance(value, bool) or not isinstance(value, int | float):
            return _raise(_type_error(value, spec, path))
        if isinstance(value, float):
            if not value.is_integer():
                return _raise(DecodeError(
                    f"json: cannot unmarshal number {value} into Go struct field {path} "
                    f"of type {spec}"))
            value = int(value)
        if spec == UINT and value < 0:
            return _raise(DecodeError(
                f"json: cannot unmarshal number {value} into Go struct field {path} "
                f"of type {spec}"))
        return value
    if spec == STR:
        if not isinstance(value, str):
            return _raise(_type_error(value, spec, path))
        return value
    if spec == BOOL:
        if not isinstance(value, bool):
            return _raise(_type_error(value, spec, path))
        return value
    if spec == FLOAT:
        if isinstance(value, bool) or not isinstance(value, int | float):
            return _raise(_type_error(value, spec, path))
        return value
    return value


def _spec_name(spec: Any) -> str:
    if isinstance(spec, Struct):
        return "*api." + spec.go_name
    if isinstance(spec, str):
        return "interface {}" if spec == RAW else spec
    return "interface {}"


def _raise(err: DecodeError) -> Any:
    raise err


def parse_json(body: bytes) -> Any:
    """Raw bytes -> JSON value, with Go-flavoured error texts (400s)."""
    if not body or not body.strip():
        raise DecodeError("Request body is empty")
    try:
        return msgspec.json.decode(body)
    except msgspec.DecodeError as exc:
        text = str(exc)
        if "truncated" in text.lower():
            raise DecodeError("unexpected EOF") from None
        raise DecodeError(f"invalid character in JSON body: {text}") from None


def decode(body: bytes, spec: Struct) -> dict[str, Any]:
    """Decode a request body into a canonical-key dict for `spec`."""
    value = parse_json(body)
    if not isinstance(value, dict):
        got = _JSON_TYPE.get(type(value), "value")
        raise DecodeError(f"json: cannot unmarshal {got} into Go value of type "
                          f"api.{spec.go_name}")
    result = _normalize(value, spec, spec.go_name)
    assert isinstance(result, dict)
    return result


def normalize(value: Any, spec: Struct) -> dict[str, Any]:
    """Normalize an already-parsed object (e.g. a job read back from a snapshot)."""
    result = _normalize(value, spec, spec.go_name)
    assert isinstance(result, dict)
    return result
