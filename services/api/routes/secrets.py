"""/v1/apps/{app}/secrets: write-only secrets in Vault KV v2; names and versions out.

Values go from the request body straight to Vault (shared.vault) and nowhere else:
not into records, commands, events, audit entries, logs or responses. The release
pins the Vault version; the deploy carries only the key names.
"""

from __future__ import annotations

from aiohttp import web

from services.api.idempotency import fingerprint
from services.api.intake import DeploySpec, Work
from services.api.models import DeployView, SecretsPut, SecretsView
from services.api.routes.config import check_names
from services.api.routes.deploys import IDEMPOTENCY_HEADER, idempotency_key_of
from services.api.routing import Call, RouteSpec, json_response
from services.api.views import deploy_view
from shared.commands import ChangeSecrets
from shared.errors import NotFoundError, SecretsUnavailable
from shared.subjects import release_work_subject
from shared.vault import SecretsWrite, VaultClient


def vault_of(call: Call) -> VaultClient:
    if call.ctx.vault is None:
        raise SecretsUnavailable("no Vault token configured for the api (VAULT_TOKEN)")
    return call.ctx.vault


async def list_secrets(call: Call) -> web.StreamResponse:
    entry = await call.load_app()
    app = entry.value.spec.name
    meta = await vault_of(call).secret_metadata(app)
    return json_response(SecretsView(app=app, version=meta["version"] or None,
                                     keys=meta["keys"]))


async def _submit_secrets_deploy(
    call: Call, app: str, description: str, write: object, fp: str,
) -> web.StreamResponse:
    async def prepare(deploy_id: str) -> Work:
        # The keys of exactly the version written: a read afterwards could already see
        # a concurrent writer's newer version, and the release would pin a mismatch.
        written: SecretsWrite = await write()  # type: ignore[operator]
        return Work(release_work_subject(app),
                    ChangeSecrets(deploy_id=deploy_id, app=app, version=written["version"],
                                  keys=written["keys"], description=description,
                                  created_by=call.principal.actor), "release")

    accepted = await call.ctx.intake.submit(
        call.principal, app,
        DeploySpec(kind="secrets", source="secrets", description=description,
                   supersedes=False, prepare=prepare),
        idempotency_key=idempotency_key_of(call), fingerprint=fp,
    )
    call.deploy_id = accepted.deploy.id
    return json_response(deploy_view(accepted.deploy), status=202 if accepted.created else 200)


async def put_secrets(call: Call) -> web.StreamResponse:
    body = await call.json_body(SecretsPut)
    values = body.root
    check_names(list(values))
    entry = await call.load_app("deployer")
    app = entry.value.spec.name
    vault = vault_of(call)
    description = "Set secrets " + ", ".join(sorted(values))
    if len(description) > 200:
        description = description[:197] + "..."

    async def write() -> SecretsWrite:
        return await vault.write_secrets(app, values)

    # Names only: even a hash of a weak secret value in KV could be guessed offline.
    fp = fingerprint("secrets", app, *sorted(values))
    return await _submit_secrets_deploy(call, app, description, write, fp)


async def delete_secret(call: Call) -> web.StreamResponse:
    entry = await call.load_app("deployer")
    app = entry.value.spec.name
    key = call.path_param("key")
    check_names([key])
    call.target = key
    vault = vault_of(call)
    meta = await vault.secret_metadata(app)
    if key not in meta["keys"]:
        raise NotFoundError(f"secret {key} is not set for app {app}")

    async def write() -> SecretsWrite:
        return await vault.delete_secret(app, key)

    return await _submit_secrets_deploy(call, app, f"Unset secret {key}", write,
                                        fingerprint("secrets-delete", app, key))


ROUTES = [
    RouteSpec("GET", "/v1/apps/{app}/secrets", list_secrets,
              "Secret names and the current version (never values)",
              responses={200: SecretsView}, tag="secrets"),
    RouteSpec("PUT", "/v1/apps/{app}/secrets", put_secrets,
              "Set secrets (write-only): a new Vault version and a new release",
              role="deployer", body=SecretsPut, responses={202: DeployView, 200: DeployView},
              headers=((IDEMPOTENCY_HEADER, "repeat the request safely for 24 h"),),
              action="secrets.set", tag="secrets"),
    RouteSpec("DELETE", "/v1/apps/{app}/secrets/{key}", delete_secret,
              "Remove one secret: a new Vault version and a new release", role="deployer",
              responses={202: DeployView, 200: DeployView}, action="secrets.unset",
              tag="secrets"),
]
