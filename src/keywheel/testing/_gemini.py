"""The Gemini generateContent dialect of the fake upstream (PROVIDERS.md section B)."""

from __future__ import annotations

from typing import ClassVar

import orjson

from keywheel.testing.behaviours import DEFAULT_RETRY_STYLE, Behaviour, proto_duration, retry_headers
from keywheel.testing.dialects import (
    Answer,
    Conversation,
    Dialect,
    DialectName,
    Frame,
    Incoming,
    Json,
    Reply,
    Streamed,
    Tool,
    Turn,
    sse,
    tool_result_text,
    word_count,
)

MODELS = (
    ("gemini-2.5-flash", "Gemini 2.5 Flash"),
    ("gemini-2.5-pro", "Gemini 2.5 Pro"),
    ("gemini-2.5-flash-lite", "Gemini 2.5 Flash-Lite"),
)
RPC = "type.googleapis.com/google.rpc."
PER_MINUTE = "GenerateRequestsPerMinutePerProjectPerModel-FreeTier"
PER_DAY = "GenerateRequestsPerDayPerProjectPerModel-FreeTier"
QUOTA_MESSAGE = (
    "You exceeded your current quota, please check your plan and billing details. "
    "For more information on this error, head to: https://ai.google.dev/gemini-api/docs/rate-limits."
)
OVERLOADED = "The model is overloaded. Please try again later."
KEY_INVALID = "API key not valid. Please pass a valid API key."


def _error(code: int, status: str, message: str, details: list[Json] | None = None, **headers: str) -> Answer:
    error: dict[str, Json] = {"code": code, "message": message, "status": status}
    if details:
        error["details"] = details
    return Answer(code, {"error": error}, headers)


def _quota_details(quota_id: str, limit: str, model: str, retry_after: float | None) -> list[Json]:
    violation = {
        "quotaMetric": "generativelanguage.googleapis.com/generate_content_free_tier_requests",
        "quotaId": quota_id,
        "quotaDimensions": {"location": "global", "model": model},
        "quotaValue": limit,
    }
    details: list[Json] = [
        {"@type": RPC + "QuotaFailure", "violations": [violation]},
        {
            "@type": RPC + "Help",
            "links": [
                {
                    "description": "Learn more about Gemini API quotas",
                    "url": "https://ai.google.dev/gemini-api/docs/rate-limits",
                }
            ],
        },
    ]
    if retry_after is not None:
        details.append({"@type": RPC + "RetryInfo", "retryDelay": proto_duration(retry_after)})
    return details


def model_in(path: str) -> str:
    """``gemini-2.5-flash`` out of ``/v1beta/models/gemini-2.5-flash:generateContent``."""
    tail = path.split("/models/", 1)[-1]
    return tail.split(":", 1)[0]


def _parts(content: Json) -> list[Json]:
    parts = content.get("parts") if isinstance(content, dict) else None
    return [p for p in parts if isinstance(p, dict)] if isinstance(parts, list) else []


class GeminiDialect(Dialect):
    name: ClassVar[DialectName] = "gemini"

    def credential(self, incoming: Incoming) -> str | None:
        return incoming.headers.get("x-goog-api-key") or incoming.query.get("key") or None

    def wants_stream(self, incoming: Incoming) -> bool:
        return incoming.path.endswith(":streamGenerateContent")

    @staticmethod
    def _sse(incoming: Incoming) -> bool:
        return incoming.query.get("alt") == "sse"

    def check(self, incoming: Incoming) -> Answer | None:
        body = incoming.body
        if not isinstance(body, dict):
            return _error(400, "INVALID_ARGUMENT", "Invalid JSON payload received. Expected an object.")
        if not isinstance(body.get("contents"), list) or not body["contents"]:
            return _error(400, "INVALID_ARGUMENT", "* GenerateContentRequest.contents: contents is not specified\n")
        return None

    def read(self, incoming: Incoming) -> Conversation:
        body = incoming.body
        contents = [c for c in body.get("contents") or [] if isinstance(c, dict)]
        system = body.get("systemInstruction", body.get("system_instruction"))
        input_tokens = max(1, word_count(system) + word_count(contents))
        seen_result = any("functionResponse" in p for c in contents for p in _parts(c))
        tool_result = None
        if contents and contents[-1].get("role") != "model":
            results = [p["functionResponse"] for p in _parts(contents[-1]) if "functionResponse" in p]
            if results and isinstance(results[-1], dict):
                tool_result = tool_result_text(results[-1].get("response"))
        tool = None if seen_result else self._tool_to_call(body)
        return Conversation(model_in(incoming.path), input_tokens, tool, tool_result)

    @staticmethod
    def _tool_to_call(body: Json) -> Tool | None:
        declarations: list[Json] = []
        for tool in body.get("tools") or []:
            if isinstance(tool, dict):
                found = tool.get("functionDeclarations", tool.get("function_declarations")) or []
                declarations += [d for d in found if isinstance(d, dict) and isinstance(d.get("name"), str)]
        config = (body.get("toolConfig") or {}).get("functionCallingConfig") or {}
        if not declarations or str(config.get("mode", "")).upper() == "NONE":
            return None
        allowed = config.get("allowedFunctionNames") or []
        declarations = [d for d in declarations if d["name"] in allowed] or declarations
        # proto3 JSON: the real API takes camelCase and snake_case, and google-genai sends parameters_json_schema
        first = declarations[0]
        schema = first.get("parametersJsonSchema") or first.get("parameters_json_schema") or first.get("parameters")
        return Tool(declarations[0]["name"], schema if isinstance(schema, dict) else {})

    @staticmethod
    def _usage(reply: Reply, final: bool) -> dict[str, Json]:
        usage: dict[str, Json] = {"promptTokenCount": reply.input_tokens}
        if final:
            usage["candidatesTokenCount"] = reply.output_tokens
        usage["totalTokenCount"] = reply.input_tokens + (reply.output_tokens if final else 0)
        usage["promptTokensDetails"] = [{"modality": "TEXT", "tokenCount": reply.input_tokens}]
        return usage

    @staticmethod
    def _chunk(reply: Reply, parts: list[Json], final: bool) -> Json:
        candidate: dict[str, Json] = {"content": {"parts": parts, "role": "model"}}
        if final:
            candidate["finishReason"] = "STOP"
        candidate["index"] = 0
        return {
            "candidates": [candidate],
            "usageMetadata": GeminiDialect._usage(reply, final),
            "modelVersion": reply.model,
            "responseId": reply.response_id,
        }

    @staticmethod
    def _call_part(reply: Reply) -> Json:
        call = reply.tool_call
        assert call is not None
        return {"functionCall": {"name": call.name, "args": dict(call.arguments)}}

    def response(self, turn: Turn) -> Answer:
        reply = turn.reply
        part = self._call_part(reply) if reply.tool_call else {"text": reply.text}
        return Answer(200, self._chunk(reply, [part], final=True))

    def stream(self, turn: Turn) -> Streamed:
        reply = turn.reply
        if reply.tool_call is not None:
            chunks = [self._chunk(reply, [self._call_part(reply)], final=True)]
        else:
            pieces = reply.pieces
            chunks = [self._chunk(reply, [{"text": p}], final=i == len(pieces) - 1) for i, p in enumerate(pieces)]
        if self._sse(turn.incoming):
            frames = [Frame(sse(chunk, crlf=True), content=True) for chunk in chunks]
            return Streamed("text/event-stream", frames)
        # Without alt=sse the answer is one JSON array, written element by element.
        frames = [Frame(b"[")]
        frames += [Frame((b"," if i else b"") + b"\r\n" + orjson.dumps(c), content=True) for i, c in enumerate(chunks)]
        return Streamed("application/json", [*frames, Frame(b"\r\n]")])

    def unterminated(self, turn: Turn) -> Streamed:
        # Gemini's end is the finishReason on the last chunk (and "]" without alt=sse): every chunk without it.
        reply = turn.reply
        if reply.tool_call is not None:
            chunks = [self._chunk(reply, [self._call_part(reply)], final=False)]
        else:
            chunks = [self._chunk(reply, [{"text": p}], final=False) for p in reply.pieces]
        if self._sse(turn.incoming):
            return Streamed("text/event-stream", [Frame(sse(chunk, crlf=True), content=True) for chunk in chunks])
        frames = [Frame(b"[")]
        frames += [Frame((b"," if i else b"") + b"\r\n" + orjson.dumps(c), content=True) for i, c in enumerate(chunks)]
        return Streamed("application/json", frames)

    def stream_error(self, turn: Turn) -> list[Frame]:
        error = {"error": {"code": 503, "message": OVERLOADED, "status": "UNAVAILABLE"}}
        if self._sse(turn.incoming):
            return [Frame(sse(error, crlf=True))]
        return [Frame((b"," if turn.sent else b"") + b"\r\n" + orjson.dumps(error)), Frame(b"\r\n]")]

    def error(self, behaviour: Behaviour, incoming: Incoming) -> Answer:
        if behaviour.kind == "spend_limit":  # Anthropic's spend caps; elsewhere a plain quota
            behaviour = Behaviour.build("quota", {})
        kind = behaviour.kind
        model = model_in(incoming.path) or "gemini-2.5-flash"
        if kind == "rate_limit":
            style = behaviour.text("style") or DEFAULT_RETRY_STYLE[self.name]
            retry_after = behaviour.optional_number("retry_after")
            in_body = retry_after if style == "retry-info" else None
            message = QUOTA_MESSAGE
            if in_body is not None:
                message += f" Please retry in {proto_duration(in_body)}."
            details = _quota_details(PER_MINUTE, "10", model, in_body)
            return _error(429, "RESOURCE_EXHAUSTED", message, details, **retry_headers(style, retry_after))
        if kind == "quota":
            details = _quota_details(PER_DAY, "250", model, behaviour.optional_number("retry_after"))
            return _error(429, "RESOURCE_EXHAUSTED", QUOTA_MESSAGE, details)
        if kind == "invalid":
            details = [
                {
                    "@type": RPC + "ErrorInfo",
                    "reason": "API_KEY_INVALID",
                    "domain": "googleapis.com",
                    "metadata": {"service": "generativelanguage.googleapis.com"},
                },
                {"@type": RPC + "LocalizedMessage", "locale": "en-US", "message": KEY_INVALID},
            ]
            return _error(400, "INVALID_ARGUMENT", KEY_INVALID, details)
        if kind == "forbidden":
            return _error(403, "PERMISSION_DENIED", "The caller does not have permission")
        if kind == "not_found":
            version = incoming.path.strip("/").split("/", 1)[0]
            message = (
                f"models/{model} is not found for API version {version}, or is not supported for generateContent. "
                "Call ListModels to see the list of available models and their supported methods."
            )
            return _error(404, "NOT_FOUND", message)
        if kind == "server_error":
            message = (
                "An internal error has occurred. Please retry or report in "
                "https://developers.generativeai.google/guide/troubleshooting"
            )
            return _error(500, "INTERNAL", message)
        if kind == "overloaded":
            return _error(503, "UNAVAILABLE", OVERLOADED)
        if kind == "bad_request":
            field = behaviour.text("field") or "generation_config.max_output_tokens"
            violation = {"field": field, "description": "Invalid value"}
            details = [{"@type": RPC + "BadRequest", "fieldViolations": [violation]}]
            return _error(400, "INVALID_ARGUMENT", f"Invalid value at '{field}' (TYPE_INT32), \"x\"", details)
        if kind == "context_too_long":
            message = "The input token count (1200000) exceeds the maximum number of tokens allowed (1048576)."
            return _error(400, "INVALID_ARGUMENT", message)
        raise ValueError(f"{kind!r} is not an error behaviour")

    def missing_key(self) -> Answer:
        message = (
            "Method doesn't allow unregistered callers (callers without established identity). "
            "Please use API Key or other form of API consumer identity to call this API."
        )
        return _error(403, "PERMISSION_DENIED", message)

    def count(self, incoming: Incoming) -> Answer:
        body = incoming.body if isinstance(incoming.body, dict) else {}
        inner = body.get("generateContentRequest", body.get("generate_content_request"))
        request = inner if isinstance(inner, dict) else body
        talk = self.read(Incoming(incoming.method, incoming.path, incoming.query, incoming.headers, request))
        return Answer(200, {"totalTokens": talk.input_tokens})

    def models(self) -> Answer:
        return Answer(200, {"models": [_model_entry(model, display) for model, display in MODELS]})

    def model(self, name: str) -> Answer:
        display = next((d for m, d in MODELS if m == name), name)
        return Answer(200, _model_entry(name, display))


def _model_entry(model: str, display: str) -> Json:
    return {
        "name": f"models/{model}",
        "version": "001",
        "displayName": display,
        "description": f"Fake {display}",
        "inputTokenLimit": 1048576,
        "outputTokenLimit": 65536,
        "supportedGenerationMethods": ["generateContent", "countTokens", "createCachedContent"],
        "temperature": 1,
        "topP": 0.95,
        "topK": 64,
        "maxTemperature": 2,
        "thinking": True,
    }
