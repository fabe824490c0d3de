"""The OpenAI Responses API dialect (``POST /v1/responses``), stateless.

``input`` (a string or a list of items: messages, ``function_call``,
``function_call_output``), ``instructions``, function ``tools`` and
``tool_choice`` become a canonical request; answers come back as a
``response`` object, and streams as the typed event sequence the ``openai``
SDK's accumulator expects (``response.created`` … ``response.completed``).

No upstream speaks this dialect, so every request is translated; there is
never a pass-through.  keywheel keeps no responses, conversations or files:
what needs server state (``previous_response_id``, ``conversation``,
``store: true``, ``background``, stored ``prompt`` templates, ``item_reference``,
``file_id``) is a 400 telling the caller to send the full input.  Settings
keywheel cannot honour but that leave the answer's meaning intact (``include``,
``reasoning``, ``text``, ``truncation``, ``store: false`` …) are ignored with a
debug log line.  The gateway gives the renderers only the model, so the
response object does not echo the request's settings (``tools`` is ``[]``,
``metadata`` and ``instructions`` are null).

Errors are the OpenAI error shape, rendered as the chat-completions dialect
renders them.  Pure: no I/O but debug logging, never renders an upstream error body.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any, Literal

from keywheel.errors import KeywheelError
from keywheel.gateway.dialects.base import (
    ErrorAnswer,
    InboundRequest,
    ToolCallSlots,
    dumps,
    fail,
    model_of,
    new_id,
    now,
    opt_int,
    opt_number,
    opt_str,
    peek_body,
    problem_of,
    require_list,
    require_object,
    require_str,
    sse_event,
    stream_flag,
)
from keywheel.gateway.dialects.openai import OpenAIDialect
from keywheel.messages import image_from_url, parse_arguments, tools_from_openai
from keywheel.types import (
    ChatRequest,
    ChatResponse,
    FinishReason,
    Message,
    Part,
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

__all__ = ["ResponsesDialect", "ResponsesStream"]

log = logging.getLogger("keywheel.gateway.responses")

Status = Literal["completed", "incomplete", "failed"]

#: Fields that need server-side state, and why keywheel cannot serve them when set.
_STATEFUL = {
    "previous_response_id": "keywheel keeps no earlier responses",
    "conversation": "keywheel keeps no conversations",
    "store": "keywheel cannot store responses; leave store out or send store: false",
    "background": "keywheel runs no background responses to poll later",
    "prompt": "keywheel keeps no stored prompt templates",
}
_STATELESS_HINT = "keywheel is stateless: send the full conversation in input"
#: Fields keywheel reads.
_READ = frozenset(
    {"model", "input", "instructions", "tools", "tool_choice", "max_output_tokens", "temperature", "top_p", "stream"}
)
#: Fields accepted and not acted upon: no canonical request carries them, and the answer stays usable
#: without them (a ``text.format`` JSON schema, for one, is not enforced).
_IGNORED = frozenset(
    {
        "metadata",
        "user",
        "parallel_tool_calls",
        "include",
        "reasoning",
        "text",
        "truncation",
        "service_tier",
        "safety_identifier",
        "prompt_cache_key",
        "prompt_cache_retention",
        "prompt_cache_options",
        "top_logprobs",
        "max_tool_calls",
        "stream_options",
        "context_management",
    }
)
_TOOL_CHOICES = frozenset({"auto", "none", "required"})
_ROLES = frozenset({"user", "assistant", "system", "developer"})
_TEXT_PARTS = frozenset({"input_text", "output_text", "text", "refusal"})
_INCOMPLETE: dict[FinishReason, str] = {"length": "max_output_tokens", "content_filter": "content_filter"}

# ================================================================== request


def _check_stateless(body: dict[str, Any]) -> None:
    for name, why in _STATEFUL.items():
        value = body.get(name)
        if value is not None and value is not False and value != "":
            raise fail(name, f"{why}; {_STATELESS_HINT}")


def _log_ignored(body: dict[str, Any]) -> None:
    if not log.isEnabledFor(logging.DEBUG):
        return
    ignored = sorted(k for k in body if k in _IGNORED and body[k] is not None)
    unknown = [k for k in body if k not in _IGNORED and k not in _READ and k not in _STATEFUL]
    if ignored:
        log.debug("responses: ignoring %s (not honoured by keywheel's translation)", ", ".join(ignored))
    if unknown:  # the client's words: repr() escapes them, and only a few, cut short, are named
        names = ", ".join(repr(k[:40]) for k in unknown[:8])
        log.debug("responses: ignoring %d unknown field(s): %s", len(unknown), names)


def _text_of(part: dict[str, Any], where: str) -> str:
    key = "refusal" if part.get("type") == "refusal" else "text"
    return require_str(part.get(key), f"{where}.{key}", allow_empty=True)


def _image(part: dict[str, Any], where: str) -> Part:
    if part.get("file_id") is not None:
        raise fail(f"{where}.file_id", "keywheel keeps no files; send the image as image_url (a URL or a data: URL)")
    return image_from_url(require_str(part.get("image_url"), f"{where}.image_url"))


def _parts(content: Any, where: str, *, images: bool) -> list[Part]:
    """A message's content: a string, or text parts (and images where ``images``)."""
    if isinstance(content, str):
        return [TextPart(content)]
    if not isinstance(content, list):
        raise fail(where, "required" if content is None else "expected a string or a list of parts")
    parts: list[Part] = []
    for j, raw in enumerate(content):
        at = f"{where}[{j}]"
        part = require_object(raw, at)
        kind = part.get("type")
        if kind in _TEXT_PARTS:
            parts.append(TextPart(_text_of(part, at)))
        elif kind == "input_image" and images:
            parts.append(_image(part, at))
        else:
            raise fail(f"{at}.type", f"a part of type {kind!r} is not supported here by keywheel")
    return parts


def _joined_text(content: Any, where: str) -> str:
    return "".join(p.text for p in _parts(content, where, images=False) if isinstance(p, TextPart))


def _message(item: dict[str, Any], where: str, system: list[str]) -> Message | None:
    role = item.get("role")
    if role not in _ROLES:
        raise fail(f"{where}.role", f"unknown role {role!r} (expected user, assistant, system or developer)")
    if role in ("system", "developer"):
        system.append(_joined_text(item.get("content"), f"{where}.content"))
        return None
    return Message(role, _parts(item.get("content"), f"{where}.content", images=role == "user"))


def _function_call(item: dict[str, Any], where: str) -> Message:
    call = ToolCall(
        require_str(item.get("call_id"), f"{where}.call_id"),
        require_str(item.get("name"), f"{where}.name"),
        parse_arguments(item.get("arguments"), f"{where}.arguments"),
    )
    return Message("assistant", [call])


def _function_output(item: dict[str, Any], where: str) -> Message:
    call_id = require_str(item.get("call_id"), f"{where}.call_id")
    return Message("user", [ToolResultPart(call_id, _joined_text(item.get("output"), f"{where}.output"))])


def _input(value: Any, system: list[str]) -> list[Message]:
    """``input`` as canonical messages; system and developer messages go to ``system``, in order."""
    if isinstance(value, str):
        return [Message("user", [TextPart(require_str(value, "input"))])]
    messages: list[Message] = []
    for i, raw in enumerate(require_list(value, "input")):
        where = f"input[{i}]"
        item = require_object(raw, where)
        kind = item.get("type", "message")
        if kind == "message":
            message = _message(item, where, system)
            if message is not None:
                messages.append(message)
        elif kind == "function_call":
            messages.append(_function_call(item, where))
        elif kind == "function_call_output":
            messages.append(_function_output(item, where))
        elif kind == "reasoning":
            log.debug("responses: dropping %s, a reasoning item (not translatable)", where)
        elif kind == "item_reference":
            raise fail(f"{where}.type", f"an item_reference points at a stored item; {_STATELESS_HINT}")
        else:
            raise fail(f"{where}.type", f"unsupported item type {kind!r} (keywheel serves messages and function calls)")
    if not messages:
        raise fail("input", "at least one user or assistant item is required")
    return messages


def _tools(value: Any) -> list[Tool] | None:
    if value is None:
        return None
    tools = require_list(value, "tools", non_empty=False)
    for i, raw in enumerate(tools):
        tool = require_object(raw, f"tools[{i}]")
        if tool.get("type") != "function":
            raise fail(f"tools[{i}].type", f"{tool.get('type')!r}: keywheel serves only function tools")
        require_str(tool.get("name"), f"tools[{i}].name")
    return tools_from_openai(tools) or None


def _tool_choice(value: Any) -> str | None:
    if value is None or (isinstance(value, str) and value in _TOOL_CHOICES):
        return value
    if isinstance(value, dict) and value.get("type") == "function":
        return require_str(value.get("name"), "tool_choice.name")
    shown = repr(value.get("type")) if isinstance(value, dict) else repr(value)
    raise fail("tool_choice", f"expected 'auto', 'none', 'required' or {{type: function, name}}, got {shown}")


# ================================================================== rendering


def _usage(usage: Usage) -> dict[str, Any]:
    return {
        "input_tokens": usage.input_tokens,
        "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
        "output_tokens": usage.output_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": usage.input_tokens + usage.output_tokens,
    }


def _status(finish: FinishReason) -> Status:
    return "incomplete" if finish in _INCOMPLETE else "completed"


def _text_part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def _message_item(item_id: str, text: str | None, status: str) -> dict[str, Any]:
    content = [] if text is None else [_text_part(text)]
    return {"id": item_id, "type": "message", "role": "assistant", "status": status, "content": content}


def _call_item(item_id: str, call_id: str, name: str, arguments: str, status: str) -> dict[str, Any]:
    return {
        "id": item_id,
        "type": "function_call",
        "status": status,
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
    }


def _response(
    response_id: str,
    created: int,
    model: str,
    status: str,
    output: Iterable[dict[str, Any]] = (),
    *,
    finish: FinishReason | None = None,
    usage: Usage | None = None,
    error: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A ``response`` object; settings the request carried are not echoed (see the module docstring)."""
    reason = _INCOMPLETE.get(finish) if finish is not None else None
    return {
        "id": response_id,
        "object": "response",
        "created_at": created,
        "status": status,
        "completed_at": now() if status == "completed" else None,
        "error": error,
        "incomplete_details": {"reason": reason} if reason else None,
        "instructions": None,
        "metadata": None,
        "model": model,
        "output": list(output),
        "parallel_tool_calls": True,
        "previous_response_id": None,
        "tool_choice": "auto",
        "tools": [],
        "temperature": None,
        "top_p": None,
        "usage": _usage(usage) if usage is not None else None,
    }


class ResponsesStream:
    """Canonical events to the Responses API's typed SSE events, for one stream.

    Output items open as content arrives (a ``message`` for text, a
    ``function_call`` per call) and each is done before the next one starts;
    the stream ends with ``response.completed`` (or ``response.incomplete``)
    carrying every item and the usage.  A fragment for an already finished call
    (never seen from the three upstreams) is still sent as a delta for its item,
    and the final response holds the call's whole arguments.
    """

    __slots__ = ("_id", "_model", "_created", "_seq", "_items", "_open", "_text", "_calls", "_call_items")

    def __init__(self, model: str) -> None:
        self._id = new_id("resp_")
        self._model = model
        self._created = now()
        self._seq = 0
        self._items: list[dict[str, Any]] = []  # every output item, as last rendered
        self._open: int | None = None  # output index of the item still receiving content
        self._text: list[str] = []  # the open message's text so far
        self._calls = ToolCallSlots(keep_arguments=True)
        self._call_items: list[int] = []  # output index of each call, by slot

    def _emit(self, kind: str, **fields: Any) -> bytes:
        payload = {"type": kind, "sequence_number": self._seq, **fields}
        self._seq += 1
        return sse_event(kind, payload)

    def _lifecycle(self, kind: str, status: str, **extra: Any) -> bytes:
        output = self._items if status != "in_progress" else ()
        return self._emit(kind, response=_response(self._id, self._created, self._model, status, output, **extra))

    def start(self) -> bytes:
        created = self._lifecycle("response.created", "in_progress")
        return created + self._lifecycle("response.in_progress", "in_progress")

    # ------------------------------------------------------------ items

    def _add(self, item: dict[str, Any]) -> bytes:
        out = self._close("completed")
        self._open = len(self._items)
        self._items.append(item)
        return out + self._emit("response.output_item.added", output_index=self._open, item=item)

    def _close(self, status: str) -> bytes:
        index = self._open
        if index is None:
            return b""
        self._open = None
        item = self._items[index]
        where = {"item_id": item["id"], "output_index": index}
        if item["type"] == "message":
            text = "".join(self._text)
            self._text = []
            part = _text_part(text)
            out = self._emit("response.output_text.done", **where, content_index=0, text=text, logprobs=[])
            out += self._emit("response.content_part.done", **where, content_index=0, part=part)
            item = _message_item(item["id"], text, status)
        else:
            slot = self._call_items.index(index)
            arguments = "".join(self._calls.arguments[slot])
            out = b""
            if not arguments:  # a call without arguments still carries a JSON object
                arguments = "{}"
                out = self._emit("response.function_call_arguments.delta", **where, delta=arguments)
            out += self._emit("response.function_call_arguments.done", **where, arguments=arguments)
            item = {**item, "status": status, "arguments": arguments}
        self._items[index] = item
        return out + self._emit("response.output_item.done", output_index=index, item=item)

    def _text_delta(self, text: str) -> bytes:
        out = b""
        index = self._open
        if index is None or self._items[index]["type"] != "message":
            out = self._add(_message_item(new_id("msg_"), None, "in_progress"))
            index = len(self._items) - 1
            where = {"item_id": self._items[index]["id"], "output_index": index}
            out += self._emit("response.content_part.added", **where, content_index=0, part=_text_part(""))
        self._text.append(text)
        where = {"item_id": self._items[index]["id"], "output_index": index}
        return out + self._emit("response.output_text.delta", **where, content_index=0, delta=text, logprobs=[])

    def _call_delta(self, ev: ToolCallDelta) -> bytes:
        slot, new = self._calls.add(ev)
        out = b""
        if new:
            calls = self._calls
            item = _call_item(new_id("fc_"), calls.ids[slot], calls.names[slot], "", "in_progress")
            out = self._add(item)
            self._call_items.append(len(self._items) - 1)
        if ev.arguments:
            index = self._call_items[slot]
            where = {"item_id": self._items[index]["id"], "output_index": index}
            out += self._emit("response.function_call_arguments.delta", **where, delta=ev.arguments)
            if index != self._open:  # a late fragment: keep the final item whole
                self._items[index]["arguments"] = "".join(self._calls.arguments[slot])
        return out

    # ------------------------------------------------------------ events

    def event(self, ev: StreamEvent) -> bytes:
        if isinstance(ev, TextDelta):
            return self._text_delta(ev.text) if ev.text else b""
        if isinstance(ev, ToolCallDelta):
            return self._call_delta(ev)
        return self._end(ev)

    def _end(self, ev: StreamEnd) -> bytes:
        status = _status(ev.finish_reason)
        if ev.model:
            self._model = ev.model  # the model that actually served
        out = self._close(status)
        kind = "response.completed" if status == "completed" else "response.incomplete"
        return out + self._lifecycle(kind, status, finish=ev.finish_reason, usage=ev.usage)

    def error(self, exc: KeywheelError) -> bytes:
        """An ``error`` event, then ``response.failed`` with the items so far (the unfinished one incomplete)."""
        problem = problem_of(exc)
        if self._open is not None:
            self._items[self._open] = {**self._items[self._open], "status": "incomplete"}
            if self._items[self._open]["type"] == "message":
                self._items[self._open]["content"] = [_text_part("".join(self._text))]
        out = b"" if self._seq else self.start()
        out += self._emit("error", code=problem.code, message=problem.message, param=None)
        code = "rate_limit_exceeded" if problem.status == 429 else "server_error"  # the codes the SDK's type allows
        return out + self._lifecycle("response.failed", "failed", error={"code": code, "message": problem.message})


# ================================================================== dialect


#: Errors and the model list are the same as for chat completions.
_OPENAI = OpenAIDialect()


class ResponsesDialect:
    """``/v1/responses`` as the openai SDK (and the OpenAI Agents SDK) expect it."""

    name = "responses"  # no upstream adapter has this dialect: always translated

    def peek(self, body: Any, model_from_path: str | None = None, *, stream: bool | None = None) -> tuple[str, bool]:
        return peek_body(body, model_from_path, stream)

    def parse_request(
        self, body: Any, model_from_path: str | None = None, *, stream: bool | None = None
    ) -> InboundRequest:
        body = require_object(body)
        model = model_of(body, model_from_path)
        _check_stateless(body)
        _log_ignored(body)
        system: list[str] = []
        instructions = opt_str(body.get("instructions"), "instructions")
        if instructions:
            system.append(instructions)
        messages = _input(body.get("input"), system)
        tools = _tools(body.get("tools"))
        request = ChatRequest(
            messages=messages,
            system="\n\n".join(system) if system else None,
            max_tokens=opt_int(body.get("max_output_tokens"), "max_output_tokens"),
            temperature=opt_number(body.get("temperature"), "temperature"),
            top_p=opt_number(body.get("top_p"), "top_p"),
            tools=tools,
            tool_choice=_tool_choice(body.get("tool_choice")) if tools else None,
        )
        return InboundRequest(request, model, stream_flag(body, stream))

    def render_response(self, response: ChatResponse, model: str) -> dict[str, Any]:
        status = _status(response.finish_reason)
        output: list[dict[str, Any]] = []
        if response.text or not response.tool_calls:
            output.append(_message_item(new_id("msg_"), response.text, status))
        for call in response.tool_calls:
            arguments = dumps(call.arguments).decode()
            output.append(_call_item(new_id("fc_"), call.id, call.name, arguments, "completed"))
        response_id = new_id("resp_", response.id)
        served = response.model or model
        return _response(
            response_id, now(), served, status, output, finish=response.finish_reason, usage=response.usage
        )

    def stream_renderer(self, model: str, include_usage: bool) -> ResponsesStream:  # noqa: ARG002  (always sent)
        return ResponsesStream(model)

    def render_error(self, exc: KeywheelError) -> ErrorAnswer:
        return _OPENAI.render_error(exc)

    def render_auth_error(self, message: str) -> ErrorAnswer:
        return _OPENAI.render_auth_error(message)

    def render_simple_error(self, status: int, message: str) -> ErrorAnswer:
        return _OPENAI.render_simple_error(status, message)

    def render_models(self, models: list[tuple[str, str]]) -> dict[str, Any]:
        return _OPENAI.render_models(models)
