"""Dynamic host ports for allocations, from Nomad's default range 20000-32000.

A port is handed out only if nothing on 127.0.0.1 is bound to it at that moment, and
is held until the allocation that got it is terminal on the client. This is not a
resource scheduler: the single node never runs out of anything else.
"""

from __future__ import annotations

import random
import socket


class PortAllocator:
    def __init__(self, low: int = 20000, high: int = 32000, probe: bool = True) -> None:
        self.low = low
        self.high = high
        self.probe = probe
        self.used: dict[int, str] = {}  # port -> alloc ID

    def _free_on_host(self, port: int) -> bool:
        if not self.probe:
            return True
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                return False
        return True

    def allocate(self, alloc_id: str) -> int:
        for _ in range(2000):
            port = random.randint(self.low, self.high)
            if port in self.used or not self._free_on_host(port):
                continue
            self.used[port] = alloc_id
            return port
        raise RuntimeError("no free dynamic port in range")

    def reserve(self, port: int, alloc_id: str) -> None:
        self.used[port] = alloc_id

    def release_alloc(self, alloc_id: str) -> None:
        for port in [p for p, a in self.used.items() if a == alloc_id]:
            del self.used[port]
