"""The Anthropic Messages dialect of the fake upstream (PROVIDERS.md section A)."""

from __future__ import annotations

from typing import ClassVar

import orjson

from keywheel.testing.behaviours import DEFAULT_RETRY_STYLE, Behaviour, retry_headers
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
    bearer,
    new_id,
    pieces_of,
    sse,
    tool_result_text,
    word_count,
)

MODELS = (
    ("claude-opus-4-7", "Claude Opus 4.7", "2026-09-16T00:00:00Z"),
    ("claude-sonnet-4-6", "Claude Sonnet 4.6", "2026-02-17T00:00:00Z"),
    ("claude-haiku-4-5", "Claude Haiku 4.5", "2025-10-01T00:00:00Z"),
)
# Under this version the API rejects sampling parameters even at their defaults.
STRICT_VERSION = "2026-10-21"
SAMPLING_PARAMS = ("temperature", "top_p", "top_k")


def _error(
    status: int, kind: str, message: str, headers: dict[str, str] | None = None, request_id: str | None = None
) -> Answer:
    request_id = request_id or new_id("req_")
    body = {"type": "error", "error": {"type": kind, "message": message}, "request_id": request_id}
    return Answer(status, body, {"request-id": request_id, **(headers or {})})


def _blocks(message: Json) -> list[Json]:
    content = message.get("content") if isinstance(message, dict) else None
    return content if isinstance(content, list) else []


class AnthropicDialect(Dialect):
    name: ClassVar[DialectName] = "anthropic"
    tool_call_prefix: ClassVar[str] = "toolu_"

    def credential(self, incoming: Incoming) -> str | None:
        return incoming.headers.get("x-api-key") or bearer(incoming.headers)

    def wants_stream(self, incoming: Incoming) -> bool:
        return isinstance(incoming.body, dict) and incoming.body.get("stream") is True

    def check(
        self, incoming: Incoming, required: tuple[str, ...] = ("model", "max_tokens", "messages")
    ) -> Answer | None:
        version = incoming.headers.get("anthropic-version")
        if not version:
            return _error(400, "invalid_request_error", "anthropic-version: header is required")
        body = incoming.body
        if not isinstance(body, dict):
            return _error(400, "invalid_request_error", "There was an issue with the request body: not a JSON object")
        for name in required:
            if name not in body:
                return _error(400, "invalid_request_error", f"{name}: Field required")
        if version == STRICT_VERSION:
            for param in SAMPLING_PARAMS:
                if param in body:
                    return _error(
                        400,
                        "invalid_request_error",
                        f"{param}: is not supported with anthropic-version {STRICT_VERSION}; "
                        "pin anthropic-version 2023-06-01 to use sampling parameters",
                    )
        return None

    def read(self, incoming: Incoming) -> Conversation:
        body = incoming.body
        messages = body.get("messages") if isinstance(body.get("messages"), list) else []
        input_tokens = max(1, word_count(body.get("system")) + word_count(messages))
        seen_result = any(b.get("type") == "tool_result" for m in messages for b in _blocks(m) if isinstance(b, dict))
        tool_result = None
        last = messages[-1] if messages else None
        if isinstance(last, dict) and last.get("role") == "user":
            results = [b for b in _blocks(last) if isinstance(b, dict) and b.get("type") == "tool_result"]
            if results:
                tool_result = tool_result_text(results[-1].get("content"))
        tool = None if seen_result else self._tool_to_call(body)
        return Conversation(str(body.get("model", "")), input_tokens, tool, tool_result)

    @staticmethod
    def _tool_to_call(body: Json) -> Tool | None:
        tools = [t for t in body.get("tools") or [] if isinstance(t, dict) and isinstance(t.get("name"), str)]
        choice = body.get("tool_choice") if isinstance(body.get("tool_choice"), dict) else {}
        if not tools or choice.get("type") == "none":
            return None
        if choice.get("type") == "tool":
            tools = [t for t in tools if t["name"] == choice.get("name")] or tools
        schema = tools[0].get("input_schema")
        return Tool(tools[0]["name"], schema if isinstance(schema, dict) else {})

    @staticmethod
    def _usage(reply: Reply, output_tokens: int) -> dict[str, Json]:
        return {
            "input_tokens": reply.input_tokens,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
            "output_tokens": output_tokens,
            "service_tier": "standard",
        }

    def _message(self, reply: Reply, content: list[Json], stop_reason: str | None, output_tokens: int) -> Json:
        return {
            "id": "msg_" + reply.response_id,
            "type": "message",
            "role": "assistant",
            "model": reply.model,
            "content": content,
            "stop_reason": stop_reason,
            "stop_sequence": None,
            "usage": self._usage(reply, output_tokens),
        }

    def response(self, turn: Turn) -> Answer:
        reply = turn.reply
        call = reply.tool_call
        if call is not None:
            block: Json = {"type": "tool_use", "id": call.id, "name": call.name, "input": dict(call.arguments)}
        else:
            block = {"type": "text", "text": reply.text}
        body = self._message(reply, [block], "tool_use" if call else "end_turn", reply.output_tokens)
        return Answer(200, body, {"request-id": "req_" + reply.response_id})

    def stream(self, turn: Turn) -> Streamed:
        reply = turn.reply
        start = {"type": "message_start", "message": self._message(reply, [], None, 1)}
        frames = [Frame(sse(start, "message_start"))]
        call = reply.tool_call
        if call is not None:
            block: Json = {"type": "tool_use", "id": call.id, "name": call.name, "input": {}}
            partial = orjson.dumps(dict(call.arguments)).decode()
            deltas = [{"type": "input_json_delta", "partial_json": p} for p in pieces_of(partial, 8)]
        else:
            block = {"type": "text", "text": ""}
            deltas = [{"type": "text_delta", "text": p} for p in reply.pieces]
        opening = {"type": "content_block_start", "index": 0, "content_block": block}
        frames.append(Frame(sse(opening, "content_block_start")))
        frames.append(Frame(sse({"type": "ping"}, "ping")))
        for delta in deltas:
            event = {"type": "content_block_delta", "index": 0, "delta": delta}
            frames.append(Frame(sse(event, "content_block_delta"), content=True))
        frames.append(Frame(sse({"type": "content_block_stop", "index": 0}, "content_block_stop")))
        stop = {"stop_reason": "tool_use" if call else "end_turn", "stop_sequence": None}
        usage = self._usage(reply, reply.output_tokens)
        del usage["service_tier"]
        frames.append(Frame(sse({"type": "message_delta", "delta": stop, "usage": usage}, "message_delta")))
        frames.append(Frame(sse({"type": "message_stop"}, "message_stop")))
        headers = {"request-id": "req_" + reply.response_id, "cache-control": "no-cache"}
        return Streamed("text/event-stream", frames, headers)

    def stream_error(self, turn: Turn) -> list[Frame]:
        error = {
            "type": "error",
            "error": {"type": "overloaded_error", "message": "Overloaded"},
            "request_id": "req_" + turn.reply.response_id,
        }
        return [Frame(sse(error, "error"))]

    def error(self, behaviour: Behaviour, incoming: Incoming) -> Answer:
        kind = behaviour.kind
        if kind == "rate_limit":
            style = behaviour.text("style") or DEFAULT_RETRY_STYLE[self.name]
            headers = retry_headers(style, behaviour.optional_number("retry_after"))
            message = "This request would exceed your organization's rate limit of 50 requests per minute."
            return _error(429, "rate_limit_error", message, headers)
        if kind == "quota":
            message = (
                "Your credit balance is too low to access the Anthropic API. "
                "Please go to Plans & Billing to upgrade or purchase credits."
            )
            return _error(402, "billing_error", message)
        if kind == "spend_limit":
            if behaviour.text("shape") == "429":  # the tier's monthly spend cap: no retry timing at all
                message = "You have reached your monthly usage limit for your API usage tier."
                return _error(429, "rate_limit_error", message)
            until = behaviour.text("until")
            message = f"You have reached your specified API usage limits. You will regain access on {until}."
            return _error(400, "invalid_request_error", message)
        if kind == "invalid":
            return _error(401, "authentication_error", "invalid x-api-key")
        if kind == "forbidden":
            message = "Your API key does not have permission to use the specified resource."
            return _error(403, "permission_error", message)
        if kind == "not_found":
            model = incoming.body.get("model") if isinstance(incoming.body, dict) else None
            return _error(404, "not_found_error", f"model: {model}")
        if kind == "server_error":
            return _error(500, "api_error", "Internal server error")
        if kind == "overloaded":
            return _error(529, "overloaded_error", "Overloaded")
        if kind == "bad_request":
            field = behaviour.text("field") or "max_tokens"
            return _error(400, "invalid_request_error", f"{field}: Input should be a valid value")
        if kind == "context_too_long":
            return _error(400, "invalid_request_error", "prompt is too long: 208451 tokens > 200000 maximum")
        raise ValueError(f"{kind!r} is not an error behaviour")

    def missing_key(self) -> Answer:
        return _error(401, "authentication_error", "x-api-key header is required")

    def count(self, incoming: Incoming) -> Answer:
        problem = self.check(incoming, ("model", "messages"))
        if problem is not None:
            return problem
        if "stream" in incoming.body or "max_tokens" in incoming.body:  # as the API: count_tokens takes neither
            field = "stream" if "stream" in incoming.body else "max_tokens"
            return _error(400, "invalid_request_error", f"{field}: Extra inputs are not permitted")
        return Answer(200, {"input_tokens": self.read(incoming).input_tokens})

    def models(self) -> Answer:
        data = [_model_entry(*model) for model in MODELS]
        body = {"data": data, "has_more": False, "first_id": MODELS[0][0], "last_id": MODELS[-1][0]}
        return Answer(200, body, {"request-id": new_id("req_")})

    def model(self, name: str) -> Answer:
        known = next((m for m in MODELS if m[0] == name), (name, name, "2026-01-01T00:00:00Z"))
        return Answer(200, _model_entry(*known), {"request-id": new_id("req_")})


def _model_entry(model_id: str, display_name: str, created_at: str) -> Json:
    return {"type": "model", "id": model_id, "display_name": display_name, "created_at": created_at}
