"""What a key store counts of each key (totals, and per-minute counters for the last hour, the
last day and a provider's chart), and how it names a fault and logs a breaker's change: shared
by the in-process stores and the Redis store."""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from keywheel.errors import UpstreamError
from keywheel.state import rules
from keywheel.state.rules import Breaker, breaker_line
from keywheel.types import Usage

log = logging.getLogger("keywheel.keys")  # the name operators filter on


@dataclass(slots=True)
class KeyStats:
    requests: int = 0
    successes: int = 0
    failures: dict[str, int] = field(default_factory=dict)
    last_error: str | None = None
    last_used: float | None = None  # epoch seconds
    tokens_in: int = 0
    tokens_out: int = 0
    latency_ms_total: float = 0.0
    in_flight: int = 0
    # Rolling counters: one [minute, requests, failures, latency ms total] per minute with traffic,
    # the last DAY_MINUTES of them (the last hour and day, and a provider's per-minute chart).
    minutes: deque[list[float]] = field(default_factory=deque)


#: How many minutes the rolling counters keep (a day), and the minutes of a provider's chart.
DAY_MINUTES = 24 * 60
CHART_MINUTES = 60


def count(stats: KeyStats, error: UpstreamError | None, latency_ms: float, usage: Usage | None, now: float) -> None:
    """A finished request in the key's counters.  Holds the lock."""
    if stats.in_flight > 0:
        stats.in_flight -= 1
    stats.requests += 1
    stats.last_used = now
    stats.latency_ms_total += latency_ms
    minutes = stats.minutes
    bucket = minutes[-1] if minutes and minutes[-1][0] >= now // 60 else minute_bucket(minutes, now)
    bucket[1] += 1
    bucket[3] += latency_ms
    if usage is not None:
        stats.tokens_in += usage.input_tokens
        stats.tokens_out += usage.output_tokens
    if error is None:
        stats.successes += 1
        return
    bucket[2] += 1
    kind = type(error).__name__
    stats.failures[kind] = stats.failures.get(kind, 0) + 1
    stats.last_error = f"{kind}: {error.message}"[:300]


def minute_bucket(minutes: deque[list[float]], now: float) -> list[float]:
    """The counters of the minute of ``now`` (a new one when it starts; the oldest beyond a day go)."""
    minute = now // 60
    if minutes and minutes[-1][0] >= minute:  # this minute (or the clock went back: count it in the last)
        return minutes[-1]
    bucket = [minute, 0, 0, 0.0]
    minutes.append(bucket)
    if len(minutes) > DAY_MINUTES:
        minutes.popleft()
    return bucket


def recent(minutes: deque[list[float]], now: float) -> tuple[dict[str, int], dict[str, int]]:
    """Requests and failures in the last hour and the last day (whole minutes, this one included)."""
    current = now // 60
    hour = [0, 0]
    day = [0, 0]
    for minute, requests, failures, _ in reversed(minutes):
        age = current - minute
        if age >= DAY_MINUTES:
            break
        day[0] += int(requests)
        day[1] += int(failures)
        if age < 60:
            hour[0] += int(requests)
            hour[1] += int(failures)
    return {"requests": hour[0], "failures": hour[1]}, {"requests": day[0], "failures": day[1]}


def chart(keys: Iterable[deque[list[float]]], now: float) -> list[dict[str, Any]]:
    """The provider's last CHART_MINUTES minutes with traffic: requests, failures, mean latency."""
    first = now // 60 - CHART_MINUTES + 1
    totals: dict[float, list[float]] = {}
    for minutes in keys:
        for minute, requests, failures, latency in reversed(minutes):
            if minute < first:
                break
            total = totals.setdefault(minute, [0, 0, 0.0])
            total[0] += requests
            total[1] += failures
            total[2] += latency
    return [
        {"at": minute * 60, "requests": int(r), "failures": int(f), "latency_ms": round(lat / r, 1) if r else None}
        for minute, (r, f, lat) in sorted(totals.items())
    ]


def fault_name(error: UpstreamError) -> str:
    """A fault named without its message (which comes from the upstream and may quote a key)."""
    return type(error).__name__ + (f" HTTP {error.status}" if error.status is not None else "")


def log_breaker(provider: str, old: Breaker, new: Breaker, cause: str) -> None:
    line = breaker_line(provider, old, new, cause)
    if line is not None:
        log.log(logging.WARNING if new.state == rules.OPEN else logging.INFO, "%s", line)
