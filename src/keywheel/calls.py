"""What one call through the router is made of, apart from the loop itself.

:class:`Target` (a provider of the chain and the model to ask it for), :class:`Served` (who
served, and every try before), :class:`RetryPolicy`; the record (:func:`attempt_record`) and the
events (:func:`served_event`, :func:`key_state_event`) of an attempt; the redaction of upstream
errors (:func:`scrub`); the library's answer (:func:`chat_response`).  Shared by the router
(:mod:`keywheel.router`) and the streams it opens (:mod:`keywheel.stream`).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from keywheel.config import ProviderConfig, Settings
from keywheel.errors import UpstreamError
from keywheel.observe import AttemptFinished, KeyStateChanged, Observer
from keywheel.providers.base import Adapter, Endpoint
from keywheel.secrets import ApiKey, Redactor
from keywheel.state.base import KeyChange
from keywheel.types import Attempt, ChatResponse, Completion, Usage


@dataclass(slots=True)
class Target:
    """One provider of a call's chain, with the model to ask it for."""

    provider: ProviderConfig
    model: str
    endpoint: Endpoint
    adapter: Adapter

    def speaks(self, dialect: str) -> bool:
        """Whether the upstream speaks the caller's ``dialect`` (a body in it may pass through)."""
        return self.provider.speaks(dialect)


@dataclass(slots=True)
class Served:
    """Which provider and key served a call, and every try before it."""

    target: Target
    key: ApiKey
    attempts: list[Attempt]
    usage: Usage | None = None  # the tokens the upstream reported, once the call has settled


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How a provider fault is retried on the same provider before failing over.

    The n-th retry waits ``min(backoff_base * 2 ** (n - 1), backoff_cap)``, scaled by a random
    factor in ``[1 - jitter, 1)``.  ``provider_attempts`` comes from ``KEYWHEEL_PROVIDER_ATTEMPTS``."""

    provider_attempts: int = 2  # tries of one provider on provider faults (the first one included)
    backoff_base: float = 0.2
    backoff_cap: float = 2.0
    jitter: float = 0.5

    def delay(self, faults: int, rng: random.Random) -> float:
        """Seconds to wait after the ``faults``-th provider fault in a row."""
        return min(self.backoff_base * 2.0 ** (faults - 1), self.backoff_cap) * (
            1 - self.jitter + self.jitter * rng.random()
        )


def redactor_for(settings: Settings) -> Redactor:
    """A redactor of every secret in ``settings``; its names, base URLs and models are public text."""
    public = [(cfg.name, cfg.base_url, cfg.model) for cfg in settings.providers.values()]
    return Redactor.for_settings(settings.secrets(), public)


def scrub(exc: UpstreamError, redactor: Redactor) -> UpstreamError:
    """Strip ``exc``'s message, body and request id of key pieces (in place).  Error paths only."""
    message = redactor.redact(exc.message)
    if message is not exc.message:
        exc.message = message
        exc.args = (message,)
    if exc.body is not None:
        exc.body = redactor.redact_bytes(exc.body)
    if exc.request_id:
        exc.request_id = redactor.redact(exc.request_id)
    return exc


def chat_response(completion: Completion, served: Served) -> ChatResponse:
    """The library's answer to a non-streaming call: the completion, who served it, every try."""
    # Positional: the fields in their declared order (half the cost of keywords, on every call).
    return ChatResponse(
        completion.text,
        completion.tool_calls,
        completion.finish_reason,
        completion.usage,
        served.target.provider.name,
        completion.model or served.target.model,
        served.key.fingerprint,
        served.attempts,
        completion.id,
    )


def key_state_event(provider: str, change: KeyChange, redactor: Redactor | None) -> KeyStateChanged:
    """The :class:`KeyStateChanged` of a store's :class:`KeyChange` (its reason redacted)."""
    reason = redactor.redact(change.reason) if redactor is not None else change.reason
    return KeyStateChanged(provider, change.fingerprint, change.old, change.new, reason, change.until)


def served_event(
    observer: Observer,
    served: Served,
    outcome: str,
    latency_ms: float,
    usage: Usage | None,
    error: UpstreamError | None = None,
) -> None:
    """The :class:`AttemptFinished` of the attempt that served a call, once the call has settled."""
    status = error.status if error is not None else served.attempts[-1].status
    provider, key = served.target.provider.name, served.key.fingerprint
    observer.emit(AttemptFinished(provider, key, outcome, status, latency_ms, usage, served.target.model))


def attempt_record(target: Target, key: ApiKey, exc: UpstreamError, latency_ms: float) -> Attempt:
    return Attempt(
        target.provider.name,
        key.fingerprint,
        type(exc).__name__,
        latency_ms,
        exc.status,
        exc.message[:200],
        exc.retry_after,
        exc.scope,
    )
