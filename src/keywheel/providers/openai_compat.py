"""The OpenAI Chat Completions dialect: OpenRouter, OpenAI and any compatible endpoint.

Builds ``POST {base}/chat/completions`` requests with Bearer auth, parses
answers and SSE chunks (including OpenRouter's errors inside a 200 and its
repeated-``finish_reason`` usage chunk), and classifies errors.  Attribution
headers come from configuration through ``Endpoint.headers``, never from here.
Pure: never sends anything.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal

import msgspec
import orjson

from keywheel.errors import (
    ContentFiltered,
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
    as_status,
    as_str,
    class_for_status,
    dumps,
    error_object,
    header,
    loads,
    merge_extra,
    merge_headers,
    ordered_turns,
    parse_tool_arguments,
    truncate,
    upstream_message,
)
from keywheel.providers.base import Endpoint, Framing, HttpRequest
from keywheel.providers.timing import retry_after_from_headers
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
    ToolResultPart,
    Usage,
)

__all__ = ["OpenAICompatAdapter", "OpenAIStreamParser"]

_FINISH: dict[str, FinishReason] = {
    "stop": "stop",
    "length": "length",
    "tool_calls": "tool_calls",
    "function_call": "tool_calls",
    "content_filter": "content_filter",
}
#: OpenRouter's 402 ``metadata.limit_source`` values that mean "out of credit" (not transient).
LIMIT_SOURCES = ("openrouter_key_limit", "openrouter_credits")
_CONTEXT = ("context_length_exceeded", "maximum context length", "input token count")
_FILTERED = ("content_policy_violation", "refusal", "content_filter")
# Words in error.type / error.code / metadata.error_type -> HTTP status, for in-band errors without a numeric code.
_KIND_STATUS = {
    "invalid_request_error": 400,
    "context_length_exceeded": 400,
    "content_policy_violation": 400,
    "refusal": 400,
    "authentication": 401,
    "invalid_api_key": 401,
    "payment_required": 402,
    "insufficient_quota": 429,
    "rate_limit_exceeded": 429,
    "server": 500,
    "server_error": 500,
    "provider_unavailable": 502,
    "provider_overloaded": 503,
    "timeout": 504,
}


# ------------------------------------------------------------------ requests


def _image_url(image: ImagePart) -> str:
    if image.data is not None:
        return f"data:{image.media_type or 'image/png'};base64,{image.data}"
    return image.url or ""


def _user_content(parts: list[Part]) -> str | list[dict[str, Any]]:
    only = parts[0] if len(parts) == 1 else None
    if isinstance(only, TextPart):
        return only.text
    content: list[dict[str, Any]] = []
    for part in parts:
        if isinstance(part, TextPart):
            content.append({"type": "text", "text": part.text})
        elif isinstance(part, ImagePart):
            content.append({"type": "image_url", "image_url": {"url": _image_url(part)}})
    return content


def _assistant(parts: list[Part]) -> dict[str, Any]:
    text = "".join(p.text for p in parts if isinstance(p, TextPart))
    message: dict[str, Any] = {"role": "assistant", "content": text or None}
    calls = [p for p in parts if isinstance(p, ToolCall)]
    if calls:
        message["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": dumps(c.arguments).decode()}}
            for c in calls
        ]
    return message


def _messages(request: ChatRequest) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    if request.system:
        out.append({"role": "system", "content": request.system})
    for role, parts in ordered_turns(request.messages):
        if role == "assistant":
            out.append(_assistant(parts))
            continue
        rest: list[Part] = []
        for part in parts:
            if isinstance(part, ToolResultPart):
                out.append({"role": "tool", "tool_call_id": part.tool_call_id, "content": part.content})
            else:
                rest.append(part)
        if rest:
            out.append({"role": "user", "content": _user_content(rest)})
    return out


def _tool_choice(choice: str) -> str | dict[str, Any]:
    if choice in ("auto", "none", "required"):
        return choice
    return {"type": "function", "function": {"name": choice}}


def build_body(request: ChatRequest, model: str, *, stream: bool) -> dict[str, Any]:
    """The Chat Completions body for a canonical request."""
    body: dict[str, Any] = {"model": model, "messages": _messages(request)}
    if request.max_tokens is not None:
        body["max_tokens"] = request.max_tokens
    if request.temperature is not None:
        body["temperature"] = request.temperature
    if request.top_p is not None:
        body["top_p"] = request.top_p
    if request.stop:
        body["stop"] = list(request.stop)
    if request.tools:
        body["tools"] = [
            {
                "type": "function",
                "function": {
                    "name": t.name,
                    **({"description": t.description} if t.description else {}),
                    "parameters": t.parameters,
                },
            }
            for t in request.tools
        ]
    if request.tool_choice:
        body["tool_choice"] = _tool_choice(request.tool_choice)
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return merge_extra(body, request.extra)


def plain_body(
    messages: list[dict[str, Any]],
    model: str,
    max_tokens: int | None,
    temperature: float | None,
    extra: Mapping[str, Any],
    *,
    stream: bool,
) -> dict[str, Any]:
    """:func:`build_body`'s answer for messages already in wire form (:func:`keywheel.messages.openai_wire`)
    and no other field than these: the same body, key for key, without the canonical types."""
    body: dict[str, Any] = {"model": model, "messages": messages}
    if max_tokens is not None:
        body["max_tokens"] = max_tokens
    if temperature is not None:
        body["temperature"] = temperature
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return merge_extra(body, extra) if extra else body


def body_request(endpoint: Endpoint, key: ApiKey, body: Mapping[str, Any]) -> HttpRequest:
    """The Chat Completions request that sends ``body`` as it is."""
    return HttpRequest("POST", _url(endpoint, "/chat/completions"), _headers(endpoint, key), dumps(body))


def _headers(endpoint: Endpoint, key: ApiKey) -> dict[str, str]:
    secret = key.reveal()
    cached = endpoint.cache.get(secret)
    if cached is None:
        auth = {"Authorization": f"Bearer {secret}"}
        cached = merge_headers({"content-type": "application/json"}, endpoint.headers, auth)
        if len(endpoint.cache) >= 1024:  # keys come and go (admin): keep it bounded
            endpoint.cache.clear()
        endpoint.cache[secret] = cached
    return cached.copy()  # a request's headers may be added to (forwarded client headers)


def _url(endpoint: Endpoint, path: str) -> str:
    return endpoint.base_url.rstrip("/") + path


# ------------------------------------------------------------------ errors


def _kinds(err: Mapping[str, Any]) -> set[str]:
    """The words that name an error: type, non-numeric code and metadata.error_type."""
    meta = as_dict(err.get("metadata"))
    return {as_str(v) for v in (err.get("type"), err.get("code"), meta.get("error_type")) if as_str(v)}


def classify(
    status: int, headers: Mapping[str, str], body: bytes, err: Mapping[str, Any] | None = None
) -> UpstreamError:
    """An OpenAI-format error answer as a keywheel error; ``err`` if the error object is not at the top."""
    payload = loads(body)
    if err is None:
        err = error_object(payload) or {}
    message = upstream_message(err, body, status)
    lowered = message.lower()
    kinds = _kinds(err)
    meta = as_dict(err.get("metadata"))
    retry_after = retry_after_from_headers(headers)
    cls = class_for_status(status)
    if status == 400:
        if kinds & {"context_length_exceeded"} or any(s in lowered for s in _CONTEXT):
            cls = ContextTooLong
        elif kinds & set(_FILTERED):
            cls = ContentFiltered
        elif "api key not valid" in lowered or "API_KEY_INVALID" in message:  # Gemini's OpenAI-compatible door
            cls = KeyInvalid
    elif status == 402 and meta.get("limit_source") == "openrouter_in_flight_budget":
        cls = RateLimited  # transient: OpenRouter's budget for requests in flight
    elif status == 403 and ("reasons" in meta or "flagged_input" in meta):
        cls = ContentFiltered  # OpenRouter moderation
    elif status == 429 and "insufficient_quota" in kinds:
        cls = QuotaExhausted
    if cls is QuotaExhausted:
        retry_after = None
    request_id = (
        header(headers, "x-request-id") or header(headers, "x-generation-id") or as_str(as_dict(payload).get("id"))
    )
    error = cls(message, status=status, request_id=request_id or None, retry_after=retry_after, body=body)
    if isinstance(error, QuotaExhausted) and as_str(meta.get("limit_source")) in LIMIT_SOURCES:
        # The key's own cap (out until its limit_reset) or the account's credits (out, with a warning).
        error.source = as_str(meta.get("limit_source"))
    return error


def _in_band_error(err: Mapping[str, Any], raw: bytes) -> UpstreamError:
    """An error inside a 200 answer or stream; its ``code`` is HTTP-like on OpenRouter."""
    status = as_status(err.get("code"))
    if status is None:
        status = next((_KIND_STATUS[k] for k in sorted(_kinds(err)) if k in _KIND_STATUS), 500)
    return classify(status, {}, raw, err)


def _choice_error(payload: Mapping[str, Any]) -> dict[str, Any] | None:
    """OpenRouter's error in a 200: a top-level ``error``, or a choice that finished with ``error``."""
    err = error_object(payload)
    if err is not None:
        return err
    choice = as_dict(next(iter(as_list(payload.get("choices"))), None))
    if choice.get("finish_reason") == "error":
        return as_dict(choice.get("error")) or {"message": "the upstream provider failed"}
    return None


# ------------------------------------------------------------------ answers


def _finish(reason: Any, has_calls: bool) -> FinishReason:
    finish = _FINISH.get(as_str(reason), "other")
    return "tool_calls" if has_calls and finish == "stop" else finish


def _usage(raw: Any) -> Usage:
    usage = as_dict(raw)
    cost = usage.get("cost")
    return Usage(
        input_tokens=as_int(usage.get("prompt_tokens")),
        output_tokens=as_int(usage.get("completion_tokens")),
        cost=float(cost) if isinstance(cost, int | float) and not isinstance(cost, bool) else None,
    )


class _PlainMessage(msgspec.Struct, gc=False):
    content: str
    tool_calls: Annotated[list[Any], msgspec.Meta(max_length=0)] | None = None
    refusal: Literal[""] | None = None


class _PlainChoice(msgspec.Struct, gc=False):
    message: _PlainMessage
    finish_reason: Literal["stop", "length"]


# An integer orjson reads (64 bits): a larger one is the general path's (which cannot read the answer).
_Int64 = Annotated[int, msgspec.Meta(ge=-(2**63), le=2**63 - 1)]


class _PlainUsage(msgspec.Struct, gc=False):
    prompt_tokens: _Int64
    completion_tokens: _Int64
    cost: float | None = None


class _PlainAnswer(msgspec.Struct, gc=False):
    """The common answer: one choice of plain text (no tool call, no refusal) that stopped or hit
    its length, with usage, and no error.  Other fields are skipped unread."""

    choices: Annotated[list[_PlainChoice], msgspec.Meta(min_length=1, max_length=1)]
    usage: _PlainUsage
    id: str = ""
    model: str = ""
    error: None = None


_PLAIN = msgspec.json.Decoder(_PlainAnswer)


def _plain_completion(body: bytes) -> Completion | None:
    """The common answer read by a typed decoder that builds only the fields it needs, else ``None``.

    Anything the decoder's types do not describe exactly (another shape, another type, an error,
    a tool call, bad JSON) is left to the general path, which gives the same completion for what
    this one reads (``tests/providers/test_openai_compat.py`` holds the two together).  A third of
    the general path's cost: ``orjson.loads`` alone builds every object of the answer."""
    try:
        answer = _PLAIN.decode(body)
    except msgspec.MsgspecError:
        return None
    choice, usage = answer.choices[0], answer.usage
    return Completion(  # positional, in the declared order: the hot path
        choice.message.content,
        [],
        choice.finish_reason,
        Usage(usage.prompt_tokens, usage.completion_tokens, usage.cost),
        answer.model,
        answer.id,
    )


def _completion(payload: Any, body: bytes) -> Completion:
    """Any answer: the defensive walk (in-band errors raise; :func:`_plain_completion` is its fast path)."""
    err = error_object(payload)
    if err is not None:
        raise _in_band_error(err, body)
    if not isinstance(payload, dict):
        raise ServerError(f"unparseable response: {truncate(body.decode('utf-8', 'replace'), 200)}", body=body)
    err = _choice_error(payload)
    if err is not None:
        raise _in_band_error(err, body)
    choice = as_dict(next(iter(as_list(payload.get("choices"))), None))
    message = as_dict(choice.get("message"))
    calls = [
        ToolCall(
            as_str(call.get("id")) or f"call_{n}",
            as_str(as_dict(call.get("function")).get("name")),
            parse_tool_arguments(as_str(as_dict(call.get("function")).get("arguments"))),
        )
        for n, call in enumerate(as_dict(c) for c in as_list(message.get("tool_calls")))
    ]
    text = _content_text(message.get("content"))
    refusal = as_str(message.get("refusal"))
    finish = _finish(choice.get("finish_reason"), bool(calls))
    if refusal:
        finish, text = "content_filter", text or refusal
    return Completion(
        text=text,
        tool_calls=calls,
        finish_reason=finish,
        usage=_usage(payload.get("usage")),
        model=as_str(payload.get("model")),
        id=as_str(payload.get("id")),
    )


def _content_text(content: Any) -> str:
    if isinstance(content, list):  # some servers answer with content parts
        return "".join(as_str(as_dict(p).get("text")) for p in content)
    return as_str(content)


class OpenAIStreamParser:
    """``chat.completion.chunk`` SSE events to canonical stream events."""

    def __init__(self) -> None:
        self._finish: str | None = None
        self._refused = False
        self._usage = Usage()
        self._model = ""
        self._id = ""
        self._next_index = 0  # for servers that leave out tool_calls[].index
        self._last_index = 0
        self._ended = False

    def tap(self, event: SSEEvent) -> list[StreamEvent]:
        data = event.data
        # Plain content chunks carry no error, no usage object and no finish reason.  Three searches
        # for the usual chunk: `"usage":null` and `"finish_reason":null` are told apart once found.
        if '"error"' in data or (data[:1] != "{" and data.strip() == "[DONE]"):
            return self.feed(event)
        if '"usage"' in data and ('"usage":{' in data or '"usage": {' in data):
            return self.feed(event)
        at = data.find('finish_reason"')
        while at >= 0:
            after = data[at + 14 : at + 17]
            if after[:2] == ':"' or after == ': "':
                return self.feed(event)
            at = data.find('finish_reason"', at + 14)
        return []

    def feed(self, event: SSEEvent) -> list[StreamEvent]:
        data = event.data
        if self._ended:
            return []
        payload = loads(data) if data[:1] == "{" else None
        if type(payload) is dict:
            out = self._plain(payload)
            if out is not None:
                return out
        data = data.strip()
        if not data:
            return []
        if data == "[DONE]":
            return [self._end()]
        raw = data.encode()
        if payload is None:
            payload = loads(raw)
        if isinstance(payload, list) and error_object(payload) is not None:
            raise _in_band_error(error_object(payload) or {}, raw)
        if not isinstance(payload, dict):
            raise ServerError(f"malformed stream chunk: {truncate(data, 200)}", body=raw)
        if "error" in payload and payload["error"] is not None:
            raise _in_band_error(error_object(payload) or {}, raw)
        self._model = as_str(payload.get("model")) or self._model
        self._id = as_str(payload.get("id")) or self._id
        if payload.get("usage"):
            self._usage = _usage(payload["usage"])
        choice = as_dict(next(iter(as_list(payload.get("choices"))), None))
        out = self._delta(as_dict(choice.get("delta")))
        reason = choice.get("finish_reason")
        if reason == "error":
            raise _in_band_error(as_dict(choice.get("error")) or {"message": "the upstream provider failed"}, raw)
        if reason:
            self._finish = as_str(reason)  # recorded, so a repeat in the usage chunk changes nothing
        return out

    def _plain(self, payload: dict[str, Any]) -> list[StreamEvent] | None:
        """The usual chunk (no error; a first choice whose delta carries no tool call and no
        refusal; a finish reason other than ``error``) read without the general path's
        defensive walk, to the same result; ``None`` for any other chunk."""
        try:
            choice = payload["choices"][0]
            delta, reason = choice["delta"], choice.get("finish_reason")
            if delta.get("tool_calls") is not None or delta.get("refusal") is not None:
                return None
        except (KeyError, IndexError, TypeError, AttributeError):  # not the usual shape
            return None
        if "error" in payload or (reason and (reason == "error" or type(reason) is not str)):
            return None
        model, id_, usage = payload.get("model"), payload.get("id"), payload.get("usage")
        if model and model != self._model and type(model) is str:
            self._model = model
        if id_ and id_ != self._id and type(id_) is str:
            self._id = id_
        if usage:
            self._usage = _usage(usage)
        if reason:
            self._finish = reason
        text = delta.get("content")
        return [TextDelta(text)] if text and type(text) is str else []

    def _delta(self, delta: Mapping[str, Any]) -> list[StreamEvent]:
        out: list[StreamEvent] = []
        text = as_str(delta.get("content"))
        if text:
            out.append(TextDelta(text))
        refusal = as_str(delta.get("refusal"))
        if refusal:
            self._refused = True
            out.append(TextDelta(refusal))
        for call in as_list(delta.get("tool_calls")):
            call = as_dict(call)
            function = as_dict(call.get("function"))
            index = call.get("index")
            if not isinstance(index, int):
                index = self._next_index if call.get("id") else self._last_index
            self._last_index, self._next_index = index, max(self._next_index, index + 1)
            out.append(
                ToolCallDelta(
                    index,
                    id=as_str(call.get("id")) or None,
                    name=as_str(function.get("name")) or None,
                    arguments=as_str(function.get("arguments")),
                )
            )
        return out

    def _end(self) -> StreamEnd:
        self._ended = True
        has_calls = self._next_index > 0
        if self._finish is None:  # [DONE] without a finish_reason: the server still says it is complete
            finish: FinishReason = "tool_calls" if has_calls else "stop"
        else:
            finish = _finish(self._finish, has_calls)
        if self._refused and finish == "stop":
            finish = "content_filter"
        return StreamEnd(finish, self._usage, model=self._model, id=self._id)

    def close(self) -> list[StreamEvent]:
        if self._ended:
            return []
        if self._finish is None:
            raise NetworkError("stream ended before a finish_reason")
        return [self._end()]  # some servers never send [DONE]


# ------------------------------------------------------------------ adapter


class OpenAICompatAdapter:
    """``POST {base}/chat/completions`` with Bearer auth."""

    dialect = "openai"
    key_auth = "bearer"
    framing: Framing = SSE

    def build_request(
        self, endpoint: Endpoint, key: ApiKey, request: ChatRequest, model: str, *, stream: bool
    ) -> HttpRequest:
        return body_request(endpoint, key, build_body(request, model, stream=stream))

    def build_raw_request(
        self, endpoint: Endpoint, key: ApiKey, body: dict[str, Any], model: str, *, stream: bool
    ) -> HttpRequest:
        wire = {**body, "model": model, "stream": stream}
        if stream and "stream_options" not in wire:
            wire["stream_options"] = {"include_usage": True}
        return HttpRequest("POST", _url(endpoint, "/chat/completions"), _headers(endpoint, key), dumps(wire))

    def parse_response(self, body: bytes) -> Completion:
        plain = _plain_completion(body)
        if plain is not None:
            return plain
        try:
            payload = orjson.loads(body)
        except orjson.JSONDecodeError:
            payload = None
        return _completion(payload, body)

    def stream_parser(self) -> OpenAIStreamParser:
        return OpenAIStreamParser()

    def classify_error(self, status: int, headers: Mapping[str, str], body: bytes) -> UpstreamError:
        return classify(status, headers, body)

    def probe_request(self, endpoint: Endpoint, key: ApiKey) -> HttpRequest:
        # OpenRouter's /key answers for the key itself (and its credit); elsewhere, listing models is cheap.
        path = "/key" if "openrouter" in endpoint.base_url.lower() else "/models"
        headers = merge_headers(endpoint.headers, {"Authorization": f"Bearer {key.reveal()}"})
        return HttpRequest("GET", _url(endpoint, path), headers)


ADAPTER = OpenAICompatAdapter()
