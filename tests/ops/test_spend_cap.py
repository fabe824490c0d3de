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
