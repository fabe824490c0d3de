"""The key pool of one provider: round-robin selection, cooldowns, disabling, counters.

Each key moves through::

    active ──rate limited──▶ cooling(until) ──time passes──▶ active
    active ──invalid / out of credit──▶ disabled(reason) ──enable()──▶ active

The provider as a whole has a circuit breaker (Envoy's outlier detection, per
provider rather than per host)::

    closed ──N consecutive provider faults──▶ open(until) ──cool-off over, next request──▶ half-open(trial)
    half-open ──trial succeeds──▶ closed        half-open ──trial fails──▶ open(until, cool-off × 2)

Provider faults are 5xx, 529/503, timeouts and connection errors, over any of
the provider's keys; key faults (429, 401/403, 402), request faults (400) and a
missing model neither count nor reset; any success closes it and resets the
count.  The breaker is a small immutable value (:class:`Breaker`) moved only by
two pure functions of ``(state, outcome or request, now)`` —
:func:`breaker_admit` and :func:`breaker_record` — so a shared backend can keep
it in a store and run the same transitions over wall-clock deadlines.

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
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any, Literal, Protocol

from keywheel.errors import KeyInvalid, ProviderFault, QuotaExhausted, RateLimited, UpstreamError
from keywheel.secrets import ApiKey
from keywheel.types import Usage

ACTIVE, COOLING, DISABLED = "active", "cooling", "disabled"

BACKOFF_START = 1.0  # first cooldown when the provider gave no retry time
BACKOFF_CAP = 60.0
THROTTLE_WINDOW = 5.0  # every key rate limited within this many seconds = provider-level throttling

log = logging.getLogger("keywheel.keys")


# ------------------------------------------------------------------ the breaker

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half-open"


@dataclass(frozen=True, slots=True)
class BreakerPolicy:
    """The numbers of a provider's circuit breaker (``KEYWHEEL_BREAKER_*``)."""

    failures: int = 5  # consecutive provider faults that open it; 0 turns the breaker off
    cooloff: float = 5.0  # the first cool-off; doubled after each failed trial ...
    cooloff_max: float = 60.0  # ... up to this
    trial_timeout: float = 120.0  # a trial that has not reported by then is presumed lost: another may go


@dataclass(frozen=True, slots=True)
class Breaker:
    """One provider's breaker state.  Immutable: the transitions return a new value."""

    state: str = CLOSED  # closed | open | half-open
    failures: int = 0  # consecutive provider faults (a success resets it)
    until: float = 0.0  # open: nothing goes before this; half-open: the trial's lease ends then
    cooloff: float = 0.0  # the cool-off of the current opening (0 while closed)
    trial: str = ""  # half-open: fingerprint of the key carrying the trial


Outcome = Literal["success", "failure", "inconclusive"]


def breaker_admit(b: Breaker, now: float, policy: BreakerPolicy, key: str) -> tuple[Breaker, float]:
    """May a request on the key with fingerprint ``key`` go to the provider at ``now``?

    ``(new state, 0.0)`` to go ahead — when the cool-off is over the request is the
    half-open trial — or ``(state, seconds)`` until the breaker lets one through."""
    if b.state == CLOSED:
        return b, 0.0
    if now < b.until:
        return b, b.until - now
    # The cool-off is over, or the last trial's lease ran out: this request is the one trial.
    return replace(b, state=HALF_OPEN, until=now + policy.trial_timeout, trial=key), 0.0


def breaker_record(b: Breaker, outcome: Outcome, now: float, policy: BreakerPolicy, key: str = "") -> Breaker:
    """The breaker after a provider-level ``outcome`` of a request made at ``now`` on ``key``."""
    if outcome == "success":
        return _CLOSED  # the provider answers: close, forget the count and the cool-off
    if outcome == "inconclusive":
        # The trial told nothing of the provider (cancelled; a key or request fault): the next request tries at once.
        if b.state == HALF_OPEN and key == b.trial:
            return replace(b, state=OPEN, until=now, trial="")
        return b
    failures = b.failures + 1
    if b.state == CLOSED:
        if policy.failures and failures >= policy.failures:
            return Breaker(OPEN, failures, now + policy.cooloff, policy.cooloff)
        return replace(b, failures=failures)
    if b.state == HALF_OPEN:  # the trial (or a request still out from before) failed: open for longer
        cooloff = min(max(b.cooloff * 2, policy.cooloff), policy.cooloff_max)
        return Breaker(OPEN, failures, now + cooloff, cooloff)
    return replace(b, failures=failures)  # open: a late answer from before it opened; the cool-off stands


def breaker_view(b: Breaker, now: float) -> dict[str, Any]:
    """What ``status()`` shows (``open_until`` on the clock of ``now``)."""
    state = b.state
    if state == OPEN and now >= b.until:
        state = HALF_OPEN  # cool-off over: the next request is the trial
    return {
        "state": state,
        "failures": b.failures,
        "open_until": b.until if state == OPEN else None,
        "open_for": round(max(b.until - now, 0.0), 3) if state == OPEN else 0.0,
        "cooloff": b.cooloff,
    }


_CLOSED = Breaker()


@dataclass(frozen=True, slots=True)
class Open:
    """What :meth:`PoolBackend.acquire` returns while the provider's breaker is open:
    skip the provider; ``retry_in`` seconds until it lets a trial through."""

    retry_in: float


def _transition(provider: str, old: Breaker, new: Breaker, cause: str) -> str | None:
    """The one log line of a breaker transition, or ``None`` when the state did not change."""
    if old.state == new.state:
        return None
    if new.state == OPEN:
        if old.state == CLOSED:
            return (
                f"breaker of {provider} opened after {new.failures} consecutive provider faults (last: {cause}); "
                f"skipping {provider} for {new.cooloff:g} s"
            )
        if cause == "inconclusive":
            return f"breaker of {provider}: the trial told nothing (cancelled, key fault); the next one is the trial"
        return f"breaker of {provider} reopened: the trial failed ({cause}); skipping {provider} for {new.cooloff:g} s"
    if new.state == HALF_OPEN:
        return f"breaker of {provider} half-open: one trial request goes to {provider}"
    return f"breaker of {provider} closed: {provider} answered again"


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

    def acquire(self, *, force: bool = False) -> ApiKey | float | Open | None:
        """A usable key (counted as in flight), else seconds until one returns, else ``None``.

        :class:`Open` while the provider's breaker is open (or its one trial is out);
        ``force`` goes past an open breaker (every provider of the chain is open)."""

    def breaker_closed(self) -> bool:
        """Whether the breaker lets requests through freely (the router retries only then)."""

    def release(self, key: ApiKey, error: UpstreamError | None, latency_ms: float, usage: Usage | None = None) -> None:
        """Record the outcome of a request made with ``key``."""

    def abandon(self, key: ApiKey) -> None:
        """The request made with ``key`` was cancelled: free its in-flight slot, count nothing."""

    def answered(self, key: ApiKey) -> None:
        """The provider answered on ``key`` (a stream's first event): a success for the breaker.
        The request goes on: it is still released (or abandoned) when it ends."""

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
        breaker: BreakerPolicy | None = None,
    ) -> None:
        self.provider = provider
        self._clock = clock
        self._throttle_window = throttle_window
        self._policy = breaker or BreakerPolicy()
        self._breaker = _CLOSED
        self._lock = threading.Lock()
        self._keys: dict[str, _Key] = {}
        self._ring: deque[_Key] = deque()
        self._cooling: list[tuple[float, int, _Key]] = []
        self._seq = 0
        self._provider_until = 0.0  # provider-level throttling: no key before this
        for key in keys:
            self._add(key)

    # ------------------------------------------------------------------ hot path

    def acquire(self, *, force: bool = False) -> ApiKey | float | Open | None:
        now = self._clock()
        with self._lock:
            breaker = self._breaker
            if breaker is _CLOSED or breaker.state == CLOSED or force:
                return self._pick(now)
            if now < breaker.until:
                return Open(breaker.until - now)
            got = self._pick(now)
            if not isinstance(got, ApiKey):
                return got  # no key for the trial: the breaker waits for the next request
            self._breaker = new = breaker_admit(breaker, now, self._policy, got.fingerprint)[0]
        _log_transition(self.provider, breaker, new, "")
        return got

    def breaker_closed(self) -> bool:
        return self._breaker.state == CLOSED

    def _pick(self, now: float) -> ApiKey | float | None:
        """The next usable key, else seconds until one returns, else None.  Holds the lock."""
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
            breaker = self._breaker
            outcome = _outcome(error, breaker)
            if outcome is not None:
                self._breaker = breaker_record(breaker, outcome, now, self._policy, key.fingerprint)
            new = self._breaker
            self._release(key, error, latency_ms, usage, now)
        if new.state != breaker.state:
            cause = _cause(error) if error is not None and outcome == "failure" else str(outcome)
            _log_transition(self.provider, breaker, new, cause)

    def _release(
        self, key: ApiKey, error: UpstreamError | None, latency_ms: float, usage: Usage | None, now: float
    ) -> None:
        """The key's share of :meth:`release`.  Holds the lock."""
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

    def answered(self, key: ApiKey) -> None:
        breaker = self._breaker
        if breaker is _CLOSED:
            return
        now = self._clock()
        with self._lock:
            breaker = self._breaker
            self._breaker = new = breaker_record(breaker, "success", now, self._policy, key.fingerprint)
        _log_transition(self.provider, breaker, new, "success")

    def abandon(self, key: ApiKey) -> None:
        now = self._clock()
        with self._lock:
            rec = self._keys.get(key.fingerprint)
            if rec is not None:
                rec.stats.in_flight = max(rec.stats.in_flight - 1, 0)
            breaker = self._breaker
            self._breaker = new = breaker_record(breaker, "inconclusive", now, self._policy, key.fingerprint)
        _log_transition(self.provider, breaker, new, "inconclusive")

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
            breaker = breaker_view(self._breaker, now)
        if breaker["open_until"] is not None:
            breaker["open_until"] = round(breaker["open_until"] + wall_offset, 3)
        return {"provider": self.provider, "throttled_for": round(throttled, 3), "breaker": breaker, "keys": keys}


def _outcome(error: UpstreamError | None, breaker: Breaker) -> Outcome | None:
    """What a request's result tells the breaker (``None``: nothing to record)."""
    if error is None:
        return None if breaker is _CLOSED else "success"
    if isinstance(error, ProviderFault) and error.retryable:  # a missing model says nothing of the provider
        return "failure"
    # A key or request fault neither counts nor resets; a trial that got one told nothing.
    return "inconclusive" if breaker.state == HALF_OPEN else None


def _cause(error: UpstreamError) -> str:
    """A fault named without its message (which comes from the upstream and may quote a key)."""
    return type(error).__name__ + (f" HTTP {error.status}" if error.status is not None else "")


def _log_transition(provider: str, old: Breaker, new: Breaker, cause: str) -> None:
    line = _transition(provider, old, new, cause)
    if line is not None:
        log.log(logging.WARNING if new.state == OPEN else logging.INFO, "%s", line)
