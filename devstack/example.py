"""Build `examples/hello` offline and, with `--deploy`, deploy it through Shaman's HTTP API.

This is the second half of `make run` (the first is `shaman dev up`). It uses only public
contracts, the way a user or a CI job would:

1. build `examples/hello` with buildah (FROM the seeded busybox) and push it to the registry
   as `<registry>/hello:<source digest>` (skipped when the registry already has that tag);
2. `POST /v1/apps` (201, or 409 when it exists), `POST /v1/apps/hello/deploys {"image"}` (202);
3. poll `GET /v1/apps/hello/deploys/{id}` until `healthy`, or fail with the deploy's reason;
4. find the app's address in Nomad (`GET /v1/service/hello`), check it answers, print it.

Addresses and the token come from `SHAMAN_API_URL`, `SHAMAN_TOKEN`, `SHAMAN_REGISTRY`,
`NOMAD_ADDR` when set (as `eval "$(shaman dev env)"` sets them), else from the dev stack.

Not here: anything the services do. This module never talks to NATS or Nomad's write API.

    python -m devstack.example [--deploy] [--timeout SECONDS]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from devstack.components.base import http_request
from devstack.images import ImageError, build, manifest_exists, push, source_digest
from devstack.seed import ensure_busybox
from devstack.stack import StackConfig

APP = "hello"
EXAMPLE_DIR = Path(__file__).resolve().parent.parent / "examples" / APP
TERMINAL = {"healthy", "failed", "rolled_back", "superseded", "cancelled"}
STOP_HINT = "make stop  (or: .venv/bin/shaman dev down)"


class ExampleError(RuntimeError):
    """The example could not be built or deployed; the message says what to look at."""


@dataclass(frozen=True)
class Target:
    api_url: str
    token: str
    registry: str
    nomad_addr: str
    nomad_token: str
    config: StackConfig


def target_from_env() -> Target:
    config = StackConfig.load()
    return Target(
        api_url=os.environ.get("SHAMAN_API_URL", config.api_url).rstrip("/"),
        token=os.environ.get("SHAMAN_TOKEN") or config.admin_token(),
        registry=os.environ.get("SHAMAN_REGISTRY", config.registry),
        nomad_addr=os.environ.get("NOMAD_ADDR", config.nomad_addr).rstrip("/"),
        nomad_token=os.environ.get("NOMAD_TOKEN", config.nomad_token),
        config=config,
    )


def build_and_push(target: Target) -> str:
    """The image reference of examples/hello in the registry, built and pushed if missing."""
    log_path = target.config.home / "logs" / "example.log"
    storage = target.config.storage
    tag = source_digest(EXAMPLE_DIR)
    ref = f"{target.registry}/{APP}:{tag}"
    try:
        ensure_busybox(target.registry, storage, log_path)
        if manifest_exists(target.registry, APP, tag):
            print(f"example: {ref} is already in the registry")
            return ref
        print(f"example: building {ref}")
        build(storage, EXAMPLE_DIR, ref, log_path, build_args={"REGISTRY": target.registry})
        push(storage, ref, log_path)
    except ImageError as error:
        raise ExampleError(str(error)) from error
    print(f"example: pushed {ref}")
    return ref


def api(target: Target, method: str, path: str, payload: Any = None) -> tuple[int, Any]:
    body = None if payload is None else json.dumps(payload).encode()
    response = http_request(
        target.api_url + path, method=method, body=body, timeout_s=10.0,
        headers={"Authorization": f"Bearer {target.token}", "Content-Type": "application/json"},
    )
    if response is None:
        raise ExampleError(
            f"the Shaman API at {target.api_url} does not answer; is the stack up? "
            "(`.venv/bin/shaman dev status` shows each component and its log)"
        )
    try:
        return response.status, response.json()
    except ValueError:
        return response.status, response.body.decode(errors="replace")


def deploy(target: Target, ref: str, timeout_s: float) -> dict[str, Any]:
    """Create the app if needed, deploy `ref` and wait for a final status."""
    status, answer = api(target, "POST", "/v1/apps", {
        "name": APP, "image": f"{target.registry}/{APP}", "port": 8080,
        "health": {"path": "/health"},
    })
    if status not in (201, 409):
        raise ExampleError(f"POST /v1/apps answered {status}: {answer}")
    status, answer = api(target, "POST", f"/v1/apps/{APP}/deploys", {"image": ref})
    if status != 202 or not isinstance(answer, dict) or "id" not in answer:
        raise ExampleError(f"POST /v1/apps/{APP}/deploys answered {status}: {answer}")
    deploy_id = str(answer["id"])
    print(f"example: deploy {deploy_id} accepted ({answer.get('status')})")

    deadline = time.monotonic() + timeout_s
    last = answer.get("status")
    while True:
        status, answer = api(target, "GET", f"/v1/apps/{APP}/deploys/{deploy_id}")
        if status != 200 or not isinstance(answer, dict):
            raise ExampleError(f"GET deploy {deploy_id} answered {status}: {answer}")
        if answer.get("status") != last:
            last = answer.get("status")
            print(f"example: deploy {deploy_id} is {last}")
        if last in TERMINAL:
            if last != "healthy":
                reason = answer.get("reason") or "no reason given"
                raise ExampleError(f"deploy {deploy_id} ended {last}: {reason}")
            return answer
        if time.monotonic() >= deadline:
            raise ExampleError(
                f"deploy {deploy_id} is still {last} after {timeout_s:.0f}s; "
                f"see the logs in {target.config.home / 'logs'}"
            )
        # Polling a public API that has no long-poll: one request a second is plenty.
        time.sleep(1.0)


def app_url(target: Target, timeout_s: float = 60.0, check: bool = True) -> str:
    """The app's URL from its Nomad service registration, once it answers /health.

    With `check=False` (localnomad's simulated runtime, where nothing really listens) the
    registration alone is enough.
    """
    deadline = time.monotonic() + timeout_s
    url = ""
    while True:
        headers = {"X-Nomad-Token": target.nomad_token} if target.nomad_token else {}
        response = http_request(f"{target.nomad_addr}/v1/service/{APP}", headers=headers)
        if response is not None and response.status == 200:
            registrations = response.json() or []
            if registrations:
                first = registrations[0]
                url = f"http://{first['Address']}:{first['Port']}"
                if not check:
                    return url + "/"
                health = http_request(url + "/health")
                if health is not None and health.status == 200:
                    return url + "/"
        if time.monotonic() >= deadline:
            where = url or "no service registration for it in Nomad"
            raise ExampleError(f"the app is healthy per Shaman but does not answer: {where}")
        time.sleep(0.5)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--deploy", action="store_true", help="deploy it through the API too")
    parser.add_argument("--timeout", type=float, default=300.0, help="deploy deadline (s)")
    args = parser.parse_args(argv)
    target = target_from_env()
    try:
        ref = build_and_push(target)
        if not args.deploy:
            print(ref)
            return 0
        result = deploy(target, ref, args.timeout)
        simulated = target.config.runs_localnomad and target.config.runtime == "simulated"
        url = app_url(target, check=not simulated)
    except ExampleError as error:
        print(f"example: {error}", file=sys.stderr)
        print(f"Stop everything: {STOP_HINT}", file=sys.stderr)
        return 1
    release = result.get("release")
    print()
    suffix = f" (release {release})." if release else "."
    print(f"examples/{APP} is deployed and healthy{suffix}")
    note = "   (simulated runtime: nothing really listens there)" if simulated else ""
    print(f"  App:   {url}{note}")
    print(f"  API:   {target.api_url}   (token: eval \"$(.venv/bin/shaman dev env)\")")
    print(f"  Stop:  {STOP_HINT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
