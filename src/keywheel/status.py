"""Typed status: every provider of the chain and every key, as values.

Built from the key pools' snapshots (:func:`provider_status` is the one adapter) and read
by the CLI, the demo, ``/status`` — and metrics or a status page.  Times are wall-clock
epoch seconds, which mean the same in every process.  JSON is made only at the edges
(:meth:`Status.to_json`, the ``/status`` body and :meth:`keywheel.Wheel.status`), with the
field names ``/status`` has always had; :meth:`Status.from_json` reads it back
(``keywheel status --url``).

Free text (a key's reason and last error) quotes upstream and operator words: the adapter
passes it through the wheel's redactor, so no piece of a key is in any value here.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

ACTIVE, COOLING, DISABLED = "active", "cooling", "disabled"


@dataclass(frozen=True, slots=True)
class BreakerStatus:
    """A provider's circuit breaker: ``closed``, ``open`` (until ``open_until``) or ``half-open``."""

    state: str = "closed"
    failures: int = 0
    open_until: float | None = None  # wall clock, while open
    cooloff: float = 0.0


@dataclass(frozen=True, slots=True)
class Credit:
    """What a key's provider reports of its credit (OpenRouter's ``GET /api/v1/key``) at ``read_at``.

    Never the key's ``label``: OpenRouter's label echoes part of the key."""

    limit: float | None  # None: unlimited
    remaining: float | None  # None: unlimited
    reset: str | None = None  # daily | weekly | monthly | None (never resets)
    resets_at: float | None = None  # wall clock of the next reset (00:00 UTC; weeks start on Monday)
    usage: float = 0.0
    usage_daily: float | None = None
    usage_weekly: float | None = None
    usage_monthly: float | None = None
    is_free_tier: bool = False
    free_used: int | None = None  # free_model_daily_requests
    free_limit: int | None = None
    free_remaining: int | None = None
    read_at: float = 0.0

    @property
    def unlimited(self) -> bool:
        return self.limit is None

    def to_json(self) -> dict[str, Any]:
        return {
            "unlimited": self.unlimited,
            "limit": self.limit,
            "limit_remaining": self.remaining,
            "limit_reset": self.reset,
            "resets_at": self.resets_at,
            "usage": self.usage,
            "usage_daily": self.usage_daily,
            "usage_weekly": self.usage_weekly,
            "usage_monthly": self.usage_monthly,
            "is_free_tier": self.is_free_tier,
            "free_model_daily_requests": {
                "used": self.free_used,
                "limit": self.free_limit,
                "remaining": self.free_remaining,
            },
            "read_at": self.read_at,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Credit:
        free = data.get("free_model_daily_requests") or {}
        return cls(
            limit=data.get("limit"),
            remaining=data.get("limit_remaining"),
            reset=data.get("limit_reset"),
            resets_at=data.get("resets_at"),
            usage=float(data.get("usage") or 0.0),
            usage_daily=data.get("usage_daily"),
            usage_weekly=data.get("usage_weekly"),
            usage_monthly=data.get("usage_monthly"),
            is_free_tier=bool(data.get("is_free_tier")),
            free_used=free.get("used"),
            free_limit=free.get("limit"),
            free_remaining=free.get("remaining"),
            read_at=float(data.get("read_at") or 0.0),
        )


@dataclass(frozen=True, slots=True)
class WindowStatus:
    """One quota window of a key group: ``used`` of ``limit`` ``unit`` per ``seconds``."""

    name: str  # rpm | tpm | rpd | "10/5s"
    unit: str  # requests | tokens
    limit: int
    seconds: float  # 86400 for a daily window (which resets at local midnight)
    used: int
    resets_at: float | None  # wall clock: when the next slot frees (sliding) or the day resets; None when unused


@dataclass(frozen=True, slots=True)
class GroupStatus:
    """A key group: its keys share its windows (``name`` None: an ungrouped key, its own group)."""

    name: str | None
    keys: tuple[str, ...]  # fingerprints
    windows: tuple[WindowStatus, ...] = ()


#: Two keys of different groups throttled within the same second this often probably share a quota.
CO_THROTTLE_WARN = 3


@dataclass(frozen=True, slots=True)
class CoThrottled:
    """Two keys of different groups rate limited within the same second ``times`` times."""

    keys: tuple[str, str]
    times: int

    def warning(self, provider: str) -> str | None:
        if self.times < CO_THROTTLE_WARN:
            return None
        a, b = self.keys
        return (
            f"{a} and {b} were throttled within the same second {self.times} times: they behave as one group "
            f"(one Google Cloud project or one account?). Group them ({provider.upper()}_API_KEY_<N>_GROUP=name): "
            "rotating them adds no quota"
        )


@dataclass(frozen=True, slots=True)
class Recent:
    """A key's requests and failures over a rolling period (the last hour, the last day)."""

    requests: int = 0
    failures: int = 0


@dataclass(frozen=True, slots=True)
class Minute:
    """One minute of a provider's traffic (its chart): from ``at`` (wall clock), the mean latency."""

    at: float
    requests: int = 0
    failures: int = 0
    latency_ms: float | None = None


@dataclass(frozen=True, slots=True)
class KeyStatus:
    """One key, by fingerprint (never the key)."""

    fingerprint: str
    state: str  # active | cooling | disabled
    reason: str = ""  # why it rests or is disabled ("" when active)
    rest_until: float | None = None  # wall clock, while cooling
    requests: int = 0
    successes: int = 0
    failures: Mapping[str, int] = field(default_factory=dict)  # by error class name
    last_error: str | None = None
    last_used: float | None = None  # wall clock
    tokens_in: int = 0
    tokens_out: int = 0
    avg_latency_ms: float | None = None
    in_flight: int = 0
    cause: str = ""  # why it is out, for machines: invalid | quota | operator | rate_limited | removed
    credit: Credit | None = None  # its provider's credit reading (OpenRouter), if any
    last_hour: Recent = field(default_factory=Recent)
    last_day: Recent = field(default_factory=Recent)
    group: str | None = None  # its key group's name (None: ungrouped, its own group)

    def rest_for(self, now: float) -> float:
        """Seconds of rest left at wall-clock ``now`` (0.0 when not resting)."""
        return _left(self.rest_until, now)


@dataclass(frozen=True, slots=True)
class ProviderStatus:
    """One provider of the chain: its model, breaker, provider-level rest, and keys."""

    name: str
    dialect: str
    model: str
    enabled: bool = True
    primary: bool = False
    throttled_until: float | None = None  # wall clock: every key rests until then (account throttled)
    breaker: BreakerStatus = field(default_factory=BreakerStatus)
    keys: tuple[KeyStatus, ...] = ()
    minutes: tuple[Minute, ...] = ()  # the last hour's minutes with traffic, oldest first
    groups: tuple[GroupStatus, ...] = ()  # groups with windows, and named groups
    co_throttled: tuple[CoThrottled, ...] = ()

    def warnings(self) -> list[str]:
        """Keys that behave as one group without being one (``keywheel config`` shows these)."""
        return [w for pair in self.co_throttled if (w := pair.warning(self.name)) is not None]

    def throttled_for(self, now: float) -> float:
        """Seconds left of the provider-level rest at wall-clock ``now``."""
        return _left(self.throttled_until, now)


@dataclass(frozen=True, slots=True)
class Status:
    """The whole wheel at ``taken_at`` (wall clock): providers in chain order."""

    primary: str
    chain: tuple[str, ...]
    providers: tuple[ProviderStatus, ...]
    taken_at: float = field(default_factory=time.time)

    # ------------------------------------------------------------------ JSON

    def to_json(self) -> dict[str, Any]:
        """The ``/status`` body (and :meth:`keywheel.Wheel.status`): field names as they always were."""
        return {
            "primary": self.primary,
            "chain": list(self.chain),
            "providers": [_provider_json(p, self.taken_at) for p in self.providers],
            "taken_at": self.taken_at,  # wall clock: a reader's countdowns allow for its own clock's skew
        }

    @classmethod
    def from_json(cls, data: Any, taken_at: float | None = None) -> Status:
        """Read a ``/status`` body back; ``ValueError`` when it is not one."""
        now = time.time() if taken_at is None else taken_at
        try:
            providers = tuple(_provider_from_json(p, now) for p in data["providers"])
            return cls(str(data["primary"]), tuple(str(n) for n in data["chain"]), providers, now)
        except (KeyError, TypeError, AttributeError, ValueError) as exc:
            raise ValueError(f"not a keywheel status: {type(exc).__name__} {exc}") from None


def _until(now: float, seconds: float | None) -> float | None:
    return now + seconds if seconds else None


def _left(until: float | None, now: float) -> float:
    return round(max(until - now, 0.0), 3) if until is not None else 0.0


def _provider_json(p: ProviderStatus, now: float) -> dict[str, Any]:
    b = p.breaker
    breaker = {
        "state": b.state,
        "failures": b.failures,
        "open_until": b.open_until,
        "open_for": _left(b.open_until, now) if b.state == "open" else 0.0,
        "cooloff": b.cooloff,
    }
    return {
        "provider": p.name,
        "throttled_for": p.throttled_for(now),
        "breaker": breaker,
        "keys": [_key_json(k, now) for k in p.keys],
        "dialect": p.dialect,
        "model": p.model,
        "primary": p.primary,
        "minutes": [
            {"at": m.at, "requests": m.requests, "failures": m.failures, "latency_ms": m.latency_ms} for m in p.minutes
        ],
        "groups": [
            {"group": g.name, "keys": list(g.keys), "windows": [_window_json(w) for w in g.windows]} for g in p.groups
        ],
        "co_throttled": [{"keys": list(c.keys), "times": c.times} for c in p.co_throttled],
        "warnings": p.warnings(),
    }


def _window_json(w: WindowStatus) -> dict[str, Any]:
    return {
        "name": w.name,
        "unit": w.unit,
        "limit": w.limit,
        "seconds": w.seconds,
        "used": w.used,
        "resets_at": w.resets_at,
    }


def _key_json(k: KeyStatus, now: float) -> dict[str, Any]:
    return {
        "key": k.fingerprint,
        "state": k.state,
        "reason": k.reason,
        "cooldown_remaining": k.rest_for(now),
        "requests": k.requests,
        "successes": k.successes,
        "failures": dict(k.failures),
        "last_error": k.last_error,
        "last_used": k.last_used,
        "tokens_in": k.tokens_in,
        "tokens_out": k.tokens_out,
        "avg_latency_ms": k.avg_latency_ms,
        "in_flight": k.in_flight,
        "cause": k.cause,
        "credit": k.credit.to_json() if k.credit is not None else None,
        "until": k.rest_until,  # wall clock, while cooling: a countdown needs no second reading
        "last_hour": {"requests": k.last_hour.requests, "failures": k.last_hour.failures},
        "last_day": {"requests": k.last_day.requests, "failures": k.last_day.failures},
        "group": k.group,
    }


def _provider_from_json(p: Mapping[str, Any], now: float) -> ProviderStatus:
    b = p.get("breaker") or {}
    return ProviderStatus(
        name=str(p["provider"]),
        dialect=str(p.get("dialect") or ""),
        model=str(p.get("model") or ""),
        primary=bool(p.get("primary")),
        throttled_until=_until(now, float(p.get("throttled_for") or 0.0)),
        breaker=BreakerStatus(
            state=str(b.get("state") or "closed"),
            failures=int(b.get("failures") or 0),
            open_until=b.get("open_until"),
            cooloff=float(b.get("cooloff") or 0.0),
        ),
        keys=tuple(_key_from_json(k, now) for k in p["keys"]),
        minutes=tuple(_minute(m) for m in p.get("minutes") or ()),
        groups=_groups(p.get("groups") or ()),
        co_throttled=_co_throttled(p.get("co_throttled") or ()),
    )


def _groups(groups: Any) -> tuple[GroupStatus, ...]:
    """Key groups from a snapshot or a ``/status`` body (same shape)."""
    return tuple(
        GroupStatus(
            None if g.get("group") is None else str(g["group"]),
            tuple(str(k) for k in g["keys"]),
            tuple(
                WindowStatus(
                    str(w["name"]),
                    str(w["unit"]),
                    int(w["limit"]),
                    float(w["seconds"]),
                    int(w["used"]),
                    None if w.get("resets_at") is None else float(w["resets_at"]),
                )
                for w in g.get("windows") or ()
            ),
        )
        for g in groups
    )


def _co_throttled(pairs: Any) -> tuple[CoThrottled, ...]:
    return tuple(CoThrottled((str(c["keys"][0]), str(c["keys"][1])), int(c["times"])) for c in pairs)


def _minute(m: Mapping[str, Any]) -> Minute:
    latency = m.get("latency_ms")
    return Minute(float(m["at"]), int(m.get("requests") or 0), int(m.get("failures") or 0), latency)


def _recent(value: Any) -> Recent:
    if not isinstance(value, Mapping):
        return Recent()
    return Recent(int(value.get("requests") or 0), int(value.get("failures") or 0))


def _key_from_json(k: Mapping[str, Any], now: float) -> KeyStatus:
    return KeyStatus(
        fingerprint=str(k["key"]),
        state=str(k["state"]),
        reason=str(k.get("reason") or ""),
        rest_until=k["until"] if k.get("until") else _until(now, float(k.get("cooldown_remaining") or 0.0)),
        requests=int(k.get("requests") or 0),
        successes=int(k.get("successes") or 0),
        failures={str(n): int(v) for n, v in (k.get("failures") or {}).items()},
        last_error=k.get("last_error"),
        last_used=k.get("last_used"),
        tokens_in=int(k.get("tokens_in") or 0),
        tokens_out=int(k.get("tokens_out") or 0),
        avg_latency_ms=k.get("avg_latency_ms"),
        in_flight=int(k.get("in_flight") or 0),
        cause=str(k.get("cause") or ""),
        credit=Credit.from_json(k["credit"]) if k.get("credit") else None,
        last_hour=_recent(k.get("last_hour")),
        last_day=_recent(k.get("last_day")),
        group=None if k.get("group") is None else str(k["group"]),
    )


# ------------------------------------------------------------- the adapter


def provider_status(
    snapshot: Mapping[str, Any],
    *,
    dialect: str,
    model: str,
    enabled: bool = True,
    primary: bool = False,
    redact: Callable[[str], str] = str,
    now: float,
    credits: Mapping[str, Credit] | None = None,
) -> ProviderStatus:
    """One provider's status from its key pool's ``snapshot()`` taken at wall-clock ``now``.

    The one place that knows the pool's snapshot shape: a new store re-points this function."""
    b = snapshot["breaker"]
    keys = tuple(
        KeyStatus(
            fingerprint=k["key"],
            state=k["state"],
            reason=redact(k["reason"]) if k["reason"] else "",
            rest_until=k.get("until") or _until(now, k["cooldown_remaining"]),
            requests=k["requests"],
            successes=k["successes"],
            failures=dict(k["failures"]),
            last_error=redact(k["last_error"]) if k["last_error"] else k["last_error"],
            last_used=k["last_used"],
            tokens_in=k["tokens_in"],
            tokens_out=k["tokens_out"],
            avg_latency_ms=k["avg_latency_ms"],
            in_flight=k["in_flight"],
            cause=k.get("cause") or "",
            credit=credits.get(k["key"]) if credits else None,
            last_hour=_recent(k.get("last_hour")),
            last_day=_recent(k.get("last_day")),
            group=k.get("group"),
        )
        for k in snapshot["keys"]
    )
    return ProviderStatus(
        name=snapshot["provider"],
        dialect=dialect,
        model=model,
        enabled=enabled,
        primary=primary,
        throttled_until=_until(now, snapshot["throttled_for"]),
        breaker=BreakerStatus(b["state"], b["failures"], b["open_until"], b["cooloff"]),
        keys=keys,
        minutes=tuple(_minute(m) for m in snapshot.get("minutes") or ()),
        groups=_groups(snapshot.get("groups") or ()),
        co_throttled=_co_throttled(snapshot.get("co_throttled") or ()),
    )
