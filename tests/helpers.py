"""Helpers shared by the tests."""

from __future__ import annotations

import os
import random
import string
from collections.abc import Callable, Mapping

from keywheel import Wheel
from keywheel.testing import FakeUpstream

#: keys per provider in :func:`fake_env` unless a test says otherwise
COUNTS = {"gemini": 4, "openrouter": 2, "anthropic": 2}


def fake_env(
    fake: FakeUpstream,
    *,
    gemini: int = COUNTS["gemini"],
    openrouter: int = COUNTS["openrouter"],
    anthropic: int = COUNTS["anthropic"],
    **extra: str,
) -> dict[str, str]:
    """An environment pointing every provider at the fake upstream, with obviously fake keys."""
    env = {
        "GEMINI_BASE_URL": fake.gemini_base_url,
        "OPENROUTER_BASE_URL": fake.openrouter_base_url,
        "ANTHROPIC_BASE_URL": fake.anthropic_base_url,
        "KEYWHEEL_MAX_WAIT": "0",
        # Explicit, so no test reads another's key state (keywheel serve would default to ./.keywheel).
        "KEYWHEEL_STATE": "memory",
    }
    for name, n in (("gemini", gemini), ("openrouter", openrouter), ("anthropic", anthropic)):
        for i in range(1, n + 1):
            env[f"{name.upper()}_API_KEY_{i}"] = f"test-{name}-key-{i}"
    env.update(extra)
    return env


def env_of(fake: FakeUpstream, options: Mapping[str, object]) -> dict[str, str]:
    """:func:`fake_env` for a factory fixture's keyword arguments: a provider's name (``gemini=2``)
    is its key count, an upper-case name an environment variable (its value as text)."""
    counts = {name: int(str(options.get(name, n))) for name, n in COUNTS.items()}
    extra = {k: str(v) for k, v in options.items() if k.isupper()}
    return fake_env(
        fake, gemini=counts["gemini"], openrouter=counts["openrouter"], anthropic=counts["anthropic"], **extra
    )


#: set by coverage's ``patch = subprocess`` under ``make test``: how a Python subprocess finds the
#: coverage configuration and measures itself
COVERAGE_VARS = ("COVERAGE_PROCESS_CONFIG", "COVERAGE_PROCESS_START")


def measured(env: Mapping[str, str]) -> dict[str, str]:
    """``env`` for a subprocess the tests start with a clean environment, plus coverage's variables
    when the suite runs under coverage (nothing else of the caller's environment comes along)."""
    return {**{k: os.environ[k] for k in COVERAGE_VARS if k in os.environ}, **env}


WheelFactory = Callable[..., Wheel]


def random_secret(length: int = 16) -> str:
    """A fake key body for leak scans: letters and digits, so no 8 characters of it are likely to
    occur anywhere else by chance (a hex body matches random hex ids)."""
    return "".join(random.choices(string.ascii_letters + string.digits, k=length))


def pieces(secret: str, size: int = 8) -> set[str]:
    """Every ``size``-character piece of ``secret``: what a leak scan looks for."""
    return {secret[i : i + size] for i in range(len(secret) - size + 1)}
