"""Job validation with Nomad's error texts, formatted as go-multierror lists.

Runs on a canonicalized job (canonicalize.py). Register and plan turn a non-empty
result into HTTP 500 (Nomad does not code validation errors); `/v1/validate/job`
reports them in its body. Only the rules a deploy platform can trip are here, not
every rule Nomad has.
"""

from __future__ import annotations

from typing import Any

from .durations import S, format_go_duration

VALID_TYPES = ("service", "batch", "system", "sysbatch")
MIN_CHECK_INTERVAL = 1 * S
MIN_CHECK_TIMEOUT = 1 * S


def multierror(errors: list[str]) -> str:
    """go-multierror's ListFormatFunc."""
    if len(errors) == 1:
        return f"1 error occurred:\n\t* {errors[0]}\n\n"
    points = "\n\t".join(f"* {e}" for e in errors)
    return f"{len(errors)} errors occurred:\n\t{points}\n\n"


def validate_job(job: dict[str, Any]) -> list[str]:
    """Top-level errors; nested group/task errors are folded in as Nomad nests them."""
    errors: list[str] = []
    jid = job.get("ID") or ""
    if not jid:
        errors.append("Missing job ID")
    elif " " in jid:
        errors.append("Job ID contains a space")
    elif "\x00" in jid:
        errors.append("Job ID contains a null character")
    if not job.get("Name"):
        errors.append("Missing job name")
    elif "\x00" in job["Name"]:
        errors.append("Job Name contains a null character")
    if job.get("Type") not in VALID_TYPES:
        errors.append(f"Invalid job type: {job.get('Type')!r}")
    if not 1 <= int(job.get("Priority") or 0) <= 100:
        errors.append("Job priority must be between [1, 100]")
    groups = job.get("TaskGroups") or []
    if not groups:
        errors.append("Missing job task groups")
    seen: dict[str, int] = {}
    for idx, group in enumerate(groups, start=1):
        name = group.get("Name") or ""
        if not name:
            errors.append(f"Job task group {idx} missing name")
        elif name in seen:
            errors.append(f"Job task group {idx} redefines '{name}' from group {seen[name]}")
        else:
            seen[name] = idx
        group_errors = _validate_group(job, group)
        if group_errors:
            errors.append(f"Task group {name} validation failed: {multierror(group_errors)}")
    return errors


def _validate_group(job: dict[str, Any], group: dict[str, Any]) -> list[str]:
    errors: list[str] = []
    if int(group.get("Count") or 0) < 0:
        errors.append("Task group count can't be negative")
    tasks = group.get("Tasks") or []
    if not tasks:
        errors.append("Missing tasks for task group")
    update = group.get("Update")
    if update:
        errors.extend(_validate_update(update))
    restart = group.get("RestartPolicy") or {}
    if restart.get("Mode") not in ("delay", "fail"):
        errors.append(f"Unsupported restart mode: {restart.get('Mode')!r}")
    ports = _port_labels(group)
    for svc in group.get("Services") or []:
        errors.extend(_validate_service(svc, ports))
    providers = {s.get("Provider") for s in _all_services(group)}
    if len(providers) > 1:
        errors.append("Multiple service providers used: task group services must use the same "
                      "provider")
    names: set[str] = set()
    for idx, task in enumerate(tasks, start=1):
        tname = task.get("Name") or ""
        if not tname:
            errors.append(f"Task {idx} missing name")
        elif tname in names:
            errors.append(f"Task {idx} redefines '{tname}'")
        names.add(tname)
        task_errors = _validate_task(task, ports)
        if task_errors:
            errors.append(f"Task {tname} validation failed: {multierror(task_errors)}")
    return errors


def _validate_update(u: dict[str, Any]) -> list[str]:
    errors: list[str] = []
    if u.get("HealthCheck") not in ("checks", "task_states", "manual", ""):
        errors.append(f"Invalid health check given: {u.get('HealthCheck')!r}")
    if int(u.get("MaxParallel") or 0) < 0:
        errors.append(f"Max parallel can not be less than zero: {u['MaxParallel']} < 0")
    if int(u.get("Canary") or 0) < 0:
        errors.append(f"Canary count can not be less than zero: {u['Canary']} < 0")
    mht = int(u.get("MinHealthyTime") or 0)
    hd = int(u.get("HealthyDeadline") or 0)
    pd = int(u.get("ProgressDeadline") or 0)
    if mht < 0:
        errors.append(f"Minimum healthy time may not be less than zero: {mht}")
    if hd <= 0:
        errors.append(f"Healthy deadline must be greater than zero: {hd}")
    if pd < 0:
        errors.append(f"Progress deadline must be zero or greater: {pd}")
    if mht >= hd > 0:
        errors.append(f"Minimum healthy time must be less than healthy deadline: "
                      f"{format_go_duration(mht)} > {format_go_duration(hd)}")
    if pd != 0 and hd >= pd:
        errors.append(f"Healthy deadline must be less than progress deadline: "
                      f"{format_go_duration(hd)} > {format_go_duration(pd)}")
    return errors


def _port_labels(group: dict[str, Any]) -> set[str]:
    labels: set[str] = set()
    for net in group.get("Networks") or []:
        for port in (net.get("DynamicPorts") or []) + (net.get("ReservedPorts") or []):
            labels.add(port.get("Label") or "")
    return labels


def _all_services(group: dict[str, Any]) -> list[dict[str, Any]]:
    services = list(group.get("Services") or [])
    for task in group.get("Tasks") or []:
        services.extend(task.get("Services") or [])
    return services


def _validate_service(svc: dict[str, Any], ports: set[str]) -> list[str]:
    errors: list[str] = []
    name = svc.get("Name") or ""
    if not name:
        errors.append("Service must have a name")
    if svc.get("Provider") not in ("consul", "nomad"):
        errors.append(f"Service provider must be either \"consul\" or \"nomad\"; "
                      f"found {svc.get('Provider')!r}")
    label = svc.get("PortLabel") or ""
    if label and not label.isdigit() and label not in ports:
        errors.append(f"Port label {label!r} referenced by services {name} does not exist")
    for check in svc.get("Checks") or []:
        ctype = check.get("Type")
        cname = check.get("Name") or ""
        if svc.get("Provider") == "nomad" and ctype not in ("http", "tcp"):
            errors.append(f"Check {cname} invalid: invalid check type ({ctype!r}), must be one "
                          f"of http, tcp")
            continue
        if ctype not in ("http", "tcp", "grpc", "script"):
            errors.append(f"Check {cname} invalid: invalid type ({ctype})")
            continue
        interval = int(check.get("Interval") or 0)
        timeout = int(check.get("Timeout") or 0)
        if interval < MIN_CHECK_INTERVAL:
            errors.append(f"Check {cname} invalid: interval ({format_go_duration(interval)}) "
                          f"cannot be lower than {format_go_duration(MIN_CHECK_INTERVAL)}")
        if timeout < MIN_CHECK_TIMEOUT:
            errors.append(f"Check {cname} invalid: timeout ({format_go_duration(timeout)}) "
                          f"is lower than required minimum timeout "
                          f"{format_go_duration(MIN_CHECK_TIMEOUT)}")
        if ctype == "http" and not check.get("Path"):
            errors.append(f"Check {cname} invalid: http type must have http path")
    return errors


def _validate_task(task: dict[str, Any], ports: set[str]) -> list[str]:
    errors: list[str] = []
    if not task.get("Driver"):
        errors.append("Missing task driver")
    res = task.get("Resources") or {}
    if int(res.get("CPU") or 0) < 1 and int(res.get("Cores") or 0) < 1:
        errors.append("minimum CPU value is 1; got 0")
    if int(res.get("MemoryMB") or 0) < 10:
        errors.append(f"minimum MemoryMB value is 10; got {res.get('MemoryMB')}")
    for svc in task.get("Services") or []:
        errors.extend(_validate_service(svc, ports))
    for tmpl in task.get("Templates") or []:
        if not tmpl.get("DestPath"):
            errors.append("Template 1 has an empty destination")
        if not tmpl.get("EmbeddedTmpl") and not tmpl.get("SourcePath"):
            errors.append("Must specify a source path or have an embedded template")
    if task.get("Driver") == "docker":
        config = task.get("Config") or {}
        if not isinstance(config, dict) or not config.get("image"):
            errors.append("image is required")
    return errors
