"""The Anthropic Messages API dialect (api.anthropic.com and Anthropic-compatible hosts).

Builds ``POST {base}/v1/messages`` requests pinned to ``anthropic-version:
2023-06-01`` (the version every compatible host accepts, and the one that still
takes ``temperature``), parses answers and named SSE events, and classifies
errors.  Pure: never sends anything, never puts a key anywhere but a header.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from keywheel.errors import (
    BadRequest,
    ContextTooLong,
    KeyInvalid,
    NetworkError,
    QuotaExhausted,
    RateLimited,
    ServerError,
    UpstreamError,
)
from keywheel.providers._common import (
    as_dict,
    as_int,
    as_list,
    as_str,
    class_for_status,
    dumps,
    error_object,
    header,
    loads,
    merge_extra,
    merge_headers,
    ordered_turns,
    split_data_url,
    truncate,
    upstream_message,
)
from keywheel.providers.base import Endpoint, Framing, HttpRequest, Provider
from keywheel.providers.timing import explicit_retry_after, ratelimit_reset_after
from keywheel.secrets import ApiKey
from keywheel.sse import SSE, SSEEvent
from keywheel.types import (
    ChatRequest,
    Completion,
    FinishReason,
    ImagePart,
    Part,
    StreamEnd,
    StreamEvent,
    TextDelta,
    TextPart,
    ToolCall,
    ToolCallDelta,
    Usage,
)

__all__ = ["AnthropicAdapter", "AnthropicStreamParser"]

API_VERSION = "2023-06-01"
DEFAULT_MAX_TOKENS = 1024

_STOP_REASONS: dict[str, FinishReason] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}

# error.type -> the HTTP status Anthropic sends it with; used for errors that arrive in a 200.
_TYPE_STATUS = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "conflict_error": 409,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}

_TOOL_CHOICE: dict[str, dict[str, str]] = {
    "auto": {"type": "auto"},
    "required": {"type": "any"},
    "none": {"type": "none"},
}

# Out of credit rather than out of rate: z.ai's 429 {"type":"1113","message":"Insufficient balance … recharge"},
# a tier's monthly spend cap, and the 400 for a spend limit the organization set itself.
_OUT_OF_CREDIT = re.compile(r"balance|recharge|credit|spend|billing|per month|monthly|usage limit", re.IGNORECASE)


# A spend limit the organization set: "... You will regain access on 2026-12-01 at 00:00 UTC."
_REGAIN = re.compile(r"regain access on (\d{4}-\d{2}-\d{2})(?:(?: at |T)(\d{1,2}):(\d{2}))?", re.IGNORECASE)


def regain_after(message: str, now: float | None = None) -> float | None:
    """Seconds until the date a spend-limit message says access returns (UTC), if it names one."""
    match = _REGAIN.search(message)
    if match is None:
        return None
    day, hour, minute = match.groups()
    try:
        when = datetime.strptime(f"{day} {hour or 0}:{minute or 0}", "%Y-%m-%d %H:%M").replace(tzinfo=UTC)
    except ValueError:
        return None
    left = when.timestamp() - (time.time() if now is None else now)
    return left if left > 0 else None


def _auth_headers(key: ApiKey) -> dict[str, str]:
    if key.auth == "bearer":
        return {"Authorization": f"Bearer {key.reveal()}"}
    return {"x-api-key": key.reveal()}


def _headers(endpoint: Endpoint, key: ApiKey) -> dict[str, str]:
    base = {"content-type": "application/json", "anthropic-version": API_VERSION}
    return merge_headers(base, endpoint.headers, _auth_headers(key))


def _image_block(image: ImagePart) -> dict[str, Any]:
    inline = split_data_url(image.url) if image.url else None
    if inline is not None:
        media_type, data = inline
        return {"type": "image", "source": {"type": "base64", "media_type": media_type, "data": data}}
    if image.data is not None:
        source = {"type": "base64", "media_type": image.media_type or "image/png", "data": image.data}
        return {"type": "image", "source": source}
    return {"type": "image", "source": {"type": "url", "url": image.url or ""}}


def _block(part: Part) -> dict[str, Any]:
    if isinstance(part, TextPart):
        return {"type": "text", "text": part.text}
    if isinstance(part, ImagePart):
        return _image_block(part)
    if isinstance(part, ToolCall):
        return {"type": "tool_use", "id": part.id, "name": part.name, "input": part.arguments}
    block: dict[str, Any] = {"type": "tool_result", "tool_use_id": part.tool_call_id, "content": part.content}
    if part.is_error:
        block["is_error"] = True
    return block


def _messages(request: ChatRequest) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for role, parts in ordered_turns(request.messages):
        blocks = [_block(p) for p in parts]
        if len(blocks) == 1 and blocks[0]["type"] == "text":
            out.append({"role": role, "content": blocks[0]["text"]})
        else:
            out.append({"role": role, "content": blocks})
    return out


def _tool_choice(choice: str) -> dict[str, str]:
    return _TOOL_CHOICE.get(choice) or {"type": "tool", "name": choice}


def build_body(request: ChatRequest, model: str, *, stream: bool) -> dict[str, Any]:
    """The Messages API body for a canonical request."""
    max_tokens = DEFAULT_MAX_TOKENS if request.max_tokens is None else request.max_tokens
    body: dict[str, Any] = {"model": model, "max_tokens": max_tokens}
    if request.system:
        body["system"] = request.system
    body["messages"] = _messages(request)
    if request.temperature is not None:
        body["temperature"] = request.temperature
    if request.top_p is not None:
        body["top_p"] = request.top_p
    if request.stop:
        body["stop_sequences"] = list(request.stop)
    if request.tools:
        body["tools"] = [
            {"name": t.name, **({"description": t.description} if t.description else {}), "input_schema": t.parameters}
            for t in request.tools
        ]
    if request.tool_choice:
        body["tool_choice"] = _tool_choice(request.tool_choice)
    if stream:
        body["stream"] = True
    return merge_extra(body, request.extra)


def _usage(raw: Any) -> tuple[int, int]:
    """(input, output) tokens.  Input includes cache writes and reads, which ``input_tokens`` leaves out."""
    usage = as_dict(raw)
    inputs = sum(
        as_int(usage.get(k)) for k in ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")
    )
    return inputs, as_int(usage.get("output_tokens"))


def _finish(stop_reason: Any) -> FinishReason:
    return _STOP_REASONS.get(as_str(stop_reason), "other")


def _request_id(headers: Mapping[str, str], payload: Any) -> str | None:
    return header(headers, "request-id") or as_str(as_dict(payload).get("request_id")) or None


def classify(status: int, headers: Mapping[str, str], body: bytes) -> UpstreamError:
    """An Anthropic error answer as a keywheel error."""
    payload = loads(body)
    err = error_object(payload) or {}
    etype = as_str(err.get("type"))
    message = upstream_message(err, body, status)
    explicit = explicit_retry_after(headers)
    retry_after = explicit if explicit is not None else ratelimit_reset_after(headers)
    cls = class_for_status(status)
    credit_words = bool(_OUT_OF_CREDIT.search(message))
    if etype and etype not in _TYPE_STATUS and credit_words:
        cls = QuotaExhausted  # provider-specific type (z.ai "1113"): out of balance
    elif etype == "billing_error":
        cls = QuotaExhausted
    elif status == 400:
        if "prompt is too long" in message.lower():
            cls = ContextTooLong
        elif credit_words:
            cls = QuotaExhausted  # a spend limit the organization set
    elif status == 413:
        cls = BadRequest
    elif status == 403:
        cls = KeyInvalid
    elif status == 429 and explicit is None and credit_words:
        cls = QuotaExhausted  # the tier's monthly spend cap comes without retry-after
    if cls is QuotaExhausted and explicit is None:
        retry_after = regain_after(message)  # window resets say nothing about when credit returns
    error = cls(message, status=status, request_id=_request_id(headers, payload), retry_after=retry_after, body=body)
    if isinstance(error, RateLimited) and retry_after is None and etype == "rate_limit_error":
        # Anthropic times every rate limit (retry-after, anthropic-ratelimit-*-reset); one without
        # any timing may be the tier's spend cap: the rules decide once every key answers so.
        error.spend_cap = True
    return error


def _in_band_error(payload: Mapping[str, Any], raw: bytes) -> UpstreamError:
    """An error that arrived after HTTP 200, classified as if it had its usual status."""
    err = as_dict(payload.get("error"))
    status = _TYPE_STATUS.get(as_str(err.get("type")), 500)
    return classify(status, {}, raw)


class AnthropicStreamParser:
    """Named Messages API SSE events to canonical stream events."""

    def __init__(self) -> None:
        self._id = ""
        self._model = ""
        self._input_tokens = 0
        self._output_tokens = 0
        self._stop_reason: Any = None
        self._tool_index: dict[int, int] = {}  # Anthropic block index -> tool-call counter
        self._done = False

    def tap(self, event: SSEEvent) -> list[StreamEvent]:
        # Deltas and pings carry neither usage nor the end; everything else is parsed.
        if event.event in ("content_block_delta", "ping") and '"error"' not in event.data:
            return []
        return self.feed(event)

    def feed(self, event: SSEEvent) -> list[StreamEvent]:
        if self._done or not event.data.strip():
            return []
        raw = event.data.encode()
        payload = loads(raw)
        if not isinstance(payload, dict):
            if event.event == "error":
                raise ServerError(truncate(event.data), body=raw)
            if event.event == "ping":
                return []
            raise ServerError(f"malformed stream event: {truncate(event.data, 200)}", body=raw)
        kind = as_str(payload.get("type")) or (event.event or "")
        if kind == "error" or event.event == "error":
            raise _in_band_error(payload, raw)
        if kind == "message_start":
            message = as_dict(payload.get("message"))
            self._id = as_str(message.get("id"))
            self._model = as_str(message.get("model"))
            self._input_tokens, self._output_tokens = _usage(message.get("usage"))
        elif kind == "content_block_start":
            return self._block_start(payload)
        elif kind == "content_block_delta":
            return self._block_delta(payload)
        elif kind == "message_delta":
            delta = as_dict(payload.get("delta"))
            if delta.get("stop_reason") is not None:
                self._stop_reason = delta["stop_reason"]
            usage = as_dict(payload.get("usage"))
            if "output_tokens" in usage:  # cumulative, so assign
                self._output_tokens = as_int(usage["output_tokens"])
            if "input_tokens" in usage:
                self._input_tokens = _usage(usage)[0]
        elif kind == "message_stop":
            self._done = True
            return [self._end()]
        return []  # ping, content_block_stop and unknown types

    def _block_start(self, payload: Mapping[str, Any]) -> list[StreamEvent]:
        block = as_dict(payload.get("content_block"))
        kind = block.get("type")
        if kind == "text" and as_str(block.get("text")):
            return [TextDelta(as_str(block.get("text")))]
        if kind != "tool_use":
            return []
        index = len(self._tool_index)
        self._tool_index[as_int(payload.get("index"))] = index
        initial = block.get("input")
        # Anthropic starts with input {} and streams the JSON; a host that sends it whole is taken as is.
        arguments = dumps(initial).decode() if isinstance(initial, dict) and initial else ""
        return [ToolCallDelta(index, id=as_str(block.get("id")), name=as_str(block.get("name")), arguments=arguments)]

    def _block_delta(self, payload: Mapping[str, Any]) -> list[StreamEvent]:
        delta = as_dict(payload.get("delta"))
        kind = delta.get("type")
        if kind == "text_delta":
            text = as_str(delta.get("text"))
            return [TextDelta(text)] if text else []
        if kind == "input_json_delta":
            fragment = as_str(delta.get("partial_json"))
            index = self._tool_index.get(as_int(payload.get("index")))
            if fragment and index is not None:
                return [ToolCallDelta(index, arguments=fragment)]
        return []  # thinking_delta, signature_delta, citations_delta

    def _end(self) -> StreamEnd:
        usage = Usage(input_tokens=self._input_tokens, output_tokens=self._output_tokens)
        return StreamEnd(_finish(self._stop_reason), usage, model=self._model, id=self._id)

    def close(self) -> list[StreamEvent]:
        if not self._done:
            raise NetworkError("stream ended before message_stop")
        return []


class AnthropicAdapter:
    """The Messages API: ``POST {base}/v1/messages``."""

    dialect = "anthropic"
    key_auth = "key"
    framing: Framing = SSE

    def build_request(
        self, endpoint: Endpoint, key: ApiKey, request: ChatRequest, model: str, *, stream: bool
    ) -> HttpRequest:
        body = build_body(request, model, stream=stream)
        return HttpRequest("POST", _url(endpoint, "/v1/messages"), _headers(endpoint, key), dumps(body))

    def build_raw_request(
        self, endpoint: Endpoint, key: ApiKey, body: dict[str, Any], model: str, *, stream: bool
    ) -> HttpRequest:
        wire = {**body, "model": model, "stream": stream}
        return HttpRequest("POST", _url(endpoint, "/v1/messages"), _headers(endpoint, key), dumps(wire))

    def parse_response(self, body: bytes) -> Completion:
        payload = loads(body)
        if not isinstance(payload, dict):
            raise ServerError(f"unparseable response: {truncate(body.decode('utf-8', 'replace'), 200)}", body=body)
        if payload.get("type") == "error" or "error" in payload:
            raise _in_band_error(payload, body)
        texts: list[str] = []
        calls: list[ToolCall] = []
        for block in as_list(payload.get("content")):
            block = as_dict(block)
            if block.get("type") == "text":
                texts.append(as_str(block.get("text")))
            elif block.get("type") == "tool_use":
                calls.append(ToolCall(as_str(block.get("id")), as_str(block.get("name")), as_dict(block.get("input"))))
        inputs, outputs = _usage(payload.get("usage"))
        return Completion(
            text="".join(texts),
            tool_calls=calls,
            finish_reason=_finish(payload.get("stop_reason")),
            usage=Usage(input_tokens=inputs, output_tokens=outputs),
            model=as_str(payload.get("model")),
            id=as_str(payload.get("id")),
        )

    def stream_parser(self) -> AnthropicStreamParser:
        return AnthropicStreamParser()

    def classify_error(self, status: int, headers: Mapping[str, str], body: bytes) -> UpstreamError:
        return classify(status, headers, body)

    def probe_request(self, endpoint: Endpoint, key: ApiKey) -> HttpRequest:
        headers = merge_headers({"anthropic-version": API_VERSION}, endpoint.headers, _auth_headers(key))
        return HttpRequest("GET", _url(endpoint, "/v1/models?limit=1"), headers)


def _url(endpoint: Endpoint, path: str) -> str:
    return endpoint.base_url.rstrip("/") + path


PROVIDER = Provider(
    "anthropic",
    AnthropicAdapter(),
    base_url="https://api.anthropic.com",
    model="claude-sonnet-4-6",
    key_prefix="sk-ant-",
    families=("claude",),
    token_var="ANTHROPIC_AUTH_TOKEN",  # GLM and other Anthropic-compatible hosts take a bearer token
)
