"""Vault (OpenBao) unreachable at deploy time (reliability.md scenarios 20 and 21).

The app has a secret whose value is a unique marker, and a healthy release that reads it.
Then OpenBao is killed (the module's last act: dev mode keeps secrets in memory, so it
cannot come back with them). From then on:
- the api answers secret writes with 503 `secrets_unavailable`, never a 500;
- a new image deploy and a config change both fail closed: no task ever starts without
  its secrets (the template cannot render, the builder cannot read its credentials), the
  automatic rollback fails for the same reason and nothing loops;
- the allocations already running keep serving (canaries keep the old ones in place);
- the marker never shows up in any sink: NATS messages and streams, API responses,
  Nomad's job JSON, any log under the stack home.
"""

from __future__ import annotations

import secrets

import pytest

from tests.chaos.world import World

pytestmark = pytest.mark.chaos


async def _running_allocs(world: World, app: str) -> set[str]:
    return {a["ID"] for a in await world.nomad.allocations(app)
            if a.get("ClientStatus") == "running" and a.get("DesiredStatus") == "run"}


async def test_vault_unreachable_deploys_fail_closed_and_running_allocs_keep_serving(
    world: World,
) -> None:
    marker = f"chaos-secret-{secrets.token_hex(12)}"
    world.markers.append(marker)
    app = await world.create_app(
        tags=("v1", "v2"), instances=2,
        rollout={"canaries": 1, "min_healthy_time_s": 0.2, "healthy_deadline_s": 3,
                 "progress_deadline_s": 8})
    put = await world.client.put_secrets(app, {"API_KEY": marker})
    assert put.status == 202, put.text
    assert put.deploy_id is not None
    await world.wait_outcome(put.deploy_id)
    first = await world.deploy_ok(app, "v1")
    assert (await world.wait_outcome(first)).status == "healthy"
    serving = await _running_allocs(world, app)
    assert len(serving) == 2

    await world.kill("openbao")

    refused = await world.client.put_secrets(app, {"OTHER": "x"})
    assert refused.status == 503, refused.text
    assert refused.body["error"]["code"] == "secrets_unavailable", refused.text
    listed = await world.client.get_secrets(app)
    assert listed.status in (200, 503), listed.text

    image_deploy = await world.deploy_ok(app, "v2")
    image_outcome = await world.wait_outcome(image_deploy, timeout=120)
    config = await world.client.set_config(app, {"FEATURE": "on"})
    assert config.status == 202 and config.deploy_id, config.text
    config_outcome = await world.wait_outcome(config.deploy_id, timeout=120)

    for record in (image_outcome, config_outcome):
        assert record.status == "failed", (record.id, record.status, record.reason)
    # Nothing started without its secrets, and what ran before still runs.
    assert serving <= await _running_allocs(world, app)
    await world.assert_invariants(settle_timeout=120)
