"""The observer seam: typed events from the router and the gateway, to subscribers.

Four events, immutable values (named tuples: cheap to build) that name keys by fingerprint only:

- :class:`AttemptFinished` — one per upstream attempt (the router): failed attempts as they
  fail, the attempt that served when its call settles (a stream: when it ends), with usage;
- :class:`RequestFinished` — one per gateway request (the gateway), with its request id;
- :class:`KeyStateChanged` — a key went active / cooling / disabled (the router, on the
  outcome of an attempt; the wheel, on an operator's action);
- :class:`ProbeFinished` — one key check (an operator's, or the gateway's background re-probe).

``wheel.subscribe(fn)`` (or :meth:`Observer.subscribe`) registers ``fn(event)``; it runs
inline, on the loop that finished the work, so it must be quick and must not block (hand
the event to a queue for anything slow).  An exception in a subscriber is logged and
swallowed: observing never breaks a request.  With nobody subscribed to a kind of event,
emitting it costs one attribute test: the event is never built.

The gateway's access log (``keywheel.access``) is one subscriber: :func:`access_log`; its
key-state log (``keywheel.keys``, every change once, with its reason) another: :func:`key_state_log`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple, Protocol

from keywheel.logs import FIELDS, line_handler
from keywheel.secrets import mark_redacted, redact_everywhere
from keywheel.status import ProviderStatus, provider_status
from keywheel.types import Usage

log = logging.getLogger("keywheel.observe")
access = logging.getLogger("keywheel.access")
keys_log = logging.getLogger("keywheel.keys")  # with the stores' breaker lines: the name operators filter on


class AttemptFinished(NamedTuple):
    """One upstream attempt: which provider and key, how it ended, how long it took."""

    provider: str
    key: str  # fingerprint
    outcome: str  # "ok", else the error's class name ("RateLimited", "Overloaded", ...)
    status: int | None  # the upstream's HTTP status, when there was one
    latency_ms: float
    usage: Usage | None = None  # tokens, on the attempt that served (when the upstream said)
    model: str = ""  # the model asked of the provider on this attempt


class RequestFinished(NamedTuple):
    """One gateway request, answered (or given up on by its client: status 499)."""

    request_id: str
    method: str
    path: str  # bounded, control characters escaped, never the query string
    dialect: str  # the caller's: "openai", "anthropic" or "gemini"
    model: str | None  # the model that served, when one did
    provider: str | None  # who served
    key: str | None  # the fingerprint of the key that served
    attempts: int  # upstream attempts made for it
    status: int
    latency_ms: float
    bytes_in: int  # request body
    bytes_out: int  # response body
    usage: Usage | None = None  # the tokens of the attempt that served (when the upstream said)


class KeyStateChanged(NamedTuple):
    """A key's state changed: ``old`` → ``new`` (active, cooling, disabled, removed)."""

    provider: str
    key: str  # fingerprint
    old: str
    new: str
    reason: str  # why it rests or is disabled (redacted), "" when active again
    until: float | None  # wall clock, while it rests


class ProbeFinished(NamedTuple):
    """One key check (``keywheel keys check``, the background re-probe, a credit reading)."""

    provider: str
    key: str  # fingerprint
    outcome: str  # ok | invalid | rate-limited | no-credit | unreachable | unverified
    latency_ms: float
    detail: str  # redacted, bounded
    background: bool  # the gateway's own re-probe, not an operator's check


Event = AttemptFinished | RequestFinished | KeyStateChanged | ProbeFinished
Subscriber = Callable[[Event], None]
KINDS: tuple[type[Any], ...] = (AttemptFinished, RequestFinished, KeyStateChanged, ProbeFinished)


class Observer:
    """The subscribers of one wheel, by kind of event.

    Emitters test the kind's tuple before building an event (``if observer.attempts:``), so an
    unobserved kind costs nothing more.  The tuples are replaced, never mutated: emitting from
    any thread while another subscribes is safe."""

    __slots__ = ("attempts", "failures", "requests", "key_states", "probes")

    def __init__(self) -> None:
        self.attempts: tuple[Subscriber, ...] = ()
        self.failures: tuple[Subscriber, ...] = ()  # of failed attempts only (``failures_only=True``)
        self.requests: tuple[Subscriber, ...] = ()
        self.key_states: tuple[Subscriber, ...] = ()
        self.probes: tuple[Subscriber, ...] = ()

    def subscribe(self, fn: Subscriber, *kinds: type[Any], failures_only: bool = False) -> Callable[[], None]:
        """Call ``fn(event)`` for every event of ``kinds`` (default: all); returns the unsubscribe.
        ``failures_only``: of the attempts, only those that failed (a call that succeeds at once then
        builds no event for it).  Subscribing the same function twice has no further effect."""
        for kind in kinds or KINDS:
            slot = "failures" if failures_only and kind is AttemptFinished else self._slot(kind)
            current: tuple[Subscriber, ...] = getattr(self, slot)
            if fn not in current:
                setattr(self, slot, (*current, fn))

        def unsubscribe() -> None:
            for kind in kinds or KINDS:
                slot = "failures" if failures_only and kind is AttemptFinished else self._slot(kind)
                setattr(self, slot, tuple(f for f in getattr(self, slot) if f is not fn))

        return unsubscribe

    @staticmethod
    def _slot(kind: type[Any]) -> str:
        if kind is AttemptFinished:
            return "attempts"
        if kind is RequestFinished:
            return "requests"
        if kind is KeyStateChanged:
            return "key_states"
        if kind is ProbeFinished:
            return "probes"
        raise TypeError(f"not an event kind: {kind!r} (one of {', '.join(k.__name__ for k in KINDS)})")

    def emit(self, event: Event) -> None:
        """Hand ``event`` to its kind's subscribers, in subscription order."""
        if isinstance(event, AttemptFinished):
            subscribers = self.attempts if event.outcome == "ok" else self.attempts + self.failures
        elif isinstance(event, RequestFinished):
            subscribers = self.requests
        elif isinstance(event, KeyStateChanged):
            subscribers = self.key_states
        else:
            subscribers = self.probes
        for fn in subscribers:
            try:
                fn(event)
            except Exception:  # noqa: BLE001 — a subscriber's bug must not break a request
                log.exception("observer %r failed on %s", fn, type(event).__name__)


# ------------------------------------------------------------ key-state changes


class Snapshotting(Protocol):
    """What :func:`watch_keys` needs of a key pool."""

    def snapshot_nowait(self) -> Mapping[str, Any]: ...


def watch_keys(
    observer: Observer, pool: Snapshotting, change: Callable[[], None], redact: Callable[[str], str], now: float
) -> None:
    """Run ``change`` (a release, an operator's action) on ``pool``, and emit a
    :class:`KeyStateChanged` for each key whose state it changed.

    The one place that finds key-state changes: today by comparing the pool's snapshots
    before and after (only when someone subscribed to them); a store whose release returns
    its changes makes this a plain loop over them."""
    if not observer.key_states:
        change()
        return
    before = provider_status(pool.snapshot_nowait(), dialect="", model="", redact=redact, now=now)
    change()
    after = provider_status(pool.snapshot_nowait(), dialect="", model="", redact=redact, now=now)
    for event in key_changes(before, after):
        observer.emit(event)


def key_changes(before: ProviderStatus, after: ProviderStatus) -> list[KeyStateChanged]:
    """The keys whose state differs between two statuses of one provider (a removed key: ``removed``)."""
    old = {k.fingerprint: k for k in before.keys}
    out = []
    for key in after.keys:
        was = old.pop(key.fingerprint, None)
        if was is not None and was.state != key.state:
            out.append(KeyStateChanged(after.name, key.fingerprint, was.state, key.state, key.reason, key.rest_until))
    out.extend(KeyStateChanged(after.name, fp, was.state, "removed", "", None) for fp, was in old.items())
    return out


# ------------------------------------------------------------------ access log


def access_log(event: Event) -> None:
    """The gateway's access log line (``keywheel.access``, INFO), one per request: ``POST
    /v1/messages 200 gemini gemini#1 ...ab12 dialect=anthropic model=gemini-2.0-flash attempts=2
    tokens=12+40 id=kw-1f2e-7 12.3ms`` — the path only, never the query string.  The same
    values ride on the record as structured fields (``KEYWHEEL_LOG_FORMAT=json``)."""
    if isinstance(event, RequestFinished) and access.isEnabledFor(logging.INFO):
        key = event.key.replace("…", "...") if event.key else None
        who = f" {event.provider} {key}" if event.provider and key else ""
        usage = event.usage
        tokens = f" tokens={usage.input_tokens}+{usage.output_tokens}" if usage is not None else ""
        # The line's only client text is its method, path, request id and model: those are redacted here.
        # Under `keywheel serve`'s own handler (and nothing else on the way) the line goes straight to it,
        # written as its formatter would write the record; else a record is made and handled as Logger.info
        # would (its caller named as findCaller would, without the walk up the stack), marked clean, so that
        # the log filter need not scan the whole line once more.
        clean = redact_everywhere(f"{event.method}\n{event.path}\n{event.request_id}\n{event.model or ''}")
        method, path, rid, model_text = clean.split("\n", 3)
        model = model_text or None
        line = (
            f"{method} {path} {event.status}{who} dialect={event.dialect} model={model or '-'} "
            f"attempts={event.attempts}{tokens} id={rid} {event.latency_ms:.1f}ms"
        )
        handler = line_handler(access)
        if handler is not None and handler.text:  # keywheel serve's own stderr, in text: no record needed
            handler.line(access.name, line, None)
            return
        fields = {
            "request_id": rid,
            "method": method,
            "path": path,
            "dialect": event.dialect,
            "model": model,
            "provider": event.provider,
            "key": key,
            "attempts": event.attempts,
            "status": event.status,
            "latency_ms": round(event.latency_ms, 1),
            "tokens_in": usage.input_tokens if usage is not None else None,
            "tokens_out": usage.output_tokens if usage is not None else None,
        }
        if handler is not None:
            handler.line(access.name, line, fields)
            return
        record = access.makeRecord(
            access.name, logging.INFO, __file__, _ACCESS_LINE, line, (), None, "access_log", {FIELDS: fields}
        )
        mark_redacted(record)
        access.handle(record)


_ACCESS_LINE = access_log.__code__.co_firstlineno


# --------------------------------------------------------------- key-state log


def key_state_log(event: Event) -> None:
    """Every key-state change, once, with its reason (``keywheel.keys``): disabled (WARNING),
    resting until when (wall clock, ISO 8601 and epoch), active again or recovered, removed."""
    if not isinstance(event, KeyStateChanged):
        return
    key = event.key.replace("…", "...")
    new, old, reason = event.new, event.old, event.reason
    level = logging.WARNING if new not in ("active", "cooling", "removed") else logging.INFO
    if not keys_log.isEnabledFor(level):
        return
    until_iso = None
    if new == "cooling" and event.until is not None:
        until_iso = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(event.until))
        what = f"rests until {until_iso} (epoch {event.until:.0f})"
    elif new == "active":
        what = "recovered" if old == "disabled" else "is active again"
    elif new == "removed":
        what = "removed"
    else:
        what = new  # disabled, or a state a store adds (low-credit, ...)
    because = f": {reason}" if reason else ""
    fields: dict[str, Any] = {"provider": event.provider, "key": key, "old": old, "new": new, "reason": reason}
    fields.update(until=event.until, until_iso=until_iso)
    keys_log.log(level, "key %s %s (was %s)%s", key, what, old, because, extra={FIELDS: fields})
