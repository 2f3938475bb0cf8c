"""Request models and source checks: strict types, field paths, no values in messages."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from services.api.git_source import check_git_ref, check_git_url
from services.api.http_errors import RequestInvalid
from services.api.models import (
    AppCreate,
    ConfigPatch,
    DeployIn,
    HealthIn,
    RolloutIn,
    SecretsPut,
)


@pytest.mark.parametrize("url", [
    "https://github.com/org/repo.git", "http://git.internal/x", "ssh://git@host/x.git",
    "git@github.com:org/repo.git", "file:///srv/git/repo", "git://host/x",
])
def test_good_git_urls(url: str) -> None:
    assert check_git_url(url) is None


@pytest.mark.parametrize(("url", "why"), [
    ("ftp://host/x", "scheme"), ("https://u:p@host/x", "credentials"),
    ("https://token@host/x", "credentials"), ("http://169.254.169.254/latest", "link-local"),
    ("http://[fe80::1]/x", "link-local"), ("http://0.0.0.0/x", "link-local"),
    ("http://metadata.google.internal/x", "metadata"), ("file://relative", "absolute"),
    ("", "git URL"), ("https:// host/x", "spaces"),
])
def test_bad_git_urls(url: str, why: str) -> None:
    problem = check_git_url(url)
    assert problem is not None and why in problem
    if len(url) > 8:
        assert url not in problem


@pytest.mark.parametrize(("ref", "ok"), [
    ("main", True), ("v1.2.3", True), ("release/2024", True),
    ("3f2c1a9e3f2c1a9e3f2c1a9e3f2c1a9e3f2c1a9e", True), ("-x", False), ("a..b", False),
    ("x.lock", False), ("a b", False), ("", False), ("a//b", False),
])
def test_git_refs(ref: str, ok: bool) -> None:
    assert (check_git_ref(ref) is None) is ok


def locs(exc: ValidationError) -> list[str]:
    return [e["loc"] for e in RequestInvalid.from_pydantic(exc).errors]


def test_strict_types_and_unknown_fields() -> None:
    with pytest.raises(ValidationError) as info:
        AppCreate.model_validate_json(b'{"name": "a", "port": "80", "extra": 1}')
    assert sorted(locs(info.value)) == ["extra", "port"]


def test_nested_locations() -> None:
    with pytest.raises(ValidationError) as info:
        AppCreate.model_validate_json(b'{"name": "a", "health": {"path": "x"}}')
    assert locs(info.value) == ["health.path"]


def test_rollout_orderings_follow_nomad() -> None:
    RolloutIn.model_validate({"min_healthy_time_s": 0.2, "healthy_deadline_s": 2,
                              "progress_deadline_s": 5})
    RolloutIn.model_validate({"progress_deadline_s": 0})
    RolloutIn.model_validate({"healthy_deadline_s": 700, "progress_deadline_s": 0})
    for raw, loc in (({"min_healthy_time_s": 1, "healthy_deadline_s": 10, "progress_deadline_s": 5},
                      "progress_deadline_s"),
                     ({"healthy_deadline_s": 700}, "progress_deadline_s"),  # default 600
                     ({"min_healthy_time_s": 300}, "healthy_deadline_s"),  # default 300
                     ({"min_healthy_time_s": 5, "healthy_deadline_s": 5}, "healthy_deadline_s")):
        with pytest.raises(ValidationError) as info:
            RolloutIn.model_validate(raw)
        assert locs(info.value) == [loc], raw


def test_health_check_bounds_follow_nomad() -> None:
    assert HealthIn.model_validate({"interval_s": 1, "timeout_s": 1}).timeout_s == 1
    # the default timeout (2 s) shrinks to a shorter interval instead of failing
    assert HealthIn.model_validate({"interval_s": 1}).timeout_s == 1
    assert HealthIn.model_validate({}).timeout_s == 2
    for raw, loc in (({"interval_s": 0.5}, "interval_s"), ({"timeout_s": 0.5}, "timeout_s"),
                     ({"interval_s": 2, "timeout_s": 3}, "timeout_s")):
        with pytest.raises(ValidationError) as info:
            HealthIn.model_validate(raw)
        assert locs(info.value) == [loc], raw


def test_messages_never_carry_the_value() -> None:
    secret = "hunter2-very-secret"
    for model, raw in ((SecretsPut, {"A": 5}), (DeployIn, {"image": secret + " x"}),
                       (ConfigPatch, {"A": [secret]}), (SecretsPut, {"A": {"x": secret}})):
        with pytest.raises(ValidationError) as info:
            model.model_validate(raw)
        assert secret not in RequestInvalid.from_pydantic(info.value).message
        assert secret not in str(RequestInvalid.from_pydantic(info.value).to_body())
