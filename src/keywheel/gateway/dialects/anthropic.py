"""The Anthropic Messages dialect, as clients speak it to the gateway.

``POST /v1/messages`` bodies in, ``message`` answers and named-event streams
(``message_start`` … ``message_stop``) out, in the shapes the official
``anthropic`` SDK parses and accumulates.  Pure: no I/O, never renders an
upstream error body.

What the canonical request cannot carry is left out of it: ``thinking`` blocks
(signed by one provider, meaningless to another) and server tools (no other
provider can run them) are dropped; documents, file sources and server-tool
transcripts are noted in ``InboundRequest.untranslatable`` (a pass-through
forwards them; a translation refuses them with a 400 naming the field).
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
    opt_bool,
    opt_int,
    opt_number,
    opt_str,
    opt_str_list,
    peek_body,
    problem_of,
    require_list,
    require_object,
    require_str,
    sse_event,
    stream_flag,
    untranslatable,
)
from keywheel.types import (
    ChatRequest,
    ChatResponse,
    FinishReason,
    ImagePart,
    Message,
    Part,
    Role,
    StreamEnd,
    StreamEvent,
    TextDelta,
    TextPart,
    Tool,
    ToolCall,
    ToolCallDelta,
    ToolResultPart,
    Usage,
)

__all__ = ["AnthropicDialect", "AnthropicStream"]

log = logging.getLogger("keywheel.gateway")

_STOP: dict[FinishReason, str] = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "content_filter": "refusal",
    "error": "end_turn",
    "other": "end_turn",
}
_TOOL_CHOICE = {"auto": "auto", "any": "required", "none": "none"}
# error.type by HTTP status, as Anthropic sends them
_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    504: "timeout_error",
    529: "overloaded_error",
}
_NEVER_CREATED = "1970-01-01T00:00:00Z"  # the gateway does not know when a model was released
# Block types that carry content another provider cannot take (a PDF, a server tool's transcript …):
# translating them away would change what the model is asked, so a translation refuses them.  Any
# other unknown type (a newer beta's block) is dropped with a debug line.
_REFUSED = frozenset(
    {
        "document",
        "container_upload",
        "server_tool_use",
        "web_search_tool_result",
        "web_fetch_tool_result",
        "code_execution_tool_result",
        "bash_code_execution_tool_result",
        "text_editor_code_execution_tool_result",
        "mcp_tool_use",
        "mcp_tool_result",
    }
)


# ------------------------------------------------------------------ requests


class _Reader:
    """One request's messages: tool names by tool_use id, and what could not be translated."""

    __slots__ = ("names", "lost", "system")

    def __init__(self) -> None:
        self.names: dict[str, str] = {}  # tool_use id -> tool name, for the results that answer them
        self.lost: list[str] = []
        self.system: list[str] = []  # the texts of system turns inside ``messages``, in order

    def image(self, source: Any, where: str) -> ImagePart | None:
        source = require_object(source, where)
        kind = source.get("type")
        if kind == "base64":
            media_type = require_str(source.get("media_type"), f"{where}.media_type")
            return ImagePart(media_type=media_type, data=require_str(source.get("data"), f"{where}.data"))
        if kind == "url":
            return ImagePart(url=require_str(source.get("url"), f"{where}.url"))
        self.lost.append(untranslatable(f"{where}.type", f"an image source of type {kind!r}"))
        return None

    def result_text(self, content: Any, where: str) -> str:
        if content is None or isinstance(content, str):
            return content or ""
        texts = []
        for k, block in enumerate(require_list(content, where, non_empty=False)):
            block = require_object(block, f"{where}[{k}]")
            kind = block.get("type")
            if kind == "text":
                texts.append(require_str(block.get("text"), f"{where}[{k}].text", allow_empty=True))
            elif kind in ("image", "search_result") or kind in _REFUSED:
                self.lost.append(untranslatable(f"{where}[{k}]", f"a block of type {kind!r} in a tool result"))
            else:
                log.debug("translation drops %s[%d]: a block of unknown type %r", where, k, kind)
        return "\n".join(texts)

    def text_of(self, block: dict[str, Any], where: str) -> str | None:
        """The text of a block that is text in another form: a plain-text document, a search result."""
        kind = block.get("type")
        if kind == "document":
            source = block.get("source")
            if isinstance(source, dict) and source.get("type") == "text" and isinstance(source.get("data"), str):
                return str(source["data"])
            return None
        if kind == "search_result":
            texts = [str(block.get("title") or ""), str(block.get("source") or "")]
            for k, item in enumerate(require_list(block.get("content"), f"{where}.content", non_empty=False)):
                item = require_object(item, f"{where}.content[{k}]")
                texts.append(require_str(item.get("text"), f"{where}.content[{k}].text", allow_empty=True))
            return "\n".join(t for t in texts if t)
        return None

    def block(self, block: Any, where: str) -> Part | None:
        block = require_object(block, where)
        kind = block.get("type")
        if kind == "text":
            return TextPart(require_str(block.get("text"), f"{where}.text", allow_empty=True))
        if kind == "image":
            return self.image(block.get("source"), f"{where}.source")
        if kind == "tool_use":
            call_id = require_str(block.get("id"), f"{where}.id")
            name = self.names[call_id] = require_str(block.get("name"), f"{where}.name")
            return ToolCall(call_id, name, require_object(block.get("input"), f"{where}.input"))
        if kind == "tool_result":
            call_id = require_str(block.get("tool_use_id"), f"{where}.tool_use_id")
            text = self.result_text(block.get("content"), f"{where}.content")
            is_error = opt_bool(block.get("is_error"), f"{where}.is_error")
            return ToolResultPart(call_id, text, self.names.get(call_id), is_error)
        if kind in ("thinking", "redacted_thinking"):
            return None  # signed by one provider, meaningless to another: not conversation content
        if not isinstance(kind, str):
            raise fail(f"{where}.type", "required" if kind is None else "expected a string")
        as_text = self.text_of(block, where)
        if as_text is not None:
            return TextPart(as_text)
        if kind in _REFUSED:
            self.lost.append(untranslatable(where, f"a block of type {kind!r}"))
        else:
            log.debug("translation drops %s: a block of unknown type %r", where, kind)
        return None

    def system_turn(self, raw: dict[str, Any], where: str) -> None:
        """A ``role: "system"`` turn inside ``messages`` (a beta of Claude Code 2.1): its text joins the
        system prompt after what came before it; an empty one (a per-turn control) adds nothing."""
        content = raw.get("content")
        if isinstance(content, str):
            texts = [content]
        else:
            texts = []
            for j, block in enumerate(require_list(content, f"{where}.content", non_empty=False)):
                block = require_object(block, f"{where}.content[{j}]")
                if block.get("type") == "text":
                    texts.append(require_str(block.get("text"), f"{where}.content[{j}].text", allow_empty=True))
                else:
                    log.debug(
                        "translation drops %s.content[%d]: a %r block in a system turn", where, j, block.get("type")
                    )
        text = "\n\n".join(t for t in texts if t)
        if text:
            self.system.append(text)

    def message(self, raw: Any, where: str) -> Message | None:
        raw = require_object(raw, where)
        role = raw.get("role")
        if role == "system":
            self.system_turn(raw, where)
            return None
        if role not in ("user", "assistant"):
            raise fail(f"{where}.role", f"unknown role {role!r} (expected user, assistant or system)")
        turn: Role = "user" if role == "user" else "assistant"
        content = raw.get("content")
        if isinstance(content, str):
            return Message(turn, [TextPart(content)])
        if not isinstance(content, list):
            why = "required" if content is None else "expected a string or a list of content blocks"
            raise fail(f"{where}.content", why)
        parts = []
        for j, item in enumerate(content):
            part = self.block(item, f"{where}.content[{j}]")
            if part is not None:
                parts.append(part)
        return Message(turn, parts)


def _system(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value or None
    texts = []
    for i, block in enumerate(require_list(value, "system", non_empty=False)):
        block = require_object(block, f"system[{i}]")
        if block.get("type") != "text":
            raise fail(f"system[{i}].type", "only text blocks are allowed in the system prompt")
        texts.append(require_str(block.get("text"), f"system[{i}].text", allow_empty=True))
    return "\n\n".join(texts) or None


def _tools(value: Any) -> list[Tool] | None:
    if value is None:
        return None
    tools = []
    for i, raw in enumerate(require_list(value, "tools", non_empty=False)):
        at = f"tools[{i}]"
        raw = require_object(raw, at)
        if raw.get("type") not in (None, "custom"):
            continue  # a server tool (web_search, bash …): another provider cannot run it; the model does without
        name = require_str(raw.get("name"), f"{at}.name")
        schema = require_object(raw.get("input_schema"), f"{at}.input_schema")
        tools.append(Tool(name, opt_str(raw.get("description"), f"{at}.description"), schema))
    return tools or None


def _tool_choice(value: Any) -> str | None:
    if value is None:
        return None
    kind = require_object(value, "tool_choice").get("type")
    if kind == "tool":
        return require_str(value.get("name"), "tool_choice.name")
    choice = _TOOL_CHOICE.get(kind) if isinstance(kind, str) else None
    if choice is None:
        raise fail("tool_choice.type", f"expected 'auto', 'any', 'none' or 'tool', got {kind!r}")
    return choice


# ------------------------------------------------------------------ answers


def _usage(usage: Usage) -> dict[str, int]:
    return {"input_tokens": usage.input_tokens, "output_tokens": usage.output_tokens}


def _error_object(problem: Problem) -> tuple[int, dict[str, Any]]:
    status = 529 if problem.code == "overloaded" else problem.status  # the SDK's OverloadedError
    kind = _ERROR_TYPES.get(status) or ("invalid_request_error" if status < 500 else "api_error")
    return status, {"type": kind, "message": problem.message}


def _error_payload(problem: Problem) -> tuple[int, dict[str, Any]]:
    status, error = _error_object(problem)
    return status, {"type": "error", "error": error}


class AnthropicStream:
    """Canonical events to Anthropic's named SSE events.

    Blocks open as content arrives (a text block, tool_use blocks with
    ``input_json_delta``), with increasing indexes and a ``content_block_stop``
    before the next block starts.  Usage is only known at the end, so
    ``message_start`` reports zeros and ``message_delta`` the cumulative counts
    (input included), which the SDK's accumulator takes as final.
    """

    __slots__ = ("_id", "_model", "_calls", "_blocks", "_index", "_open")

    def __init__(self, model: str) -> None:
        self._id = new_id("msg_")
        self._model = model
        self._calls = ToolCallSlots()
        self._blocks: list[int] = []  # block index of each tool call, by position
        self._index = -1  # index of the newest block
        self._open: str | None = None  # "text" | "tool_use" while that block is open

    def start(self) -> bytes:
        message: dict[str, Any] = {
            "id": self._id,
            "type": "message",
            "role": "assistant",
            "model": self._model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": 0, "output_tokens": 0},
        }
        return sse_event("message_start", {"type": "message_start", "message": message})

    def _close(self) -> bytes:
        if self._open is None:
            return b""
        self._open = None
        return sse_event("content_block_stop", {"type": "content_block_stop", "index": self._index})

    def _begin(self, block: dict[str, Any]) -> bytes:
        out = self._close()
        self._index += 1
        self._open = block["type"]
        return out + sse_event(
            "content_block_start", {"type": "content_block_start", "index": self._index, "content_block": block}
        )

    def event(self, ev: StreamEvent) -> bytes:
        if isinstance(ev, TextDelta):
            if not ev.text:
                return b""
            out = b"" if self._open == "text" else self._begin({"type": "text", "text": ""})
            return (
                out
                + b'event: content_block_delta\ndata: {"type":"content_block_delta","index":'
                + str(self._index).encode()
                + b',"delta":{"type":"text_delta","text":'
                + dumps(ev.text)
                + b"}}\n\n"
            )
        if isinstance(ev, ToolCallDelta):
            slot, new = self._calls.add(ev)
            out = b""
            if new:
                calls = self._calls
                out = self._begin({"type": "tool_use", "id": calls.ids[slot], "name": calls.names[slot], "input": {}})
                self._blocks.append(self._index)
            if ev.arguments:
                # A fragment of an earlier, already closed call (never seen from the three upstreams) still names
                # that call's block index; the SDK's accumulator places it by index.
                delta = {"type": "input_json_delta", "partial_json": ev.arguments}
                out += sse_event(
                    "content_block_delta", {"type": "content_block_delta", "index": self._blocks[slot], "delta": delta}
                )
            return out
        return self._end(ev)

    def _end(self, ev: StreamEnd) -> bytes:
        delta = {"stop_reason": _STOP[ev.finish_reason], "stop_sequence": None}
        return (
            self._close()
            + sse_event("message_delta", {"type": "message_delta", "delta": delta, "usage": _usage(ev.usage)})
            + sse_event("message_stop", {"type": "message_stop"})
        )

    def error(self, exc: KeywheelError) -> bytes:
        return sse_event("error", _error_payload(problem_of(exc))[1])


# ------------------------------------------------------------------ dialect


class AnthropicDialect:
    """``/v1/messages`` and ``/v1/models`` as the anthropic SDK expects them."""

    name = "anthropic"

    def peek(self, body: Any, model_from_path: str | None = None, *, stream: bool | None = None) -> tuple[str, bool]:
        return peek_body(body, model_from_path, stream)

    def parse_request(
        self, body: Any, model_from_path: str | None = None, *, stream: bool | None = None
    ) -> InboundRequest:
        body = require_object(body)
        model = model_of(body, model_from_path)
        max_tokens = opt_int(body.get("max_tokens"), "max_tokens", required=True)
        reader = _Reader()
        raw = require_list(body.get("messages"), "messages")
        messages = [m for i, item in enumerate(raw) if (m := reader.message(item, f"messages[{i}]")) is not None]
        if not messages:
            raise fail("messages", "at least one user or assistant message is required")
        tools = _tools(body.get("tools"))
        system = _system(body.get("system"))
        if reader.system:
            system = "\n\n".join([system, *reader.system] if system else reader.system)
        request = ChatRequest(
            messages=messages,
            system=system,
            max_tokens=max_tokens,
            temperature=opt_number(body.get("temperature"), "temperature"),
            top_p=opt_number(body.get("top_p"), "top_p"),
            stop=opt_str_list(body.get("stop_sequences"), "stop_sequences"),
            tools=tools,
            tool_choice=_tool_choice(body.get("tool_choice")) if tools else None,
        )
        return InboundRequest(request, model, stream_flag(body, stream), untranslatable=reader.lost)

    def render_response(self, response: ChatResponse, model: str) -> dict[str, Any]:
        content: list[dict[str, Any]] = [{"type": "text", "text": response.text}] if response.text else []
        for call in response.tool_calls:
            content.append({"type": "tool_use", "id": call.id, "name": call.name, "input": call.arguments})
        return {
            "id": new_id("msg_", response.id),
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": content,
            "stop_reason": _STOP[response.finish_reason],
            "stop_sequence": None,
            "usage": _usage(response.usage),
        }

    def stream_renderer(self, model: str, include_usage: bool) -> AnthropicStream:  # noqa: ARG002  (usage is always sent)
        return AnthropicStream(model)

    def render_error(self, exc: KeywheelError) -> ErrorAnswer:
        return answer(problem_of(exc), _error_payload)

    def render_auth_error(self, message: str) -> ErrorAnswer:
        return answer(Problem(401, message, "invalid_api_key"), _error_payload)

    def render_simple_error(self, status: int, message: str) -> ErrorAnswer:
        return answer(Problem(status, message), _error_payload)

    def render_models(self, models: list[tuple[str, str]]) -> dict[str, Any]:
        data = [
            {"type": "model", "id": model, "display_name": model, "created_at": _NEVER_CREATED} for model, _ in models
        ]
        return {
            "data": data,
            "has_more": False,
            "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None,
        }
