"""Identifiers: Nomad uses random UUIDs for allocs, evals, deployments and nodes."""

from __future__ import annotations

import uuid


def new_id() -> str:
    return str(uuid.uuid4())
