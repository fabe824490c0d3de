"""Key probes: one cheap request per key that tells whether the key works.

Each provider names its probe next to its wire format (:attr:`keywheel.providers.base.Provider.probe`,
else the adapter's ``probe_request``): OpenRouter ``GET /key`` (free, with the key's credit),
Gemini and Anthropic a model listing, a custom OpenAI-compatible provider ``GET {base}/models``.
With ``<P>_PROBE=generate`` the probe is a 1-token request instead: it costs a token, but it is
the only probe that proves a key has credit where the provider has no credit endpoint.

Outcomes: ``ok`` / ``invalid`` / ``rate-limited`` / ``no-credit`` / ``unreachable`` /
``unverified``.  A probe endpoint answering 404 (a host without a model listing) is
``unverified``, never ``ok``.  Details are redacted and bounded; OpenRouter's ``label`` (which
echoes part of the key) is never read.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import orjson

from keywheel.config import ProviderConfig, Settings
from keywheel.errors import (
    KeyInvalid,
    NetworkError,
    ProviderFault,
    QuotaExhausted,
    RateLimited,
    ResponseTooLarge,
    Timeout,
    UpstreamError,
)
from keywheel.ops.credits import credit_line, read_key_info
from keywheel.providers import PROVIDERS, Endpoint, HttpRequest, get_adapter
from keywheel.secrets import ApiKey
from keywheel.status import Credit
from keywheel.transport import HttpTransport
from keywheel.types import ChatRequest, Message, TextPart

OK, INVALID, RATE_LIMITED, NO_CREDIT, UNREACHABLE, UNVERIFIED = (
    "ok",
    "invalid",
    "rate-limited",
    "no-credit",
    "unreachable",
    "unverified",
)
OUTCOMES = (OK, INVALID, RATE_LIMITED, NO_CREDIT, UNREACHABLE, UNVERIFIED)
MAX_PROBE_BYTES = 1024 * 1024
DETAIL_MAX = 200


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """One key's probe."""

    provider: str
    fingerprint: str
    outcome: str  # one of OUTCOMES
    latency_ms: float
    detail: str  # redacted, bounded
    credit: Credit | None = None  # OpenRouter: the key's credit, read by the same request
    retry_after: float | None = None  # rate-limited / no-credit: when the provider said it clears
    generated: bool = False  # a 1-token generation answered: the key works and has credit

    def to_json(self) -> dict[str, Any]:
        return {
            "fingerprint": self.fingerprint,
            "provider": self.provider,
            "outcome": self.outcome,
            "latency_ms": round(self.latency_ms, 1),
            "detail": self.detail,
        }


def _outcome_of(error: UpstreamError) -> str:
    if isinstance(error, KeyInvalid):
        return INVALID
    if isinstance(error, RateLimited):
        return RATE_LIMITED
    if isinstance(error, QuotaExhausted):
        return NO_CREDIT
    if isinstance(error, ProviderFault) and error.retryable:
        return UNREACHABLE
    return UNVERIFIED


class Prober:
    """Probes keys of the configured providers over one transport, ``concurrency`` at a time."""

    def __init__(self, settings: Settings, transport: HttpTransport, redact: Callable[[str], str]) -> None:
        self.settings = settings
        self.transport = transport
        self.redact = redact
        ops = settings.ops
        self.timeout = ops.probe_timeout
        # The bound, per event loop (a semaphore belongs to one loop).
        self._gates: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = (
            weakref.WeakKeyDictionary()
        )

    def keys(self, provider: str | None = None) -> list[tuple[str, ApiKey]]:
        """(provider, key) of every enabled provider (or of ``provider``); ``KeyError`` if unknown."""
        settings = self.settings
        if provider is not None and provider not in settings.providers:
            raise KeyError(f"no provider {provider!r} (configured: {', '.join(settings.providers)})")
        names = [provider] if provider is not None else [n for n, p in settings.providers.items() if p.enabled]
        return [(name, key) for name in names for key in settings.providers[name].keys]

    def reads_credit(self, provider: str) -> bool:
        """Whether ``provider``'s probe answers with the key's credit (OpenRouter's ``/key``)."""
        preset = _preset(self.settings.providers[provider])
        return preset is not None and bool(preset.probe_reads_credit)

    def request(self, provider: str, key: ApiKey, *, generate: bool | None = None) -> tuple[HttpRequest, bool]:
        """The probe of ``key`` and whether it generates (``<P>_PROBE=generate``)."""
        cfg = self.settings.providers[provider]
        endpoint = Endpoint(provider, cfg.base_url, cfg.model, dict(cfg.headers))
        adapter = get_adapter(cfg.dialect)
        if generate is None:
            generate = provider in self.settings.ops.generate
        if generate:
            chat = ChatRequest([Message("user", [TextPart("ping")])], max_tokens=1)
            return adapter.build_request(endpoint, key, chat, cfg.model, stream=False), True
        preset = _preset(cfg)
        if preset is not None and preset.probe is not None:
            return preset.probe(endpoint, key), False
        return adapter.probe_request(endpoint, key), False

    async def probe_all(self, keys: Iterable[tuple[str, ApiKey]]) -> list[ProbeResult]:
        """Every key's probe, at most ``KEYWHEEL_PROBE_CONCURRENCY`` at once, in the order given."""
        return list(await asyncio.gather(*(self.probe(name, key) for name, key in keys)))

    async def probe(self, provider: str, key: ApiKey, *, generate: bool | None = None) -> ProbeResult:
        request, generating = self.request(provider, key, generate=generate)
        loop = asyncio.get_running_loop()
        gate = self._gates.get(loop)
        if gate is None:
            gate = self._gates[loop] = asyncio.Semaphore(self.settings.ops.probe_concurrency)
        async with gate:
            started = time.perf_counter()
            try:
                answer = await asyncio.wait_for(
                    self.transport.send(request, self.timeout, MAX_PROBE_BYTES), self.timeout + 1.0
                )
            except (Timeout, TimeoutError):
                return self._result(provider, key, UNREACHABLE, started, f"no answer within {self.timeout:g} s")
            except NetworkError as exc:
                return self._result(provider, key, UNREACHABLE, started, f"cannot connect: {exc.message}")
            except ResponseTooLarge:
                return self._result(provider, key, UNVERIFIED, started, "the probe's answer is too large")
        return self._read(provider, key, answer.status, answer.headers, answer.body, started, generating)

    def _result(
        self, provider: str, key: ApiKey, outcome: str, started: float, detail: str, **extra: Any
    ) -> ProbeResult:
        latency = (time.perf_counter() - started) * 1000
        detail = self.redact(detail)[:DETAIL_MAX]
        return ProbeResult(provider, key.fingerprint, outcome, latency, detail, **extra)

    def _read(
        self,
        provider: str,
        key: ApiKey,
        status: int,
        headers: Any,
        body: bytes,
        started: float,
        generating: bool,
    ) -> ProbeResult:
        cfg = self.settings.providers[provider]
        if 200 <= status < 300:
            if not _json_object(body):
                return self._result(provider, key, UNVERIFIED, started, f"HTTP {status} but not a JSON answer")
            if generating:
                return self._result(provider, key, OK, started, "a 1-token request was answered", generated=True)
            preset = _preset(cfg)
            if preset is not None and preset.probe_reads_credit:
                return self._credit(provider, key, body, started)
            return self._result(provider, key, OK, started, "the model listing accepted the key")
        if status == 404:
            detail = "the probe endpoint answered 404: whether the key works cannot be told here"
            return self._result(provider, key, UNVERIFIED, started, detail)
        error = get_adapter(cfg.dialect).classify_error(status, headers, body)
        outcome = _outcome_of(error)
        detail = f"HTTP {status} {type(error).__name__}: {error.message}"
        return self._result(provider, key, outcome, started, detail, retry_after=error.retry_after)

    def _credit(self, provider: str, key: ApiKey, body: bytes, started: float) -> ProbeResult:
        try:
            credit = read_key_info(body, time.time())
        except ValueError as exc:
            return self._result(provider, key, UNVERIFIED, started, str(exc))
        outcome = NO_CREDIT if credit.remaining is not None and credit.remaining <= 0 else OK
        return self._result(provider, key, outcome, started, f"credit: {credit_line(credit)}", credit=credit)


def _preset(cfg: ProviderConfig) -> Any:
    """The provider's own declaration, when it is a known one speaking its own wire format."""
    preset = PROVIDERS.get(cfg.name)
    return preset if preset is not None and preset.adapter.dialect == cfg.dialect else None


def _json_object(body: bytes) -> bool:
    try:
        return isinstance(orjson.loads(body), dict)
    except orjson.JSONDecodeError:
        return False
