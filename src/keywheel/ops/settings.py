"""The settings of key checks, recovery and credit monitoring, read from the environment.

``KEYWHEEL_PROBE_INTERVAL`` (600 s), ``KEYWHEEL_PROBE_TIMEOUT`` (10 s),
``KEYWHEEL_PROBE_CONCURRENCY`` (8), ``KEYWHEEL_CREDIT_INTERVAL`` (300 s),
``KEYWHEEL_MIN_CREDIT`` (0: off) and, per provider, ``<P>_PROBE`` (``list``, the default: a free
endpoint; ``generate``: a 1-token request, which costs a token but proves credit).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

PROBE_MODES = ("list", "generate")


@dataclass(frozen=True, slots=True)
class OpsSettings:
    probe_interval: float = 600.0  # the gateway re-probes disabled keys this often (0: never)
    probe_timeout: float = 10.0  # one probe's deadline
    probe_concurrency: int = 8  # probes in flight at once
    credit_interval: float = 300.0  # the gateway reads OpenRouter credit this often (0: never)
    min_credit: float = 0.0  # a key with less credit left leaves rotation (0: only when none is left)
    generate: frozenset[str] = field(default_factory=frozenset)  # providers probed by a 1-token request


def ops_settings(env: Mapping[str, str], providers: Iterable[str]) -> tuple[OpsSettings, dict[str, str]]:
    """The settings, and the problems found (variable -> what is wrong)."""
    problems: dict[str, str] = {}

    def number(name: str, default: float, *, positive: bool = False, integer: bool = False) -> float:
        raw = env.get(name, "").strip()
        if not raw:
            return default
        try:
            value = float(raw)
        except ValueError:
            problems[name] = f"expected a number, got {raw!r}"
            return default
        if not math.isfinite(value) or value < 0 or (positive and value == 0):
            problems[name] = f"must be {'more than zero' if positive else 'zero or more'}, got {raw!r}"
            return default
        if integer and value != int(value):
            problems[name] = f"expected a whole number, got {raw!r}"
            return default
        return value

    generate = set()
    for name in providers:
        var = f"{name.upper()}_PROBE"
        mode = env.get(var, "").strip().lower() or "list"
        if mode not in PROBE_MODES:
            problems[var] = f"must be one of {', '.join(PROBE_MODES)}, got {env[var]!r}"
        elif mode == "generate":
            generate.add(name)
    settings = OpsSettings(
        probe_interval=number("KEYWHEEL_PROBE_INTERVAL", 600.0),
        probe_timeout=number("KEYWHEEL_PROBE_TIMEOUT", 10.0, positive=True),
        probe_concurrency=int(number("KEYWHEEL_PROBE_CONCURRENCY", 8, positive=True, integer=True)),
        credit_interval=number("KEYWHEEL_CREDIT_INTERVAL", 300.0),
        min_credit=number("KEYWHEEL_MIN_CREDIT", 0.0),
        generate=frozenset(generate),
    )
    return settings, problems
