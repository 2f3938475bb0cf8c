"""The bus runtime's Prometheus metrics: messages dead-lettered by this process.

Defined once per process at import (prometheus_client's default registry, served on
/metrics by shared.service), so every service that runs a `WorkConsumer` exports them.
Labels are bounded: `stream` and `durable` are fixed names of the deployment (one or two
consumers per service), `reason` is one of `DEAD_LETTER_REASONS`; never a subject, app or
sequence number.

Not here: NATS's own figures (pending, redelivered, stream sizes): the server's monitoring
port has them (docs/operations.md, "What to alert on").
"""

from __future__ import annotations

from typing import Literal, get_args

from prometheus_client import Counter

DeadLetterReason = Literal[
    "permanent_error",  # the handler raised PermanentError (ValidationFailed included)
    "undecodable",  # the payload did not decode (msgspec DecodeError / ValidationError)
    "max_deliveries",  # the last allowed delivery failed too (TemporaryError or a bug)
    "max_deliveries_advisory",  # no delivery ever decided: the server's MAX_DELIVERIES advisory
]
DEAD_LETTER_REASONS: tuple[DeadLetterReason, ...] = get_args(DeadLetterReason)

DEAD_LETTERS = Counter(
    "shaman_dead_letters_total",
    "Messages this process copied to the dead-letter stream and took off their work stream "
    "(a copy the dedupe window dropped as already dead-lettered is not counted).",
    ["stream", "durable", "reason"],
)


def declare_consumer(stream: str, durable: str) -> None:
    """Create the consumer's series at 0, so the first dead letter is an increase too
    (`increase()` cannot see a series that appears already at 1)."""
    for reason in DEAD_LETTER_REASONS:
        DEAD_LETTERS.labels(stream, durable, reason)


def count_dead_letter(stream: str, durable: str, reason: DeadLetterReason) -> None:
    DEAD_LETTERS.labels(stream, durable, reason).inc()
