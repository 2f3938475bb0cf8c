"""shared.errors: what each error means to a retrying worker and to the HTTP API."""

from __future__ import annotations

import pydantic
import pytest

from shared.errors import (
    BackendUnavailable,
    ConflictError,
    NotFoundError,
    PermanentError,
    SecretsUnavailable,
    ShamanError,
    TemporaryError,
    ValidationFailed,
    is_retryable,
)


def test_retryable_classification() -> None:
    assert is_retryable(TemporaryError("nomad timed out"))
    assert is_retryable(BackendUnavailable("nats", "no responders"))
    assert is_retryable(SecretsUnavailable("cannot connect"))
    assert is_retryable(ConflictError("revision moved"))
    assert not is_retryable(PermanentError("bad job"))
    assert not is_retryable(ValidationFailed.field("port", "must be 1-65535"))
    assert not is_retryable(NotFoundError("no app web"))
    assert not is_retryable(ValueError("not ours"))


def test_hierarchy_lets_callers_catch_broadly() -> None:
    assert issubclass(SecretsUnavailable, BackendUnavailable)
    assert issubclass(BackendUnavailable, TemporaryError)
    assert issubclass(ValidationFailed, PermanentError)
    for cls in (TemporaryError, PermanentError, ConflictError, NotFoundError):
        assert issubclass(cls, ShamanError)


def test_temporary_error_carries_retry_after() -> None:
    err = TemporaryError("rate limited", retry_after_s=2.5)
    assert err.retry_after_s == 2.5
    assert err.http_status == 503
    assert TemporaryError("x").retry_after_s is None


def test_backend_unavailable_names_the_component() -> None:
    err = BackendUnavailable("nats", "publish not confirmed")
    assert err.component == "nats"
    assert str(err) == "nats is unavailable: publish not confirmed"
    assert err.to_body() == {
        "error": {
            "code": "backend_unavailable",
            "message": "nats is unavailable: publish not confirmed",
        }
    }


def test_secrets_unavailable_message() -> None:
    err = SecretsUnavailable("cannot connect to http://127.0.0.1:8200")
    assert err.component == "vault"
    assert str(err) == "secrets backend unavailable: cannot connect to http://127.0.0.1:8200"
    assert err.code == "secrets_unavailable"
    assert err.http_status == 503


def test_permanent_error_reason_defaults_to_message() -> None:
    err = PermanentError("nomad rejected register job web: 1 error occurred")
    assert err.reason == str(err)
    err2 = PermanentError("undecodable", "message body is not JSON")
    assert err2.reason == "undecodable"
    assert str(err2) == "message body is not JSON"


def test_validation_failed_body_names_every_field() -> None:
    err = ValidationFailed(
        [{"loc": "health.path", "msg": "must start with /"}, {"loc": "port", "msg": "required"}]
    )
    assert err.http_status == 400
    assert err.to_body() == {
        "error": {
            "code": "validation_failed",
            "message": "health.path: must start with /; port: required",
            "details": [
                {"loc": "health.path", "msg": "must start with /"},
                {"loc": "port", "msg": "required"},
            ],
        }
    }
    assert ValidationFailed.field(["domains", 0], "not a hostname").errors == [
        {"loc": "domains.0", "msg": "not a hostname"}
    ]


class _Health(pydantic.BaseModel):
    path: str


class _App(pydantic.BaseModel):
    name: str
    port: int
    health: _Health


def test_validation_failed_from_pydantic_drops_the_input_value() -> None:
    with pytest.raises(pydantic.ValidationError) as info:
        _App.model_validate({"name": "web", "port": "SUPER-SECRET-VALUE", "health": {}})
    err = ValidationFailed.from_pydantic(info.value)
    locs = {e["loc"] for e in err.errors}
    assert locs == {"port", "health.path"}
    assert "SUPER-SECRET-VALUE" not in str(err)
    assert "SUPER-SECRET-VALUE" not in repr(err.to_body())


def test_conflict_and_not_found_statuses() -> None:
    err = ConflictError("job web changed", expected=10, actual=12)
    assert (err.http_status, err.code, err.expected, err.actual) == (409, "conflict", 10, 12)
    nf = NotFoundError("app web does not exist")
    assert (nf.http_status, nf.code) == (404, "not_found")
    assert nf.to_body()["error"]["message"] == "app web does not exist"
