"""The Redis store's records read back: a key's hash as a state and a status view, the provider's
breaker, a window's use, and the reasons and daily resets the scripts are given (a part of
:mod:`keywheel.state.redis`; Lua has no time zones and cuts text inside a character)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from keywheel.errors import UpstreamError
from keywheel.secrets import ApiKey
from keywheel.state import rules
from keywheel.state.rules import (
    NEVER,
    Breaker,
    KeyState,
)
from keywheel.state.windows import GUARD, WindowSpec, next_midnight


def pairs(flat: list[str]) -> dict[str, str]:
    return dict(zip(flat[::2], flat[1::2], strict=True))


def breaker(fields: Mapping[str, str], by_id: Mapping[str, ApiKey]) -> Breaker:
    state = fields.get("bs", rules.CLOSED)
    trial = fields.get("bt", "")
    trial = by_id[trial].fingerprint if trial in by_id else trial
    failures = int(fields.get("bf", 0))
    until, cooloff = float(fields.get("bu", 0)), float(fields.get("bc", 0))
    if state == rules.CLOSED and not failures:
        return rules.CLOSED_BREAKER
    return Breaker(state, failures, until, cooloff, trial)


def key_state(fingerprint: str, f: Mapping[str, str]) -> KeyState:
    last = f.get("l")
    return KeyState(
        fingerprint,
        f.get("s", rules.ACTIVE),
        float(f.get("u", 0)),
        f.get("r", ""),
        f.get("c", ""),
        float(f.get("b", 0)),
        NEVER if last is None else float(last),
    )


def key_view(fingerprint: str, f: Mapping[str, str], in_flight: int, now: float) -> dict[str, Any]:
    """One key as :meth:`keywheel.state.memory.MemoryStore.snapshot_nowait` shows it."""
    state = f.get("s", rules.ACTIVE)
    remaining = 0.0
    if state == rules.COOLING:
        remaining = max(float(f.get("u", 0)) - now, 0.0)
        if remaining == 0.0:
            state = rules.ACTIVE
    requests = int(f.get("n", 0))
    last_used = f.get("lu")
    return {
        "key": fingerprint,
        "state": state,
        "reason": f.get("r", "") if state != rules.ACTIVE else "",
        "cause": f.get("c", "") if state != rules.ACTIVE else "",  # what recovery may clear (none without it)
        "cooldown_remaining": round(remaining, 3),
        "requests": requests,
        "successes": int(f.get("ok", 0)),
        "failures": {name[2:]: int(v) for name, v in f.items() if name.startswith("f:")},
        "last_error": f.get("le"),
        "last_used": None if last_used is None else round(float(last_used), 3),
        "tokens_in": int(f.get("ti", 0)),
        "tokens_out": int(f.get("to", 0)),
        "avg_latency_ms": round(float(f.get("lat", 0)) / requests, 1) if requests else None,
        "in_flight": in_flight,
    }


def reason(kind: str, error: UpstreamError | None) -> str:
    """The reason the rules give a key for ``kind`` (cut in Python: Lua would cut inside a character)."""
    message = rules.outcome_of(error).message  # as the rules word it (a 402's limit named)
    if kind == "rate_limited":
        return "rate limited"
    if kind == "quota":
        if error is not None and error.retry_after:
            return f"quota exhausted: {message}"[:200]
        return f"out of credit or quota: {message}"[:200]
    if kind == "invalid":
        return f"invalid key: {message}"[:200]
    return ""


def midnights(tz: str, now: float) -> tuple[float, float, float]:
    """Candidates for the next local midnight in ``tz`` on Redis's clock, around this process's day:
    the script takes the first after its own ``now``, so a clock some seconds (or hours) off agrees."""
    first = next_midnight(now - 86400, tz)
    second = next_midnight(first, tz)
    return first, second, next_midnight(second, tz)


def group_reason(error: UpstreamError | None) -> str:
    """The reason a daily quota gives the key's group fellows (as :func:`keywheel.state.rules.apply`)."""
    message = error.message if error is not None else ""
    return f"quota exhausted: daily quota of its group: {message}"[:200]


def window_view(spec: WindowSpec, raw: Any, now: float) -> dict[str, Any]:
    """One window as :meth:`keywheel.state.windows.Window.view` shows it, from its Redis value."""
    if spec.daily:
        reset = float(raw.get("reset", 0)) if raw else 0.0
        used = int(raw.get("used", 0)) if raw and now < reset else 0
        resets: float | None = reset if used else None
    else:
        live = [(str(m), float(t)) for m, t in raw if float(t) > now - spec.seconds - GUARD]
        used = sum(int(m.split(":", 1)[1]) if ":" in m else 1 for m, _ in live)
        resets = live[0][1] + spec.seconds + GUARD if live else None
    return {
        "name": spec.name,
        "unit": spec.unit,
        "limit": spec.limit,
        "seconds": 86400.0 if spec.daily else spec.seconds,
        "used": used,
        "resets_at": round(resets, 3) if resets is not None else None,
    }
