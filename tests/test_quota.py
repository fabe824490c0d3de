"""Quota windows and key groups through the library, over the fake upstream: a call waits for a
window's next slot within ``KEYWHEEL_MAX_WAIT`` and is refused with the time to wait beyond it; a
Gemini ``PerDay`` 429 rests the key's whole group (one Google Cloud project) until Pacific
midnight, and a key of another group keeps serving."""

from __future__ import annotations

import time

import pytest

from keywheel import NoKeyAvailable
from keywheel.state.windows import GUARD, next_midnight
from keywheel.testing import FakeUpstream
from tests.helpers import WheelFactory


def test_a_per_day_quota_rests_the_whole_group_and_another_group_serves(
    make_wheel: WheelFactory, fake: FakeUpstream
) -> None:
    wheel = make_wheel(
        AI_PROVIDER="gemini",
        gemini=4,
        openrouter=0,
        anthropic=0,
        GEMINI_API_KEY_1_GROUP="proj-a",
        GEMINI_API_KEY_2_GROUP="proj-a",
        GEMINI_API_KEY_3_GROUP="proj-b",
    )
    fake.set("test-gemini-key-1", "quota", times=1)  # the fake's Gemini quota answer names a PerDay quotaId
    first = wheel.chat([{"role": "user", "content": "hi"}])
    assert first.key.startswith("gemini#3")  # key 1 spent the project's day; key 2 shares it; key 3 served
    midnight = next_midnight(time.time(), "America/Los_Angeles")
    served = {wheel.chat([{"role": "user", "content": "hi"}]).key.split(" ")[0] for _ in range(6)}
    assert served == {"gemini#3", "gemini#4"}
    assert fake.count("test-gemini-key-2") == 0  # never sent to: it rests with its group
    keys = {k.fingerprint.split(" ")[0]: k for k in wheel.snapshot().providers[0].keys}
    for name in ("gemini#1", "gemini#2"):
        assert keys[name].state == "cooling" and keys[name].group == "proj-a"
        assert keys[name].rest_until == pytest.approx(midnight, abs=2.0)  # Pacific midnight, DST included
    assert keys["gemini#3"].state == "active" and keys["gemini#3"].group == "proj-b"
    assert keys["gemini#4"].group is None


def test_a_full_window_is_waited_for_within_max_wait(make_wheel: WheelFactory, fake: FakeUpstream) -> None:
    wheel = make_wheel(
        AI_PROVIDER="gemini", gemini=1, openrouter=0, anthropic=0, GEMINI_RATE="1/1s", KEYWHEEL_MAX_WAIT="3"
    )
    wheel.chat([{"role": "user", "content": "hi"}])
    started = time.monotonic()
    wheel.chat([{"role": "user", "content": "hi"}])  # waits for the window's next slot, then goes
    assert 0.8 <= time.monotonic() - started < 3.0
    first, second = fake.times("test-gemini-key-1")
    assert second - first >= 1.0


def test_a_full_window_beyond_max_wait_is_refused_with_the_time_to_wait(
    make_wheel: WheelFactory, fake: FakeUpstream
) -> None:
    wheel = make_wheel(AI_PROVIDER="gemini", gemini=2, openrouter=0, anthropic=0, GEMINI_RPM="1", KEYWHEEL_MAX_WAIT="0")
    wheel.chat([{"role": "user", "content": "hi"}])
    wheel.chat([{"role": "user", "content": "hi"}])
    with pytest.raises(NoKeyAvailable) as info:
        wheel.chat([{"role": "user", "content": "hi"}])
    assert info.value.retry_after == pytest.approx(60.0 + GUARD, abs=1.0)
    assert "2 at their quota window (the earliest free in" in str(info.value)
    assert fake.count("test-gemini-key-1") == fake.count("test-gemini-key-2") == 1
    windows = [g.windows[0] for g in wheel.snapshot().providers[0].groups]
    assert [(w.name, w.used, w.limit) for w in windows] == [("rpm", 1, 1), ("rpm", 1, 1)]
