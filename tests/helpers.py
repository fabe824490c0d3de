"""Helpers shared by the tests."""

from __future__ import annotations

from collections.abc import Callable

from keywheel import Wheel
from keywheel.testing import FakeUpstream


def fake_env(
    fake: FakeUpstream, *, gemini: int = 4, openrouter: int = 2, anthropic: int = 2, **extra: str
) -> dict[str, str]:
    """An environment pointing every provider at the fake upstream, with obviously fake keys."""
    env = {
        "GEMINI_BASE_URL": fake.gemini_base_url,
        "OPENROUTER_BASE_URL": fake.openrouter_base_url,
        "ANTHROPIC_BASE_URL": fake.anthropic_base_url,
        "KEYWHEEL_MAX_WAIT": "0",
    }
    for name, n in (("gemini", gemini), ("openrouter", openrouter), ("anthropic", anthropic)):
        for i in range(1, n + 1):
            env[f"{name.upper()}_API_KEY_{i}"] = f"test-{name}-key-{i}"
    env.update(extra)
    return env


WheelFactory = Callable[..., Wheel]
