"""Wire builders of the fake upstream: what each provider dialect answers.

A :class:`Dialect` reads a parsed request (credential, stream flag, tools, the
last tool result) and builds reply bodies, stream frames and error bodies the
way PROVIDERS.md describes that provider.  Dialects are pure: no I/O, no
state, and they never put a credential into anything they build.

The three implementations live in ``_anthropic``, ``_gemini`` and ``_openai``;
:func:`keywheel.testing.registry.dialect_for` is the registry.
"""

from __future__ import annotations

import re
import uuid
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import orjson

from keywheel.testing.behaviours import Behaviour

DialectName = Literal["anthropic", "gemini", "openai"]
Json = Any  # parsed JSON: dict | list | str | int | float | bool | None

QUICK_BROWN_FOX = "the quick brown fox jumps over the lazy dog."

# Keys whose string values are identifiers or payloads, not words a model reads.
_NOT_WORDS = frozenset(
    {
        "type",
        "role",
        "id",
        "tool_use_id",
        "tool_call_id",
        "media_type",
        "mimeType",
        "mime_type",
        "data",
        "url",
        "fileUri",
        "model",
        "signature",
        "thoughtSignature",
        "cache_control",
        "detail",
    }
)
_WORD = re.compile(r"\s*\S+")


@dataclass(frozen=True, slots=True)
class Incoming:
    """The parts of an HTTP request a dialect may look at (header names lower-case)."""

    method: str
    path: str
    query: Mapping[str, str]
    headers: Mapping[str, str]
    body: Json


@dataclass(frozen=True, slots=True)
class Tool:
    name: str
    schema: Mapping[str, Json]


@dataclass(frozen=True, slots=True)
class Conversation:
    """What a dialect read out of a chat request body."""

    model: str
    input_tokens: int
    tool: Tool | None = None  # the tool to call now, if any
    tool_result: str | None = None  # text of a tool result in the last user turn


@dataclass(frozen=True, slots=True)
class ToolCall:
    id: str
    name: str
    arguments: Mapping[str, Json]


@dataclass(frozen=True, slots=True)
class Reply:
    """The answer the fake decided on, before any dialect shapes it."""

    n: int
    model: str
    input_tokens: int
    text: str | None = None
    tool_call: ToolCall | None = None
    response_id: str = field(default_factory=lambda: uuid.uuid4().hex[:24])

    @property
    def output_tokens(self) -> int:
        if self.tool_call is not None:
            return 10 + word_count(self.tool_call.arguments)
        return max(1, len((self.text or "").split()))

    @property
    def pieces(self) -> list[str]:
        """The text split into stream units: one per word, leading space kept."""
        return _WORD.findall(self.text or "")


@dataclass(frozen=True, slots=True)
class Frame:
    """One write of a streamed answer; ``content`` frames count toward ``after``."""

    data: bytes
    content: bool = False


@dataclass(frozen=True, slots=True)
class Answer:
    """A complete (non-streamed) HTTP answer."""

    status: int
    body: Json
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Streamed:
    """A streamed HTTP 200 answer: its media type, headers and every frame, terminal ones included."""

    media_type: str
    frames: list[Frame]
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class Turn:
    """One chat request and the reply decided for it, while it is being answered."""

    incoming: Incoming
    reply: Reply
    sent: int = 0  # content frames written so far; the server keeps it current


class Dialect(ABC):
    """One provider's wire format, as seen from the server side."""

    name: ClassVar[DialectName]
    tool_call_prefix: ClassVar[str] = "call_"

    @abstractmethod
    def credential(self, incoming: Incoming) -> str | None:
        """The key the request carries, from wherever this dialect accepts it."""

    @abstractmethod
    def wants_stream(self, incoming: Incoming) -> bool: ...

    @abstractmethod
    def check(self, incoming: Incoming) -> Answer | None:
        """A 400 for a request the real API would reject outright, else None."""

    @abstractmethod
    def read(self, incoming: Incoming) -> Conversation:
        """Model, input size, the tool to call (if any) and the last tool result."""

    @abstractmethod
    def response(self, turn: Turn) -> Answer: ...

    @abstractmethod
    def stream(self, turn: Turn) -> Streamed: ...

    @abstractmethod
    def stream_error(self, turn: Turn) -> list[Frame]:
        """The in-band error that ends a stream after HTTP 200 and ``turn.sent`` content frames."""

    def failed_response(self, turn: Turn) -> Answer:
        """What ``stream_error`` means for a non-streaming request: the provider is overloaded."""
        return self.error(Behaviour.build("overloaded", {}), turn.incoming)

    @abstractmethod
    def error(self, behaviour: Behaviour, incoming: Incoming) -> Answer:
        """The HTTP error answer for an error behaviour kind."""

    # -- wire faults (keywheel.testing.wire) -------------------------------------------------------------------------

    def error_in_200(self, turn: Turn) -> Answer:
        """``error_200``: an HTTP 200 whose body is this dialect's error object (the provider is overloaded)."""
        failed = self.error(Behaviour.build("overloaded", {}), turn.incoming)
        return Answer(200, failed.body, failed.headers)

    def unterminated(self, turn: Turn) -> Streamed:
        """``no_terminator``: the stream up to its last content event, without the closing event(s)."""
        streamed = self.stream(turn)
        frames = streamed.frames
        end = max((i + 1 for i, frame in enumerate(frames) if frame.content), default=len(frames))
        return Streamed(streamed.media_type, frames[:end], streamed.headers)

    @abstractmethod
    def missing_key(self) -> Answer: ...

    @abstractmethod
    def models(self) -> Answer:
        """The model list (``GET …/models``)."""

    @abstractmethod
    def model(self, name: str) -> Answer:
        """One model (``GET …/models/{name}``); every name exists."""

    def count(self, incoming: Incoming) -> Answer:
        """A token count (Anthropic ``count_tokens``, Gemini ``:countTokens``); a word count here."""
        raise NotImplementedError(f"{self.name} counts no tokens")

    def plan(self, incoming: Incoming, n: int) -> Turn:
        """Decide the answer: a call to the offered tool, or a text reply."""
        talk = self.read(incoming)
        if talk.tool is None:
            text = reply_text(n, self.name, talk.tool_result)
            return Turn(incoming, Reply(n=n, model=talk.model, input_tokens=talk.input_tokens, text=text))
        call = ToolCall(new_id(self.tool_call_prefix), talk.tool.name, arguments_for(talk.tool.schema))
        return Turn(incoming, Reply(n=n, model=talk.model, input_tokens=talk.input_tokens, tool_call=call))


def reply_text(n: int, dialect: str, tool_result: str | None = None) -> str:
    if tool_result is not None:
        return f"Reply {n} from fake {dialect}: the tool said {tool_result}"
    return f"Reply {n} from fake {dialect}: {QUICK_BROWN_FOX}"


def word_count(value: Json) -> int:
    """A rough token count: the words of every prose string inside ``value`` (walked without
    recursion: a client may nest a body as deep as the JSON parser allows)."""
    count, todo = 0, [value]
    while todo:
        item = todo.pop()
        if isinstance(item, str):
            count += len(item.split())
        elif isinstance(item, list):
            todo.extend(item)
        elif isinstance(item, dict):
            todo.extend(v for name, v in item.items() if name not in _NOT_WORDS)
    return count


def arguments_for(schema: Mapping[str, Json]) -> dict[str, Json]:
    """Arguments that fit ``schema``'s properties: "test", 1, true, or null."""
    properties = schema.get("properties")
    if not isinstance(properties, dict):
        return {}
    return {name: _sample(prop) for name, prop in properties.items()}


def _sample(prop: Json) -> Json:
    kind = prop.get("type") if isinstance(prop, dict) else None
    if isinstance(kind, list):  # ["string", "null"]
        kind = next((k for k in kind if isinstance(k, str) and k.lower() != "null"), None)
    kind = kind.lower() if isinstance(kind, str) else None  # Gemini writes STRING, NUMBER, …
    if kind == "string":
        return "test"
    if kind in ("number", "integer"):
        return 1
    if kind == "boolean":
        return True
    return None


def tool_result_text(content: Json) -> str:
    """The text of a tool result: a string, text blocks/parts, or JSON as a last resort."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = [item.get("text") for item in content if isinstance(item, dict)]
        return " ".join(t for t in texts if isinstance(t, str))
    if isinstance(content, dict):
        values = list(content.values())
        if len(values) == 1 and isinstance(values[0], str):  # {"result": "4"}
            return values[0]
    return orjson.dumps(content).decode()


def pieces_of(text: str, size: int) -> list[str]:
    """``text`` cut into pieces of at most ``size`` characters (partial JSON deltas)."""
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]


def bearer(headers: Mapping[str, str]) -> str | None:
    """The token of an ``Authorization: Bearer …`` header."""
    scheme, _, token = headers.get("authorization", "").partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


def sse(data: Json, event: str | None = None, *, crlf: bool = False) -> bytes:
    """One SSE event: optional ``event:`` line, one ``data:`` line, blank line."""
    eol = b"\r\n" if crlf else b"\n"
    head = b"event: " + event.encode() + eol if event else b""
    return head + b"data: " + orjson.dumps(data) + eol + eol


def new_id(prefix: str) -> str:
    return prefix + uuid.uuid4().hex[:24]


def cut_point(frames: list[Frame], after: int) -> int:
    """How many frames to send so that exactly ``after`` content frames go out.

    With fewer content frames than ``after``, the cut is right after the last
    content frame, so the stream is still cut before it finishes.
    """
    seen = 0
    end_of_content = 0
    for index, frame in enumerate(frames):
        if frame.content:
            if seen == after:
                return index
            seen += 1
            end_of_content = index + 1
    return end_of_content
