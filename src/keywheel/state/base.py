"""The seam between the router and the keys' state: the store protocol.

A store keeps each provider's keys, their states and counters, and picks keys; it changes a
state only through :mod:`keywheel.state.rules`.  The seam is async, so a networked store (Redis)
does not block the event loop.  A store that lives in the process (:class:`LocalStore`, e.g.
:class:`keywheel.state.memory.MemoryStore`) also offers each hot-path call without an ``await``
(``*_nowait``), which the router uses when it has one: a key pick costs well under a
microsecond, and awaiting a coroutine around it would double that.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from keywheel.errors import UpstreamError
from keywheel.secrets import ApiKey
from keywheel.types import Usage


@dataclass(frozen=True, slots=True)
class Open:
    """What :meth:`KeyStore.acquire` returns while the provider's breaker is open:
    skip the provider; ``retry_in`` seconds until it lets a trial through."""

    retry_in: float


@dataclass(frozen=True, slots=True)
class KeyChange:
    """A key's state changed (what a key-state event says)."""

    fingerprint: str
    old: str  # active | cooling | disabled
    new: str
    reason: str
    until: float | None  # cooling: the epoch time it comes back


Acquired = ApiKey | float | Open | None


def key_id(key: ApiKey, salt: bytes) -> str:
    """The id a shared store keeps ``key`` under: a keyed hash (HMAC-SHA-256 with the store's own
    random ``salt``) of the provider and the key, 32 hex digits.  No store holds key material:
    without the salt nobody can test a guess against a stored id, and with it only a whole key."""
    message = f"{key.provider}\0{key.reveal()}".encode()
    return hmac.new(salt, message, hashlib.sha256).hexdigest()[:32]


class KeyStore(Protocol):
    """What the router needs of a provider's keys (the seam for shared state)."""

    provider: str

    async def acquire(self, *, force: bool = False, tokens: int = 0) -> Acquired:
        """A usable key (counted as in flight), else seconds until one returns, else ``None``.

        :class:`Open` while the provider's breaker is open (or its one trial is out);
        ``force`` goes past an open breaker (every provider of the chain is open).  A key whose
        group's quota window is full is skipped (:mod:`keywheel.state.windows`); ``tokens`` is
        the call's estimate, reserved in token windows and settled by :meth:`release`."""

    async def release(
        self, key: ApiKey, error: UpstreamError | None, latency_ms: float, usage: Usage | None = None
    ) -> KeyChange | None:
        """Record the outcome of a request made with ``key``; the key's state change, if any."""

    async def abandon(self, key: ApiKey) -> None:
        """The request made with ``key`` was cancelled: free its in-flight slot, count nothing."""

    async def answered(self, key: ApiKey) -> None:
        """The provider answered on ``key`` (a stream's first event): a success for the breaker.
        The request goes on: it is still released (or abandoned) when it ends."""

    async def breaker_closed(self) -> bool:
        """Whether the breaker lets requests through freely (the router retries only then)."""

    async def keys(self) -> list[ApiKey]: ...
    async def disable(self, fingerprint: str, reason: str = "disabled by operator") -> None: ...
    async def enable(self, fingerprint: str) -> None: ...
    async def recover(self, fingerprint: str, cause: str) -> bool:
        """Back in rotation if it is still out for ``cause`` (what a probe saw cleared); whether it came back."""

    async def take_out(self, fingerprint: str, reason: str, cause: str, until: float | None = None) -> None:
        """Out of rotation for ``cause``: resting until ``until`` when known, else disabled."""

    async def add(self, key: ApiKey) -> None: ...
    async def remove(self, fingerprint: str) -> None: ...
    async def snapshot(self) -> dict[str, Any]: ...

    async def lease(self, name: str, seconds: float) -> bool:
        """Take the lease ``name`` for ``seconds`` unless another holder has it (e.g. one replica
        probes a key at a time): whether this caller got it.  A store of one process has no
        other holder: it always gets it."""


@runtime_checkable
class LocalStore(KeyStore, Protocol):
    """A store in this process: the hot-path calls also come without an ``await``."""

    def acquire_nowait(self, *, force: bool = False, tokens: int = 0) -> Acquired: ...
    def release_nowait(
        self, key: ApiKey, error: UpstreamError | None, latency_ms: float, usage: Usage | None = None
    ) -> KeyChange | None: ...
    def abandon_nowait(self, key: ApiKey) -> None: ...
    def answered_nowait(self, key: ApiKey) -> None: ...
    def breaker_closed_nowait(self) -> bool: ...
    def snapshot_nowait(self) -> dict[str, Any]: ...
