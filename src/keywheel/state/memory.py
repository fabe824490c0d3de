"""The in-memory key store of one provider: round-robin selection, counters, the rules applied.

Selection is O(1) amortised however many keys cool: usable keys sit in a ring (a deque rotated
by one per pick), cooling keys in a heap ordered by the time they come back, and a key that stops
being usable is dropped from the ring lazily when its turn comes.  All state sits behind one
``threading.Lock`` that is held only around in-memory work — never across I/O or an ``await`` —
so one store serves plain threads and asyncio tasks alike.

Quota windows (:mod:`keywheel.state.windows`) apply per key group: a key whose group's window
is full is skipped, and when every usable key's is, ``acquire`` returns the seconds until the
earliest slot frees, as it does for resting keys.  A provider without windows takes the plain
ring walk, which costs nothing more than before.

States change only through :mod:`keywheel.state.rules`.  Every call comes twice: the async one
of :class:`keywheel.state.base.KeyStore`, and the same without an ``await`` (``*_nowait``,
:class:`keywheel.state.base.LocalStore`) for the router's hot path and for sync callers.
"""

from __future__ import annotations

import heapq
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from keywheel.errors import UpstreamError
from keywheel.secrets import ApiKey
from keywheel.state import rules
from keywheel.state.base import Acquired, KeyChange, Open
from keywheel.state.rules import (
    ABANDONED,
    ACTIVE,
    ANSWERED,
    CLOSED,
    CLOSED_BREAKER,
    COOLING,
    DISABLED,
    OK,
    BreakerPolicy,
    Group,
    KeyState,
    ProviderState,
    Rules,
    breaker_admit,
    breaker_view,
)
from keywheel.state.stats import KeyStats, chart, count, fault_name, log_breaker, recent
from keywheel.state.windows import NO_RESERVATION, GroupWindows, Quota, Reservation, next_midnight
from keywheel.types import Usage

log = logging.getLogger("keywheel.keys")  # the name operators filter on, kept from before the split


@dataclass(slots=True, eq=False)
class _Key:
    key: ApiKey
    rule: KeyState
    in_ring: bool = True
    stats: KeyStats = field(default_factory=KeyStats)
    group: str = ""  # its quota group's name (an ungrouped key's own fingerprint)
    windows: GroupWindows | None = None  # its group's windows (shared by the group), if any
    reserved: deque[Reservation] = field(default_factory=deque)  # token reservations of requests in flight


class MemoryStore:
    """In-memory key store of one provider.  Thread- and asyncio-safe."""

    def __init__(
        self,
        provider: str,
        keys: Iterable[ApiKey],
        *,
        clock: Callable[[], float] = time.time,
        throttle_window: float = rules.THROTTLE_WINDOW,
        breaker: BreakerPolicy | None = None,
        quota: Quota | None = None,
    ) -> None:
        self.provider = provider
        self._clock = clock
        self._quota = quota or Quota()
        self._windowed = bool(self._quota.default or self._quota.groups or self._quota.key_windows)
        self._groups: dict[str, GroupWindows] = {}  # group name → its windows
        self._co_throttled: dict[tuple[str, str], int] = {}  # two keys of different groups limited within 1 s
        self._rules = Rules(throttle_window=throttle_window, breaker=breaker or BreakerPolicy())
        self._lock = threading.Lock()
        self._keys: dict[str, _Key] = {}
        self._ring: deque[_Key] = deque()
        self._cooling: list[tuple[float, int, _Key]] = []
        self._seq = 0
        # The provider's state (rules.ProviderState), kept as two fields for the hot path.
        self._breaker = CLOSED_BREAKER
        self._throttled_until = 0.0
        for key in keys:
            self._add(key)

    # ------------------------------------------------------------------ hot path

    def acquire_nowait(self, *, force: bool = False, tokens: int = 0) -> Acquired:
        now = self._clock()
        with self._lock:
            breaker = self._breaker
            if breaker is CLOSED_BREAKER or breaker.state == CLOSED or force:
                return self._pick(now, tokens)
            if now < breaker.until:
                return Open(breaker.until - now)
            got = self._pick(now, tokens)
            if not isinstance(got, ApiKey):
                return got  # no key for the trial: the breaker waits for the next request
            self._breaker = new = breaker_admit(breaker, now, self._rules.breaker, got.fingerprint)[0]
        log_breaker(self.provider, breaker, new, "")
        return got

    def breaker_closed_nowait(self) -> bool:
        return self._breaker.state == CLOSED

    def _pick(self, now: float, tokens: int = 0) -> ApiKey | float | None:
        """The next usable key, else seconds until one returns, else None.  Holds the lock."""
        throttled = self._throttled_until
        if now < throttled:
            return throttled - now
        cooling = self._cooling
        while cooling:
            until, _, rec = cooling[0]
            rule = rec.rule
            stale = rule.state != COOLING or rule.until != until  # enabled, disabled or extended since
            if not stale and until > now:
                break
            heapq.heappop(cooling)
            if not stale:
                rec.rule = rules.rest_over(rule)
                self._into_ring(rec)
        if self._windowed:
            return self._pick_windowed(now, tokens)
        ring = self._ring
        while ring:
            rec = ring.popleft()
            if rec.rule.state == ACTIVE:
                ring.append(rec)
                rec.stats.in_flight += 1
                return rec.key
            rec.in_ring = False
        if cooling:
            return max(cooling[0][0] - now, 0.0)
        return None

    def _pick_windowed(self, now: float, tokens: int) -> ApiKey | float | None:
        """:meth:`_pick`'s ring walk past keys whose group window is full (each key once).  Holds the lock."""
        ring, wait = self._ring, None
        for _ in range(len(ring)):
            rec = ring.popleft()
            if rec.rule.state != ACTIVE:
                rec.in_ring = False
                continue
            ring.append(rec)
            windows = rec.windows
            if windows is not None:
                left = windows.wait(now, tokens)
                if left > 0.0:
                    wait = left if wait is None else min(wait, left)
                    continue
                reservation = windows.take(now, tokens)
                if reservation is not NO_RESERVATION:
                    rec.reserved.append(reservation)
            rec.stats.in_flight += 1
            return rec.key
        if self._cooling:
            back = max(self._cooling[0][0] - now, 0.0)
            wait = back if wait is None else min(wait, back)
        return wait

    def release_nowait(
        self, key: ApiKey, error: UpstreamError | None, latency_ms: float, usage: Usage | None = None
    ) -> KeyChange | None:
        now = self._clock()
        with self._lock:
            rec = self._keys.get(key.fingerprint)
            if rec is not None and (rec.key is key or rec.key == key):
                count(rec.stats, error, latency_ms, usage, now)
                if rec.reserved:  # settle the tokens reserved at selection to what was used
                    tokens = usage.total_tokens if usage is not None else 0 if error is not None else None
                    reservation = rec.reserved.popleft()
                    if tokens is not None:
                        GroupWindows.settle(reservation, tokens)
                if error is None and rules.success_changes_nothing(rec.rule, self._breaker):
                    return None  # the hot path: the rule book says so, no need to run it
            old = self._breaker
            outcome = OK if error is None else rules.outcome_of(error)
            if outcome.daily:  # the reset of the group's day, on this store's clock
                outcome = replace(outcome, retry_after=next_midnight(now, self._quota.day_tz) - now)
            if rec is None or (rec.key is not key and rec.key != key):
                # Removed meanwhile: the outcome still tells the breaker.
                change = self._apply(_Key(key, rules.fresh(key.fingerprint), in_ring=False), _NO_GROUP, outcome, now)
            else:
                group = self._group(rec, now) if outcome.kind == "rate_limited" else _NO_GROUP
                change = self._apply(rec, group, outcome, now)
            new = self._breaker
        if new.state != old.state:
            cause = fault_name(error) if outcome.kind == "provider_fault" and error is not None else "inconclusive"
            log_breaker(self.provider, old, new, cause)
        return change

    def _apply(self, rec: _Key, group: Group, outcome: rules.Outcome, now: float) -> KeyChange | None:
        """Apply the rule book to ``rec`` and the provider.  Holds the lock."""
        old = rec.rule
        provider = ProviderState(self._throttled_until, self._breaker)
        changes = rules.apply(old, group, provider, outcome, now, self._rules)
        self._throttled_until, self._breaker = changes.provider.throttled_until, changes.provider.breaker
        decided: list[_Key] = []
        if changes.reset_group:
            for other in self._keys.values():
                if other.rule.state != DISABLED:
                    other.rule = rules.fresh(other.rule.fingerprint)
                    self._into_ring(other)
                    decided.append(other)
        if changes.capped:
            for other in self._keys.values():
                if other is not rec and other.rule.state != DISABLED:
                    self._set(other, rules.capped(other.rule, changes))
                    decided.append(other)
        if changes.group_until:
            for other in self._keys.values():
                if other is not rec and other.group == rec.group:
                    before = other.rule
                    self._set(other, rules.group_rest(before, changes))
                    if other.rule is not before:
                        decided.append(other)
        new = changes.key
        if new is old:
            if decided or changes.provider is not provider:
                self._decided(decided, changes.provider is not provider)
            return None
        self._set(rec, new)
        self._decided([*decided, rec], changes.provider is not provider)
        if new.state == old.state and new.until == old.until:
            return None
        return KeyChange(new.fingerprint, old.state, new.state, new.reason, new.until if new.state == COOLING else None)

    def _set(self, rec: _Key, new: KeyState) -> None:
        """``rec`` takes the state ``new``: into the cooling heap, or the ring.  Holds the lock."""
        old = rec.rule
        if new is old:
            return
        rec.rule = new
        if new.state == COOLING and (old.state != COOLING or old.until != new.until):
            self._seq += 1
            heapq.heappush(self._cooling, (new.until, self._seq, rec))
        elif new.state == ACTIVE:
            self._into_ring(rec)

    def _decided(self, recs: list[_Key], provider: bool) -> None:
        """The rules changed the keys ``recs`` (and the provider's state when ``provider``): the hook
        where a persistent store commits the decision before the lock is let go, so the key cannot
        be selected before it is durable.  Holds the lock.  Memory keeps nothing."""

    def _group(self, rec: _Key, now: float) -> Group:
        """The fellow keys of ``rec``, counted for the throttling rule (O(n): rate limits only).

        Also counts each fellow of another quota group limited within 1 s of ``rec``: keys that are
        throttled together again and again share a quota (``keywheel config`` warns)."""
        live = limited = untimed = 0
        for other in self._keys.values():
            if other is rec or other.rule.state == DISABLED:
                continue
            live += 1
            limited += rules.limited_recently(other.rule, now, self._rules)
            untimed += rules.limited_untimed(other.rule, now, self._rules)
            if now - other.rule.last_rate_limited <= CO_THROTTLE_SECONDS and other.group != rec.group:
                a, b = rec.key.fingerprint, other.key.fingerprint
                pair = (a, b) if a < b else (b, a)
                self._co_throttled[pair] = self._co_throttled.get(pair, 0) + 1
        return Group(live, limited, untimed)

    def _into_ring(self, rec: _Key) -> None:
        if not rec.in_ring and rec.key.fingerprint in self._keys:
            rec.in_ring = True
            self._ring.append(rec)

    def answered_nowait(self, key: ApiKey) -> None:
        if self._breaker is CLOSED_BREAKER:
            return
        self._record(key, ANSWERED, "success")

    def abandon_nowait(self, key: ApiKey) -> None:
        with self._lock:
            rec = self._keys.get(key.fingerprint)
            if rec is not None:
                rec.stats.in_flight = max(rec.stats.in_flight - 1, 0)
                if rec.reserved:  # cancelled: its tokens were not spent (its request still counts)
                    GroupWindows.settle(rec.reserved.popleft(), 0)
        self._record(key, ABANDONED, "inconclusive")

    def _record(self, key: ApiKey, outcome: rules.Outcome, cause: str) -> None:
        """A breaker-only outcome (the key's state is untouched)."""
        now = self._clock()
        with self._lock:
            old = self._breaker
            self._apply(_Key(key, rules.fresh(key.fingerprint), in_ring=False), _NO_GROUP, outcome, now)
            new = self._breaker
        log_breaker(self.provider, old, new, cause)

    # --------------------------------------------------------------- admin actions

    def _find(self, fingerprint: str) -> _Key:
        rec = self._keys.get(fingerprint)
        if rec is None:
            raise KeyError(f"no key {fingerprint!r} in {self.provider}")
        return rec

    def disable_nowait(self, fingerprint: str, reason: str = "disabled by operator") -> None:
        with self._lock:
            rec = self._find(fingerprint)
            rec.rule = rules.disable(rec.rule, reason)
            self._decided([rec], False)

    def enable_nowait(self, fingerprint: str) -> None:
        with self._lock:
            rec = self._find(fingerprint)
            rec.rule = rules.enable(rec.rule)
            self._into_ring(rec)
            self._decided([rec], False)

    def recover_nowait(self, fingerprint: str, cause: str) -> bool:
        """Back in rotation if still out for ``cause`` (:func:`keywheel.state.rules.recover`)."""
        with self._lock:
            rec = self._find(fingerprint)
            new = rules.recover(rec.rule, cause)
            if new is None:
                return False
            rec.rule = new
            self._into_ring(rec)
            self._decided([rec], False)
            return True

    def take_out_nowait(self, fingerprint: str, reason: str, cause: str, until: float | None = None) -> None:
        """Out of rotation for ``cause`` (:func:`keywheel.state.rules.take_out`)."""
        with self._lock:
            rec = self._find(fingerprint)
            old, rec.rule = rec.rule, rules.take_out(rec.rule, reason, cause, until)
            new = rec.rule
            if new.state == COOLING and (old.state != COOLING or old.until != new.until):
                self._seq += 1
                heapq.heappush(self._cooling, (new.until, self._seq, rec))
            if new is not old:
                self._decided([rec], False)

    def add_nowait(self, key: ApiKey) -> None:
        with self._lock:
            if key.fingerprint in self._keys:
                raise ValueError(f"{key.fingerprint} is already in {self.provider}")
            self._decided([self._add(key)], False)

    def _add(self, key: ApiKey) -> _Key:
        group, specs = self._quota.of(key.fingerprint)
        windows = self._groups.get(group)
        if windows is None and specs:
            windows = self._groups[group] = GroupWindows(group, specs, self._clock())
        rec = _Key(key, rules.fresh(key.fingerprint), group=group, windows=windows)
        self._keys[key.fingerprint] = rec
        self._ring.append(rec)
        return rec

    def remove_nowait(self, fingerprint: str) -> None:
        with self._lock:
            rec = self._keys.pop(fingerprint, None)
            if rec is None:
                raise KeyError(f"no key {fingerprint!r} in {self.provider}")
            rec.rule = rules.disable(rec.rule, "removed", rules.REMOVED)
            self._decided([rec], False)

    def keys_nowait(self) -> list[ApiKey]:
        with self._lock:
            return [rec.key for rec in self._keys.values()]

    def load_nowait(self, provider: ProviderState, keys: Mapping[str, KeyState]) -> None:
        """Set the provider's state and some keys' states as they are (a rule-book test seeds a case)."""
        with self._lock:
            self._throttled_until, self._breaker = provider.throttled_until, provider.breaker
            for fingerprint, state in keys.items():
                rec = self._find(fingerprint)
                rec.rule = state
                if state.state == COOLING:
                    self._seq += 1
                    heapq.heappush(self._cooling, (state.until, self._seq, rec))

    def dump_nowait(self) -> tuple[ProviderState, dict[str, KeyState]]:
        """The provider's state and every key's, as the rules see them."""
        with self._lock:
            keys = {fp: rec.rule for fp, rec in self._keys.items()}
            return ProviderState(self._throttled_until, self._breaker), keys

    # --------------------------------------------------------------------- status

    def snapshot_nowait(self) -> dict[str, Any]:
        now = self._clock()
        with self._lock:
            keys = [_key_view(rec, now) for rec in self._keys.values()]
            throttled = max(self._throttled_until - now, 0.0)
            breaker = breaker_view(self._breaker, now)
            minutes = chart((rec.stats.minutes for rec in self._keys.values()), now)
            groups = self._groups_view(now)
            co = [{"keys": list(pair), "times": n} for pair, n in sorted(self._co_throttled.items())]
        return {
            "provider": self.provider,
            "throttled_for": round(throttled, 3),
            "breaker": breaker,
            "keys": keys,
            "minutes": minutes,
            "groups": groups,
            "co_throttled": co,
        }

    def _groups_view(self, now: float) -> list[dict[str, Any]]:
        """Each key group with windows or more than one key: its keys and its windows' use.  Holds the lock."""
        members: dict[str, list[str]] = {}
        for rec in self._keys.values():
            members.setdefault(rec.group, []).append(rec.key.fingerprint)
        named = self._quota.key_group
        out = []
        for name, fingerprints in members.items():
            windows = self._groups.get(name)
            if windows is None and name not in named.values():
                continue
            shown = name if name in named.values() else None  # an ungrouped key's group has no name
            out.append({"group": shown, "keys": fingerprints, "windows": windows.view(now) if windows else []})
        return out

    # ------------------------------------------------------------- the async seam

    async def acquire(self, *, force: bool = False, tokens: int = 0) -> Acquired:
        return self.acquire_nowait(force=force, tokens=tokens)

    async def release(
        self, key: ApiKey, error: UpstreamError | None, latency_ms: float, usage: Usage | None = None
    ) -> KeyChange | None:
        return self.release_nowait(key, error, latency_ms, usage)

    async def abandon(self, key: ApiKey) -> None:
        self.abandon_nowait(key)

    async def answered(self, key: ApiKey) -> None:
        self.answered_nowait(key)

    async def breaker_closed(self) -> bool:
        return self.breaker_closed_nowait()

    async def keys(self) -> list[ApiKey]:
        return self.keys_nowait()

    async def disable(self, fingerprint: str, reason: str = "disabled by operator") -> None:
        self.disable_nowait(fingerprint, reason)

    async def enable(self, fingerprint: str) -> None:
        self.enable_nowait(fingerprint)

    async def recover(self, fingerprint: str, cause: str) -> bool:
        return self.recover_nowait(fingerprint, cause)

    async def take_out(self, fingerprint: str, reason: str, cause: str, until: float | None = None) -> None:
        self.take_out_nowait(fingerprint, reason, cause, until)

    async def lease(self, name: str, seconds: float) -> bool:  # noqa: ARG002 — one process: always its own
        return True

    async def add(self, key: ApiKey) -> None:
        self.add_nowait(key)

    async def remove(self, fingerprint: str) -> None:
        self.remove_nowait(fingerprint)

    async def snapshot(self) -> dict[str, Any]:
        return self.snapshot_nowait()


_NO_GROUP = Group()
CO_THROTTLE_SECONDS = 1.0  # two keys limited this close together count as throttled together


def _key_view(rec: _Key, now: float) -> dict[str, Any]:
    rule, s = rec.rule, rec.stats
    state = rule.state
    remaining = 0.0
    if state == COOLING:
        remaining = max(rule.until - now, 0.0)
        if remaining == 0.0:
            state = ACTIVE
    hour, day = recent(s.minutes, now)
    return {
        "key": rec.key.fingerprint,
        "group": rec.group if rec.group != rec.key.fingerprint else None,
        "state": state,
        "reason": rule.reason if state != ACTIVE else "",
        "cause": rule.cause if state != ACTIVE else "",
        "cooldown_remaining": round(remaining, 3),
        "until": round(rule.until, 3) if state == COOLING else None,
        "last_hour": hour,
        "last_day": day,
        "requests": s.requests,
        "successes": s.successes,
        "failures": dict(s.failures),
        "last_error": s.last_error,
        "last_used": None if s.last_used is None else round(s.last_used, 3),
        "tokens_in": s.tokens_in,
        "tokens_out": s.tokens_out,
        "avg_latency_ms": round(s.latency_ms_total / s.requests, 1) if s.requests else None,
        "in_flight": s.in_flight,
    }
