"""The OpenAI chat-completions dialect, as clients speak it to the gateway.

``POST /v1/chat/completions`` bodies in, ``chat.completion`` answers and
``chat.completion.chunk`` streams out, in the shapes the official ``openai``
SDK parses.  Message translation is :mod:`keywheel.messages` (the library's own
OpenAI-style input); this module adds the request-level fields and the
rendering.  Pure: no I/O, never renders an upstream error body.
"""

from __future__ import annotations

import logging
from typing import Any

from keywheel.errors import KeywheelError
from keywheel.gateway.dialects.base import (
    ErrorAnswer,
    InboundRequest,
    Problem,
    ToolCallSlots,
    answer,
    dumps,
    fail,
    model_of,
    new_id,
    now,
    opt_bool,
    opt_int,
    opt_number,
    opt_str_list,
    peek_body,
    problem_of,
    require_list,
    require_object,
    sse_data,
    stream_flag,
    untranslatable,
)
from keywheel.messages import from_openai, tool_choice_from_openai, tools_from_openai
from keywheel.types import (
    ChatRequest,
    ChatResponse,
    FinishReason,
    StreamEnd,
    StreamEvent,
    TextDelta,
    ToolCall,
    ToolCallDelta,
    Usage,
)

__all__ = ["OpenAIDialect", "OpenAIStream"]

_FINISH: dict[FinishReason, str] = {
    "stop": "stop",
    "length": "length",
    "tool_calls": "tool_calls",
    "content_filter": "content_filter",
    "error": "stop",  # the SDK's Literal has no "error"; the text so far is the answer
    "other": "stop",
}
_TOOL_CHOICES = frozenset({"auto", "none", "required"})
_PARTS = frozenset({"text", "image_url"})  # the content parts keywheel.messages translates
_REFUSED = frozenset({"input_audio", "file"})  # content another provider cannot take: a translation refuses it
log = logging.getLogger("keywheel.gateway")
_DONE = b"data: [DONE]\n\n"


def _translatable(messages: list[Any], lost: list[str]) -> list[Any]:
    """``messages`` with the parts the canonical types cannot carry (files, audio …) noted in ``lost``
    and blanked out: an empty text part keeps every later part's index, so errors still name the right field."""
    out = messages
    for i, msg in enumerate(messages):
        content = msg.get("content") if isinstance(msg, dict) else None
        if not isinstance(content, list):
            continue
        kept = content
        for j, part in enumerate(content):
            kind = part.get("type") if isinstance(part, dict) else None
            if isinstance(kind, str) and kind not in _PARTS:  # a malformed part is left for from_openai to name
                text = ""
                if kind in _REFUSED:
                    lost.append(untranslatable(f"messages[{i}].content[{j}]", f"a part of type {kind!r}"))
                elif kind == "refusal" and isinstance(part.get("refusal"), str):
                    text = part["refusal"]  # an assistant's refusal, as the text it is
                else:
                    log.debug("translation drops messages[%d].content[%d]: a part of unknown type %r", i, j, kind)
                if kept is content:
                    kept = list(content)
                kept[j] = {"type": "text", "text": text}
        if kept is not content:
            if out is messages:
                out = list(messages)
            out[i] = {**msg, "content": kept}
    return out


def _tool_choice(value: Any) -> str | None:
    choice = tool_choice_from_openai(value)
    if isinstance(value, str) and choice not in _TOOL_CHOICES:
        raise fail("tool_choice", f"expected 'auto', 'none' or 'required', got {value!r}")
    return choice


def _tool_call(call: ToolCall) -> dict[str, Any]:
    arguments = dumps(call.arguments).decode()
    return {"id": call.id, "type": "function", "function": {"name": call.name, "arguments": arguments}}


def _usage(usage: Usage) -> dict[str, int]:
    return {
        "prompt_tokens": usage.input_tokens,
        "completion_tokens": usage.output_tokens,
        "total_tokens": usage.input_tokens + usage.output_tokens,
    }


def _error_object(problem: Problem) -> dict[str, Any]:
    if problem.status == 429:
        kind = "rate_limit_error"
    elif problem.status == 413:
        kind = "request_too_large"  # OpenAI documents no type for it; Anthropic's word
    elif problem.status >= 500:
        kind = "server_error"
    else:
        kind = "invalid_request_error"  # OpenAI uses it for 401 invalid_api_key and 404 model_not_found too
    return {"message": problem.message, "type": kind, "param": None, "code": problem.code}


def _error_payload(problem: Problem) -> tuple[int, dict[str, Any]]:
    return problem.status, {"error": _error_object(problem)}


class OpenAIStream:
    """Canonical events to ``chat.completion.chunk`` SSE, ending with ``data: [DONE]``."""

    __slots__ = ("_head", "_include_usage", "_calls", "_text_prefix", "_text_suffix")

    def __init__(self, model: str, include_usage: bool) -> None:
        self._head: dict[str, Any] = {
            "id": new_id("chatcmpl-"),
            "object": "chat.completion.chunk",
            "created": now(),
            "model": model,
        }
        self._include_usage = include_usage
        self._calls = ToolCallSlots()
        # Text deltas dominate a stream: splice the text into pre-encoded bytes.
        head = dumps(self._head)[:-1]
        self._text_prefix = b"data: " + head + b',"choices":[{"index":0,"delta":{"content":'
        usage = b',"usage":null' if include_usage else b""
        self._text_suffix = b'},"finish_reason":null}]' + usage + b"}\n\n"

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> bytes:
        payload = {**self._head, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
        if self._include_usage:
            payload["usage"] = None  # as OpenAI does: null on every chunk but the usage chunk
        return sse_data(payload)

    def start(self) -> bytes:
        return self._chunk({"role": "assistant", "content": ""})

    def event(self, ev: StreamEvent) -> bytes:
        if isinstance(ev, TextDelta):
            return self._text_prefix + dumps(ev.text) + self._text_suffix if ev.text else b""
        if isinstance(ev, ToolCallDelta):
            slot, new = self._calls.add(ev)
            if new:
                function = {"name": self._calls.names[slot], "arguments": ev.arguments}
                call = {"index": slot, "id": self._calls.ids[slot], "type": "function", "function": function}
            elif ev.arguments:
                call = {"index": slot, "function": {"arguments": ev.arguments}}
            else:
                return b""
            return self._chunk({"tool_calls": [call]})
        return self._end(ev)

    def _end(self, ev: StreamEnd) -> bytes:
        out = self._chunk({}, _FINISH[ev.finish_reason])
        if self._include_usage:
            out += sse_data({**self._head, "choices": [], "usage": _usage(ev.usage)})
        return out + _DONE

    def error(self, exc: KeywheelError) -> bytes:
        # The openai SDK raises APIError on any chunk with an "error" key.
        return sse_data({**self._head, "choices": [], "error": _error_object(problem_of(exc))}) + _DONE


class OpenAIDialect:
    """``/v1/chat/completions`` and ``/v1/models`` as the openai SDK expects them."""

    name = "openai"

    def peek(self, body: Any, model_from_path: str | None = None, *, stream: bool | None = None) -> tuple[str, bool]:
        return peek_body(body, model_from_path, stream)

    def parse_request(
        self, body: Any, model_from_path: str | None = None, *, stream: bool | None = None
    ) -> InboundRequest:
        body = require_object(body)
        model = model_of(body, model_from_path)
        lost: list[str] = []
        system, messages = from_openai(_translatable(require_list(body.get("messages"), "messages"), lost))
        # max_completion_tokens is current; max_tokens is deprecated but still what most clients send
        limit = "max_completion_tokens" if body.get("max_completion_tokens") is not None else "max_tokens"
        tools = body.get("tools")
        tools = tools_from_openai(require_list(tools, "tools", non_empty=False)) if tools is not None else None
        request = ChatRequest(
            messages=messages,
            system=system,
            max_tokens=opt_int(body.get(limit), limit),
            temperature=opt_number(body.get("temperature"), "temperature"),
            top_p=opt_number(body.get("top_p"), "top_p"),
            stop=opt_str_list(body.get("stop"), "stop"),
            tools=tools or None,
            tool_choice=_tool_choice(body.get("tool_choice")) if tools else None,
        )
        include_usage = False
        options = body.get("stream_options")
        if options is not None:
            options = require_object(options, "stream_options")
            include_usage = opt_bool(options.get("include_usage"), "stream_options.include_usage")
        return InboundRequest(request, model, stream_flag(body, stream), include_usage, lost)

    def render_response(self, response: ChatResponse, model: str) -> dict[str, Any]:
        calls = response.tool_calls
        message: dict[str, Any] = {
            "role": "assistant",
            "content": response.text if response.text or not calls else None,
            "refusal": None,
        }
        if calls:
            message["tool_calls"] = [_tool_call(c) for c in calls]
        return {
            "id": new_id("chatcmpl-", response.id),
            "object": "chat.completion",
            "created": now(),
            "model": model,
            "choices": [
                {"index": 0, "message": message, "finish_reason": _FINISH[response.finish_reason], "logprobs": None}
            ],
            "usage": _usage(response.usage),
        }

    def stream_renderer(self, model: str, include_usage: bool) -> OpenAIStream:
        return OpenAIStream(model, include_usage)

    def render_error(self, exc: KeywheelError) -> ErrorAnswer:
        return answer(problem_of(exc), _error_payload)

    def render_auth_error(self, message: str) -> ErrorAnswer:
        return answer(Problem(401, message, "invalid_api_key"), _error_payload)

    def render_simple_error(self, status: int, message: str) -> ErrorAnswer:
        return answer(Problem(status, message), _error_payload)

    def render_models(self, models: list[tuple[str, str]]) -> dict[str, Any]:
        data = [{"id": model, "object": "model", "created": 0, "owned_by": owner} for model, owner in models]
        return {"object": "list", "data": data}
