"""The adapter interface: what one wire format must provide.

Adapters are pure.  They build an :class:`HttpRequest`, parse a response body,
parse a stream event by event, and classify an error answer into the taxonomy
of :mod:`keywheel.errors`.  They never send anything themselves: the router
sends through the one shared :mod:`keywheel.transport`.

A provider is one module that declares a :class:`Provider` — its wire format (an adapter),
default base URL and model, key shape, model families — plus one line in
:data:`keywheel.providers.PROVIDERS`.  Every other module reads those facts from there.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from keywheel.errors import UpstreamError
from keywheel.secrets import ApiKey
from keywheel.sse import SSEEvent
from keywheel.types import ChatRequest, Completion, StreamEvent


@dataclass(slots=True)
class Endpoint:
    """What an adapter needs to know of one configured provider."""

    name: str  # the provider's configured name: "gemini", "openrouter", "glm", ...
    base_url: str  # in the official SDK's convention, without a trailing slash
    model: str  # the provider's configured default model
    headers: dict[str, str] = field(default_factory=dict)  # extra static headers
    # An adapter's request headers per key (the key's text to them), built once: the hot path copies them.
    cache: dict[str, dict[str, str]] = field(default_factory=dict, repr=False, compare=False)


@dataclass(slots=True)
class HttpRequest:
    method: str
    url: str
    headers: dict[str, str] = field(repr=False)  # they carry the key
    body: bytes | None = None


class StreamParser(Protocol):
    def feed(self, event: SSEEvent) -> list[StreamEvent]:
        """Translate one SSE event.  Raises an :class:`UpstreamError` for an in-band error event."""

    def tap(self, event: SSEEvent) -> list[StreamEvent]:
        """Like :meth:`feed`, for a pass-through stream whose bytes go to the caller as
        they are: the parser need only track the end, usage and errors, so it may skip
        the JSON of plain content events.  Never skips an error event."""

    def close(self) -> list[StreamEvent]:
        """The stream's connection ended.  Returns the final events (ending with a
        :class:`~keywheel.types.StreamEnd`) or raises
        :class:`~keywheel.errors.NetworkError` if the stream was cut short."""


class FrameDecoder(Protocol):
    """Bytes of a stream in, whole events out (raises ``EventTooLarge`` past its bound)."""

    def feed(self, chunk: bytes) -> list[SSEEvent]: ...
    def close(self) -> list[SSEEvent]: ...


class Framing(Protocol):
    """How a stream's bytes are cut into events: SSE (:data:`keywheel.sse.SSE`) for every
    provider so far; another framing (AWS event-stream) is another implementation."""

    name: str

    def decoder(self, max_event_bytes: int | None = None) -> FrameDecoder:
        """A fresh decoder for one stream."""

    def split(self, data: bytes) -> tuple[bytes, bytes]:
        """``data`` cut after its last whole event: (what may go out as it is, what must wait)."""


class Adapter(Protocol):
    #: the wire format: "anthropic" | "gemini" | "openai"
    dialect: str
    #: how a plain key of this wire format is sent: "key" (its own header) or "bearer"
    key_auth: str
    #: how its streams are framed
    framing: Framing

    def build_request(
        self, endpoint: Endpoint, key: ApiKey, request: ChatRequest, model: str, *, stream: bool
    ) -> HttpRequest: ...

    def build_raw_request(
        self, endpoint: Endpoint, key: ApiKey, body: dict[str, Any], model: str, *, stream: bool
    ) -> HttpRequest:
        """Pass-through: send a body already in this dialect with only model and auth replaced."""

    def parse_response(self, body: bytes) -> Completion:
        """Parse a 2xx body.  Raises an :class:`UpstreamError` for an error carried in a 200."""

    def stream_parser(self) -> StreamParser: ...

    def classify_error(self, status: int, headers: Mapping[str, str], body: bytes) -> UpstreamError:
        """Map a non-2xx answer into the error taxonomy, with retry timing and request id."""

    def probe_request(self, endpoint: Endpoint, key: ApiKey) -> HttpRequest:
        """A cheap request that succeeds iff the key works (e.g. list models)."""


@dataclass(frozen=True, slots=True)
class Provider:
    """Everything keywheel knows of one provider, declared in the provider's own module."""

    name: str  # the configuration prefix, lower case: GEMINI_API_KEY_1 -> "gemini"
    adapter: Adapter  # its wire format
    base_url: str  # the default of <NAME>_BASE_URL, in the official SDK's convention
    model: str  # the default of <NAME>_MODEL
    key_prefix: str  # what a real key starts with (for a configuration warning only)
    on_by_default: bool = True  # enabled when it has keys (else only when ENABLE_<NAME> or named)
    families: tuple[str, ...] = ()  # bare model names starting so go to it: ("claude",)
    token_var: str | None = None  # a variable holding a bearer token instead of a key
    env_headers: tuple[tuple[str, str], ...] = ()  # (variable, header): static headers taken from the environment
    # The free request proving a key works (``keywheel keys check``, the gateway's re-probe);
    # None: the adapter's ``probe_request`` (a model listing).
    probe: Callable[[Endpoint, ApiKey], HttpRequest] | None = None
    probe_reads_credit: bool = False  # its probe's answer is a credit reading (OpenRouter's /key)
