"""Retry timing: how long an upstream asked us to wait, in seconds.

Pure functions shared by every adapter.  They read the retry headers the
providers send (``retry-after-ms``, ``retry-after``, Anthropic's
``anthropic-ratelimit-*-reset`` timestamps, OpenAI's ``x-ratelimit-reset-*``
Go durations) and the duration strings in bodies (Gemini's
``RetryInfo.retryDelay``).  A delay is never negative: times already past
clamp to 0.  Unparseable values are treated as absent, never as an error.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from datetime import time as wall_time
from email.utils import parsedate_to_datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

__all__ = [
    "explicit_retry_after",
    "parse_duration",
    "ratelimit_reset_after",
    "retry_after_from_headers",
    "seconds_until_pacific_midnight",
]

# Go's time.Duration text ("1m30.5s", "12ms"); protobuf Duration JSON ("59s") is a subset.
_DURATION = re.compile(r"(?:(?:\d+(?:\.\d*)?|\.\d+)(?:ns|us|µs|μs|ms|s|m|h))+")
_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_UNIT_SECONDS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
# RFC 3339 allows more fractional digits than datetime.fromisoformat takes.
_LONG_FRACTION = re.compile(r"(\.\d{6})\d+")

_ANTHROPIC_LIMITS = ("requests", "tokens", "input-tokens", "output-tokens")
_OPENAI_LIMITS = ("requests", "tokens")


def _clamp(seconds: float) -> float | None:
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)


def parse_duration(text: str) -> float | None:
    """Seconds in a duration string: ``"59s"``, ``"0.250s"``, ``"6m0s"``, ``"12ms"``, ``"1m30.5s"``.

    A bare number is taken as seconds.  Returns ``None`` if ``text`` is not a duration.
    """
    s = text.strip()
    negative = s.startswith("-")
    if s.startswith(("+", "-")):
        s = s[1:]
    if not s:
        return None
    try:
        seconds = float(s)
    except ValueError:
        if not _DURATION.fullmatch(s):
            return None
        seconds = sum(float(num) * _UNIT_SECONDS[unit] for num, unit in _DURATION_PART.findall(s))
    return _clamp(-seconds if negative else seconds)


def _lower(headers: Mapping[str, str]) -> dict[str, str]:
    return {k.lower(): v for k, v in headers.items()}


def _now(now: float | None) -> float:
    return time.time() if now is None else now


def _seconds_until(when: datetime, now: float) -> float | None:
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return _clamp(when.timestamp() - now)


def _parse_retry_after(value: str, now: float) -> float | None:
    value = value.strip()
    try:
        return _clamp(float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return _seconds_until(when, now)


def _parse_rfc3339(value: str, now: float) -> float | None:
    try:
        when = datetime.fromisoformat(_LONG_FRACTION.sub(r"\1", value.strip()))
    except ValueError:
        return None
    return _seconds_until(when, now)


def explicit_retry_after(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """The upstream's explicit ask: ``retry-after-ms``, else ``retry-after`` (seconds or an HTTP date)."""
    h = _lower(headers)
    if "retry-after-ms" in h:
        try:
            ms = _clamp(float(h["retry-after-ms"]) / 1000.0)
        except ValueError:
            ms = None
        if ms is not None:
            return ms
    if "retry-after" in h:
        return _parse_retry_after(h["retry-after"], _now(now))
    return None


def _latest_relevant(resets: list[tuple[float, bool]]) -> float | None:
    """The latest reset among the exhausted limits, or among all if none says it is exhausted."""
    if not resets:
        return None
    exhausted = [delay for delay, empty in resets if empty]
    return max(exhausted or [delay for delay, _ in resets])


def _is_exhausted(remaining: str | None) -> bool:
    if remaining is None:
        return False
    try:
        return float(remaining) <= 0
    except ValueError:
        return False


def _openrouter_reset(value: str, now: float) -> float | None:
    # OpenRouter's own 429s carry X-RateLimit-Reset as epoch milliseconds (unconfirmed in
    # PROVIDERS.md); accept epoch seconds and plain delays too.
    try:
        number = float(value)
    except ValueError:
        return parse_duration(value)
    if number > 1e12:
        return _clamp(number / 1000.0 - now)
    if number > 1e9:
        return _clamp(number - now)
    return _clamp(number)


def ratelimit_reset_after(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """Seconds until the relevant rate-limit window resets, from the providers' reset headers.

    Reads ``anthropic-ratelimit-{requests,tokens,input-tokens,output-tokens}-reset`` (RFC 3339),
    ``x-ratelimit-reset-{requests,tokens}`` (Go durations) and OpenRouter's ``x-ratelimit-reset``.
    When a matching ``-remaining`` header shows which limit ran out, only those resets count.
    """
    h = _lower(headers)
    t = _now(now)
    resets: list[tuple[float, bool]] = []
    for name in _ANTHROPIC_LIMITS:
        value = h.get(f"anthropic-ratelimit-{name}-reset")
        delay = _parse_rfc3339(value, t) if value else None
        if delay is not None:
            resets.append((delay, _is_exhausted(h.get(f"anthropic-ratelimit-{name}-remaining"))))
    for name in _OPENAI_LIMITS:
        value = h.get(f"x-ratelimit-reset-{name}")
        delay = parse_duration(value) if value else None
        if delay is not None:
            resets.append((delay, _is_exhausted(h.get(f"x-ratelimit-remaining-{name}"))))
    value = h.get("x-ratelimit-reset")
    delay = _openrouter_reset(value, t) if value else None
    if delay is not None:
        resets.append((delay, _is_exhausted(h.get("x-ratelimit-remaining"))))
    return _latest_relevant(resets)


def retry_after_from_headers(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """Seconds to wait before retrying, from response headers; ``None`` if they say nothing.

    ``retry-after-ms`` wins, then ``retry-after``; only when both are absent do the
    rate-limit reset headers count.  ``now`` (epoch seconds) is for HTTP dates and timestamps.
    """
    explicit = explicit_retry_after(headers, now)
    if explicit is not None:
        return explicit
    return ratelimit_reset_after(headers, now)


def seconds_until_pacific_midnight(now: float | None = None) -> float | None:
    """Seconds until the next midnight in US/Pacific, when Gemini's daily quotas reset.

    ``None`` if the time-zone database is not available on this system.
    """
    try:
        pacific = ZoneInfo("America/Los_Angeles")
    except ZoneInfoNotFoundError:
        return None
    t = _now(now)
    today = datetime.fromtimestamp(t, pacific).date()
    midnight = datetime.combine(today + timedelta(days=1), wall_time(0), tzinfo=pacific)
    return _clamp(midnight.timestamp() - t)
