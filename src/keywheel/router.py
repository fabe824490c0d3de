"""The attempt loop: which provider, which key, what to do with each failure.

Per provider in the chain (primary first, then the fallbacks):

- a key fault (rate limited, invalid, out of quota) rotates to the next key at once;
- a provider fault (5xx, overloaded, timeout, connection error) retries with
  jittered backoff up to ``provider_attempts`` tries (the numbers are a :class:`RetryPolicy`
  value), then fails over;
- a request fault (bad request, content filtered) is raised at once — it would
  fail everywhere — except a too-long prompt, which fails over only to a
  provider whose model has a larger known context window.

A provider whose circuit breaker is open (see :mod:`keywheel.state.rules`) is skipped
without a request, and a provider fault stops the retries at once when it opened
the breaker.  When nothing else could serve the call — every provider is open,
or the others failed or rest beyond ``max_wait`` — the open provider whose
cool-off ends first gets one try anyway (Envoy's panic routing), so a call never
fails with its providers untried.

When every key of every provider rests, the router waits for the earliest to
come back if that is within ``max_wait``; otherwise it raises
:class:`NoKeyAvailable` with the time to wait.  Streams fail over only before
their first event reaches the caller.  One deadline bounds the whole call.

Each fault is handled by the error's own ``scope`` ("key", "provider", "request") and
``retryable``, never by its class name.  :meth:`Router.execute` runs rounds over the chain;
:meth:`Router._on_target` rotates one target's keys; :meth:`Router._attempt` makes one attempt
and returns its outcome (the result, or the error, already recorded in the key store).  The
router talks to the keys through the async store seam (:mod:`keywheel.state.base`), without an
``await`` when the store lives in the process, and to the upstream through the
:class:`~keywheel.transport.HttpTransport` protocol (a stub in the unit tests).

Never holds a lock: the key stores do their own locking, around memory only.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from keywheel.calls import (
    RetryPolicy,
    Served,
    Target,
    attempt_record,
    key_state_event,
    redactor_for,
    scrub,
    served_event,
)
from keywheel.config import Settings
from keywheel.errors import (
    AllProvidersFailed,
    BadRequest,
    ContextTooLong,
    KeywheelError,
    NoKeyAvailable,
    Timeout,
    UpstreamError,
)
from keywheel.observe import AttemptFinished, Observer
from keywheel.providers import get_adapter
from keywheel.providers.base import Endpoint, HttpRequest
from keywheel.providers.paths import check_model
from keywheel.secrets import ApiKey, Redactor, register
from keywheel.state.base import KeyChange, KeyStore, LocalStore, Open
from keywheel.state.windows import estimate_tokens
from keywheel.stream import EventStream
from keywheel.transport import HttpTransport
from keywheel.types import Attempt, ChatRequest, Completion, Usage

T = TypeVar("T")
log = logging.getLogger("keywheel.router")


@dataclass(slots=True)
class _Call:
    """The state of one :meth:`Router.execute` across its rounds over the chain."""

    deadline: float  # on the loop's clock
    tokens: int = 0  # the call's token estimate (input + max_tokens), reserved in token windows
    attempts: list[Attempt] = field(default_factory=list)
    waited: float = 0.0  # seconds slept for resting keys
    min_window: int | None = None  # set after a too-long prompt: only larger windows may serve
    last: UpstreamError | None = None
    forced: Target | None = None  # tried past its open breaker: nothing else could serve
    earliest: float | None = None  # this round: seconds until the first resting key returns
    skipped: list[tuple[float, int]] | None = None  # this round: (seconds to trial, index) if open

    def unavailable(self, got: float | Open | None, index: int) -> None:
        """The target at ``index`` gave no key this round: ``got`` says why."""
        if isinstance(got, Open):
            if self.skipped is None:
                self.skipped = []
            self.skipped.append((got.retry_in, index))
        elif got is not None:
            self.earliest = got if self.earliest is None else min(self.earliest, got)


# What one attempt does with a chosen target and key; raises UpstreamError on failure.
AttemptFn = Callable[[Target, ApiKey, float], Awaitable[T]]
# Builds the upstream HTTP request of one attempt: (target, key, stream).
RequestBuilder = Callable[[Target, ApiKey, bool], HttpRequest]


class Router:
    def __init__(
        self,
        settings: Settings,
        pools: Mapping[str, KeyStore],
        transport: HttpTransport,
        *,
        rng: random.Random | None = None,
        redactor: Redactor | None = None,
        retry: RetryPolicy | None = None,
        observer: Observer | None = None,
    ) -> None:
        self.settings = settings
        self.retry = retry or RetryPolicy(provider_attempts=settings.provider_attempts)
        self.observer = observer or Observer()  # attempt and key-state events go here
        # Every upstream error text is stripped of key pieces before anything sees it.
        self.redactor = register(redactor or redactor_for(settings))
        self.pools = pools
        # Stores in this process are called without an await on the hot path (see keywheel.state.base).
        self._local: dict[str, LocalStore] = {n: p for n, p in pools.items() if isinstance(p, LocalStore)}
        self.transport = transport
        self._rng = rng or random.Random()
        self._chains: dict[tuple[str | None, str | None, bool], list[Target]] = {}

    # ------------------------------------------------------------------ chains

    def chain(self, provider: str | None = None, model: str | None = None, *, fallback: bool = True) -> list[Target]:
        """The targets of one call: ``provider`` (default the primary) with ``model``, then the fallbacks.
        A provider not configured or not enabled is a :class:`BadRequest` naming the enabled ones.

        Chains are immutable and cached: the configuration does not change under a router."""
        cache_key = (provider, model, fallback)
        cached = self._chains.get(cache_key)
        if cached is not None:
            return cached
        targets = self._chain(provider, model, fallback)
        if len(self._chains) < 256:  # models come from callers: keep the cache bounded
            self._chains[cache_key] = targets
        return targets

    def _chain(self, provider: str | None, model: str | None, fallback: bool) -> list[Target]:
        settings = self.settings
        first = provider or settings.primary
        if first not in settings.providers or not settings.providers[first].enabled:
            enabled = ", ".join(settings.chain)
            raise BadRequest(f"provider {first!r} is not configured or not enabled (enabled: {enabled})")
        names = [first]
        if fallback:
            names += [n for n in settings.chain if n != first]
        targets = []
        for i, name in enumerate(names):
            cfg = settings.providers[name]
            chosen = model if (i == 0 and model) else cfg.model
            check_model(chosen, cfg.dialect)  # a BadRequest naming `model`, before any upstream request
            endpoint = Endpoint(cfg.name, cfg.base_url, chosen, cfg.headers)
            targets.append(Target(cfg, chosen, endpoint, get_adapter(cfg.dialect)))
        return targets

    # ------------------------------------------------------------- the loop

    async def execute(
        self,
        targets: list[Target],
        attempt: AttemptFn[T],
        *,
        tokens: int = 0,
        call: _Call | None = None,
        resume: UpstreamError | None = None,
    ) -> tuple[T, Served]:
        """Run ``attempt`` over ``targets`` and their keys until one succeeds (``tokens``: the
        call's estimate, reserved in the token windows of the key it gets).

        ``call`` and ``resume``: a call whose first try, on ``targets[0]``, was already made
        (:meth:`complete`'s fast path) and failed with ``resume`` (recorded, its key released)."""
        loop = asyncio.get_running_loop()
        if call is None:
            call = _Call(loop.time() + self.settings.timeout, tokens)
        while True:
            call.earliest = call.skipped = None
            for index, target in enumerate(targets if call.forced is None else [call.forced]):
                if call.min_window is not None and (target.provider.context_window or 0) <= call.min_window:
                    continue
                served = await self._on_target(call, index, target, attempt, resume)
                resume = None
                if served is not None:
                    return served
            # Every target was tried or is resting.  Wait for a resting key if it is close.
            earliest = call.earliest
            if earliest is not None and call.waited + earliest <= self.settings.max_wait:
                if loop.time() + earliest < call.deadline:
                    await asyncio.sleep(earliest + 0.001)
                    call.waited += earliest
                    continue
            if call.skipped and call.forced is None:
                call.forced = targets[min(call.skipped)[1]]  # the open provider whose cool-off ends first, once
                continue
            raise await self._failure(call, targets)

    async def _on_target(
        self, call: _Call, index: int, target: Target, attempt: AttemptFn[T], resume: UpstreamError | None = None
    ) -> tuple[T, Served] | None:
        """Try ``target``'s keys: its answer, or ``None`` to go on to the next target (``resume``:
        the failure of a try already made on it)."""
        name = target.provider.name
        store, local = self.pools[name], self._local.get(name)
        key_faults = provider_faults = 0
        while True:
            if resume is not None:
                exc, resume = resume, None
            else:
                force, tokens = call.forced is not None, call.tokens
                if local:
                    got = local.acquire_nowait(force=force, tokens=tokens)
                else:
                    got = await store.acquire(force=force, tokens=tokens)
                if not isinstance(got, ApiKey):
                    call.unavailable(got, index)
                    return None
                result = await self._attempt(call, target, got, attempt, store, local)
                if not isinstance(result, UpstreamError):
                    return result, Served(target, got, call.attempts)
                exc = result
            if exc.scope == "request":
                if isinstance(exc, ContextTooLong) and target.provider.context_window:
                    call.min_window = target.provider.context_window  # only a larger window may serve it
                    return None
                exc.attempts = call.attempts
                raise exc
            if exc.scope == "key":
                key_faults += 1
                # Next key at once; the bound only stops keys that 429 with no rest at all.
                if key_faults > len(await store.keys()):
                    return None
                continue
            provider_faults += 1
            if not await self._retry(call, exc, store, provider_faults):
                return None

    async def _attempt(
        self, call: _Call, target: Target, key: ApiKey, attempt: AttemptFn[T], store: KeyStore, local: LocalStore | None
    ) -> T | UpstreamError:
        """One attempt on ``key``: its result, or the error it ended in (recorded, key released;
        an attempt's result is never an error, so no wrapper tells the two apart)."""
        remaining = call.deadline - asyncio.get_running_loop().time()
        started = time.perf_counter()
        try:
            if remaining <= 0:
                raise Timeout(f"deadline of {self.settings.timeout:g} s passed")
            result = await attempt(target, key, min(self.settings.attempt_timeout, remaining))
        except UpstreamError as exc:
            latency = (time.perf_counter() - started) * 1000
            self._own(exc, target, key)
            change = local.release_nowait(key, exc, latency) if local else await store.release(key, exc, latency)
            self._lost(call, target, key, exc, latency, change)
            return exc
        except BaseException:
            await store.abandon(key)  # cancelled: free the slot, count nothing
            raise
        latency = (time.perf_counter() - started) * 1000
        call.attempts.append(Attempt(target.provider.name, key.fingerprint, "ok", latency, 200))
        return result

    async def _retry(self, call: _Call, exc: UpstreamError, store: KeyStore, faults: int) -> bool:
        """After the ``faults``-th provider fault on one target: wait and retry it (True), or move on."""
        if not exc.retryable or faults >= self.retry.provider_attempts or call.forced is not None:
            return False
        if not await store.breaker_closed():
            return False  # this fault opened the breaker (or a trial failed): no more tries here
        delay = self.retry.delay(faults, self._rng)
        if asyncio.get_running_loop().time() + delay >= call.deadline:
            return False
        await asyncio.sleep(delay)
        return True

    async def _failure(self, call: _Call, targets: list[Target]) -> KeywheelError:
        """The error of a call that nothing could serve."""
        attempts, earliest, last = call.attempts, call.earliest, call.last
        tally = await key_tally(targets, self.pools, attempts, earliest)
        if earliest is not None and all(a.scope == "key" for a in attempts):
            tried = f" (tried: {'; '.join(map(str, attempts))})" if attempts else ""
            return NoKeyAvailable(f"no key can serve now: {tally}{tried}", retry_after=earliest, attempts=attempts)
        if not attempts:
            return NoKeyAvailable(f"no usable key: {tally}", attempts=attempts)
        if isinstance(last, ContextTooLong):
            last.attempts = attempts
            return last
        return AllProvidersFailed(attempts, last, summary=tally)

    def _lost(
        self, call: _Call, target: Target, key: ApiKey, exc: UpstreamError, latency: float, change: KeyChange | None
    ) -> None:
        """Record a failed attempt (its error owned, its key released with ``change``) on ``call``."""
        call.attempts.append(self._failed(target, key, exc, latency, change))
        if log.isEnabledFor(logging.INFO):
            log.info("attempt failed: %s", exc)
        call.last = exc

    def _failed(
        self, target: Target, key: ApiKey, exc: UpstreamError, latency: float, change: KeyChange | None
    ) -> Attempt:
        """The record of a failed attempt, and its events when someone listens."""
        observer = self.observer
        if change is not None and observer.key_states:
            observer.emit(key_state_event(target.provider.name, change, self.redactor))
        attempt = attempt_record(target, key, exc, latency)
        if observer.attempts or observer.failures:
            observer.emit(
                AttemptFinished(attempt.provider, attempt.key, attempt.outcome, exc.status, latency, None, target.model)
            )
        return attempt

    def _own(self, exc: UpstreamError, target: Target, key: ApiKey) -> None:
        """Stamp provider and key on an error, and strip it of every piece of every key."""
        exc.provider, exc.key = target.provider.name, key.fingerprint
        scrub(exc, self.redactor)

    # ---------------------------------------------------------- one attempt

    async def send(self, target: Target, request: HttpRequest, timeout: float) -> bytes:
        """Send a non-streaming request; the 2xx body, or the classified error."""
        resp = await self.transport.send(request, timeout, self.settings.max_response_bytes)
        if resp.status >= 300:
            raise target.adapter.classify_error(resp.status, resp.headers, resp.body)
        return resp.body

    async def settle(self, served: Served, usage: Usage | None) -> None:
        """Record the success of a non-streaming call (execute() leaves the key in flight)."""
        if not self._settle_nowait(served, usage):
            name = served.target.provider.name
            await self.pools[name].release(served.key, None, served.attempts[-1].latency_ms, usage)
            if self.observer.attempts:
                served_event(self.observer, served, "ok", served.attempts[-1].latency_ms, usage)

    def _settle_nowait(self, served: Served, usage: Usage | None) -> bool:
        """:meth:`settle` when the key's store lives in this process (no await); False if it does not."""
        served.usage = usage
        local = self._local.get(served.target.provider.name)
        if not local:
            return False
        latency = served.attempts[-1].latency_ms
        local.release_nowait(served.key, None, latency, usage)
        if self.observer.attempts:
            served_event(self.observer, served, "ok", latency, usage)
        return True

    async def complete(
        self, targets: list[Target], build: RequestBuilder, *, tokens: int = 0
    ) -> tuple[Completion, bytes, Served]:
        """A non-streaming call: the parsed completion, the raw upstream body, and who served it.
        ``tokens``: the estimate reserved in token windows (:func:`keywheel.state.windows.estimate_tokens`).

        The first try, on the first target's key when its store lives in this process, is made here
        as :meth:`execute` would make it, without its frames; a failure goes on in :meth:`execute`."""
        settings, first = self.settings, targets[0]
        local = self._local.get(first.provider.name)
        got = local.acquire_nowait(tokens=tokens) if local is not None and settings.timeout > 0 else None
        if local is None or not isinstance(got, ApiKey):
            return await self._complete(
                targets, build, _Call(asyncio.get_running_loop().time() + settings.timeout, tokens)
            )
        started = time.perf_counter()
        try:
            resp = await self.transport.send(
                build(first, got, False), min(settings.attempt_timeout, settings.timeout), settings.max_response_bytes
            )
            if resp.status >= 300:
                raise first.adapter.classify_error(resp.status, resp.headers, resp.body)
            completion = first.adapter.parse_response(resp.body)
        except UpstreamError as exc:
            latency = (time.perf_counter() - started) * 1000
            self._own(exc, first, got)
            # The call's deadline, on the loop's clock, as execute() would have set it before the try.
            call = _Call(asyncio.get_running_loop().time() + settings.timeout - latency / 1000, tokens)
            self._lost(call, first, got, exc, latency, local.release_nowait(got, exc, latency))
            return await self._complete(targets, build, call, exc)
        except BaseException:
            local.abandon_nowait(got)  # cancelled: free the slot, count nothing
            raise
        latency = (time.perf_counter() - started) * 1000
        usage = completion.usage
        served = Served(first, got, [Attempt(first.provider.name, got.fingerprint, "ok", latency, 200)], usage)
        local.release_nowait(got, None, latency, usage)  # _settle_nowait(), its store known
        if self.observer.attempts:
            served_event(self.observer, served, "ok", latency, usage)
        return completion, resp.body, served

    async def _complete(
        self, targets: list[Target], build: RequestBuilder, call: _Call, resume: UpstreamError | None = None
    ) -> tuple[Completion, bytes, Served]:
        """:meth:`complete` through :meth:`execute` (``resume``: the failure of a first try already made)."""
        transport, max_bytes = self.transport, self.settings.max_response_bytes

        async def attempt(target: Target, key: ApiKey, timeout: float) -> tuple[Completion, bytes]:
            resp = await transport.send(build(target, key, False), timeout, max_bytes)  # send(), one layer fewer
            if resp.status >= 300:
                raise target.adapter.classify_error(resp.status, resp.headers, resp.body)
            return target.adapter.parse_response(resp.body), resp.body

        (completion, body), served = await self.execute(targets, attempt, tokens=call.tokens, call=call, resume=resume)
        await self.settle(served, completion.usage)
        return completion, body, served

    async def open_stream(
        self, targets: list[Target], build: RequestBuilder, *, passthrough: str | None = None, tokens: int = 0
    ) -> EventStream:
        """Open a stream on the first target that yields a first event; fail over before that.

        ``passthrough``: the caller's dialect, when the caller will take an upstream of
        that dialect as raw bytes (:meth:`EventStream.raw`)."""
        idle = self.settings.stream_idle_timeout

        async def attempt(target: Target, key: ApiKey, timeout: float) -> EventStream:
            raw = passthrough is not None and target.speaks(passthrough)
            http = build(target, key, True)
            return await EventStream.open(
                self.transport, target, http, timeout, idle, passthrough=raw, max_bytes=self.settings.max_event_bytes
            )

        stream, served = await self.execute(targets, attempt, tokens=tokens)
        pool = self.pools[served.target.provider.name]
        stream.bind(served, pool, self.redactor, self.observer)
        await pool.answered(served.key)  # the provider is up: its first event is in (closes an open breaker)
        return stream


def token_estimate(request: ChatRequest) -> int:
    """The call's token estimate for token windows: its text's characters ÷ 4, plus ``max_tokens``."""
    size = len(request.system or "")
    for message in request.messages:
        for part in message.content:
            size += len(getattr(part, "text", "") or getattr(part, "content", "") or "")
    return estimate_tokens(size, request.max_tokens)


def translated(request: ChatRequest) -> RequestBuilder:
    """Build each attempt's upstream request by translating the canonical ``request``."""

    def build(target: Target, key: ApiKey, stream: bool) -> HttpRequest:
        return target.adapter.build_request(target.endpoint, key, request, target.model, stream=stream)

    return build


async def key_tally(
    targets: list[Target], pools: Mapping[str, KeyStore], attempts: list[Attempt], earliest: float | None
) -> str:
    """What every key of a failed call's providers is doing, counted truthfully.

    ``"of 8 keys (gemini, openrouter): 3 resting (the earliest back in 5.0 s), 4 disabled,
    1 failed this call (Overloaded)"``: resting keys wait out a rate limit (or their provider
    does), disabled ones are invalid, out of credit or switched off, failed ones were tried and
    met a provider fault.  Runs only on the failure path: it takes a snapshot of each pool."""
    failed_by: dict[str, set[str]] = {}
    for a in attempts:
        if a.scope == "provider" or a.scope == "request":
            failed_by.setdefault(a.key, set()).add(a.outcome)
    providers: list[str] = []
    throttled_providers: list[str] = []
    counts: dict[str, int] = {}
    outcomes: set[str] = set()
    for target in targets:
        name = target.provider.name
        if name in providers or name not in pools:
            continue
        providers.append(name)
        snap = await pools[name].snapshot()
        throttled = bool(snap.get("throttled_for"))
        if throttled:
            throttled_providers.append(name)
        full = _at_window(snap)
        for key in snap["keys"]:
            fingerprint = key["key"]
            if key["state"] == "disabled":
                kind = "disabled"
            elif key["state"] == "cooling" or throttled:
                kind = "resting"
            elif fingerprint in full:
                kind = "windowed"
            elif fingerprint in failed_by:
                kind = "failed"
                outcomes |= failed_by[fingerprint]
            else:
                kind = "idle"
            counts[kind] = counts.get(kind, 0) + 1
    total = sum(counts.values())
    counted = _tally_text(counts, outcomes, earliest, throttled_providers)
    return f"of {total} key{'s' if total != 1 else ''} ({', '.join(providers)}): {counted}"


def _tally_text(counts: Mapping[str, int], outcomes: set[str], earliest: float | None, throttled: list[str]) -> str:
    parts = []
    resting, windowed = counts.get("resting", 0), counts.get("windowed", 0)
    if resting:
        notes = [f"the earliest back in {earliest:.1f} s"] if earliest is not None else []
        notes += [f"{name} rests as a whole: all its keys were limited at once" for name in throttled]
        parts.append(f"{resting} resting" + (f" ({'; '.join(notes)})" if notes else ""))
    if windowed:
        note = f" (the earliest free in {earliest:.1f} s)" if earliest is not None and not resting else ""
        parts.append(f"{windowed} at their quota window{note}")
    if counts.get("disabled"):
        parts.append(f"{counts['disabled']} disabled")
    if counts.get("failed"):
        parts.append(f"{counts['failed']} failed this call ({', '.join(sorted(outcomes))})")
    if counts.get("idle"):
        parts.append(f"{counts['idle']} not tried")
    return ", ".join(parts) or "none"


def _at_window(snapshot: Mapping[str, Any]) -> set[str]:
    """The keys of a store's snapshot whose group has a window used up."""
    return {
        fingerprint
        for group in snapshot.get("groups", ())
        if any(w["used"] >= w["limit"] for w in group["windows"])
        for fingerprint in group["keys"]
    }
