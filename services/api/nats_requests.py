"""Deploy requests published on NATS (`shaman.requests.<app>.deploy`), handled like HTTP.

Any NATS client may publish a `deploy.requested` event (shared.events.deploy) with its
API token in the `Shaman-Token` header and an idempotency key in `Nats-Msg-Id`. The
durable `api-requests` consumer decodes it and calls the same `submit_source_deploy`
as `POST /v1/apps/{app}/deploys`: same validation (the same pydantic model), same
authorisation, same idempotency (a redelivery or a re-publish returns the first
deploy). A refused request is answered on the app's timeline with `deploy.rejected`,
never dropped; if even that cannot be published the message is retried, and one that
cannot be answered on any timeline (a subject token that is no app name) is
dead-lettered with the reason.

Not rate-limited: the work queue already paces it, and a refusal here could only be
another rejection event.
"""

from __future__ import annotations

import msgspec
from pydantic import ValidationError

from services.api.audit import AuditEntry, outcome_of
from services.api.auth import Principal
from services.api.context import ApiContext
from services.api.http_errors import InProgress, RequestInvalid
from services.api.idempotency import fingerprint
from services.api.models import DeployIn
from services.api.source_deploys import submit_source_deploy
from shared.bus.consumer import ConsumerSpec, Delivery
from shared.errors import PermanentError, ShamanError, TemporaryError
from shared.events import DeployRejected, DeployRequested, decode_event
from shared.logging import get_logger
from shared.records import APP_NAME_RE
from shared.subjects import CONSUMER_API_REQUESTS, REQUESTS_ALL, REQUESTS_ROOT, STREAM_REQUESTS

log = get_logger(__name__)

TOKEN_HEADER = "Shaman-Token"


def consumer_spec() -> ConsumerSpec:
    return ConsumerSpec(stream=STREAM_REQUESTS, durable=CONSUMER_API_REQUESTS,
                        filter_subject=REQUESTS_ALL, ack_wait_s=30.0, max_deliver=5)


class Rejected(Exception):
    def __init__(self, code: str, message: str, status: int) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status


def _app_of(subject: str) -> str:
    # shaman.requests.<app>.deploy
    rest = subject[len(REQUESTS_ROOT) + 1 :]
    return rest.rsplit(".", 1)[0] if rest.endswith(".deploy") else rest


class DeployRequestHandler:
    def __init__(self, ctx: ApiContext) -> None:
        self.ctx = ctx

    async def __call__(self, delivery: Delivery) -> None:
        app = _app_of(delivery.subject)
        request_id = delivery.msg_id or f"seq-{delivery.stream_seq}"
        principal: Principal | None = None
        deploy_id: str | None = None
        status = 202
        try:
            if not APP_NAME_RE.match(app):
                raise PermanentError(f"deploy request on {delivery.subject}: the subject does "
                                     "not name a valid app, so it cannot be answered")
            principal, deploy_id, status = await self._accept(app, request_id, delivery)
        except Rejected as rej:
            status = rej.status
            await self.ctx.bus.publish_event(
                DeployRejected(app=app, code=rej.code, message=rej.message,
                               request_id=request_id),
                msg_id=f"rejected:{app}:{request_id}",
            )
            log.info("nats deploy request rejected", app=app, request_id=request_id,
                     code=rej.code, reason=rej.message)
        await self.ctx.audit.append(AuditEntry(
            action="deploy.request", actor=principal.actor if principal else "anonymous",
            token_id=principal.token_id if principal else None,
            team_scope=sorted(principal.teams) if principal else [],
            method="NATS", path=delivery.subject, status=status, outcome=outcome_of(status),
            request_id=f"nats:{app}:{request_id}", app=app, deploy_id=deploy_id,
            remote="nats",
        ))

    async def _accept(
        self, app: str, request_id: str, delivery: Delivery
    ) -> tuple[Principal | None, str, int]:
        try:
            event = decode_event(delivery.data)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise Rejected("validation_failed",
                           f"not a valid deploy.requested event: {exc}", 422) from None
        if not isinstance(event, DeployRequested):
            raise Rejected("validation_failed", "type: must be deploy.requested", 422)
        if event.app != app:
            raise Rejected("validation_failed", "app: differs from the app in the subject", 422)
        token = delivery.headers.get(TOKEN_HEADER)
        if not token:
            raise Rejected("unauthorized", f"missing {TOKEN_HEADER} header", 401)
        principal: Principal | None = None
        try:
            principal = await self.ctx.tokens.authenticate(token)
            fields: dict[str, object] = {}
            if event.image is not None:
                fields["image"] = event.image
            if event.git is not None:
                fields["git"] = {"url": event.git.url, "ref": event.git.ref}
            if event.description is not None:
                fields["description"] = event.description
            try:
                body = DeployIn.model_validate(fields, strict=True)
            except ValidationError as exc:
                raise RequestInvalid.from_pydantic(exc) from None
            if body.image is None and body.git is None:
                raise Rejected("validation_failed",
                               "image: give an image reference or a git source", 422)
            accepted = await submit_source_deploy(
                self.ctx, principal, app, body,
                idempotency_key=f"nats:{request_id}",
                fingerprint=fingerprint("deploy", app, body.model_dump_json()),
            )
        except InProgress as exc:
            raise TemporaryError(str(exc), retry_after_s=2.0) from None
        except TemporaryError:
            raise
        except ShamanError as exc:
            if exc.http_status >= 500:
                raise
            raise Rejected(exc.code, exc.message, exc.http_status) from None
        return principal, accepted.deploy.id, 202 if accepted.created else 200
