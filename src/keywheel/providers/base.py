"""The adapter interface: what one wire format must provide.

Adapters are pure.  They build an :class:`HttpRequest`, parse a response body,
parse a stream event by event, and classify an error answer into the taxonomy
of :mod:`keywheel.errors`.  They never send anything themselves: the router
sends through the one shared :mod:`keywheel.transport`.  Adding a provider is
one module implementing :class:`Adapter` plus one line in
:data:`keywheel.providers.ADAPTERS`.
"""

from __future__ import annotations

from collections.abc import Mapping
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


class Adapter(Protocol):
    #: the wire format: "anthropic" | "gemini" | "openai"
    dialect: str

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
