"""Every error keywheel raises, in one tree.

::

    KeywheelError
    ├── ConfigError                 bad configuration; names every offending variable
    ├── UpstreamError               a provider answered badly (or not at all)
    │   ├── KeyFault                this key is the problem: rotate to the next key
    │   │   ├── RateLimited         rest the key for retry_after seconds
    │   │   ├── KeyInvalid          401/403/API_KEY_INVALID: disable the key
    │   │   └── QuotaExhausted      402, daily quota, out of credit: disable the key
    │   ├── ProviderFault           the provider is the problem: back off, then fail over
    │   │   ├── Overloaded          529/503
    │   │   ├── ServerError         other 5xx
    │   │   ├── Timeout
    │   │   ├── NetworkError        connection refused/reset, stream cut short
    │   │   ├── ModelNotFound       404 for this provider's model: fail over, no retry
    │   │   └── ResponseTooLarge    answer (or one stream event) over the size bound: fail over, no retry
    │   └── RequestFault            the request is the problem: would fail anywhere
    │       ├── BadRequest
    │       │   └── ContextTooLong  fails over only to a provider with a larger window
    │       └── ContentFiltered
    ├── NoKeyAvailable              no key can serve now: resting (retry_after says for how long) or disabled
    ├── ShuttingDown                the gateway is draining (SIGTERM): retry elsewhere after retry_after
    └── AllProvidersFailed          every provider in the chain was tried; attempts say how

Every :class:`UpstreamError` carries the provider, the key *fingerprint*, the
upstream status and request id.  No message here ever contains a piece of a key:
messages are built from fingerprints and from upstream error texts, and the
router passes every upstream text (message, body, request id) through a
:class:`keywheel.secrets.Redactor` before anything else sees it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    from keywheel.types import Attempt


class KeywheelError(Exception):
    """Base of every keywheel error."""


class ConfigError(KeywheelError):
    """Configuration is invalid.  ``problems`` maps variable name to what is wrong."""

    def __init__(self, problems: dict[str, str]) -> None:
        self.problems = dict(problems)
        lines = [f"  {name}: {why}" for name, why in self.problems.items()]
        super().__init__("invalid keywheel configuration:\n" + "\n".join(lines))


class UpstreamError(KeywheelError):
    """A provider's answer (or the lack of one) that was not a success."""

    scope: ClassVar[str] = "provider"  # "key" | "provider" | "request"
    retryable: ClassVar[bool] = False  # worth another try on the same provider (provider faults say so)

    def __init__(
        self,
        message: str,
        *,
        provider: str = "",
        key: str = "",
        status: int | None = None,
        request_id: str | None = None,
        retry_after: float | None = None,
        body: bytes | None = None,
    ) -> None:
        self.message = message
        self.provider = provider
        self.key = key
        self.status = status
        self.request_id = request_id
        self.retry_after = retry_after
        # The upstream body, for pass-through of errors in the same dialect.
        # Upstream error bodies may quote part of the key: the router redacts them.
        self.body = body
        # Filled in by the router: every try that led here.
        self.attempts: list[Attempt] = []
        super().__init__(message)

    def __str__(self) -> str:
        parts = [p for p in (self.provider, self.key) if p]
        if self.status is not None:
            parts.append(f"HTTP {self.status}")
        if self.request_id:
            parts.append(f"request_id={self.request_id}")
        return f"[{' '.join(parts)}] {self.message}" if parts else self.message


class KeyFault(UpstreamError):
    scope = "key"


class RateLimited(KeyFault):
    """The key is rate limited.  ``retry_after`` is the provider's own figure, if any.
    ``spend_cap``: a 429 that may be a spend cap rather than a rate (Anthropic's tier cap comes as
    a plain ``rate_limit_error`` without retry timing): when it repeats on every key of the
    provider, the rules take the keys out as out of quota (:mod:`keywheel.state.rules`)."""

    spend_cap: bool = False


class KeyInvalid(KeyFault):
    """The key is invalid, revoked or lacks permission."""


class QuotaExhausted(KeyFault):
    """The key's credit or daily quota is used up.  ``retry_after`` is the reset, if known.
    ``source`` names which limit, when the provider says (OpenRouter's 402 ``limit_source``:
    ``openrouter_key_limit`` — the key's own cap; ``openrouter_credits`` — the account's balance).
    ``daily``: a daily quota of the key's project or account (Gemini's ``PerDay`` quotas), which
    every key of its group shares: the whole group rests until the day resets."""

    source: str = ""
    daily: bool = False


class ProviderFault(UpstreamError):
    scope = "provider"
    retryable: ClassVar[bool] = True


class Overloaded(ProviderFault):
    pass


class ServerError(ProviderFault):
    pass


class Timeout(ProviderFault):
    pass


class NetworkError(ProviderFault):
    pass


class ModelNotFound(ProviderFault):
    retryable = False


class ResponseTooLarge(ProviderFault):
    """The upstream's answer (or one event of its stream) is over the configured bound.

    The provider, not the key, is at fault; the same request would likely be as large
    again, so it is not retried on that provider, but another provider may answer it."""

    retryable = False


class RequestFault(UpstreamError):
    scope = "request"


class BadRequest(RequestFault):
    pass


class ContextTooLong(BadRequest):
    pass


class ContentFiltered(RequestFault):
    pass


class NoKeyAvailable(KeywheelError):
    """Every usable key is resting.  ``retry_after`` is seconds until the earliest returns."""

    def __init__(self, message: str, *, retry_after: float | None = None, attempts: Sequence[Attempt] = ()) -> None:
        self.retry_after = retry_after
        self.attempts = list(attempts)
        super().__init__(message)


class ShuttingDown(KeywheelError):
    """The gateway is shutting down and cut this request at the drain deadline."""

    def __init__(self, message: str = "the gateway is shutting down; retry", *, retry_after: float = 1.0) -> None:
        self.retry_after = retry_after
        super().__init__(message)


class AllProvidersFailed(KeywheelError):
    """Every provider in the chain was tried and none answered."""

    def __init__(self, attempts: Sequence[Attempt], last: KeywheelError | None = None, *, summary: str = "") -> None:
        self.attempts = list(attempts)
        self.last = last
        # How many keys rest, are disabled or failed (the router's count), if known.
        self.summary = summary
        tried = "; ".join(str(a) for a in self.attempts) or "nothing could be tried"
        counted = f"{summary}; " if summary else ""
        super().__init__(f"all providers failed: {counted}tried: {tried}")
