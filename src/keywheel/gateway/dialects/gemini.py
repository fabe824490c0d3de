"""The Gemini ``generateContent`` dialect, as clients speak it to the gateway.

``POST /v1beta/models/{model}:generateContent`` / ``:streamGenerateContent``
bodies in, ``GenerateContentResponse`` answers and ``alt=sse`` chunks (CRLF)
out, in the shapes the official ``google-genai`` SDK parses.  Pure: no I/O,
never renders an upstream error body.

Gemini has no tool-call ids: ``functionCall`` parts get ``call_<n>`` (unless
they carry an ``id``) and each ``functionResponse`` answers the earliest
unanswered call of the same name.  ``parameters`` schemas (an OpenAPI subset
with upper-case types) become JSON Schema.  Safety settings, cached content,
built-in tools and other Gemini-only settings do not translate and are dropped;
content that does not translate (non-image media, code-execution parts) is
noted in ``InboundRequest.untranslatable``.
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
    new_id,
    opt_int,
    opt_number,
    opt_str,
    opt_str_list,
    problem_of,
    require_list,
    require_object,
    require_str,
    sse_data,
    untranslatable,
)
from keywheel.providers._common import parse_tool_arguments
from keywheel.types import (
    ChatRequest,
    ChatResponse,
    FinishReason,
    ImagePart,
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

__all__ = ["GeminiDialect", "GeminiStream"]

log = logging.getLogger("keywheel.gateway")

_FINISH: dict[FinishReason, str] = {
    "stop": "STOP",
    "length": "MAX_TOKENS",
    "tool_calls": "STOP",  # Gemini ends a function call with STOP
    "content_filter": "SAFETY",
    "error": "OTHER",
    "other": "OTHER",
}
_METHODS = {"generateContent": False, "streamGenerateContent": True}
_MODES = {"AUTO": "auto", "VALIDATED": "auto", "NONE": "none"}
# google.rpc status by HTTP status
_RPC_STATUS = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    405: "UNIMPLEMENTED",
    409: "ABORTED",
    429: "RESOURCE_EXHAUSTED",
    499: "CANCELLED",
    500: "INTERNAL",
    501: "UNIMPLEMENTED",
    502: "UNAVAILABLE",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
_CRLF2 = b"\r\n\r\n"
# Gemini's own part kinds with no canonical equivalent (its code-execution and server-tool transcripts)
_UNTRANSLATABLE_PARTS = frozenset({"executableCode", "codeExecutionResult", "toolCall", "toolResponse"})


# ------------------------------------------------------------------ requests


def _snake(name: str) -> str:
    return "".join("_" + c.lower() if c.isupper() else c for c in name)


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(word[:1].upper() + word[1:] for word in rest)


# Proto JSON accepts a field's JSON name or its proto (snake_case) name, and google-genai sends both:
# ``mime_type`` inside ``inlineData``, ``parameters_json_schema``, ``any_of`` in schemas …
_FIELDS = (
    "systemInstruction generationConfig toolConfig maxOutputTokens topP stopSequences mimeType fileUri"
    " thoughtSignature functionDeclarations parametersJsonSchema functionCallingConfig allowedFunctionNames"
).split()
_SNAKE = {name: _snake(name) for name in _FIELDS}
_PART_KINDS = {
    spelling: kind
    for kind in ("text", "functionCall", "functionResponse", "inlineData", "fileData", *_UNTRANSLATABLE_PARTS)
    for spelling in (kind, _snake(kind))
}


def _field(obj: dict[str, Any], name: str) -> tuple[str, Any]:
    """``(key as the client spelled it, value)`` of a camelCase field that may come in snake_case."""
    if name in obj:
        return name, obj[name]
    snake = _SNAKE[name]
    return snake, obj.get(snake)


def _model(model_from_path: str | None, body: dict[str, Any]) -> tuple[str, bool | None]:
    """The model of ``models/{model}:{method}`` (prefix and method optional) and the method's stream flag."""
    model = require_str(model_from_path or body.get("model"), "model")
    model = model.removeprefix("models/")
    head, sep, method = model.rpartition(":")
    if sep and method in _METHODS:
        return require_str(head, "model"), _METHODS[method]
    return model, None


def _json_schema(schema: Any, where: str) -> dict[str, Any]:
    """Gemini's OpenAPI-subset ``Schema`` as JSON Schema: lower-case types, ``nullable`` as a ``"null"`` type."""
    schema = require_object(schema, where)
    out: dict[str, Any] = {}
    nullable = False
    for spelled, value in schema.items():
        key = _camel(spelled) if "_" in spelled else spelled
        at = f"{where}.{spelled}"
        if key == "type":
            if isinstance(value, str) and value != "TYPE_UNSPECIFIED":
                out["type"] = value.lower()
        elif key == "properties":
            props = require_object(value, at)
            out[key] = {name: _json_schema(sub, f"{at}.{name}") for name, sub in props.items()}
        elif key == "items":
            out[key] = _json_schema(value, at)
        elif key == "anyOf":
            out[key] = [_json_schema(v, f"{at}[{i}]") for i, v in enumerate(require_list(value, at))]
        elif key == "nullable":
            nullable = value is True
        elif key not in ("propertyOrdering", "example"):
            out[key] = value
    if nullable and isinstance(out.get("type"), str):
        out["type"] = [out["type"], "null"]
    return out


class _Reader:
    """One request's contents: ids for its function calls, which call each response answers,
    and what could not be translated."""

    __slots__ = ("_count", "_open", "lost")

    def __init__(self) -> None:
        self._count = 0
        self._open: dict[str, list[str]] = {}  # function name -> ids of calls not answered yet
        self.lost: list[str] = []

    def call(self, part: dict[str, Any], raw: Any, where: str) -> ToolCall:
        raw = require_object(raw, where)
        name = require_str(raw.get("name"), f"{where}.name")
        args = raw.get("args")
        args = {} if args is None else require_object(args, f"{where}.args")
        given = raw.get("id")
        call_id = given if isinstance(given, str) and given else f"call_{self._count}"
        self._count += 1
        self._open.setdefault(name, []).append(call_id)
        signature = _field(part, "thoughtSignature")[1]
        return ToolCall(call_id, name, args, {"thoughtSignature": signature} if signature is not None else {})

    def result(self, raw: Any, where: str) -> ToolResultPart:
        raw = require_object(raw, where)
        name = require_str(raw.get("name"), f"{where}.name")
        response = require_object(raw.get("response", {}), f"{where}.response")
        waiting = self._open.get(name) or []
        given = raw.get("id")
        if isinstance(given, str) and given:
            call_id = given
            if call_id in waiting:
                waiting.remove(call_id)
        elif waiting:
            call_id = waiting.pop(0)
        else:
            raise fail(f"{where}.name", f"no earlier functionCall named {name!r} to answer")
        text, is_error = _result_text(response)
        return ToolResultPart(call_id, text, name, is_error)

    def media(self, raw: Any, where: str, inline: bool) -> ImagePart | None:
        """An ``inlineData`` or ``fileData`` part; only images translate."""
        raw = require_object(raw, where)
        key, mime = _field(raw, "mimeType")
        mime = opt_str(mime, f"{where}.{key}")
        if inline and mime is None:
            raise fail(f"{where}.mimeType", "required")
        key, value = ("data", raw.get("data")) if inline else _field(raw, "fileUri")
        value = require_str(value, f"{where}.{key}")
        if mime is not None and not mime.startswith("image/"):
            self.lost.append(untranslatable(where, f"{mime!r} media"))
            return None
        return ImagePart(media_type=mime, data=value) if inline else ImagePart(media_type=mime, url=value)

    def part(self, raw: Any, where: str) -> Part | None:
        part = require_object(raw, where)
        for spelled, value in part.items():
            kind = _PART_KINDS.get(spelled)
            at = f"{where}.{spelled}"
            if kind == "text":
                if part.get("thought"):
                    return None  # a thought summary is not conversation
                return TextPart(require_str(value, at, allow_empty=True))
            if kind == "functionCall":
                return self.call(part, value, at)
            if kind == "functionResponse":
                return self.result(value, at)
            if kind == "inlineData" or kind == "fileData":
                return self.media(value, at, kind == "inlineData")
            if kind is not None:
                self.lost.append(untranslatable(where, f"a part of kind {kind!r}"))
                return None
        if not part:
            raise fail(where, "empty part (expected text, inlineData, fileData, functionCall or functionResponse)")
        log.debug("translation drops %s: a part of unknown kind (%s)", where, ", ".join(map(str, part))[:200])
        return None

    def content(self, raw: Any, where: str) -> Message:
        content = require_object(raw, where)
        role = content.get("role", "user")  # single-turn requests may leave the role out
        if role not in ("user", "model", "function"):  # "function": older SDKs' turn of function responses
            raise fail(f"{where}.role", f"unknown role {role!r} (expected user or model)")
        parts = []
        for j, item in enumerate(require_list(content.get("parts"), f"{where}.parts")):
            part = self.part(item, f"{where}.parts[{j}]")
            if part is not None:
                parts.append(part)
        return Message("assistant" if role == "model" else "user", parts)


def _result_text(response: dict[str, Any]) -> tuple[str, bool]:
    """A function response as text: the lone string of ``{"content"|"output"|"result"|"error": …}``, else JSON."""
    if len(response) == 1:
        ((key, value),) = response.items()
        if key in ("content", "output", "result", "error"):
            text = value if isinstance(value, str) else dumps(value).decode()
            return text, key == "error"
    return dumps(response).decode(), False


def _system(body: dict[str, Any]) -> str | None:
    key, value = _field(body, "systemInstruction")
    if value is None:
        return None
    parts = require_list(require_object(value, key).get("parts"), f"{key}.parts")
    texts = []
    for i, part in enumerate(parts):
        part = require_object(part, f"{key}.parts[{i}]")
        texts.append(require_str(part.get("text"), f"{key}.parts[{i}].text", allow_empty=True))
    return "\n".join(texts) or None


def _tools(value: Any) -> list[Tool] | None:
    if value is None:
        return None
    tools = []
    for i, raw in enumerate(require_list(value, "tools", non_empty=False)):
        group = require_object(raw, f"tools[{i}]")
        # googleSearch, codeExecution, urlContext …: Gemini's own tools, nothing to translate them to
        key, declarations = _field(group, "functionDeclarations")
        if declarations is None:
            continue
        for j, decl in enumerate(require_list(declarations, f"tools[{i}].{key}", non_empty=False)):
            at = f"tools[{i}].{key}[{j}]"
            decl = require_object(decl, at)
            key_json, json_schema = _field(decl, "parametersJsonSchema")
            if json_schema is not None:
                schema = require_object(json_schema, f"{at}.{key_json}")
            elif decl.get("parameters") is not None:
                schema = _json_schema(decl["parameters"], f"{at}.parameters")
            else:
                schema = {"type": "object", "properties": {}}
            name = require_str(decl.get("name"), f"{at}.name")
            tools.append(Tool(name, opt_str(decl.get("description"), f"{at}.description"), schema))
    return tools or None


def _tool_choice(body: dict[str, Any]) -> str | None:
    key, value = _field(body, "toolConfig")
    if value is None:
        return None
    sub, config = _field(require_object(value, key), "functionCallingConfig")
    if config is None:
        return None
    where = f"{key}.{sub}"
    config = require_object(config, where)
    mode = config.get("mode")
    if mode is None or mode == "MODE_UNSPECIFIED":
        return None
    mode = require_str(mode, f"{where}.mode").upper()
    if mode == "ANY":
        names, allowed = _field(config, "allowedFunctionNames")
        allowed = opt_str_list(allowed, f"{where}.{names}")
        return allowed[0] if allowed and len(allowed) == 1 else "required"
    if mode not in _MODES:
        raise fail(f"{where}.mode", f"expected AUTO, ANY, NONE or VALIDATED, got {config['mode']!r}")
    return _MODES[mode]


# ------------------------------------------------------------------ answers


def _usage(usage: Usage) -> dict[str, int]:
    return {
        "promptTokenCount": usage.input_tokens,
        "candidatesTokenCount": usage.output_tokens,
        "totalTokenCount": usage.input_tokens + usage.output_tokens,
    }


def _call_part(call_id: str, name: str, args: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    part: dict[str, Any] = {"functionCall": {"id": call_id, "name": name, "args": args}}
    signature = extra.get("thoughtSignature")
    if signature is not None:
        part["thoughtSignature"] = signature
    return part


def _content_of(parts: list[dict[str, Any]]) -> dict[str, Any]:
    # genai's chat history drops a turn whose content has no parts: an empty answer is one empty text part
    return {"role": "model", "parts": parts or [{"text": ""}]}


def _error_object(problem: Problem) -> dict[str, Any]:
    status = _RPC_STATUS.get(problem.status) or ("INVALID_ARGUMENT" if problem.status < 500 else "INTERNAL")
    error: dict[str, Any] = {"code": problem.status, "message": problem.message, "status": status}
    details = []
    seconds = problem.retry_seconds
    if seconds is not None:  # how Gemini itself says when to come back
        details.append({"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": f"{seconds}s"})
    if problem.code == "invalid_api_key":  # what Gemini says of a bad key, so Gemini clients recognise it
        info = {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID", "domain": "keywheel"}
        details.append(info)
    if details:
        error["details"] = details
    return error


def _error_payload(problem: Problem) -> tuple[int, dict[str, Any]]:
    return problem.status, {"error": _error_object(problem)}


class GeminiStream:
    """Canonical events to ``alt=sse`` chunks, each a whole ``GenerateContentResponse``.

    Gemini sends a function call whole (``args`` as an object), so tool-call
    fragments are gathered and sent in the last chunk, with ``finishReason``
    and ``usageMetadata``.
    """

    __slots__ = ("_tail", "_calls", "_text_prefix", "_text_suffix")

    def __init__(self, model: str) -> None:
        self._tail = {"modelVersion": model, "responseId": new_id("")}
        self._calls = ToolCallSlots(keep_arguments=True)
        self._text_prefix = b'data: {"candidates":[{"content":{"role":"model","parts":[{"text":'
        self._text_suffix = b'}]},"index":0}],' + dumps(self._tail)[1:] + _CRLF2

    def start(self) -> bytes:
        return b""

    def event(self, ev: StreamEvent) -> bytes:
        if isinstance(ev, TextDelta):
            return self._text_prefix + dumps(ev.text) + self._text_suffix if ev.text else b""
        if isinstance(ev, ToolCallDelta):
            self._calls.add(ev)
            return b""
        return self._end(ev)

    def _end(self, ev: StreamEnd) -> bytes:
        calls = self._calls
        parts = [
            _call_part(calls.ids[i], calls.names[i], parse_tool_arguments("".join(calls.arguments[i])), calls.extras[i])
            for i in range(len(calls))
        ]
        candidate = {"content": _content_of(parts), "finishReason": _FINISH[ev.finish_reason], "index": 0}
        return sse_data({"candidates": [candidate], "usageMetadata": _usage(ev.usage), **self._tail}, _CRLF2)

    def error(self, exc: KeywheelError) -> bytes:
        # genai raises on a chunk that starts with {"error": — so "error" must be the first (only) key.
        return sse_data(_error_payload(problem_of(exc))[1], _CRLF2)


# ------------------------------------------------------------------ dialect


class GeminiDialect:
    """``/v1beta/models/{model}:generateContent|streamGenerateContent`` and ``/v1beta/models``."""

    name = "gemini"

    def peek(self, body: Any, model_from_path: str | None = None, *, stream: bool | None = None) -> tuple[str, bool]:
        model, method_stream = _model(model_from_path, require_object(body))
        return model, stream if stream is not None else bool(method_stream)

    def parse_request(
        self, body: Any, model_from_path: str | None = None, *, stream: bool | None = None
    ) -> InboundRequest:
        """``model_from_path`` is the URL's ``{model}`` (``models/`` prefix and ``:method`` suffix allowed)."""
        body = require_object(body)
        model, method_stream = _model(model_from_path, body)
        reader = _Reader()
        raw = require_list(body.get("contents"), "contents")
        messages = [reader.content(c, f"contents[{i}]") for i, c in enumerate(raw)]
        at, config = _field(body, "generationConfig")
        config = {} if config is None else require_object(config, at)
        max_key, max_tokens = _field(config, "maxOutputTokens")
        top_key, top_p = _field(config, "topP")
        stop_key, stop = _field(config, "stopSequences")
        tools = _tools(body.get("tools"))
        request = ChatRequest(
            messages=messages,
            system=_system(body),
            max_tokens=opt_int(max_tokens, f"{at}.{max_key}"),
            temperature=opt_number(config.get("temperature"), f"{at}.temperature"),
            top_p=opt_number(top_p, f"{at}.{top_key}"),
            stop=opt_str_list(stop, f"{at}.{stop_key}"),
            tools=tools,
            tool_choice=_tool_choice(body) if tools else None,
        )
        is_stream = stream if stream is not None else bool(method_stream)
        return InboundRequest(request, model, is_stream, untranslatable=reader.lost)

    def render_response(self, response: ChatResponse, model: str) -> dict[str, Any]:
        parts: list[dict[str, Any]] = [{"text": response.text}] if response.text else []
        parts.extend(_call_part(c.id, c.name, c.arguments, c.extra) for c in response.tool_calls)
        candidate = {
            "content": _content_of(parts),
            "finishReason": _FINISH[response.finish_reason],
            "index": 0,
        }
        return {
            "candidates": [candidate],
            "usageMetadata": _usage(response.usage),
            "modelVersion": model,
            "responseId": new_id("", response.id),
        }

    def stream_renderer(self, model: str, include_usage: bool) -> GeminiStream:  # noqa: ARG002  (always sent)
        return GeminiStream(model)

    def render_error(self, exc: KeywheelError) -> ErrorAnswer:
        return answer(problem_of(exc), _error_payload)

    def render_auth_error(self, message: str) -> ErrorAnswer:
        return answer(Problem(401, message, "invalid_api_key"), _error_payload)

    def render_simple_error(self, status: int, message: str) -> ErrorAnswer:
        return answer(Problem(status, message), _error_payload)

    def render_models(self, models: list[tuple[str, str]]) -> dict[str, Any]:
        methods = ["generateContent", "streamGenerateContent"]
        return {
            "models": [
                {
                    "name": f"models/{model}",
                    "displayName": model,
                    "description": f"served by {owner} through keywheel",
                    "supportedGenerationMethods": methods,
                }
                for model, owner in models
            ]
        }
