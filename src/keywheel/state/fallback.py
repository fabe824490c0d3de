"""The shared store as the router sees it: Redis while Redis answers; during an outage, local
state (``KEYWHEEL_REDIS_FALLBACK=local``, the default) or a clear 503 (``=fail``).

- **local**: within one call of Redis failing (its socket timeouts are bounded), this replica
  switches to a :class:`~keywheel.state.memory.MemoryStore` seeded from the last state it saw
  (refreshed at most every :data:`MIRROR_EVERY` seconds while Redis answers).  It keeps trying
  Redis every :data:`PROBE_EVERY` seconds; when Redis answers again it merges the decisions it
  took alone (disables win; rests only grow) and goes back to shared state.  ``share`` is this
  replica's part of any window (1 ÷ the replicas it saw) while it is on its own.
- **fail**: selections raise :class:`StateUnavailable` (a 503 in the caller's dialect); the
  outcome of a request already under way is dropped rather than failing the request.

Each transition is logged once, with its reason.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from redis.exceptions import RedisError

from keywheel.errors import NoKeyAvailable, UpstreamError
from keywheel.secrets import ApiKey
from keywheel.state.base import Acquired, KeyChange
from keywheel.state.memory import MemoryStore
from keywheel.state.redis import RedisStore
from keywheel.state.rules import KeyState, ProviderState
from keywheel.state.windows import shared_quota
from keywheel.types import Usage

log = logging.getLogger("keywheel.state")
T = TypeVar("T")

PROBE_EVERY = 0.5  # seconds between tries of a Redis that failed
MIRROR_EVERY = 1.0  # seconds between refreshes of the last known state
#: What a Redis outage raises: its errors, and the OS's (a refused or reset connection).
OUTAGE = (RedisError, OSError, asyncio.TimeoutError)


class StateUnavailable(NoKeyAvailable):
    """The shared key state (Redis) does not answer and ``KEYWHEEL_REDIS_FALLBACK=fail``: a 503."""


class SharedStore:
    """A :class:`RedisStore` with an outage plan (the :class:`keywheel.state.base.KeyStore` seam)."""

    def __init__(self, redis: RedisStore, *, fallback: str = "local") -> None:
        if fallback not in ("local", "fail"):
            raise ValueError(f"KEYWHEEL_REDIS_FALLBACK must be 'local' or 'fail', not {fallback!r}")
        self.provider = redis.provider
        self.redis = redis
        self.fallback = fallback
        self.local: MemoryStore | None = None  # set while Redis is out
        self.share = 1.0  # this replica's part of any window while on its own (1 ÷ replicas seen)
        self._last: tuple[ProviderState, dict[str, KeyState]] | None = None
        self._mirrored = 0.0  # time.monotonic() of the last mirror refresh (or its start)
        self._probed = 0.0
        self._replicas = 1
        self._recovering: asyncio.Task[None] | None = None
        self._mirroring: asyncio.Task[None] | None = None
        self._down_failing = False  # fail mode: Redis is out

    # ------------------------------------------------------------------ the switch

    @property
    def shared(self) -> bool:
        """Whether this store is on the shared (Redis) state now."""
        return self.local is None and not self._down_failing

    def _went_down(self, exc: BaseException) -> None:
        if self.local is not None or self._down_failing:
            return
        where = self.redis.url.split("@")[-1]
        reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        if self.fallback == "fail":
            self._down_failing = True
            log.error(
                "Redis key state of %s unavailable (%s at %s): answering 503 until it is back "
                "(KEYWHEEL_REDIS_FALLBACK=fail)",
                self.provider,
                reason,
                where,
            )
        else:
            self.local = self._seeded()
            log.warning(
                "Redis key state of %s unavailable (%s at %s): on local state now, seeded from the last "
                "known state, %.0f%% of each window (1 of %d replicas seen)",
                self.provider,
                reason,
                where,
                self.share * 100,
                self._replicas,
            )
        self._probed = time.monotonic()

    def _seeded(self) -> MemoryStore:
        redis = self.redis
        self.share = 1.0 / max(self._replicas, 1)
        quota = shared_quota(redis.quota, self.share)  # each replica takes its share of every window
        store = MemoryStore(self.provider, redis.held(), throttle_window=redis._rules.throttle_window, quota=quota)
        store._rules = redis._rules  # the same numbers, breaker included
        if self._last is not None:
            provider, keys = self._last
            present = {k.fingerprint for k in store.keys_nowait()}
            store.load_nowait(provider, {fp: k for fp, k in keys.items() if fp in present})
        return store

    def _maybe_recover(self) -> None:
        """Out: try Redis now and then (in the background) without holding up requests."""
        now = time.monotonic()
        if now - self._probed < PROBE_EVERY or (self._recovering is not None and not self._recovering.done()):
            return
        self._probed = now
        self._recovering = asyncio.get_running_loop().create_task(self._recover())

    async def _recover(self) -> None:
        try:
            await self.redis.resync()
            merged = 0
            local = self.local
            if local is not None:
                provider, keys = local.dump_nowait()
                merged = await self.redis.merge(provider, keys)
        except OUTAGE:
            return
        self.local, self._down_failing = None, False
        log.warning(
            "Redis key state of %s is back: merged %d decision(s) taken alone; shared state again",
            self.provider,
            merged,
        )

    def _maybe_mirror(self) -> None:
        now = time.monotonic()
        if now - self._mirrored < MIRROR_EVERY or self.fallback != "local":
            return
        self._mirrored = now
        self._mirroring = asyncio.get_running_loop().create_task(self._mirror())

    async def _mirror(self) -> None:
        try:
            self._last = await self.redis.dump()
            self._replicas = await self.redis.replicas()
        except OUTAGE:
            pass  # the next call finds out

    async def _call(self, shared: Callable[[], Awaitable[T]], alone: Callable[[MemoryStore], T], quiet: T) -> T:
        """``shared()`` while Redis answers; else ``alone(local)``, or (fail mode) ``quiet``."""
        if self.local is None and not self._down_failing:
            try:
                return await shared()
            except OUTAGE as exc:
                self._went_down(exc)
        self._maybe_recover()
        if self.local is not None:
            return alone(self.local)
        return quiet

    def _unavailable(self) -> StateUnavailable:
        return StateUnavailable(
            f"key state unavailable: Redis for {self.provider} does not answer and KEYWHEEL_REDIS_FALLBACK=fail; "
            "retry shortly"
        )

    # ------------------------------------------------------------------ the seam

    async def acquire(self, *, force: bool = False, tokens: int = 0) -> Acquired:
        if self.local is None and not self._down_failing:
            self._maybe_mirror()
            try:
                return await self.redis.acquire(force=force, tokens=tokens)
            except OUTAGE as exc:
                self._went_down(exc)
        self._maybe_recover()
        if self.local is not None:
            return self.local.acquire_nowait(force=force, tokens=tokens)
        raise self._unavailable()

    async def release(
        self, key: ApiKey, error: UpstreamError | None, latency_ms: float, usage: Usage | None = None
    ) -> KeyChange | None:
        return await self._call(
            lambda: self.redis.release(key, error, latency_ms, usage),
            lambda s: s.release_nowait(key, error, latency_ms, usage),
            None,
        )

    async def abandon(self, key: ApiKey) -> None:
        await self._call(lambda: self.redis.abandon(key), lambda s: s.abandon_nowait(key), None)

    async def answered(self, key: ApiKey) -> None:
        await self._call(lambda: self.redis.answered(key), lambda s: s.answered_nowait(key), None)

    async def breaker_closed(self) -> bool:
        return await self._call(self.redis.breaker_closed, lambda s: s.breaker_closed_nowait(), True)

    async def keys(self) -> list[ApiKey]:
        return await self.redis.keys()

    async def disable(self, fingerprint: str, reason: str = "disabled by operator") -> None:
        await self._admin(
            lambda: self.redis.disable(fingerprint, reason), lambda s: s.disable_nowait(fingerprint, reason)
        )

    async def enable(self, fingerprint: str) -> None:
        await self._admin(lambda: self.redis.enable(fingerprint), lambda s: s.enable_nowait(fingerprint))

    async def recover(self, fingerprint: str, cause: str) -> bool:
        got = await self._call(
            lambda: self.redis.recover(fingerprint, cause), lambda s: s.recover_nowait(fingerprint, cause), False
        )
        if self._down_failing:
            raise self._unavailable()
        return got

    async def take_out(self, fingerprint: str, reason: str, cause: str, until: float | None = None) -> None:
        await self._admin(
            lambda: self.redis.take_out(fingerprint, reason, cause, until),
            lambda s: s.take_out_nowait(fingerprint, reason, cause, until),
        )

    async def add(self, key: ApiKey) -> None:
        await self.redis.add(key)
        if self.local is not None:
            self.local.add_nowait(key)

    async def remove(self, fingerprint: str) -> None:
        await self.redis.remove(fingerprint)
        if self.local is not None:
            self.local.remove_nowait(fingerprint)

    async def _admin(self, shared: Callable[[], Awaitable[None]], alone: Callable[[MemoryStore], None]) -> None:
        await self._call(shared, alone, None)
        if self._down_failing:
            raise self._unavailable()

    async def lease(self, name: str, seconds: float) -> bool:
        # Out of touch with the others: this replica may take it (a probe twice is better than none).
        return await self._call(lambda: self.redis.lease(name, seconds), lambda _: True, False)

    async def snapshot(self) -> dict[str, Any]:
        if self.local is None and not self._down_failing:
            try:
                snap = await self.redis.snapshot()
                self._replicas = int(snap["replicas"])
                return {**snap, "shared": True}
            except OUTAGE as exc:
                self._went_down(exc)
        self._maybe_recover()
        if self.local is not None:
            return {**self.local.snapshot_nowait(), "shared": False}
        raise self._unavailable()

    async def aclose(self) -> None:
        for task in (self._recovering, self._mirroring):
            if task is not None and not task.done():
                task.cancel()
        await self.redis.aclose()
