"""The library's bound on upstream answers (the gateway's is in tests/gateway/test_limits.py)."""

from __future__ import annotations

import pytest

from keywheel.errors import AllProvidersFailed
from keywheel.gateway.dialects.base import unencodable
from keywheel.testing import FakeUpstream
from tests.helpers import WheelFactory

HELLO = [{"role": "user", "content": "hello"}]


def test_an_answer_with_a_declared_length_over_the_bound_is_refused_and_fails_over(
    make_wheel: WheelFactory, fake: FakeUpstream
) -> None:
    # Every normal answer of the fake is larger than 100 bytes and declares its length.
    wheel = make_wheel(AI_PROVIDER="gemini", FALLBACK_ORDER="openrouter", KEYWHEEL_MAX_RESPONSE_BYTES="100")
    with pytest.raises(AllProvidersFailed) as caught:
        wheel.chat(HELLO)
    outcomes = [a.outcome for a in caught.value.attempts]
    assert outcomes == ["ResponseTooLarge", "ResponseTooLarge"]  # one per provider: not retried on the same
    assert [a.provider for a in caught.value.attempts] == ["gemini", "openrouter"]


def test_a_chunked_answer_over_the_bound_is_refused(make_wheel: WheelFactory, fake: FakeUpstream) -> None:
    wheel = make_wheel(AI_PROVIDER="gemini", openrouter=0, anthropic=0, KEYWHEEL_MAX_RESPONSE_BYTES="100000")
    for i in range(1, 5):
        fake.set(f"test-gemini-key-{i}", "oversized", size=300_000)
    with pytest.raises(AllProvidersFailed) as caught:
        wheel.chat(HELLO)
    assert [a.outcome for a in caught.value.attempts] == ["ResponseTooLarge"]
    for i in range(1, 5):
        fake.set(f"test-gemini-key-{i}", "ok")
    assert wheel.chat(HELLO).text  # within the bound: served


def test_unencodable_names_the_first_integer_beyond_64_bits() -> None:
    body = {"model": "m", "tools": [{"parameters": {"maximum": 2**70}}], "n": 2**64 - 1}
    assert unencodable(body, "") == "tools[0].parameters.maximum"
    assert unencodable({"a": [1, -(2**63), True, 1.5e300]}, "") is None
