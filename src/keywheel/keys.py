"""The key pool of one provider: round-robin selection, cooldowns, disabling, counters.

Each key moves through::

    active ──rate limited──▶ cooling(until) ──time passes──▶ active
    active ──invalid / out of credit──▶ disabled(reason) ──enable()──▶ active

Selection is O(1) amortised however many keys cool: usable keys sit in a ring
(a deque rotated by one per pick), cooling keys in a heap ordered by the time
they come back, and a key that stops being usable is dropped from the ring
lazily when its turn comes.  All state sits behind one ``threading.Lock`` that
is held only around in-memory work — never across I/O or an ``await`` — so one
pool serves plain threads and asyncio tasks alike.

:class:`KeyPool` is the in-memory backend.  The router talks to a pool only
through the methods of :class:`PoolBackend`; a shared backend (SQLite, Redis)
implements the same methods.
"""

from __future__ import annotations

import heapq
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from keywheel.errors import KeyInvalid, QuotaExhausted, RateLimited, UpstreamError
from keywheel.secrets import ApiKey
from keywheel.types import Usage

ACTIVE, COOLING, DISABLED = "active", "cooling", "disabled"

BACKOFF_START = 1.0  # first cooldown when the provider gave no retry time
BACKOFF_CAP = 60.0
THROTTLE_WINDOW = 5.0  # every key rate limited within this many seconds = provider-level throttling


@dataclass(slots=True)
class KeyStats:
    requests: int = 0
    successes: int = 0
    failures: dict[str, int] = field(default_factory=dict)
    last_error: str | None = None
    last_used: float | None = None  # on the pool's clock
    tokens_in: int = 0
    tokens_out: int = 0
    latency_ms_total: float = 0.0
    in_flight: int = 0


@dataclass(slots=True, eq=False)
class _Key:
    key: ApiKey
    state: str = ACTIVE
    until: float = 0.0  # monotonic time a cooling key comes back
    reason: str = ""  # why it cools or is disabled
    backoff: float = 0.0  # next cooldown when no retry time is given
    last_rate_limited: float = float("-inf")
    in_ring: bool = True
    removed: bool = False
    stats: KeyStats = field(default_factory=KeyStats)


class PoolBackend(Protocol):
    """What the router needs of a provider's key pool (the seam for shared state)."""

    provider: str

    def acquire(self) -> ApiKey | float | None:
        """A usable key (counted as in flight), else seconds until one returns, else ``None``."""

    def release(self, key: ApiKey, error: UpstreamError | None, latency_ms: float, usage: Usage | None = None) -> None:
        """Record the outcome of a request made with ``key``."""

    def abandon(self, key: ApiKey) -> None:
        """The request made with ``key`` was cancelled: free its in-flight slot, count nothing."""

    def keys(self) -> list[ApiKey]: ...
    def disable(self, fingerprint: str, reason: str) -> None: ...
    def enable(self, fingerprint: str) -> None: ...
    def add(self, key: ApiKey) -> None: ...
    def remove(self, fingerprint: str) -> None: ...
    def snapshot(self) -> dict[str, Any]: ...


class KeyPool:
    """In-memory key pool of one provider.  Thread- and asyncio-safe."""

    def __init__(
        self,
        provider: str,
        keys: Iterable[ApiKey],
        *,
        clock: Callable[[], float] = time.monotonic,
        throttle_window: float = THROTTLE_WINDOW,
    ) -> None:
        self.provider = provider
        self._clock = clock
        self._throttle_window = throttle_window
        self._lock = threading.Lock()
        self._keys: dict[str, _Key] = {}
        self._ring: deque[_Key] = deque()
        self._cooling: list[tuple[float, int, _Key]] = []
        self._seq = 0
        self._provider_until = 0.0  # provider-level throttling: no key before this
        for key in keys:
            self._add(key)

    # ------------------------------------------------------------------ hot path

    def acquire(self) -> ApiKey | float | None:
        now = self._clock()
        with self._lock:
            if now < self._provider_until:
                return self._provider_until - now
            cooling = self._cooling
            while cooling:
                until, _, rec = cooling[0]
                stale = rec.state != COOLING or rec.until != until  # enabled, disabled or extended since
                if not stale and until > now:
                    break
                heapq.heappop(cooling)
                if not stale:
                    rec.state, rec.reason = ACTIVE, ""
                    if not rec.in_ring:
                        rec.in_ring = True
                        self._ring.append(rec)
            ring = self._ring
            while ring:
                rec = ring.popleft()
                if rec.state == ACTIVE:
                    ring.append(rec)
                    rec.stats.in_flight += 1
                    return rec.key
                rec.in_ring = False
            if cooling:
                return max(cooling[0][0] - now, 0.0)
            return None

    def release(self, key: ApiKey, error: UpstreamError | None, latency_ms: float, usage: Usage | None = None) -> None:
        now = self._clock()
        with self._lock:
            rec = self._keys.get(key.fingerprint)
            if rec is None or (rec.key is not key and rec.key != key):
                return  # removed meanwhile
            stats = rec.stats
            if stats.in_flight > 0:
                stats.in_flight -= 1
            stats.requests += 1
            stats.last_used = now  # monotonic; snapshot() turns it into wall-clock time
            stats.latency_ms_total += latency_ms
            if usage is not None:
                stats.tokens_in += usage.input_tokens
                stats.tokens_out += usage.output_tokens
            if error is None:
                stats.successes += 1
                rec.backoff = 0.0
                return
            kind = type(error).__name__
            stats.failures[kind] = stats.failures.get(kind, 0) + 1
            stats.last_error = f"{kind}: {error.message}"[:300]
            if isinstance(error, RateLimited):
                self._rate_limited(rec, error.retry_after, now)
            elif isinstance(error, QuotaExhausted):
                if error.retry_after:
                    self._cool(rec, now + error.retry_after, f"quota exhausted: {error.message}"[:200])
                else:
                    self._disable(rec, f"out of credit or quota: {error.message}"[:200])
            elif isinstance(error, KeyInvalid):
                self._disable(rec, f"invalid key: {error.message}"[:200])

    def abandon(self, key: ApiKey) -> None:
        with self._lock:
            rec = self._keys.get(key.fingerprint)
            if rec is not None:
                rec.stats.in_flight = max(rec.stats.in_flight - 1, 0)

    # ---------------------------------------------------------------- transitions

    def _rate_limited(self, rec: _Key, retry_after: float | None, now: float) -> None:
        if retry_after is None:
            rec.backoff = min(max(rec.backoff * 2, BACKOFF_START), BACKOFF_CAP)
            delay = rec.backoff
        else:
            delay = retry_after
        rec.last_rate_limited = now
        self._cool(rec, now + delay, "rate limited")
        # Every live key limited within a few seconds: the account or IP is
        # throttled, not the keys.  Rest the provider instead of each key, and
        # undo the per-key backoff growth so no key is punished for it.
        live = [r for r in self._keys.values() if r.state != DISABLED]
        if len(live) > 1 and all(now - r.last_rate_limited <= self._throttle_window for r in live):
            # The latest answer is the best word on when the account is free again.
            self._provider_until = max(self._provider_until, now + delay)
            for r in live:
                r.state, r.until, r.reason, r.backoff = ACTIVE, 0.0, "", 0.0
                r.last_rate_limited = float("-inf")
                if not r.in_ring:
                    r.in_ring = True
                    self._ring.append(r)

    def _cool(self, rec: _Key, until: float, reason: str) -> None:
        if rec.state == DISABLED:
            return
        if rec.state == COOLING and rec.until >= until:
            return  # a second rate limit extends a cooldown, never shortens it
        rec.state, rec.until, rec.reason = COOLING, until, reason
        self._seq += 1
        heapq.heappush(self._cooling, (until, self._seq, rec))

    def _disable(self, rec: _Key, reason: str) -> None:
        rec.state, rec.reason, rec.until = DISABLED, reason, 0.0

    # --------------------------------------------------------------- admin actions

    def _find(self, fingerprint: str) -> _Key:
        rec = self._keys.get(fingerprint)
        if rec is None:
            raise KeyError(f"no key {fingerprint!r} in {self.provider}")
        return rec

    def disable(self, fingerprint: str, reason: str = "disabled by operator") -> None:
        with self._lock:
            self._disable(self._find(fingerprint), reason)

    def enable(self, fingerprint: str) -> None:
        with self._lock:
            rec = self._find(fingerprint)
            rec.state, rec.reason, rec.until, rec.backoff = ACTIVE, "", 0.0, 0.0
            if not rec.in_ring:
                rec.in_ring = True
                self._ring.append(rec)

    def add(self, key: ApiKey) -> None:
        with self._lock:
            if key.fingerprint in self._keys:
                raise ValueError(f"{key.fingerprint} is already in {self.provider}")
            self._add(key)

    def _add(self, key: ApiKey) -> None:
        rec = _Key(key)
        self._keys[key.fingerprint] = rec
        self._ring.append(rec)

    def remove(self, fingerprint: str) -> None:
        with self._lock:
            rec = self._keys.pop(fingerprint, None)
            if rec is None:
                raise KeyError(f"no key {fingerprint!r} in {self.provider}")
            rec.state, rec.removed = DISABLED, True

    def keys(self) -> list[ApiKey]:
        with self._lock:
            return [rec.key for rec in self._keys.values()]

    # --------------------------------------------------------------------- status

    def snapshot(self) -> dict[str, Any]:
        now = self._clock()
        wall_offset = time.time() - now
        with self._lock:
            keys = []
            for rec in self._keys.values():
                state = rec.state
                remaining = 0.0
                if state == COOLING:
                    remaining = max(rec.until - now, 0.0)
                    if remaining == 0.0:
                        state = ACTIVE
                s = rec.stats
                keys.append(
                    {
                        "key": rec.key.fingerprint,
                        "state": state,
                        "reason": rec.reason if state != ACTIVE else "",
                        "cooldown_remaining": round(remaining, 3),
                        "requests": s.requests,
                        "successes": s.successes,
                        "failures": dict(s.failures),
                        "last_error": s.last_error,
                        "last_used": None if s.last_used is None else round(s.last_used + wall_offset, 3),
                        "tokens_in": s.tokens_in,
                        "tokens_out": s.tokens_out,
                        "avg_latency_ms": round(s.latency_ms_total / s.requests, 1) if s.requests else None,
                        "in_flight": s.in_flight,
                    }
                )
            throttled = max(self._provider_until - now, 0.0)
        return {"provider": self.provider, "throttled_for": round(throttled, 3), "keys": keys}
