"""OpenAI-style chat messages and tools in, canonical types out.

The library API takes messages as OpenAI-style dicts (the lingua franca of chat
APIs): ``role`` system / developer / user / assistant / tool, ``content`` as a
string or a list of parts.  Bad input raises :class:`~keywheel.errors.BadRequest`
naming the exact field, e.g. ``messages[2].role``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from keywheel.errors import BadRequest
from keywheel.types import ImagePart, Message, Part, TextPart, Tool, ToolCall, ToolResultPart


def _fail(where: str, why: str) -> BadRequest:
    return BadRequest(f"{where}: {why}", status=400)


def _text_of(content: Any, where: str) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for i, part in enumerate(content):
            if not isinstance(part, Mapping) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise _fail(f"{where}[{i}]", "only text parts are allowed here")
            texts.append(part["text"])
        return "".join(texts)
    raise _fail(where, f"expected a string or a list of parts, got {type(content).__name__}")


def _parts(content: Any, where: str) -> list[Part]:
    if content is None:
        return []
    if isinstance(content, str):
        return [TextPart(content)]
    if not isinstance(content, list):
        raise _fail(where, f"expected a string or a list of parts, got {type(content).__name__}")
    parts: list[Part] = []
    for i, part in enumerate(content):
        at = f"{where}[{i}]"
        if not isinstance(part, Mapping):
            raise _fail(at, "expected an object")
        kind = part.get("type")
        if kind == "text":
            if not isinstance(part.get("text"), str):
                raise _fail(f"{at}.text", "expected a string")
            parts.append(TextPart(part["text"]))
        elif kind == "image_url":
            image = part.get("image_url")
            url = image.get("url") if isinstance(image, Mapping) else image
            if not isinstance(url, str):
                raise _fail(f"{at}.image_url.url", "expected a string")
            parts.append(image_from_url(url))
        else:
            raise _fail(f"{at}.type", f"unsupported part type {kind!r}")
    return parts


def image_from_url(url: str) -> ImagePart:
    """An image part from an http(s) URL or a ``data:<type>;base64,<data>`` URL."""
    if url.startswith("data:"):
        header, _, data = url.partition(",")
        media_type = header[5:].split(";")[0] or "image/png"
        return ImagePart(media_type=media_type, data=data)
    return ImagePart(url=url)


def parse_arguments(raw: Any, where: str) -> dict[str, Any]:
    if isinstance(raw, Mapping):
        return dict(raw)
    if raw is None or raw == "":
        return {}
    if not isinstance(raw, str):
        raise _fail(where, "expected a JSON string")
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise _fail(where, "is not valid JSON") from None
    if not isinstance(value, dict):
        raise _fail(where, "must encode a JSON object")
    return value


def from_openai(messages: Sequence[Mapping[str, Any]]) -> tuple[str | None, list[Message]]:
    """Split OpenAI-style messages into a system prompt and canonical messages."""
    if isinstance(messages, str | bytes) or not isinstance(messages, Sequence):
        raise _fail("messages", "expected a list of messages")
    system: list[str] = []
    out: list[Message] = []
    for i, msg in enumerate(messages):
        at = f"messages[{i}]"
        if not isinstance(msg, Mapping):
            raise _fail(at, "expected an object with 'role' and 'content'")
        role = msg.get("role")
        if role in ("system", "developer"):
            system.append(_text_of(msg.get("content"), f"{at}.content"))
        elif role == "user":
            out.append(Message("user", _parts(msg.get("content"), f"{at}.content")))
        elif role == "assistant":
            parts = _parts(msg.get("content"), f"{at}.content")
            calls = msg.get("tool_calls") or []
            if not isinstance(calls, list):
                raise _fail(f"{at}.tool_calls", "expected a list")
            for j, call in enumerate(calls):
                cat = f"{at}.tool_calls[{j}]"
                fn = call.get("function") if isinstance(call, Mapping) else None
                if not isinstance(fn, Mapping) or not isinstance(fn.get("name"), str):
                    raise _fail(f"{cat}.function.name", "expected a string")
                args = parse_arguments(fn.get("arguments"), f"{cat}.function.arguments")
                extra = call.get("extra") or {}
                if not isinstance(extra, Mapping):
                    raise _fail(f"{cat}.extra", "expected an object")
                extra = dict(extra)
                parts.append(ToolCall(str(call.get("id") or f"call_{j}"), fn["name"], args, extra))
            out.append(Message("assistant", parts))
        elif role == "tool":
            call_id = msg.get("tool_call_id")
            if not isinstance(call_id, str):
                raise _fail(f"{at}.tool_call_id", "expected a string")
            result = ToolResultPart(call_id, _text_of(msg.get("content"), f"{at}.content"), msg.get("name"))
            # Consecutive tool results belong in one user turn.
            if out and out[-1].role == "user" and all(isinstance(p, ToolResultPart) for p in out[-1].content):
                out[-1].content.append(result)
            else:
                out.append(Message("user", [result]))
        else:
            raise _fail(f"{at}.role", f"unknown role {role!r} (expected system, user, assistant or tool)")
    if not out:
        raise _fail("messages", "at least one user or assistant message is required")
    return ("\n\n".join(system) if system else None), out


def tools_from_openai(tools: Sequence[Mapping[str, Any]] | None) -> list[Tool] | None:
    """Tools as OpenAI ``{"type":"function","function":{…}}`` or flat ``{name, description, parameters}``."""
    if tools is None:
        return None
    if not isinstance(tools, Sequence):
        raise _fail("tools", "expected a list")
    out = []
    for i, tool in enumerate(tools):
        spec = tool.get("function") if isinstance(tool, Mapping) and "function" in tool else tool
        if not isinstance(spec, Mapping) or not isinstance(spec.get("name"), str):
            raise _fail(f"tools[{i}].function.name", "expected a string")
        params = spec.get("parameters") or {"type": "object", "properties": {}}
        if not isinstance(params, Mapping):
            raise _fail(f"tools[{i}].function.parameters", "expected a JSON Schema object")
        out.append(Tool(spec["name"], spec.get("description"), dict(params)))
    return out


def tool_choice_from_openai(choice: Any) -> str | None:
    if choice is None or isinstance(choice, str):
        return choice
    if isinstance(choice, Mapping):
        fn = choice.get("function")
        if isinstance(fn, Mapping) and isinstance(fn.get("name"), str):
            return str(fn["name"])
    raise _fail("tool_choice", "expected 'auto', 'none', 'required' or {type: function, function: {name}}")


def openai_wire(messages: Any) -> list[dict[str, Any]] | None:
    """``messages`` as the OpenAI Chat Completions wire has them, when translating them through the
    canonical types would give exactly that back; else ``None`` (translate).

    That is: plain dicts of exactly ``role`` and ``content``, the content a non-empty string; at
    most one ``system`` message, first; then ``user`` and ``assistant`` turns alternating (two
    turns of one role in a row would merge).  Such messages are valid (:func:`from_openai` accepts
    them) and come out of the OpenAI request builder unchanged, so an OpenAI-dialect upstream
    may take them as they are: the library's pass-through (see :meth:`keywheel.Wheel.achat`).
    """
    if type(messages) is not list:
        return None
    out: list[dict[str, Any]] = []
    last = None
    for msg in messages:
        if type(msg) is not dict or len(msg) != 2:
            return None
        role, content = msg.get("role"), msg.get("content")
        if type(content) is not str or not content:
            return None
        if role == "user" or role == "assistant":
            if role == last:
                return None
            last = role
        elif role != "system" or out:  # a system message only first
            return None
        out.append({"role": role, "content": content})
    return out if last is not None else None
