"""The NATS JetStream runtime shared by all services.

- `connection`: connect and drain; publish events and commands with dedupe ids.
- `provision`: streams, KV buckets and object stores with explicit settings.
- `kv`: typed KV access with revisions (compare-and-set) and a mutate loop.
- `consumer`: durable pull consumers where the ack / nak(delay) / term
  mapping, in-progress heartbeats and dead-lettering are done once.

It knows nothing about apps, builds or Nomad.
"""

from shared.bus.connection import Bus, connect_bus
from shared.bus.consumer import ConsumerSpec, Delivery, WorkConsumer
from shared.bus.kv import Entry, TypedKV
from shared.bus.provision import provision

__all__ = [
    "Bus",
    "ConsumerSpec",
    "Delivery",
    "Entry",
    "TypedKV",
    "WorkConsumer",
    "connect_bus",
    "provision",
]
