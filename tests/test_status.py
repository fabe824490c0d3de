"""Typed status: built from the pools, serialised at the edge with the field names /status always had."""

from __future__ import annotations

import dataclasses

import pytest

from keywheel import Wheel
from keywheel.config import settings_from_env
from keywheel.errors import RateLimited
from keywheel.render import key_table
from keywheel.secrets import ApiKey
from keywheel.state.memory import MemoryStore
from keywheel.state.windows import Quota, WindowSpec
from keywheel.status import CO_THROTTLE_WARN, KeyStatus, ProviderStatus, Status, provider_status
from keywheel.testing import FakeUpstream

KEY_FIELDS = {
    "key",
    "state",
    "reason",
    "cooldown_remaining",
    "requests",
    "successes",
    "failures",
    "last_error",
    "last_used",
    "tokens_in",
    "tokens_out",
    "avg_latency_ms",
    "in_flight",
    "cause",  # why it is out, for machines (keywheel.state.rules)
    "credit",  # its credit reading (OpenRouter), else null
    "until",
    "last_hour",
    "last_day",
    "group",
}
PROVIDER_FIELDS = {
    "provider",
    "throttled_for",
    "breaker",
    "keys",
    "dialect",
    "model",
    "primary",
    "minutes",
    "groups",
    "co_throttled",
    "warnings",
}
BREAKER_FIELDS = {"state", "failures", "open_until", "open_for", "cooloff"}


def test_status_is_typed_and_its_json_keeps_the_field_names(fake: FakeUpstream) -> None:
    env = {
        "AI_PROVIDER": "gemini",
        "GEMINI_API_KEY_1": "test-gemini-key-1",
        "GEMINI_API_KEY_2": "test-gemini-key-2",
        "GEMINI_BASE_URL": fake.gemini_base_url,
    }
    fake.set("test-gemini-key-1", "rate_limit", retry_after=30)
    with Wheel(settings_from_env(env)) as wheel:
        wheel.chat([{"role": "user", "content": "hi"}])
        typed = wheel.snapshot()
        assert isinstance(typed, Status) and typed.primary == "gemini" and typed.chain == ("gemini",)
        (gemini,) = typed.providers
        assert isinstance(gemini, ProviderStatus) and gemini.primary and gemini.enabled and gemini.dialect == "gemini"
        assert gemini.breaker.state == "closed"
        first, second = gemini.keys
        assert isinstance(first, KeyStatus) and first.state == "cooling" and first.reason == "rate limited"
        assert first.rest_until is not None and 25 < first.rest_until - typed.taken_at <= 30  # wall clock
        assert first.failures == {"RateLimited": 1} and first.requests == 1 and first.successes == 0
        assert second.state == "active" and second.successes == 1 and second.rest_until is None
        with pytest.raises(dataclasses.FrozenInstanceError):
            first.state = "active"  # type: ignore[misc]

        body = wheel.status()
        assert (
            set(body) == {"primary", "chain", "providers", "taken_at"} and 0 <= body["taken_at"] - typed.taken_at < 60
        )
        (provider,) = body["providers"]
        assert set(provider) == PROVIDER_FIELDS and set(provider["breaker"]) == BREAKER_FIELDS
        assert all(set(key) == KEY_FIELDS for key in provider["keys"])
        assert provider["keys"][0]["key"] == first.fingerprint and 25 < provider["keys"][0]["cooldown_remaining"] <= 30
        # the rest's deadline (wall clock, for a countdown), its cause, the rolling counters, the chart
        assert provider["keys"][0]["until"] == first.rest_until and first.cause == "rate_limited"
        assert provider["keys"][0]["last_hour"] == {"requests": 1, "failures": 1} == provider["keys"][0]["last_day"]
        assert provider["keys"][1]["last_hour"] == {"requests": 1, "failures": 0} and second.cause == ""
        minutes = provider["minutes"]  # one minute, or two when the two requests straddled its end
        assert sum(m["requests"] for m in minutes) == 2 and sum(m["failures"] for m in minutes) == 1
        assert all(m["latency_ms"] >= 0 and m["at"] % 60 == 0 for m in minutes)

    # What `keywheel status --url` does with a /status body: read it back, the same values.
    again = Status.from_json(typed.to_json(), taken_at=typed.taken_at)
    assert again.to_json() == typed.to_json()
    assert again.providers[0].keys[0].rest_for(typed.taken_at) == first.rest_for(typed.taken_at)
    assert key_table(again).row_count == 2


@pytest.mark.parametrize("body", [{}, {"providers": "x"}, [], {"primary": "a", "chain": [], "providers": [{}]}])
def test_what_is_not_a_status_is_refused(body: object) -> None:
    with pytest.raises(ValueError, match="not a keywheel status"):
        Status.from_json(body)


def test_status_shows_groups_windows_and_keys_that_behave_as_one_group() -> None:
    clock = [1000.0]
    keys = [ApiKey(f"test-gemini-key-{i}", "gemini", str(i)) for i in range(1, 4)]
    quota = Quota(
        default=(WindowSpec("rpm", 5, 60.0),),
        groups={"proj-a": (WindowSpec("rpm", 5, 60.0),)},
        key_group={keys[0].fingerprint: "proj-a", keys[1].fingerprint: "proj-a"},
    )
    pool = MemoryStore("gemini", keys, clock=lambda: clock[0], quota=quota)
    assert pool.acquire_nowait() == keys[0]
    for i in range(CO_THROTTLE_WARN):  # keys 1 and 3 (different groups) limited within a second, three times
        clock[0] = 1000.0 + 10 * i
        pool.release_nowait(keys[0], RateLimited("a", retry_after=1.0), 1.0)
        clock[0] += 0.5
        pool.release_nowait(keys[2], RateLimited("b", retry_after=1.0), 1.0)
    typed = provider_status(pool.snapshot_nowait(), dialect="gemini", model="m", now=clock[0])
    (named, own) = typed.groups
    assert named.name == "proj-a" and named.keys == (keys[0].fingerprint, keys[1].fingerprint)
    assert named.windows[0].used == 1 and named.windows[0].limit == 5 and named.windows[0].resets_at == 1060.05
    assert own.name is None and own.keys == (keys[2].fingerprint,) and own.windows[0].used == 0
    assert [k.group for k in typed.keys] == ["proj-a", "proj-a", None]
    (warning,) = typed.warnings()
    assert keys[0].fingerprint in warning and keys[2].fingerprint in warning and "GEMINI_API_KEY_<N>_GROUP" in warning
    status = Status("gemini", ("gemini",), (typed,), clock[0])
    body = status.to_json()
    assert body["providers"][0]["warnings"] == [warning]
    assert Status.from_json(body, taken_at=clock[0]).to_json() == body
