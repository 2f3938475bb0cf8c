"""Server-side job defaults and spec comparison, as Nomad's agent applies them.

Nomad's HTTP agent canonicalizes every submitted job (api.Job.Canonicalize) before it
reaches the scheduler: type, priority, region, namespace, name, datacenters, group
counts, task resources, restart/reschedule policies, and the default update block for
service and system jobs (so every service update gets a deployment). The stored job
has Nomad's full shape, with nulls where Nomad prints nulls.

Also here: `spec_key`, the comparison that decides whether a register is a new
version (read-only fields excluded). Validation lives in validation.py.
"""

from __future__ import annotations

from typing import Any

import msgspec

from .durations import HOUR, MINUTE, S

DEFAULT_UPDATE: dict[str, Any] = {
    "Stagger": 30 * S,
    "MaxParallel": 1,
    "HealthCheck": "checks",
    "MinHealthyTime": 10 * S,
    "HealthyDeadline": 5 * MINUTE,
    "ProgressDeadline": 10 * MINUTE,
    "Canary": 0,
    "AutoRevert": False,
    "AutoPromote": False,
}

RESTART_DEFAULTS = {
    "service": {"Attempts": 2, "Interval": 30 * MINUTE, "Delay": 15 * S, "Mode": "fail",
                "RenderTemplates": False},
    "batch": {"Attempts": 3, "Interval": 24 * HOUR, "Delay": 15 * S, "Mode": "fail",
              "RenderTemplates": False},
}
RESCHEDULE_DEFAULTS = {
    "service": {"Attempts": 0, "Interval": 0, "Delay": 30 * S, "DelayFunction": "exponential",
                "MaxDelay": HOUR, "Unlimited": True},
    "batch": {"Attempts": 1, "Interval": 24 * HOUR, "Delay": 5 * S,
              "DelayFunction": "constant", "MaxDelay": 0, "Unlimited": False},
}

# Fields a user cannot change by submitting a job; they never make a new version.
READ_ONLY_JOB_FIELDS = (
    "Status", "StatusDescription", "Stable", "Version", "SubmitTime", "CreateIndex",
    "ModifyIndex", "JobModifyIndex", "VersionTag", "NomadTokenID",
)

_JOB_SHAPE: dict[str, Any] = {
    "Region": "global", "Namespace": "default", "ID": "", "Name": "", "Type": "service",
    "Priority": 50, "AllAtOnce": False, "Datacenters": None, "NodePool": "default",
    "Constraints": None, "Affinities": None, "Spreads": None, "TaskGroups": None,
    "Update": None, "Multiregion": None, "Periodic": None, "ParameterizedJob": None,
    "Dispatched": False, "DispatchIdempotencyToken": "", "Payload": None, "Reschedule": None,
    "Migrate": None, "Meta": None, "ConsulToken": "", "ConsulNamespace": "", "VaultToken": "",
    "VaultNamespace": "", "NomadTokenID": "", "Stop": False, "ParentID": "", "UI": None,
    "Status": "pending", "StatusDescription": "", "Stable": False, "Version": 0,
    "SubmitTime": 0, "CreateIndex": 0, "ModifyIndex": 0, "JobModifyIndex": 0,
    "VersionTag": None,
}
_GROUP_SHAPE: dict[str, Any] = {
    "Name": "", "Count": 1, "Constraints": None, "Affinities": None, "Spreads": None,
    "Tasks": None, "Volumes": None, "RestartPolicy": None, "Disconnect": None,
    "ReschedulePolicy": None, "EphemeralDisk": None, "Update": None, "Migrate": None,
    "Networks": None, "Meta": None, "Services": None, "ShutdownDelay": None,
    "StopAfterClientDisconnect": None, "MaxClientDisconnect": None,
    "PreventRescheduleOnLost": False, "Scaling": None, "Consul": None, "MaxRunDuration": None,
}
_TASK_SHAPE: dict[str, Any] = {
    "Name": "", "Driver": "", "User": "", "Lifecycle": None, "Config": None,
    "Constraints": None, "Affinities": None, "Env": None, "Services": None, "Resources": None,
    "RestartPolicy": None, "Meta": None, "KillTimeout": 5 * S, "LogConfig": None,
    "Artifacts": None, "Vault": None, "Consul": None, "Templates": None,
    "DispatchPayload": None, "VolumeMounts": None, "CSIPluginConfig": None, "Leader": False,
    "ShutdownDelay": 0, "KillSignal": "", "Kind": "", "ScalingPolicies": None,
    "Identity": None, "Identities": None, "Actions": None, "Schedule": None, "Secrets": None,
}
_TEMPLATE_DEFAULTS: dict[str, Any] = {
    "SourcePath": "", "DestPath": "", "EmbeddedTmpl": "", "ChangeMode": "restart",
    "ChangeSignal": "", "ChangeScript": None, "Once": False, "Splay": 5 * S, "Perms": "0644",
    "Uid": None, "Gid": None, "LeftDelim": "{{", "RightDelim": "}}", "Envvars": False,
    "VaultGrace": 0, "Wait": None, "ErrMissingKey": False,
}
_SERVICE_DEFAULTS: dict[str, Any] = {
    "Name": "", "Tags": None, "CanaryTags": None, "EnableTagOverride": False,
    "PortLabel": "", "AddressMode": "auto", "Address": "", "Checks": None,
    "CheckRestart": None, "Connect": None, "Meta": None, "CanaryMeta": None,
    "TaggedAddresses": None, "TaskName": "", "OnUpdate": "require_healthy", "Identity": None,
    "Provider": "consul", "Cluster": "default", "Kind": "",
}
_CHECK_DEFAULTS: dict[str, Any] = {
    "Name": "", "Type": "", "Command": "", "Args": None, "Path": "", "Protocol": "",
    "PortLabel": "", "Expose": False, "AddressMode": "", "Interval": 0, "Timeout": 0,
    "InitialStatus": "", "TLSServerName": "", "TLSSkipVerify": False, "Header": None,
    "Method": "", "CheckRestart": None, "GRPCService": "", "GRPCUseTLS": False,
    "TaskName": "", "SuccessBeforePassing": 0, "FailuresBeforeCritical": 0,
    "FailuresBeforeWarning": 0, "Body": "", "OnUpdate": "require_healthy",
}


def _fill(obj: dict[str, Any] | None, defaults: dict[str, Any]) -> dict[str, Any]:
    """Merge: explicit non-null values win, everything else comes from `defaults`."""
    out = dict(defaults)  # default values are scalars: a shallow copy is enough
    for key, value in (obj or {}).items():
        if value is not None:
            out[key] = value
    return out


def _job_type(job: dict[str, Any]) -> str:
    return str(job.get("Type") or "service")


def canonicalize_job(raw: dict[str, Any]) -> dict[str, Any]:
    """A normalized (wire.py) job -> Nomad's canonical full job. Does not mutate `raw`."""
    job = _fill(raw, _JOB_SHAPE)
    if not job["Name"]:
        job["Name"] = job["ID"]
    if not job["Datacenters"]:
        job["Datacenters"] = ["*"]
    if not job["NodePool"]:
        job["NodePool"] = "default"
    if not job["Region"]:
        job["Region"] = "global"
    if not job["Namespace"]:
        job["Namespace"] = "default"
    jtype = _job_type(job)
    job["Type"] = jtype
    has_update = jtype in ("service", "system")
    job_update = job.get("Update")
    if has_update:
        # The job-level block keeps only what the user set, over Nomad's zero-ish defaults.
        job["Update"] = _fill(job_update, {
            "Stagger": 30 * S, "MaxParallel": 1, "HealthCheck": "", "MinHealthyTime": 0,
            "HealthyDeadline": 0, "ProgressDeadline": 0, "Canary": 0, "AutoRevert": False,
            "AutoPromote": False,
        })
    groups = []
    for graw in job["TaskGroups"] or []:
        groups.append(_canonicalize_group(graw, jtype, job_update if has_update else None))
    job["TaskGroups"] = groups
    return job


def _canonicalize_group(
    raw: dict[str, Any], jtype: str, job_update: dict[str, Any] | None
) -> dict[str, Any]:
    group = _fill(raw, _GROUP_SHAPE)
    if raw.get("Count") is None:
        scaling = raw.get("Scaling") or {}
        group["Count"] = scaling.get("Min") if scaling.get("Min") is not None else 1
    if jtype in ("service", "system"):
        update = _fill(job_update, DEFAULT_UPDATE)
        for key, value in (raw.get("Update") or {}).items():
            if value is not None:
                update[key] = value
        group["Update"] = update
        group["Migrate"] = _fill(raw.get("Migrate"), {
            "MaxParallel": 1, "HealthCheck": "checks", "MinHealthyTime": 10 * S,
            "HealthyDeadline": 5 * MINUTE,
        })
    else:
        group["Update"] = None
    kind = "batch" if jtype in ("batch", "sysbatch") else "service"
    group["RestartPolicy"] = _fill(raw.get("RestartPolicy"), RESTART_DEFAULTS[kind])
    if jtype in ("service", "batch"):
        group["ReschedulePolicy"] = _fill(raw.get("ReschedulePolicy"), RESCHEDULE_DEFAULTS[kind])
    group["EphemeralDisk"] = _fill(raw.get("EphemeralDisk"),
                                   {"Sticky": False, "SizeMB": 300, "Migrate": False})
    if group["Consul"] is None:
        group["Consul"] = {"Namespace": "", "Cluster": "default", "Partition": ""}
    if group["ShutdownDelay"] is None:
        group["ShutdownDelay"] = None
    group["Networks"] = [_canonicalize_network(n) for n in group["Networks"]] \
        if group["Networks"] else None
    group["Services"] = [_canonicalize_service(s) for s in group["Services"]] \
        if group["Services"] else None
    group["Tasks"] = [_canonicalize_task(t, group["RestartPolicy"]) for t in group["Tasks"] or []]
    return group


def _canonicalize_network(raw: dict[str, Any]) -> dict[str, Any]:
    net = _fill(raw, {"Mode": "host", "Device": "", "CIDR": "", "IP": "", "DNS": None,
                      "ReservedPorts": None, "DynamicPorts": None, "Hostname": "", "MBits": 0,
                      "CNI": None})
    port_defaults = {"Label": "", "Value": 0, "To": 0, "HostNetwork": "default",
                     "IgnoreCollision": False}
    for key in ("ReservedPorts", "DynamicPorts"):
        if net[key]:
            net[key] = [_fill(p, port_defaults) for p in net[key]]
    return net


def _canonicalize_service(raw: dict[str, Any]) -> dict[str, Any]:
    svc = _fill(raw, _SERVICE_DEFAULTS)
    if svc["Checks"]:
        checks = []
        for c in svc["Checks"]:
            check = _fill(c, _CHECK_DEFAULTS)
            if check["Type"] == "http" and not check["Protocol"]:
                check["Protocol"] = "http"
            checks.append(check)
        svc["Checks"] = checks
    return svc


def _canonicalize_task(raw: dict[str, Any], group_restart: dict[str, Any]) -> dict[str, Any]:
    task = _fill(raw, _TASK_SHAPE)
    res = raw.get("Resources") or {}
    task["Resources"] = _fill(res, {"CPU": 100, "Cores": 0, "MemoryMB": 300, "MemoryMaxMB": 0,
                                    "DiskMB": None, "IOPS": None, "Networks": None,
                                    "Devices": None, "NUMA": None, "SecretsMB": None})
    # Nomad copies the group's restart policy into each task, task values winning.
    task["RestartPolicy"] = _fill(raw.get("RestartPolicy"), group_restart)
    task["LogConfig"] = _fill(raw.get("LogConfig"),
                              {"MaxFiles": 10, "MaxFileSizeMB": 10, "Disabled": False})
    if task["Templates"]:
        task["Templates"] = [_fill(t, _TEMPLATE_DEFAULTS) for t in task["Templates"]]
    if task["Services"]:
        task["Services"] = [_canonicalize_service(s) for s in task["Services"]]
    if task["Vault"] is not None:
        task["Vault"] = _fill(task["Vault"], {
            "Policies": None, "Role": "", "Namespace": "", "Cluster": "default", "Env": True,
            "DisableFile": False, "ChangeMode": "restart", "ChangeSignal": "",
            "AllowTokenExpiration": False})
    return task


def spec_view(job: dict[str, Any]) -> dict[str, Any]:
    """The job without read-only fields: what decides whether a register is a new version."""
    return {k: v for k, v in job.items() if k not in READ_ONLY_JOB_FIELDS}


def spec_key(job: dict[str, Any]) -> bytes:
    return msgspec.json.encode(spec_view(job), order="sorted")


def group_key(job: dict[str, Any], group_name: str) -> bytes:
    """What makes a change to a group destructive: its spec (not its count or update
    block) plus the job's meta, which Nomad merges into every task's meta."""
    for group in job.get("TaskGroups") or []:
        if group["Name"] == group_name:
            # Service and check edits are applied in place by Nomad, so they are left out.
            view = {k: v for k, v in group.items()
                    if k not in ("Count", "Update", "Scaling", "Services")}
            view["Tasks"] = [{k: v for k, v in t.items() if k != "Services"}
                             for t in group.get("Tasks") or []]
            return msgspec.json.encode({"g": view, "meta": job.get("Meta")}, order="sorted")
    return b""


def find_group(job: dict[str, Any], name: str) -> dict[str, Any] | None:
    for group in job.get("TaskGroups") or []:
        if group["Name"] == name:
            return group  # type: ignore[no-any-return]
    return None
