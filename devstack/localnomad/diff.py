"""The job diff returned by `POST /v1/job/:id/plan` with `Diff: true`.

Shape as Nomad's JobDiff: `{Type, ID, Fields, Objects, TaskGroups[{Type, Name, Fields,
Objects, Tasks[{Type, Name, Fields, Objects, Annotations}], Updates}]}` with Type one
of Added|Deleted|Edited|None, scalar fields flattened (maps as `Meta[key]`), nested
structs as Objects. Field-level coverage is generic rather than Nomad's hand-written
per-struct rules; the types, names and task annotations are what clients read.
"""

from __future__ import annotations

from typing import Any

from .canonicalize import READ_ONLY_JOB_FIELDS

_SKIP_JOB = {*READ_ONLY_JOB_FIELDS, "TaskGroups"}


def _fmt(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def _field(old: Any, new: Any, name: str) -> dict[str, Any] | None:
    o, n = _fmt(old), _fmt(new)
    if old is None and new is None:
        return None
    kind = "None" if o == n else ("Added" if old is None else "Deleted" if new is None
                                  else "Edited")
    return {"Type": kind, "Name": name, "Old": o, "New": n, "Annotations": None}


def _object_diff(old: dict[str, Any] | None, new: dict[str, Any] | None, name: str,
                 contextual: bool) -> dict[str, Any] | None:
    fields, objects = _struct_diff(old or {}, new or {}, set(), contextual)
    if old is None and new is None:
        return None
    kind = "Added" if old is None else "Deleted" if new is None else (
        "Edited" if any(f["Type"] != "None" for f in fields) or objects else "None")
    if kind == "None" and not contextual:
        return None
    return {"Type": kind, "Name": name, "Fields": fields or None, "Objects": objects or None}


def _struct_diff(old: dict[str, Any], new: dict[str, Any], skip: set[str],
                 contextual: bool) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    fields: list[dict[str, Any]] = []
    objects: list[dict[str, Any]] = []
    for key in sorted(set(old) | set(new)):
        if key in skip:
            continue
        o, n = old.get(key), new.get(key)
        if isinstance(o, dict) or isinstance(n, dict):
            if key in ("Meta", "Env", "Config") or ((o or n) and all(
                    not isinstance(v, dict | list) for v in (o or n or {}).values())):
                for sub in sorted(set(o or {}) | set(n or {})):
                    f = _field((o or {}).get(sub), (n or {}).get(sub), f"{key}[{sub}]")
                    if f and (f["Type"] != "None" or contextual):
                        fields.append(f)
            else:
                obj = _object_diff(o, n, key, contextual)
                if obj:
                    objects.append(obj)
        elif isinstance(o, list) or isinstance(n, list):
            if o != n:
                ol, nl = o or [], n or []
                for i in range(max(len(ol), len(nl))):
                    ov = ol[i] if i < len(ol) else None
                    nv = nl[i] if i < len(nl) else None
                    if isinstance(ov, dict) or isinstance(nv, dict):
                        obj = _object_diff(ov, nv, key, contextual)
                        if obj:
                            objects.append(obj)
                    elif ov != nv:
                        f = _field(ov, nv, key)
                        if f:
                            fields.append(f)
        else:
            f = _field(o, n, key)
            if f and (f["Type"] != "None" or contextual):
                fields.append(f)
    return fields, objects


def _by_name(items: list[dict[str, Any]] | None) -> dict[str, dict[str, Any]]:
    return {i["Name"]: i for i in items or []}


def job_diff(old: dict[str, Any] | None, new: dict[str, Any], destructive: set[str],
             updates: dict[str, dict[str, int]]) -> dict[str, Any]:
    """`destructive`: groups whose tasks need a create/destroy update."""
    fields, objects = _struct_diff(old or {}, new, _SKIP_JOB, False)
    groups = []
    old_groups = _by_name((old or {}).get("TaskGroups"))
    new_groups = _by_name(new.get("TaskGroups"))
    for name in sorted(set(old_groups) | set(new_groups)):
        og, ng = old_groups.get(name), new_groups.get(name)
        gfields, gobjects = _struct_diff(og or {}, ng or {}, {"Tasks", "Name"}, False)
        tasks = []
        old_tasks = _by_name((og or {}).get("Tasks"))
        new_tasks = _by_name((ng or {}).get("Tasks"))
        for tname in sorted(set(old_tasks) | set(new_tasks)):
            ot, nt = old_tasks.get(tname), new_tasks.get(tname)
            tfields, tobjects = _struct_diff(ot or {}, nt or {}, {"Name"}, False)
            if ot is None:
                ttype, ann = "Added", ["forces create"]
            elif nt is None:
                ttype, ann = "Deleted", ["forces destroy"]
            elif tfields or tobjects:
                ttype = "Edited"
                ann = ["forces create/destroy update" if name in destructive
                       else "forces in-place update"]
            else:
                ttype, ann = "None", None
            tasks.append({"Type": ttype, "Name": tname, "Fields": tfields or None,
                          "Objects": tobjects or None, "Annotations": ann})
        if og is None:
            gtype = "Added"
        elif ng is None:
            gtype = "Deleted"
        elif gfields or gobjects or any(t["Type"] != "None" for t in tasks):
            gtype = "Edited"
        else:
            gtype = "None"
        upd = {k.lower().replace("inplaceupdate", "in-place update")
               .replace("destructiveupdate", "create/destroy update"): v
               for k, v in updates.get(name, {}).items() if v}
        groups.append({"Type": gtype, "Name": name, "Fields": gfields or None,
                       "Objects": gobjects or None, "Tasks": tasks, "Updates": upd or None})
    if old is None:
        jtype = "Added"
    elif fields or objects or any(g["Type"] != "None" for g in groups):
        jtype = "Edited"
    else:
        jtype = "None"
    return {"Type": jtype, "ID": new["ID"], "Fields": fields or None,
            "Objects": objects or None, "TaskGroups": groups}
