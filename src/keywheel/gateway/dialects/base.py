"""What every inbound dialect provides, and the small pieces they share.

A dialect translates one client-facing wire format (OpenAI chat completions,
Anthropic Messages, Gemini generateContent) to the canonical types and back:
``parse_request`` (client body -> :class:`InboundRequest`), ``render_response``
(canonical answer -> client body), ``stream_renderer`` (canonical stream events
-> SSE bytes) and the ``render_*_error`` family.  Dialects are pure: no I/O, no
ASGI, no state beyond one stream renderer's own, and they never put an
upstream key or an upstream error body into anything they render.

Errors are rendered in two steps: :func:`problem_of` maps an exception to a
dialect-neutral :class:`Problem` (HTTP status, message, machine code, retry
timing), then each dialect shapes the body.  The status chosen for each error
class is documented on :func:`problem_of`.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson

from keywheel.errors import (
    AllProvidersFailed,
    BadRequest,
    ContentFiltered,
    ContextTooLong,
    KeyInvalid,
    KeywheelError,
    ModelNotFound,
    NoKeyAvailable,
    Overloaded,
    QuotaExhausted,
    RateLimited,
    ResponseTooLarge,
    ShuttingDown,
    Timeout,
    UpstreamError,
)
from keywheel.types import ChatRequest, ChatResponse, StreamEvent, ToolCallDelta

__all__ = [
    "Dialect",
    "ErrorAnswer",
    "InboundRequest",
    "Problem",
    "StreamRenderer",
    "ToolCallSlots",
    "problem_of",
]

#: (HTTP status, extra response headers, body)
ErrorAnswer = tuple[int, dict[str, str], bytes]

#: Beyond this many seconds a retry hint comes with ``x-should-retry: false``: the
#: anthropic SDK sleeps for whatever ``retry-after`` says (hours, for a daily quota),
#: and the openai SDK gives up above 120 s anyway.  60 s is what older Stainless SDKs capped at.
RETRY_HINT_LIMIT = 60.0

#: The largest integer a request field may carry: int64, what the providers' wire formats hold.
MAX_INT = 2**63 - 1
#: The deepest nesting a request body may have: the JSON encoder writes at most 254 levels, and
#: translation wraps a client's values in a few levels of its own.
MAX_DEPTH = 200
_CONTAINERS = (dict, list)  # exactly what the JSON decoder makes


@dataclass(slots=True)
class InboundRequest:
    """A client's request, translated.

    ``model`` is the model exactly as the client named it (``"auto"``,
    ``"gemini/gemini-2.5-flash"``, …); for Gemini it comes from the URL path.
    ``include_usage`` is OpenAI's ``stream_options.include_usage`` (the other
    dialects always report usage, and leave it ``False``).

    ``untranslatable`` lists valid content the canonical request cannot carry
    (a PDF, an audio clip, a server tool's transcript …), left out of
    ``request``.  A pass-through to the same dialect forwards it untouched;
    :meth:`check_translatable` refuses to translate it away silently.
    """

    request: ChatRequest
    model: str
    stream: bool
    include_usage: bool = False
    untranslatable: list[str] = field(default_factory=list)

    def check_translatable(self) -> None:
        """Raise the 400 naming the first untranslatable field; call before sending ``request`` across dialects."""
        if self.untranslatable:
            more = len(self.untranslatable) - 1
            suffix = f" (and {more} more)" if more else ""
            raise BadRequest(f"{self.untranslatable[0]}{suffix}", status=400)


class StreamRenderer(Protocol):
    """Canonical stream events to SSE bytes in one dialect, for one stream."""

    def start(self) -> bytes:
        """What the dialect sends before the first content (may be empty)."""

    def event(self, ev: StreamEvent) -> bytes:
        """The SSE bytes for one event (may be empty: e.g. Gemini buffers partial tool calls)."""

    def error(self, exc: KeywheelError) -> bytes:
        """An in-band error, once the stream has started: the last thing sent."""


class Dialect(Protocol):
    #: "openai" | "anthropic" | "gemini": equals the upstream adapters' ``dialect`` when no translation is needed
    name: str

    def parse_request(
        self, body: Any, model_from_path: str | None = None, *, stream: bool | None = None
    ) -> InboundRequest:
        """Validate and translate a decoded request body; raises :class:`BadRequest` naming the field.

        ``model_from_path``: Gemini's model is the URL's (``models/`` prefix and
        ``:generateContent`` / ``:streamGenerateContent`` suffix allowed, the suffix
        setting ``stream``); the others use it only when the body names no model.
        ``stream``, when given, overrides the body's (or URL's) flag.
        """

    def peek(self, body: Any, model_from_path: str | None = None, *, stream: bool | None = None) -> tuple[str, bool]:
        """Only the model and the stream flag, for pass-through without translating."""

    def render_response(self, response: ChatResponse, model: str) -> dict[str, Any]: ...

    def stream_renderer(self, model: str, include_usage: bool) -> StreamRenderer: ...

    def render_error(self, exc: KeywheelError) -> ErrorAnswer: ...

    def render_auth_error(self, message: str) -> ErrorAnswer:
        """The CLIENT's gateway key is missing or wrong (never used for upstream keys)."""

    def render_simple_error(self, status: int, message: str) -> ErrorAnswer:
        """A gateway-level error (unknown route or provider, 405, 413, 501, …)."""

    def render_models(self, models: list[tuple[str, str]]) -> dict[str, Any]:
        """The model list; each entry is ``(model id as clients name it, provider that serves it)``."""


# ------------------------------------------------------------------ validation


def fail(where: str, why: str) -> BadRequest:
    """The 400 for one bad field: ``messages[2].role: unknown role 'bot'``."""
    return BadRequest(f"{where}: {why}", status=400)


def untranslatable(where: str, what: str) -> str:
    """The note for content only the client's own dialect can carry."""
    return f"{where}: {what} cannot be translated for a provider of another API dialect"


def peek_body(body: Any, model_from_path: str | None, stream: bool | None) -> tuple[str, bool]:
    """The model and stream flag of a body that names them itself (OpenAI, Anthropic, Responses)."""
    body = require_object(body)
    return model_of(body, model_from_path), stream_flag(body, stream)


def require_object(value: Any, where: str = "body") -> dict[str, Any]:
    """``value`` as an object; for the whole request body (``where="body"``) also bounds its nesting."""
    if not isinstance(value, dict):
        raise fail(where, f"expected a JSON object, got {_kind(value)}")
    return value


def check_depth(body: dict[str, Any]) -> None:
    """A 400 naming the top-level field nested deeper than :data:`MAX_DEPTH`.

    The JSON decoder accepts 1024 levels, but the encoder that writes the upstream request stops
    at 254 (and translation recurses): deeper input must be refused before either, not fail as a
    500 there.  Not on the pass-through path that forwards the caller's bytes as they are: the
    gateway calls it before a translation, and when re-encoding a pass-through body fails.
    """
    for name, value in body.items():  # level by level: cheap on the wide, shallow bodies chats are
        level = [value] if type(value) in _CONTAINERS else []
        depth = 2
        while level:
            if depth > MAX_DEPTH:
                raise fail(name, f"nested too deep (more than {MAX_DEPTH} levels)")
            deeper = []
            for item in level:
                for child in item.values() if type(item) is dict else item:
                    if type(child) in _CONTAINERS:
                        deeper.append(child)
            level = deeper
            depth += 1


def require_list(value: Any, where: str, *, non_empty: bool = True) -> list[Any]:
    if not isinstance(value, list):
        raise fail(where, "required" if value is None else f"expected a list, got {_kind(value)}")
    if non_empty and not value:
        raise fail(where, "must not be empty")
    return value


def require_str(value: Any, where: str, *, allow_empty: bool = False) -> str:
    if not isinstance(value, str) or not (value or allow_empty):
        got = "an empty string" if value == "" else _kind(value)
        raise fail(where, "required" if value is None else f"expected a non-empty string, got {got}")
    return value


def opt_str(value: Any, where: str) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise fail(where, f"expected a string, got {_kind(value)}")


def opt_int(value: Any, where: str, *, required: bool = False) -> int | None:
    if value is None and not required:
        return None
    whole = isinstance(value, int) or (isinstance(value, float) and value.is_integer())
    if isinstance(value, bool) or not whole:
        raise fail(where, "required" if value is None else f"expected an integer, got {_kind(value)}")
    if value < 1:
        raise fail(where, f"must be at least 1, got {int(value)}")
    if value > MAX_INT:  # beyond what the upstream's integer fields (and the JSON encoder) hold
        raise fail(where, f"must be at most {MAX_INT}, got {value:.4g}")
    return int(value)


def unencodable(value: Any, where: str = "body") -> str | None:
    """The path of the first value in a decoded body that the JSON encoder cannot
    write (an integer beyond 64 bits), or ``None``."""
    stack: list[tuple[Any, str]] = [(value, where)]
    while stack:
        item, path = stack.pop()
        if isinstance(item, dict):
            stack.extend((v, f"{path}.{k}" if path else str(k)) for k, v in reversed(item.items()))
        elif isinstance(item, list):
            stack.extend((v, f"{path}[{i}]") for i, v in reversed(list(enumerate(item))))
        elif isinstance(item, int) and not isinstance(item, bool) and not -(2**63) <= item < 2**64:
            return path
    return None


def opt_number(value: Any, where: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise fail(where, f"expected a number, got {_kind(value)}")
    return float(value)


def opt_bool(value: Any, where: str) -> bool:
    if value is None:
        return False
    if not isinstance(value, bool):
        raise fail(where, f"expected true or false, got {_kind(value)}")
    return value


def opt_str_list(value: Any, where: str) -> list[str] | None:
    """A list of strings (a lone string is a one-item list); ``None`` when absent or empty."""
    if value is None:
        return None
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list):
        raise fail(where, f"expected a list of strings, got {_kind(value)}")
    for i, item in enumerate(value):
        if not isinstance(item, str):
            raise fail(f"{where}[{i}]", f"expected a string, got {_kind(item)}")
    return value or None


def model_of(body: dict[str, Any], model_from_path: str | None) -> str:
    model = body.get("model")
    if model is None and model_from_path:
        return model_from_path
    return require_str(model, "model")


def stream_flag(body: dict[str, Any], stream: bool | None) -> bool:
    return stream if stream is not None else opt_bool(body.get("stream"), "stream")


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


# ------------------------------------------------------------------ rendering


def dumps(value: Any) -> bytes:
    return orjson.dumps(value)


def new_id(prefix: str, upstream: str = "") -> str:
    """A response id in the dialect's style; keeps the upstream id for correlation when there is one."""
    if upstream:
        return upstream if upstream.startswith(prefix) else prefix + upstream
    return prefix + os.urandom(12).hex()


def now() -> int:
    return int(time.time())


def sse_data(payload: Any, end: bytes = b"\n\n") -> bytes:
    """One unnamed SSE event (``data: …`` + blank line)."""
    return b"data: " + orjson.dumps(payload) + end


def sse_event(name: str, payload: Any) -> bytes:
    """One named SSE event (Anthropic's ``event: …`` + ``data: …``)."""
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"


class ToolCallSlots:
    """Tool calls of one stream, in the order they started.

    Canonical ``ToolCallDelta.index`` values need not be dense; every dialect
    renders calls by position (OpenAI ``tool_calls[].index``, Anthropic block
    order, Gemini part order).  Also accumulates each call's argument text for
    dialects that send whole calls.
    """

    __slots__ = ("ids", "names", "arguments", "extras", "_slot", "_keep")

    def __init__(self, *, keep_arguments: bool = False) -> None:
        self.ids: list[str] = []
        self.names: list[str] = []
        self.arguments: list[list[str]] = []  # argument fragments, when kept
        self.extras: list[dict[str, Any]] = []
        self._slot: dict[int, int] = {}
        self._keep = keep_arguments

    def __len__(self) -> int:
        return len(self.ids)

    def add(self, ev: ToolCallDelta) -> tuple[int, bool]:
        """``(position, is_new)`` of the call this piece belongs to; records its pieces."""
        slot = self._slot.get(ev.index)
        if slot is None:
            slot = self._slot[ev.index] = len(self.ids)
            self.ids.append(ev.id or f"call_{slot}")
            self.names.append(ev.name or "")
            self.arguments.append([ev.arguments] if ev.arguments and self._keep else [])
            self.extras.append(ev.extra)
            return slot, True
        if ev.arguments and self._keep:
            self.arguments[slot].append(ev.arguments)
        if ev.extra:
            self.extras[slot] = {**self.extras[slot], **ev.extra}
        return slot, False


# ------------------------------------------------------------------ errors


@dataclass(frozen=True, slots=True)
class Problem:
    """An error, independent of dialect.

    ``code`` is a machine-readable word (OpenAI puts it in ``error.code``; the
    others derive their type from the status).  ``retry`` is the
    ``x-should-retry`` hint both Stainless SDKs obey; ``None`` leaves the
    client's own policy in charge.
    """

    status: int
    message: str
    code: str | None = None
    retry_after: float | None = None
    retry: bool | None = None

    @property
    def retry_seconds(self) -> int | None:
        """``retry_after`` rounded up to whole seconds (at least 1), for ``retry-after`` and its kin."""
        if self.retry_after is None or self.retry_after < 0:
            return None
        return max(1, math.ceil(self.retry_after))

    def headers(self) -> dict[str, str]:
        headers: dict[str, str] = {}
        seconds = self.retry_seconds
        if seconds is not None and self.retry_after is not None:
            headers["retry-after"] = str(seconds)
            headers["retry-after-ms"] = str(math.ceil(self.retry_after * 1000))
        if self.retry is not None:
            headers["x-should-retry"] = "true" if self.retry else "false"
        return headers


def _hinted(status: int, message: str, code: str, retry_after: float | None, *, retry: bool | None = None) -> Problem:
    if retry_after is not None and retry_after > RETRY_HINT_LIMIT:
        retry = False
    return Problem(status, message, code, retry_after, retry)


def problem_of(exc: KeywheelError) -> Problem:
    """The HTTP status and code a client sees for each error.

    Request faults keep 4xx statuses (no SDK retries them).  An upstream key
    fault is never rendered as the client's own auth failure: an invalid
    upstream key is the gateway's bad gateway (502), an exhausted upstream
    quota makes the service unavailable (503, no retry).  Rate limits carry
    ``retry-after``/``retry-after-ms``; hints beyond :data:`RETRY_HINT_LIMIT`
    add ``x-should-retry: false`` so SDK clients raise instead of sleeping.
    """
    if isinstance(exc, UpstreamError):
        message, after = exc.message, exc.retry_after
        if isinstance(exc, ContextTooLong):
            return Problem(400, message, "context_length_exceeded")
        if isinstance(exc, BadRequest):
            return Problem(400, message)
        if isinstance(exc, ContentFiltered):
            return Problem(400, message, "content_policy_violation")
        if isinstance(exc, ModelNotFound):
            return Problem(404, message, "model_not_found")
        if isinstance(exc, RateLimited):
            return _hinted(429, message, "rate_limit_exceeded", after)
        if isinstance(exc, KeyInvalid):
            return Problem(502, message, "upstream_auth_failed")
        if isinstance(exc, QuotaExhausted):
            return _hinted(503, message, "upstream_quota_exhausted", after, retry=False)
        if isinstance(exc, Overloaded):
            return _hinted(503, message, "overloaded", after)
        if isinstance(exc, Timeout):
            return Problem(504, message, "timeout")
        if isinstance(exc, ResponseTooLarge):
            return Problem(502, message, "upstream_response_too_large")
        return _hinted(502, message, "upstream_error", after)  # ServerError, NetworkError
    if isinstance(exc, NoKeyAvailable):
        if exc.retry_after is None:  # every key is disabled: waiting will not help
            return Problem(503, str(exc), "no_key_available", retry=False)
        return _hinted(429, str(exc), "rate_limit_exceeded", exc.retry_after)
    if isinstance(exc, AllProvidersFailed):
        return Problem(502, str(exc), "all_providers_failed")
    if isinstance(exc, ShuttingDown):  # another replica can take it: ask for the retry
        return Problem(503, str(exc), "shutting_down", exc.retry_after, retry=True)
    # ConfigError or anything unforeseen: its text is the operator's business, not the client's.
    return Problem(500, f"internal gateway error ({type(exc).__name__})", "internal_error")


def answer(problem: Problem, payload: Callable[[Problem], tuple[int, dict[str, Any]]]) -> ErrorAnswer:
    """A complete error answer: ``payload`` is the dialect's (status, body) for a problem."""
    status, body = payload(problem)
    return status, problem.headers(), orjson.dumps(body)
