"""The Nomad port: request/response calls (`NomadClient`) and the event stream.

Import from here: `from shared.nomad import NomadClient, NomadEventStream`.
"""

from shared.nomad.client import JSON, NomadClient, ReadRetry
from shared.nomad.event_stream import (
    Envelope,
    NomadEvent,
    NomadEventStream,
    iter_lines,
    reconnecting_envelopes,
)

__all__ = [
    "JSON",
    "Envelope",
    "NomadClient",
    "NomadEvent",
    "NomadEventStream",
    "ReadRetry",
    "iter_lines",
    "reconnecting_envelopes",
]
