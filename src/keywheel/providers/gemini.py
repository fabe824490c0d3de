"""The Gemini API dialect (generativelanguage.googleapis.com, ``v1beta``).

Builds ``generateContent`` / ``streamGenerateContent?alt=sse`` requests, parses
answers and SSE chunks (each a whole ``GenerateContentResponse``), and
classifies errors, including ``RetryInfo`` delays and daily quotas.  The key
travels only in the ``x-goog-api-key`` header, never in a URL.  Pure: never
sends anything.
"""

from __future__ import annotations

import mimetypes
import re
from collections.abc import Mapping
from typing import Any

from keywheel.errors import (
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
    loads,
    merge_extra,
    merge_headers,
    ordered_turns,
    split_data_url,
    tool_names_by_id,
    truncate,
    upstream_message,
)
from keywheel.providers.base import Endpoint, Framing, HttpRequest, Provider
from keywheel.providers.paths import gemini_model_path
from keywheel.providers.timing import explicit_retry_after, parse_duration, seconds_until_pacific_midnight
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
    Tool,
    ToolCall,
    ToolCallDelta,
    Usage,
)

__all__ = ["GeminiAdapter", "GeminiStreamParser", "gemini_schema"]

_FILTERED = frozenset({"SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII", "IMAGE_SAFETY"})
_TOOL_MODES = {"auto": "AUTO", "required": "ANY", "none": "NONE"}
# RPC status -> HTTP status, for an error chunk that arrives after HTTP 200 without a code.
_RPC_STATUS = {
    "INVALID_ARGUMENT": 400,
    "FAILED_PRECONDITION": 400,
    "UNAUTHENTICATED": 401,
    "PERMISSION_DENIED": 403,
    "NOT_FOUND": 404,
    "RESOURCE_EXHAUSTED": 429,
    "INTERNAL": 500,
    "UNAVAILABLE": 503,
    "DEADLINE_EXCEEDED": 504,
}
# The OpenAPI-subset Schema fields Gemini's `parameters` accepts; anything else is a 400.
_SCHEMA_KEYS = frozenset(
    "type format title description nullable enum default example properties required propertyOrdering"
    " minProperties maxProperties items minItems maxItems minLength maxLength pattern minimum maximum anyOf".split()
)
_VERSIONED = re.compile(r"/v1(?:alpha|beta\d*)?$")


# ------------------------------------------------------------------ requests


def gemini_schema(schema: Any, defs: Mapping[str, Any] | None = None, depth: int = 0) -> dict[str, Any]:
    """A JSON Schema cut down to the subset Gemini's ``parameters`` accepts.

    Local ``$ref``s are inlined, ``const`` becomes a one-value ``enum``, ``oneOf``
    becomes ``anyOf``, a ``"null"`` type becomes ``nullable``; unknown keys
    (``$schema``, ``additionalProperties``, ``$defs`` …) are dropped.
    """
    schema = as_dict(schema)
    if defs is None:
        defs = {**as_dict(schema.get("definitions")), **as_dict(schema.get("$defs"))}
    if depth > 32:  # a recursive $ref: stop here rather than loop
        return {}
    ref = schema.get("$ref")
    if isinstance(ref, str) and isinstance(defs.get(ref.rsplit("/", 1)[-1]), dict):
        target = defs[ref.rsplit("/", 1)[-1]]
        schema = {**target, **{k: v for k, v in schema.items() if k != "$ref"}}
        depth += 1
    out: dict[str, Any] = {}
    for name, value in schema.items():
        if name == "type" and isinstance(value, list):
            kinds = [t for t in value if t != "null"]
            if len(kinds) < len(value):
                out["nullable"] = True
            if kinds:
                out["type"] = kinds[0]
        elif name == "const":
            out["enum"] = [value]
        elif name in ("anyOf", "oneOf"):
            variants = [gemini_schema(v, defs, depth + 1) for v in as_list(value) if as_dict(v).get("type") != "null"]
            if len(variants) < len(as_list(value)):
                out["nullable"] = True
            if len(variants) == 1:
                out.update({k: v for k, v in variants[0].items() if k not in out})
            elif variants:
                out["anyOf"] = variants
        elif name == "properties":
            out[name] = {prop: gemini_schema(sub, defs, depth + 1) for prop, sub in as_dict(value).items()}
        elif name == "items":
            out[name] = gemini_schema(value, defs, depth + 1)
        elif name in _SCHEMA_KEYS:
            out[name] = value
    return out


def _declaration(tool: Tool) -> dict[str, Any]:
    declaration: dict[str, Any] = {"name": tool.name}
    if tool.description:
        declaration["description"] = tool.description
    parameters = gemini_schema(tool.parameters)
    # Gemini rejects an OBJECT schema with no properties: a tool without arguments sends none.
    if parameters.get("properties") or parameters.get("type") not in (None, "object", "OBJECT"):
        declaration["parameters"] = parameters
    return declaration


def _image(image: ImagePart) -> dict[str, Any]:
    inline = split_data_url(image.url) if image.url else None
    if inline is not None:
        return {"inlineData": {"mimeType": inline[0], "data": inline[1]}}
    if image.data is not None:
        return {"inlineData": {"mimeType": image.media_type or "image/png", "data": image.data}}
    url = image.url or ""
    file_data = {"fileUri": url}
    mime = image.media_type or mimetypes.guess_type(url)[0]
    if mime:
        file_data["mimeType"] = mime
    return {"fileData": file_data}


def _part(part: Part, names: Mapping[str, str]) -> dict[str, Any]:
    if isinstance(part, TextPart):
        return {"text": part.text}
    if isinstance(part, ImagePart):
        return _image(part)
    if isinstance(part, ToolCall):
        # extra carries part-level fields such as thoughtSignature, echoed back unchanged
        return {"functionCall": {"name": part.name, "args": part.arguments}, **part.extra}
    name = part.name or names.get(part.tool_call_id) or part.tool_call_id
    response = {"error": part.content} if part.is_error else {"content": part.content}
    return {"functionResponse": {"name": name, "response": response}}


def build_body(request: ChatRequest) -> dict[str, Any]:
    """The ``generateContent`` body for a canonical request (the model goes in the URL)."""
    names = tool_names_by_id(request.messages)
    body: dict[str, Any] = {
        "contents": [
            {"role": "model" if role == "assistant" else "user", "parts": [_part(p, names) for p in parts]}
            for role, parts in ordered_turns(request.messages)
        ]
    }
    if request.system:
        body["systemInstruction"] = {"parts": [{"text": request.system}]}
    config: dict[str, Any] = {}
    if request.max_tokens is not None:
        config["maxOutputTokens"] = request.max_tokens
    if request.temperature is not None:
        config["temperature"] = request.temperature
    if request.top_p is not None:
        config["topP"] = request.top_p
    if request.stop:
        config["stopSequences"] = list(request.stop)
    if config:
        body["generationConfig"] = config
    if request.tools:
        body["tools"] = [{"functionDeclarations": [_declaration(t) for t in request.tools]}]
    if request.tool_choice:
        mode = _TOOL_MODES.get(request.tool_choice)
        calling = {"mode": mode} if mode else {"mode": "ANY", "allowedFunctionNames": [request.tool_choice]}
        body["toolConfig"] = {"functionCallingConfig": calling}
    return merge_extra(body, request.extra)


def _api_root(endpoint: Endpoint) -> str:
    base = endpoint.base_url.rstrip("/")
    return base if _VERSIONED.search(base) else base + "/v1beta"


def _url(endpoint: Endpoint, model: str, *, stream: bool) -> str:
    # The model is checked and encoded as one segment under models/ or tunedModels/
    # (a BadRequest otherwise): it can never leave the base URL's path.
    method = "streamGenerateContent?alt=sse" if stream else "generateContent"
    return f"{_api_root(endpoint)}/{gemini_model_path(model)}:{method}"


def _headers(endpoint: Endpoint, key: ApiKey) -> dict[str, str]:
    auth = {"Authorization": f"Bearer {key.reveal()}"} if key.auth == "bearer" else {"x-goog-api-key": key.reveal()}
    return merge_headers({"content-type": "application/json"}, endpoint.headers, auth)


# ------------------------------------------------------------------ answers


def _finish(reason: str, has_calls: bool) -> FinishReason:
    if reason == "STOP" or (not reason and has_calls):
        return "tool_calls" if has_calls else "stop"  # a function call ends with STOP
    if reason == "MAX_TOKENS":
        return "length"
    if reason in _FILTERED:
        return "content_filter"
    return "other"


def _usage(raw: Any) -> Usage:
    meta = as_dict(raw)
    output = as_int(meta.get("candidatesTokenCount")) + as_int(meta.get("thoughtsTokenCount"))
    return Usage(input_tokens=as_int(meta.get("promptTokenCount")), output_tokens=output)


def _tool_call(part: Mapping[str, Any], number: int) -> ToolCall:
    call = as_dict(part.get("functionCall"))
    extra = {k: v for k, v in part.items() if k not in ("functionCall", "text")}
    return ToolCall(
        as_str(call.get("id")) or f"call_{number}", as_str(call.get("name")), as_dict(call.get("args")), extra
    )


def _parts(payload: Mapping[str, Any]) -> list[dict[str, Any]]:
    candidate = as_dict(next(iter(as_list(payload.get("candidates"))), None))
    return [as_dict(p) for p in as_list(as_dict(candidate.get("content")).get("parts"))]


def _finish_reason(payload: Mapping[str, Any]) -> str:
    return as_str(as_dict(next(iter(as_list(payload.get("candidates"))), None)).get("finishReason"))


def _blocked(payload: Mapping[str, Any]) -> bool:
    return not as_list(payload.get("candidates")) and bool(as_dict(payload.get("promptFeedback")).get("blockReason"))


def _is_text(part: Mapping[str, Any]) -> bool:
    return isinstance(part.get("text"), str) and not part.get("thought")  # thought summaries are not the answer


# ------------------------------------------------------------------ errors


def _details(err: Mapping[str, Any], kind: str) -> list[dict[str, Any]]:
    return [as_dict(d) for d in as_list(err.get("details")) if as_str(as_dict(d).get("@type")).endswith(kind)]


def _per_day(err: Mapping[str, Any]) -> bool:
    for failure in _details(err, "google.rpc.QuotaFailure"):
        for violation in as_list(failure.get("violations")):
            violation = as_dict(violation)
            names = as_str(violation.get("quotaId")) + " " + as_str(violation.get("quotaMetric"))
            if "perday" in names.lower().replace("_", ""):
                return True
    return False


def _retry_delay(err: Mapping[str, Any]) -> float | None:
    for info in _details(err, "google.rpc.RetryInfo"):
        delay = parse_duration(as_str(info.get("retryDelay")))
        if delay is not None:
            return delay
    return None


def classify(status: int, headers: Mapping[str, str], body: bytes) -> UpstreamError:
    """A Gemini error answer as a keywheel error."""
    err = error_object(loads(body)) or {}
    message = upstream_message(err, body, status)
    lowered = message.lower()
    rpc = as_str(err.get("status"))
    reasons = {as_str(d.get("reason")) for d in _details(err, "google.rpc.ErrorInfo")}
    retry_after = explicit_retry_after(headers)
    cls = class_for_status(status)
    daily = False
    if "API_KEY_INVALID" in reasons or "api key not valid" in lowered:
        cls = KeyInvalid
    elif status == 400 and "input token count" in lowered and "exceed" in lowered:
        cls = ContextTooLong
    elif status == 400 and rpc == "FAILED_PRECONDITION":
        cls = QuotaExhausted  # billing needed / free tier unavailable: the project must change plan
    elif status == 429 or rpc == "RESOURCE_EXHAUSTED":
        if _per_day(err):
            cls, retry_after, daily = QuotaExhausted, seconds_until_pacific_midnight(), True
        else:
            delay = _retry_delay(err)
            cls, retry_after = RateLimited, delay if delay is not None else retry_after
    error = cls(message, status=status, retry_after=retry_after, body=body)
    if daily and isinstance(error, QuotaExhausted):
        error.daily = True  # a PerDay quota: the project's, shared by every key of its group
    return error


def _in_band_error(payload: Any, raw: bytes) -> UpstreamError:
    err = error_object(payload) or {}
    status = as_status(err.get("code")) or _RPC_STATUS.get(as_str(err.get("status")), 500)
    return classify(status, {}, raw)


# ------------------------------------------------------------------ stream


class GeminiStreamParser:
    """``alt=sse`` chunks to canonical stream events; the stream ends when the connection does."""

    def __init__(self) -> None:
        self._calls = 0
        self._reason: str | None = None  # None until a chunk carried a finishReason (or a block)
        self._usage = Usage()
        self._model = ""
        self._id = ""

    def tap(self, event: SSEEvent) -> list[StreamEvent]:
        # Every Gemini chunk may carry usage and the finish reason: parse them all.
        return self.feed(event)

    def feed(self, event: SSEEvent) -> list[StreamEvent]:
        if not event.data.strip():
            return []
        raw = event.data.encode()
        payload = loads(raw)
        if error_object(payload) is not None:
            raise _in_band_error(payload, raw)
        if not isinstance(payload, dict):
            raise ServerError(f"malformed stream chunk: {truncate(event.data, 200)}", body=raw)
        self._model = as_str(payload.get("modelVersion")) or self._model
        self._id = as_str(payload.get("responseId")) or self._id
        if "usageMetadata" in payload:
            self._usage = _usage(payload["usageMetadata"])
        if _blocked(payload):
            self._reason = "BLOCKED"
            return []
        out: list[StreamEvent] = []
        for part in _parts(payload):
            if "functionCall" in part:
                call = _tool_call(part, self._calls)
                arguments = dumps(call.arguments).decode()
                out.append(
                    ToolCallDelta(self._calls, id=call.id, name=call.name, arguments=arguments, extra=call.extra)
                )
                self._calls += 1
            elif _is_text(part) and part["text"]:
                out.append(TextDelta(part["text"]))
        reason = _finish_reason(payload)
        if reason:
            self._reason = reason
        return out

    def close(self) -> list[StreamEvent]:
        if self._reason is None:
            raise NetworkError("stream ended before a chunk with a finishReason")
        finish: FinishReason = "content_filter" if self._reason == "BLOCKED" else _finish(self._reason, self._calls > 0)
        return [StreamEnd(finish, self._usage, model=self._model, id=self._id)]


# ------------------------------------------------------------------ adapter


class GeminiAdapter:
    """``POST {base}/v1beta/models/{model}:generateContent`` and ``:streamGenerateContent?alt=sse``."""

    dialect = "gemini"
    key_auth = "key"
    framing: Framing = SSE

    def build_request(
        self, endpoint: Endpoint, key: ApiKey, request: ChatRequest, model: str, *, stream: bool
    ) -> HttpRequest:
        return HttpRequest(
            "POST", _url(endpoint, model, stream=stream), _headers(endpoint, key), dumps(build_body(request))
        )

    def build_raw_request(
        self, endpoint: Endpoint, key: ApiKey, body: dict[str, Any], model: str, *, stream: bool
    ) -> HttpRequest:
        wire = {k: v for k, v in body.items() if k != "model"}  # the model lives in the URL
        return HttpRequest("POST", _url(endpoint, model, stream=stream), _headers(endpoint, key), dumps(wire))

    def parse_response(self, body: bytes) -> Completion:
        payload = loads(body)
        if error_object(payload) is not None:
            raise _in_band_error(payload, body)
        if not isinstance(payload, dict):
            raise ServerError(f"unparseable response: {truncate(body.decode('utf-8', 'replace'), 200)}", body=body)
        texts: list[str] = []
        calls: list[ToolCall] = []
        for part in _parts(payload):
            if "functionCall" in part:
                calls.append(_tool_call(part, len(calls)))
            elif _is_text(part):
                texts.append(part["text"])
        blocked = _blocked(payload)
        return Completion(
            text="".join(texts),
            tool_calls=calls,
            finish_reason="content_filter" if blocked else _finish(_finish_reason(payload), bool(calls)),
            usage=_usage(payload.get("usageMetadata")),
            model=as_str(payload.get("modelVersion")),
            id=as_str(payload.get("responseId")),
        )

    def stream_parser(self) -> GeminiStreamParser:
        return GeminiStreamParser()

    def classify_error(self, status: int, headers: Mapping[str, str], body: bytes) -> UpstreamError:
        return classify(status, headers, body)

    def probe_request(self, endpoint: Endpoint, key: ApiKey) -> HttpRequest:
        headers = {k: v for k, v in _headers(endpoint, key).items() if k.lower() != "content-type"}
        return HttpRequest("GET", f"{_api_root(endpoint)}/models?pageSize=1", headers)


PROVIDER = Provider(
    "gemini",
    GeminiAdapter(),
    base_url="https://generativelanguage.googleapis.com",
    model="gemini-2.5-flash",
    key_prefix="AIza",
    families=("gemini",),
)
