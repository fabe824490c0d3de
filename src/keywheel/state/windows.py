"""Quota windows: how many requests (or tokens) one key group may send, and when it may again.

Pure: nothing here reads a clock, sleeps, locks or does I/O.  Every time is an argument
(wall-clock epoch seconds), so a test drives it with any clock and the Redis store can port it
to Lua line by line.  A store keeps one :class:`GroupWindows` per key group (an ungrouped key is
its own group) and calls it under its own lock.

**Specs.**  A :class:`WindowSpec` is ``limit`` per ``seconds`` of ``unit`` (``requests`` or
``tokens``), sliding; or, with ``daily`` set, ``limit`` per calendar day in the time zone ``tz``
(fixed: the count starts again at 00:00 local time, DST included).

**What is stored, per group and window.**
- sliding window: the charges still inside it, oldest first — each ``(at, amount)``, ``at`` the
  selection time, ``amount`` 1 for a request or the reserved/settled tokens — and their sum
  (``used``).  In Redis: a sorted set scored by ``at`` plus a hash of amounts, or a list.
- daily window: ``used`` and ``reset_at`` (the next local midnight after the first charge).

**What selection checks** (:meth:`GroupWindows.wait`, then :meth:`GroupWindows.take`):
1. drop the charges with ``at + seconds + GUARD <= now`` (out of the window), subtracting them
   from ``used``; a daily window whose ``reset_at <= now`` starts again at 0 with the next
   midnight;
2. a window admits a charge of ``cost`` (1, or the token estimate) if ``used + cost <= limit`` —
   or if it is empty (a single request larger than the whole limit would otherwise wait
   forever);
3. if every window of the group admits, the key may be selected: each window gets the charge
   ``(now, cost)``; otherwise the group waits ``max`` over the windows of the time its
   oldest charges leave it: the smallest ``at_i + seconds + GUARD - now`` such that the charges
   up to ``i`` free enough room (``reset_at - now`` for a daily window).

``GUARD`` (50 ms) is there because keywheel counts at selection and the upstream at arrival: a
request selected at ``t`` arrives at ``t + d`` with ``d`` varying by up to the guard, so keeping
``limit`` selections at least ``seconds + GUARD`` apart keeps ``limit`` arrivals at least
``seconds`` apart.

**What release settles** (:meth:`GroupWindows.settle`): a token window's charge was the estimate
(input estimate + ``max_tokens``); at release it becomes the actual usage (input + output
tokens), in place, in the same window (the charge keeps its ``at``): ``used += actual -
reserved``.  A charge that has already left its window is not touched.  A cancelled request
settles to 0 tokens (its request still counts).  The lease of a reservation is its window: a
charge whose process died before settling leaves the window ``seconds`` after it was made, so no
reservation outlives it (in Redis the same holds without any sweeper).
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from datetime import time as wall_time
from typing import Any
from zoneinfo import ZoneInfo

GUARD = 0.05  # seconds: arrival jitter a window keeps clear of
REQUESTS, TOKENS = "requests", "tokens"
_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0}
_RATE = re.compile(r"^\s*(\d+)\s*/\s*(\d+(?:\.\d+)?)?\s*([smh])\s*$")


@dataclass(frozen=True, slots=True)
class WindowSpec:
    """One limit: ``limit`` ``unit`` per ``seconds`` (sliding), or per local day in ``tz`` (``daily``)."""

    name: str  # "rpm", "tpm", "rpd", "10/5s": how status names it
    limit: int
    seconds: float = 60.0
    unit: str = REQUESTS  # requests | tokens
    daily: bool = False
    tz: str = "UTC"  # daily windows: the zone whose midnight resets them


def parse_rate(text: str) -> tuple[int, float]:
    """``"10/5s"`` → ``(10, 5.0)``; also ``N/Tm``, ``N/Th`` and ``N/s`` (T = 1).  ``ValueError`` otherwise."""
    match = _RATE.match(text)
    if not match:
        raise ValueError(f"expected N/Ts (e.g. 10/5s, 100/1m, 1000/1h), got {text!r}")
    limit, amount, unit = int(match.group(1)), float(match.group(2) or 1), match.group(3)
    seconds = amount * _UNITS[unit]
    if limit < 1 or seconds <= 0:
        raise ValueError(f"N/Ts needs a limit and a time of more than zero, got {text!r}")
    return limit, seconds


def next_midnight(now: float, tz: str) -> float:
    """The epoch time of the first 00:00 in ``tz`` after ``now`` (DST included: the day may be
    23 or 25 hours long).  ``ZoneInfoNotFoundError`` for an unknown zone."""
    zone = ZoneInfo(tz)
    today = datetime.fromtimestamp(now, zone).date()
    return datetime.combine(today + timedelta(days=1), wall_time(0), tzinfo=zone).timestamp()


@dataclass(slots=True, eq=False)
class Charge:
    """One selection's share of a window: ``amount`` requests or tokens, made at ``at``."""

    at: float
    amount: int
    live: bool = True  # False once it has left its window


@dataclass(slots=True)
class Window:
    """The state of one window of one group (see the module docstring)."""

    spec: WindowSpec
    charges: deque[Charge] = field(default_factory=deque)  # sliding: oldest first
    used: int = 0
    reset_at: float = 0.0  # daily: when ``used`` starts again at 0

    def expire(self, now: float) -> None:
        spec = self.spec
        if spec.daily:
            if now >= self.reset_at:
                self.used, self.reset_at = 0, next_midnight(now, spec.tz)
            return
        charges, horizon = self.charges, now - spec.seconds - GUARD
        while charges and charges[0].at <= horizon:
            gone = charges.popleft()
            gone.live = False
            self.used -= gone.amount

    def wait(self, now: float, cost: int) -> float:
        """Seconds until a charge of ``cost`` fits (0.0: it fits now).  Call :meth:`expire` first."""
        spec = self.spec
        if self.used + cost <= spec.limit or self.used == 0:
            return 0.0
        if spec.daily:
            return max(self.reset_at - now, 0.0)
        room = self.used + cost - spec.limit  # how much must leave
        freed, last = 0, now
        for charge in self.charges:
            freed += charge.amount
            last = charge.at
            if freed >= room:
                break
        return max(last + spec.seconds + GUARD - now, 0.0)

    def take(self, now: float, cost: int) -> Charge:
        charge = Charge(now, cost)
        self.used += cost
        if not self.spec.daily:
            self.charges.append(charge)
        return charge

    def settle(self, charge: Charge, amount: int) -> None:
        """The charge's amount becomes ``amount`` (if it is still in the window)."""
        if self.spec.daily:
            self.used = max(self.used + amount - charge.amount, 0)
            charge.amount = amount
        elif charge.live:
            self.used += amount - charge.amount
            charge.amount = amount

    def view(self) -> dict[str, object]:
        """What status shows: use, limit, and when the window frees a slot next (epoch; None when empty)."""
        spec = self.spec
        if spec.daily:
            resets: float | None = self.reset_at if self.used else None
        else:
            resets = self.charges[0].at + spec.seconds + GUARD if self.charges else None
        return {
            "name": spec.name,
            "unit": spec.unit,
            "limit": spec.limit,
            "seconds": spec.seconds if not spec.daily else 86400.0,
            "used": self.used,
            "resets_at": round(resets, 3) if resets is not None else None,
        }


@dataclass(slots=True, eq=False)
class Reservation:
    """The token charges of one selection, settled at release."""

    charges: tuple[tuple[Window, Charge], ...]


NO_RESERVATION = Reservation(())


class GroupWindows:
    """Every window of one key group."""

    __slots__ = ("name", "windows", "_tokens")

    def __init__(self, name: str, specs: tuple[WindowSpec, ...], now: float) -> None:
        self.name = name
        self.windows = tuple(Window(s, reset_at=next_midnight(now, s.tz) if s.daily else 0.0) for s in specs)
        self._tokens = any(s.unit == TOKENS for s in specs)

    @property
    def counts_tokens(self) -> bool:
        return self._tokens

    def wait(self, now: float, tokens: int) -> float:
        """Seconds until a selection costing one request and ``tokens`` tokens fits every window."""
        longest = 0.0
        for window in self.windows:
            window.expire(now)
            wait = window.wait(now, tokens if window.spec.unit == TOKENS else 1)
            if wait > longest:
                longest = wait
        return longest

    def take(self, now: float, tokens: int) -> Reservation:
        """Charge every window for one selection (after :meth:`wait` said 0.0)."""
        reserved = []
        for window in self.windows:
            if window.spec.unit == TOKENS:
                reserved.append((window, window.take(now, tokens)))
            else:
                window.take(now, 1)
        return Reservation(tuple(reserved)) if reserved else NO_RESERVATION

    @staticmethod
    def settle(reservation: Reservation, tokens: int) -> None:
        """The reservation's token charges become ``tokens`` (the actual usage; 0 when cancelled)."""
        for window, charge in reservation.charges:
            window.settle(charge, tokens)

    def view(self, now: float) -> list[dict[str, object]]:
        for window in self.windows:
            window.expire(now)
        return [w.view() for w in self.windows]


def estimate_tokens(payload_bytes: int, max_tokens: int | None, default_max: int = 1024) -> int:
    """A cheap token estimate of a request: its bytes ÷ 4 (input) plus ``max_tokens`` (output;
    ``default_max`` when the caller set none).  Only for reserving: release settles to the truth."""
    return payload_bytes // 4 + (max_tokens if max_tokens is not None and max_tokens >= 0 else default_max)


@dataclass(frozen=True, slots=True)
class Quota:
    """A provider's windows, resolved per key group (from ``<P>_RPM`` and the like, see config)."""

    default: tuple[WindowSpec, ...] = ()  # every group's, unless overridden
    groups: dict[str, tuple[WindowSpec, ...]] = field(default_factory=dict)  # named group → its windows
    key_group: dict[str, str] = field(default_factory=dict)  # key fingerprint → named group
    key_windows: dict[str, tuple[WindowSpec, ...]] = field(default_factory=dict)  # ungrouped key → its own
    day_tz: str = "UTC"  # where a daily quota resets (Gemini: America/Los_Angeles)

    def of(self, fingerprint: str) -> tuple[str, tuple[WindowSpec, ...]]:
        """The key's group name and its windows; an ungrouped key is its own group (named by it)."""
        name = self.key_group.get(fingerprint)
        if name is not None:
            return name, self.groups.get(name, self.default)
        return fingerprint, self.key_windows.get(fingerprint, self.default)

    @property
    def any(self) -> bool:
        """Whether any window or any named group is set (else the store skips all of this)."""
        return bool(self.default or self.groups or self.key_group or self.key_windows)


_MAX_FIELDS = ("max_tokens", "max_completion_tokens", "max_output_tokens")


def body_tokens(size: int, body: Mapping[str, Any]) -> int:
    """:func:`estimate_tokens` of a caller's body of ``size`` bytes in any dialect (its output cap is
    ``max_tokens``, ``max_completion_tokens``, ``max_output_tokens`` or ``generationConfig.maxOutputTokens``)."""
    cap: Any = None
    for name in _MAX_FIELDS:
        cap = body.get(name)
        if cap is not None:
            break
    if cap is None:
        config = body.get("generationConfig")
        cap = config.get("maxOutputTokens") if isinstance(config, Mapping) else None
    return estimate_tokens(size, cap if isinstance(cap, int) and not isinstance(cap, bool) else None)


def shared_quota(quota: Quota, share: float) -> Quota:
    """``quota`` with every limit cut to ``share`` of it (at least 1): one replica's part of each
    window while it decides alone (a Redis outage), so the replicas together stay within it."""
    if share >= 1.0:
        return quota

    def cut(specs: tuple[WindowSpec, ...]) -> tuple[WindowSpec, ...]:
        return tuple(replace(s, limit=max(1, int(s.limit * share))) for s in specs)

    return replace(
        quota,
        default=cut(quota.default),
        groups={name: cut(specs) for name, specs in quota.groups.items()},
        key_windows={fp: cut(specs) for fp, specs in quota.key_windows.items()},
    )
