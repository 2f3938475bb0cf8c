"""Deploy ids, the rate limiter, SSE framing, the OpenAPI document: pure logic."""

from __future__ import annotations

from services.api.ids import new_deploy_id
from services.api.openapi import build_openapi, render
from services.api.ratelimit import RateLimiter
from services.api.routes import all_routes
from services.api.sse import app_of, chunk, sse_frame


def test_deploy_ids_sort_by_time_and_are_subject_tokens() -> None:
    ids = [new_deploy_id(now_ms=t) for t in (1, 2, 10, 1_000_000, 2**40)]
    assert ids == sorted(ids)
    assert len(set(new_deploy_id(now_ms=5) for _ in range(1000))) == 1000
    assert all(i.replace("-", "").isalnum() for i in ids)


def test_token_bucket() -> None:
    limiter = RateLimiter(rate_per_s=2, burst=3)
    t = 100.0
    assert [limiter.take("a", t).allowed for _ in range(4)] == [True, True, True, False]
    denied = limiter.take("a", t)
    assert not denied.allowed and 0 < denied.retry_after_s <= 0.5
    assert limiter.take("b", t).allowed  # per key
    assert limiter.take("a", t + 0.5).allowed  # refilled one token
    assert not limiter.take("a", t + 0.5).allowed


def test_rate_limiter_stays_bounded() -> None:
    limiter = RateLimiter(rate_per_s=1, burst=1, max_keys=10)
    for i in range(100):
        limiter.take(str(i), now=float(i))
    assert len(limiter._buckets) <= 10


def test_sse_frames() -> None:
    frame = sse_frame(42, b'{"type":"x"}')
    assert frame == b'id: 42\ndata: {"type":"x"}\n\n'
    assert chunk(frame) == b"1b\r\n" + frame + b"\r\n"
    assert app_of("shaman.events.web.rollout.healthy") == "web"


def test_openapi_is_deterministic_and_complete() -> None:
    routes = all_routes()
    assert render(routes) == render(routes)
    spec = build_openapi(routes)
    for route in routes:
        assert route.method.lower() in spec["paths"][route.path]
    mutating = [r for r in routes if r.method != "GET"]
    assert all(r.action for r in mutating), [r.name for r in mutating if not r.action]
