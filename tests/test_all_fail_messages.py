"""When nothing works, the error says truthfully what every key is doing: resting, disabled or failed."""

from __future__ import annotations

import pytest

from keywheel import AllProvidersFailed, NoKeyAvailable
from keywheel.testing import FakeUpstream
from tests.helpers import WheelFactory

HI = [{"role": "user", "content": "hi"}]


def test_all_resting(fake: FakeUpstream, make_wheel: WheelFactory) -> None:
    wheel = make_wheel(gemini=2, openrouter=2, anthropic=0, AI_PROVIDER="gemini")
    fake.set("test-gemini-key-1", "rate_limit", retry_after=20)
    fake.set("test-gemini-key-2", "rate_limit", retry_after=20)
    fake.set("test-openrouter-key-1", "rate_limit", retry_after=8)
    fake.set("test-openrouter-key-2", "rate_limit", retry_after=8)
    with pytest.raises(NoKeyAvailable) as info:
        wheel.chat(HI)
    message = str(info.value)
    assert "of 4 keys (gemini, openrouter): 4 resting (the earliest back in 8.0 s" in message
    assert "disabled" not in message and "failed" not in message
    assert info.value.retry_after == pytest.approx(8.0, abs=0.5)


def test_all_disabled(fake: FakeUpstream, make_wheel: WheelFactory) -> None:
    wheel = make_wheel(gemini=2, openrouter=2, anthropic=0, AI_PROVIDER="gemini")
    fake.set("test-gemini-key-1", "invalid")
    fake.set("test-gemini-key-2", "invalid")
    fake.set("test-openrouter-key-1", "invalid")
    fake.set("test-openrouter-key-2", "quota")  # OpenRouter's 402: out of credit
    with pytest.raises(AllProvidersFailed) as first:  # each was tried, and each was refused
        wheel.chat(HI)
    assert "all providers failed: of 4 keys (gemini, openrouter): 4 disabled; tried: " in str(first.value)
    assert "resting" not in str(first.value)
    # The next call tries nothing at all, and says the same.
    with pytest.raises(NoKeyAvailable) as second:
        wheel.chat(HI)
    assert str(second.value) == "no usable key: of 4 keys (gemini, openrouter): 4 disabled"
    assert second.value.retry_after is None


def test_mixed_counts_each_kind_separately(fake: FakeUpstream, make_wheel: WheelFactory) -> None:
    """The set-up of the report: 8 keys, 4 disabled — never "every key is resting"."""
    wheel = make_wheel(gemini=4, openrouter=2, anthropic=2, AI_PROVIDER="gemini", FALLBACK_ORDER="openrouter,anthropic")
    fake.set("test-gemini-key-1", "invalid")
    fake.set("test-gemini-key-2", "invalid")
    fake.set("test-gemini-key-3", "invalid")
    fake.set("test-gemini-key-4", "rate_limit", retry_after=5)
    fake.set("test-openrouter-key-1", "quota")
    fake.set("test-openrouter-key-2", "rate_limit", retry_after=5)
    fake.set("test-anthropic-key-1", "overloaded")
    fake.set("test-anthropic-key-2", "overloaded")
    with pytest.raises(AllProvidersFailed) as info:
        wheel.chat(HI)
    message = str(info.value)
    assert "of 8 keys (gemini, openrouter, anthropic):" in message
    assert "2 resting (the earliest back in 5.0 s)" in message
    assert "4 disabled" in message
    assert "2 failed this call (Overloaded)" in message
    assert "every key is resting" not in message
    assert "test-gemini-key" not in message
