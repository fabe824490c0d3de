"""Canonical request, response and stream-event types.

Every inbound dialect translates into these and every provider adapter
translates out of them.  They are plain slotted dataclasses: cheap to build on
the hot path and easy to read in a debugger.  Nothing here does I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Role = Literal["user", "assistant"]
FinishReason = Literal["stop", "length", "tool_calls", "content_filter", "error", "other"]


@dataclass(slots=True)
class TextPart:
    text: str


@dataclass(slots=True)
class ImagePart:
    """An image given inline (base64 ``data`` + ``media_type``) or by ``url``."""

    media_type: str | None = None
    data: str | None = None
    url: str | None = None


@dataclass(slots=True)
class ToolCall:
    """A call the model asked for.

    ``arguments`` is the parsed JSON object.  ``extra`` keeps provider-specific
    fields that must be echoed back unchanged (e.g. Gemini's ``thoughtSignature``).
    """

    id: str
    name: str
    arguments: dict[str, Any]
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class ToolResultPart:
    """The result of a tool call, sent back in a user turn."""

    tool_call_id: str
    content: str
    name: str | None = None
    is_error: bool = False


Part = TextPart | ImagePart | ToolCall | ToolResultPart


@dataclass(slots=True)
class Message:
    role: Role
    content: list[Part]


@dataclass(slots=True)
class Tool:
    name: str
    description: str | None
    parameters: dict[str, Any]


# "auto" | "none" | "required" | the name of one tool that must be called
ToolChoice = str


@dataclass(slots=True)
class ChatRequest:
    messages: list[Message]
    system: str | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    stop: list[str] | None = None
    tools: list[Tool] | None = None
    tool_choice: ToolChoice | None = None
    # Provider-specific fields merged into the wire body as they are.
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0
    cost: float | None = None  # in the provider's credit unit, when it reports one

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens


@dataclass(slots=True)
class Attempt:
    """One try of one key of one provider, as recorded by the router."""

    provider: str
    key: str  # fingerprint, never the key
    outcome: str  # "ok" or the error class name
    latency_ms: float
    status: int | None = None
    detail: str = ""
    retry_after: float | None = None  # how long the upstream asked this key (or provider) to rest
    scope: str | None = None  # the error's: "key" | "provider" | "request" (None: ok)

    def __str__(self) -> str:
        status = f" {self.status}" if self.status is not None else ""
        rest = f", retry in {self.retry_after:.1f} s" if self.retry_after is not None else ""
        return f"{self.provider} {self.key}: {self.outcome}{status}{rest} ({self.latency_ms:.0f} ms)"


@dataclass(slots=True)
class Completion:
    """What an adapter parses out of one non-streaming upstream answer."""

    text: str
    tool_calls: list[ToolCall]
    finish_reason: FinishReason
    usage: Usage
    model: str
    id: str = ""


@dataclass(slots=True)
class ChatResponse:
    text: str
    tool_calls: list[ToolCall]
    finish_reason: FinishReason
    usage: Usage
    provider: str
    model: str
    key: str  # fingerprint of the key that served it
    attempts: list[Attempt]
    id: str = ""


# ---------------------------------------------------------------- stream events


@dataclass(slots=True)
class TextDelta:
    text: str


@dataclass(slots=True)
class ToolCallDelta:
    """A piece of a tool call.

    The first piece for an ``index`` carries ``id`` and ``name``; ``arguments``
    is a fragment of the JSON text (providers that send whole calls send the
    whole JSON text in one piece).
    """

    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class StreamEnd:
    """The last event of every successful stream.

    ``provider``, ``key`` (fingerprint) and ``attempts`` are filled in by the
    router: who served the stream and what was tried before.
    """

    finish_reason: FinishReason
    usage: Usage
    model: str = ""
    id: str = ""
    provider: str = ""
    key: str = ""
    attempts: list[Attempt] = field(default_factory=list)


StreamEvent = TextDelta | ToolCallDelta | StreamEnd
