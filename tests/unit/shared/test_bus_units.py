"""Pure pieces of the bus runtime."""

from __future__ import annotations

from shared.bus.connection import _ErrorLogThrottle


def test_error_log_throttle_lets_one_line_per_interval_through(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    clock = [100.0]
    monkeypatch.setattr("shared.bus.connection.time.monotonic", lambda: clock[0])
    throttle = _ErrorLogThrottle(10.0)
    assert throttle.should_log() == 0
    for _ in range(39):
        clock[0] += 0.25
        assert throttle.should_log() is None
    clock[0] += 1.0
    assert throttle.should_log() == 39
    throttle.reset()
    assert throttle.should_log() == 0
