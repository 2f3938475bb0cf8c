"""Structured logging for every Shaman process: one JSON object per line on stderr.

`configure_logging()` is called once by the service chassis (shared.service) before
anything logs. It routes both structlog loggers and the standard library's `logging`
(aiohttp, nats, urllib3, ...) through the same processors, so every line has
`timestamp`, `level`, `service`, `logger`, a constant `event` message and fields.

Secret hygiene lives here as a processor (`redact_secrets`): any field whose name looks
like a credential (token, password, secret, authorization, ...) is replaced by
"[REDACTED]", recursively, and the values of a `secrets` mapping are redacted while its
key names stay readable. It is a safety net, not a licence: code must still never pass
secret values to a logger. The processor cannot see inside preformatted stdlib messages
or exception texts, which is why shared.errors keeps values out of messages.

This module does not choose levels per library or ship logs anywhere; stderr is the
interface (the supervisor or the container runtime collects it).
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Mapping
from typing import Any, Literal

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

__all__ = [
    "REDACTED",
    "bind_context",
    "configure_logging",
    "get_logger",
    "is_secret_key",
    "redact_secrets",
]

REDACTED = "[REDACTED]"

# Word-ish match on a normalised key (lower snake case), so `X-Nomad-Token`, `VaultToken`,
# `SecretID`, `db_password` and `Authorization` all match while `tokenizer` does not.
_SECRET_WORDS = re.compile(
    r"(^|_)(token|tokens|password|passwd|passphrase|secret|secrets|secret_id|authorization|"
    r"api_key|apikey|private_key|credential|credentials|cookie|set_cookie|unseal_key|"
    r"unseal_keys|root_token)($|_)"
)
# Fields that describe secrets without holding them stay readable: names, counts,
# versions and Vault paths are what operators need to debug.
_SAFE_SUFFIXES = ("_names", "_keys", "_count", "_version", "_versions", "_path", "_paths", "_ttl_s")
# ...but key material named `*_keys` is still key material.
_KEY_MATERIAL = re.compile(r"(^|_)(unseal|private|api|ssh|signing|encryption|recovery)_keys?$")
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_BEARER = re.compile(r"^\s*(bearer|basic|token)\s+\S+", re.IGNORECASE)
# Keys the pipeline itself owns; never redacted.
_RESERVED = frozenset({"event", "level", "logger", "timestamp", "service"})


def _normalise(key: str) -> str:
    return _CAMEL.sub("_", key).replace("-", "_").lower()


def is_secret_key(key: str) -> bool:
    """True when a field named `key` may hold a credential and must not be logged."""
    norm = _normalise(key)
    if _KEY_MATERIAL.search(norm):
        return True
    if norm.endswith(_SAFE_SUFFIXES):
        return False
    return bool(_SECRET_WORDS.search(norm))


def _redact_all(value: Any) -> Any:
    """Everything under a secret key: keep the shape (mapping keys, list length), drop values."""
    if isinstance(value, Mapping):
        return {k: _redact_all(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_redact_all(v) for v in value]
    if value is None:
        return None
    return REDACTED


def _scrub(value: Any, depth: int = 0) -> Any:
    # Depth-limited: log fields are small; a cycle or a huge structure must not hang a log call.
    if depth > 8:
        return value
    if isinstance(value, Mapping):
        return {
            k: (_redact_all(v) if isinstance(k, str) and is_secret_key(k) else _scrub(v, depth + 1))
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [_scrub(v, depth + 1) for v in value]
    if isinstance(value, str) and _BEARER.match(value):
        return REDACTED
    return value


def redact_secrets(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
    """structlog processor: replace credential-looking fields by "[REDACTED]", recursively."""
    for key in list(event_dict):
        if key in _RESERVED or key.startswith("_"):
            continue
        value = event_dict[key]
        if is_secret_key(key):
            event_dict[key] = _redact_all(value)
        else:
            event_dict[key] = _scrub(value)
    return event_dict


def _add_service(service: str) -> Processor:
    def add_service(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
        event_dict.setdefault("service", service)
        return event_dict

    return add_service


def _drop_color_message(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
    # uvicorn-style duplicate of the message some libraries attach; noise in JSON.
    event_dict.pop("color_message", None)
    return event_dict


_FIRST_KEYS = ("timestamp", "level", "service", "logger", "event")


def _order_keys(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
    # Humans scan the same columns first on every line; JSON consumers don't care.
    ordered = {k: event_dict.pop(k) for k in _FIRST_KEYS if k in event_dict}
    ordered.update(event_dict)
    return ordered


def configure_logging(
    level: str = "info", fmt: Literal["json", "console"] | str = "json", service: str = "shaman"
) -> None:
    """Send structlog and stdlib logging to stderr as JSON lines (or readable console lines).

    Idempotent: calling it again replaces the previous configuration (tests rely on this).
    """
    numeric_level = logging.getLevelName(level.upper())
    if not isinstance(numeric_level, int):
        raise ValueError(f"unknown log level {level!r}: use debug, info, warning or error")
    if fmt not in ("json", "console"):
        raise ValueError(f"unknown log format {fmt!r}: use json or console")

    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.stdlib.ExtraAdder(),
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _add_service(service),
        _drop_color_message,
        redact_secrets,
    ]
    renderer: Processor
    if fmt == "json":
        renderer = structlog.processors.JSONRenderer()
        final: list[Processor] = [
            structlog.processors.format_exc_info,
            _order_keys,
        ]
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
        final = []

    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.processors.StackInfoRenderer(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        # Not cached: reconfiguring (tests, a second run_service in one process) must take effect.
        cache_logger_on_first_use=False,
    )

    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            *final,
            renderer,
        ],
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    handler.set_name("shaman")

    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(numeric_level)
    # Libraries that are chatty at INFO; their warnings still come through.
    for noisy in ("urllib3", "asyncio", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(max(numeric_level, logging.WARNING))


def get_logger(name: str | None = None, **initial: Any) -> structlog.stdlib.BoundLogger:
    """A structlog logger; safe to create at import time (it binds lazily on first use).

    Log with a constant message and fields: `log.info("job registered", app=app, outcome=o)`.
    """
    logger: structlog.stdlib.BoundLogger = structlog.stdlib.get_logger(name, **initial)
    return logger


def bind_context(**fields: Any) -> None:
    """Attach fields (e.g. `app`, `deploy_id`) to every log line of the current task."""
    structlog.contextvars.bind_contextvars(**fields)
