"""Anthropic's spend caps are key faults that fail over and keep the key out (not bad requests)."""

from __future__ import annotations

import time
from datetime import UTC, datetime

from keywheel.errors import QuotaExhausted
from keywheel.providers.anthropic import PROVIDER, regain_after
from keywheel.testing import FakeUpstream
from tests.helpers import WheelFactory

HELLO = [{"role": "user", "content": "hello"}]
UNTIL = datetime(2030, 1, 1, tzinfo=UTC).timestamp()


def test_regain_dates() -> None:
    now = datetime(2029, 12, 31, 12, tzinfo=UTC).timestamp()
    assert regain_after("You will regain access on 2030-01-01 at 00:00 UTC.", now) == 12 * 3600
    assert regain_after("regain access on 2030-01-01.", now) == 12 * 3600
    assert regain_after("regain access on 2030-01-01T06:30", now) == 18.5 * 3600
    assert regain_after("regain access on 2029-12-01 at 00:00 UTC", now) is None  # past
    assert regain_after("regain access on 2030-13-45", now) is None
    assert regain_after("slow down", now) is None


def test_classified_as_key_faults() -> None:
    body = (
        b'{"type":"error","error":{"type":"invalid_request_error","message":"You have reached your specified '
        b'API usage limits. You will regain access on 2030-01-01 at 00:00 UTC."}}'
    )
    error = PROVIDER.adapter.classify_error(400, {}, body)
    assert isinstance(error, QuotaExhausted) and error.scope == "key"
    assert error.retry_after is not None and abs(time.time() + error.retry_after - UNTIL) < 5
    cap = b'{"type":"error","error":{"type":"rate_limit_error","message":"You have reached your monthly usage limit."}}'
    error = PROVIDER.adapter.classify_error(429, {}, cap)
    assert isinstance(error, QuotaExhausted) and error.retry_after is None


def test_both_shapes_fail_over_and_keep_the_key_out(make_wheel: WheelFactory, fake: FakeUpstream) -> None:
    fake.set("test-anthropic-key-1", "spend_limit", shape="400", until="2030-01-01 at 00:00 UTC")
    fake.set("test-anthropic-key-2", "spend_limit", shape="429")
    wheel = make_wheel(AI_PROVIDER="anthropic", FALLBACK_ORDER="gemini", anthropic=2, gemini=1, openrouter=0)
    answer = wheel.chat(HELLO)
    assert answer.provider == "gemini"
    assert [(a.provider, a.outcome, a.status, a.scope) for a in answer.attempts] == [
        ("anthropic", "QuotaExhausted", 400, "key"),
        ("anthropic", "QuotaExhausted", 429, "key"),
        ("gemini", "ok", 200, None),
    ]
    first, second = next(p for p in wheel.snapshot().providers if p.name == "anthropic").keys
    assert first.state == "cooling" and first.cause == "quota" and first.rest_until is not None
    assert abs(first.rest_until - UNTIL) < 5  # out until the date the message names
    assert second.state == "disabled" and second.cause == "quota"  # no date: out until credit is seen
    sent = len(fake.requests)
    assert wheel.chat(HELLO).provider == "gemini"
    assert [r.dialect for r in fake.requests[sent:]] == ["gemini"]  # the capped keys are not tried again


def test_a_429_without_timing_on_every_key_is_a_spend_cap(make_wheel: WheelFactory, fake: FakeUpstream) -> None:
    """Anthropic's tier cap as a plain ``rate_limit_error`` (no retry timing, no credit words): one
    such 429 is a rate limit; once every live key answered so, the keys are out as out of quota
    (not a provider rest that would send them back in seconds), and requests fail over."""
    keys = [f"test-anthropic-key-{i}" for i in (1, 2, 3)]
    for key in keys:
        fake.set(key, "rate_limit", retry_after=None)
    error = PROVIDER.adapter.classify_error(429, {}, fake_body := _plain_429())
    assert error.retry_after is None and getattr(error, "spend_cap", False), fake_body
    wheel = make_wheel(AI_PROVIDER="anthropic", FALLBACK_ORDER="gemini", anthropic=3, gemini=1, openrouter=0)
    answer = wheel.chat(HELLO)
    assert answer.provider == "gemini"
    assert [(a.provider, a.outcome, a.status) for a in answer.attempts] == [
        ("anthropic", "RateLimited", 429),
        ("anthropic", "RateLimited", 429),
        ("anthropic", "RateLimited", 429),
        ("gemini", "ok", 200),
    ]
    anthropic = next(p for p in wheel.snapshot().providers if p.name == "anthropic")
    assert [(k.state, k.cause) for k in anthropic.keys] == [("disabled", "quota")] * 3
    assert all("every key answered 429 without retry timing" in k.reason for k in anthropic.keys)
    assert anthropic.throttled_for(time.time()) == 0  # not a provider rest: the keys are out
    time.sleep(1.2)  # past the first key's 1 s backoff: it would be back if this were a rate limit
    sent = len(fake.requests)
    assert wheel.chat(HELLO).provider == "gemini"
    assert [r.dialect for r in fake.requests[sent:]] == ["gemini"]


def test_a_429_with_timing_on_every_key_is_still_throttling(make_wheel: WheelFactory, fake: FakeUpstream) -> None:
    for i in (1, 2):
        fake.set(f"test-anthropic-key-{i}", "rate_limit", retry_after=30)
    wheel = make_wheel(AI_PROVIDER="anthropic", FALLBACK_ORDER="gemini", anthropic=2, gemini=1, openrouter=0)
    assert wheel.chat(HELLO).provider == "gemini"
    anthropic = next(p for p in wheel.snapshot().providers if p.name == "anthropic")
    assert [k.state for k in anthropic.keys] == ["active", "active"]  # the provider rests instead
    assert anthropic.throttled_for(time.time()) > 20


def _plain_429() -> bytes:
    message = "This request would exceed your organization's rate limit of 50 requests per minute."
    return b'{"type":"error","error":{"type":"rate_limit_error","message":"' + message.encode() + b'"}}'
