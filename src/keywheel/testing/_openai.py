"""The OpenAI chat-completions dialect of the fake upstream, in two flavours:
OpenAI itself (``/v1/…``, PROVIDERS.md section D) and OpenRouter
(``/api/v1/…``, section C: ``gen-`` ids, always-on usage with ``cost``,
``: OPENROUTER PROCESSING`` comments, ``{"error":{code,message,metadata}}``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
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

OPENAI_MODELS = (("gpt-4.1-mini", "system"), ("gpt-4.1", "system"), ("gpt-4o", "system"))
OPENROUTER_MODELS = (
    ("openai/gpt-4o", "OpenAI: GPT-4o", "0.0000025", "0.00001"),
    ("anthropic/claude-sonnet-4.5", "Anthropic: Claude Sonnet 4.5", "0.000003", "0.000015"),
    ("meta-llama/llama-3.3-70b-instruct:free", "Meta: Llama 3.3 70B Instruct (free)", "0", "0"),
)
CREATED = 1764100000
PROVIDER = "FakeProvider"
OPENAI_OVERLOADED = "The engine is currently overloaded, please try again later."


@dataclass(frozen=True, slots=True)
class KeyCredit:
    """What OpenRouter's ``GET /api/v1/key`` reports for one key (``limit=None``: no cap).

    ``usage_*`` default to ``usage``; ``label=None`` echoes part of the key, as OpenRouter's does
    (``sk-or-v1-abc...xyz``), so a test can prove the label never leaves keywheel."""

    limit: float | None = None
    usage: float = 0.0
    usage_daily: float | None = None
    is_free_tier: bool = False
    label: str | None = None
    limit_reset: str | None = None  # daily | weekly | monthly | None
    limit_remaining: float | None = None  # None: limit - usage (when limited)
    usage_weekly: float | None = None
    usage_monthly: float | None = None
    free_used: int = 0  # free_model_daily_requests.used
    free_limit: int | None = None  # None: 50 on the free tier, else 1000


def echo_label(key: str) -> str:
    """OpenRouter's label: the key's first part and last three characters."""
    return f"{key[: max(len(key) - 6, 8)]}...{key[-3:]}"


def _openai_error(status: int, message: str, kind: str, code: str | None, param: str | None = None) -> Answer:
    body = {"error": {"message": message, "type": kind, "param": param, "code": code}}
    return Answer(status, body, {"x-request-id": new_id("req_")})


def _openrouter_error(status: int, message: str, headers: dict[str, str] | None = None, **metadata: Json) -> Answer:
    error: dict[str, Json] = {"code": status, "message": message}
    if metadata:
        error["metadata"] = metadata
    return Answer(status, {"error": error}, headers or {})


class OpenAIDialect(Dialect):
    name: ClassVar[DialectName] = "openai"

    def __init__(self, *, openrouter: bool) -> None:
        self.openrouter = openrouter

    def credential(self, incoming: Incoming) -> str | None:
        return bearer(incoming.headers)

    def wants_stream(self, incoming: Incoming) -> bool:
        return isinstance(incoming.body, dict) and incoming.body.get("stream") is True

    def _include_usage(self, incoming: Incoming) -> bool:
        if self.openrouter:
            return True
        options = incoming.body.get("stream_options") if isinstance(incoming.body, dict) else None
        return isinstance(options, dict) and options.get("include_usage") is True

    def _bad(self, message: str, param: str | None, code: str | None) -> Answer:
        if self.openrouter:
            return _openrouter_error(400, message)
        return _openai_error(400, message, "invalid_request_error", code, param)

    def check(self, incoming: Incoming) -> Answer | None:
        body = incoming.body
        if not isinstance(body, dict):
            return self._bad("We could not parse the JSON body of your request.", None, None)
        if not body.get("model"):
            return self._bad("you must provide a model parameter", None, None)
        if not isinstance(body.get("messages"), list):
            return self._bad("Missing required parameter: 'messages'.", "messages", "missing_required_parameter")
        return None

    def read(self, incoming: Incoming) -> Conversation:
        body = incoming.body
        messages = [m for m in body.get("messages") or [] if isinstance(m, dict)]
        input_tokens = max(1, word_count(messages))
        seen_result = any(m.get("role") == "tool" for m in messages)
        tool_result = None
        if messages and messages[-1].get("role") == "tool":
            tool_result = tool_result_text(messages[-1].get("content"))
        tool = None if seen_result else self._tool_to_call(body)
        return Conversation(str(body.get("model", "")), input_tokens, tool, tool_result)

    @staticmethod
    def _tool_to_call(body: Json) -> Tool | None:
        declared = [t.get("function") for t in body.get("tools") or [] if isinstance(t, dict)]
        functions = [f for f in declared if isinstance(f, dict) and isinstance(f.get("name"), str)]
        choice = body.get("tool_choice")
        if not functions or choice == "none":
            return None
        if isinstance(choice, dict) and isinstance(choice.get("function"), dict):
            functions = [f for f in functions if f["name"] == choice["function"].get("name")] or functions
        schema = functions[0].get("parameters")
        return Tool(functions[0]["name"], schema if isinstance(schema, dict) else {})

    # -- replies ---------------------------------------------------------------------------------------------------

    def _id(self, reply: Reply) -> str:
        return ("gen-" if self.openrouter else "chatcmpl-") + reply.response_id

    def _headers(self, reply: Reply) -> dict[str, str]:
        return {"x-generation-id": self._id(reply)} if self.openrouter else {"x-request-id": new_id("req_")}

    def _usage(self, reply: Reply) -> dict[str, Json]:
        total = reply.input_tokens + reply.output_tokens
        usage: dict[str, Json] = {
            "prompt_tokens": reply.input_tokens,
            "completion_tokens": reply.output_tokens,
            "total_tokens": total,
        }
        if self.openrouter:
            usage["cost"] = round(total * 0.000001, 9)
            usage["prompt_tokens_details"] = {"cached_tokens": 0}
            usage["completion_tokens_details"] = {"reasoning_tokens": 0}
        else:
            usage["prompt_tokens_details"] = {"cached_tokens": 0, "audio_tokens": 0}
            usage["completion_tokens_details"] = {"reasoning_tokens": 0, "audio_tokens": 0}
        return usage

    def _envelope(self, reply: Reply, kind: str, choices: list[Json]) -> dict[str, Json]:
        envelope: dict[str, Json] = {"id": self._id(reply), "object": kind, "created": int(time.time())}
        envelope["model"] = reply.model
        if self.openrouter:
            envelope["provider"] = PROVIDER
        else:
            envelope["service_tier"] = "default"
            envelope["system_fingerprint"] = "fp_fake"
        envelope["choices"] = choices
        return envelope

    def _choice(self, finish_reason: str | None, **fields: Json) -> dict[str, Json]:
        choice: dict[str, Json] = {"index": 0, **fields, "logprobs": None, "finish_reason": finish_reason}
        if self.openrouter:
            choice["native_finish_reason"] = finish_reason
        return choice

    def response(self, turn: Turn) -> Answer:
        reply = turn.reply
        call = reply.tool_call
        message: dict[str, Json] = {"role": "assistant", "content": reply.text, "refusal": None}
        if call is not None:
            arguments = orjson.dumps(dict(call.arguments)).decode()
            message["tool_calls"] = [
                {"id": call.id, "type": "function", "function": {"name": call.name, "arguments": arguments}}
            ]
        if not self.openrouter:
            message["annotations"] = []
        choice = self._choice("tool_calls" if call else "stop", message=message)
        body = self._envelope(reply, "chat.completion", [choice])
        body["usage"] = self._usage(reply)
        return Answer(200, body, self._headers(reply))

    def _chunk(self, turn: Turn, choices: list[Json], usage: Json = None) -> bytes:
        chunk = self._envelope(turn.reply, "chat.completion.chunk", choices)
        if usage is not None or (self._include_usage(turn.incoming) and not self.openrouter):
            chunk["usage"] = usage
        return sse(chunk)

    def stream(self, turn: Turn) -> Streamed:
        reply = turn.reply
        frames = [Frame(b": OPENROUTER PROCESSING\n\n")] if self.openrouter else []
        call = reply.tool_call
        if call is not None:
            head = {"index": 0, "id": call.id, "type": "function", "function": {"name": call.name, "arguments": ""}}
            first: dict[str, Json] = {"role": "assistant", "content": None, "tool_calls": [head]}
            arguments = orjson.dumps(dict(call.arguments)).decode()
            deltas: list[Json] = [
                {"tool_calls": [{"index": 0, "function": {"arguments": p}}]} for p in pieces_of(arguments, 8)
            ]
        else:
            first = {"role": "assistant", "content": "", "refusal": None}
            deltas = [{"content": p} for p in reply.pieces]
        frames.append(Frame(self._chunk(turn, [self._choice(None, delta=first)])))
        for delta in deltas:
            frames.append(Frame(self._chunk(turn, [self._choice(None, delta=delta)]), content=True))
        finish = "tool_calls" if call else "stop"
        frames.append(Frame(self._chunk(turn, [self._choice(finish, delta={})])))
        if self.openrouter:  # current OpenRouter docs: the usage chunk repeats finish_reason
            last = self._choice(finish, delta={"content": ""})
            frames.append(Frame(self._chunk(turn, [last], usage=self._usage(reply))))
        elif self._include_usage(turn.incoming):
            frames.append(Frame(self._chunk(turn, [], usage=self._usage(reply))))
        frames.append(Frame(b"data: [DONE]\n\n"))
        return Streamed("text/event-stream", frames, self._headers(reply))

    def _openrouter_failure(self) -> dict[str, Json]:
        return {"code": 503, "message": "Provider overloaded", "metadata": {"error_type": "provider_overloaded"}}

    def stream_error(self, turn: Turn) -> list[Frame]:
        if self.openrouter:
            chunk = self._envelope(turn.reply, "chat.completion.chunk", [self._choice("error", delta={"content": ""})])
            chunk["error"] = self._openrouter_failure()
            return [Frame(sse(chunk))]
        # OpenAI's own mid-stream error format is unconfirmed; its SDK raises on any "error" payload.
        error = {"message": OPENAI_OVERLOADED, "type": "server_error", "param": None, "code": None}
        return [Frame(sse({"error": error}))]

    def failed_response(self, turn: Turn) -> Answer:
        if not self.openrouter:
            return super().failed_response(turn)
        # OpenRouter documents this: a 200 whose choice failed.
        choice = self._choice("error", message={"role": "assistant", "content": ""}, error=self._openrouter_failure())
        body = self._envelope(turn.reply, "chat.completion", [choice])
        body["usage"] = self._usage(turn.reply)
        return Answer(200, body, self._headers(turn.reply))

    def error_in_200(self, turn: Turn) -> Answer:
        # OpenRouter documents a 200 whose choice failed; OpenAI has no such shape: its error object, with 200.
        return self.failed_response(turn) if self.openrouter else super().error_in_200(turn)

    # -- errors ----------------------------------------------------------------------------------------------------

    def error(self, behaviour: Behaviour, incoming: Incoming) -> Answer:
        model = incoming.body.get("model") if isinstance(incoming.body, dict) else None
        if behaviour.kind == "spend_limit":  # Anthropic's spend caps; elsewhere a plain quota
            behaviour = Behaviour.build("quota", {})
        if self.openrouter:
            return self._openrouter(behaviour, model)
        kind = behaviour.kind
        if kind == "rate_limit":
            retry_after = behaviour.optional_number("retry_after")
            style = behaviour.text("style") or DEFAULT_RETRY_STYLE[self.name]
            message = "Rate limit reached for requests per min (RPM) in organization org-fake: Limit 3, Used 3."
            if retry_after is not None:
                message += f" Please try again in {retry_after:g}s."
            answer = _openai_error(429, message, "requests", "rate_limit_exceeded")
            return Answer(429, answer.body, {**answer.headers, **retry_headers(style, retry_after)})
        if kind == "quota":
            message = (
                "You exceeded your current quota, please check your plan and billing details. For more information "
                "on this error, read the docs: https://platform.openai.com/docs/guides/error-codes/api-errors."
            )
            return _openai_error(429, message, "insufficient_quota", "insufficient_quota")
        if kind == "invalid":
            message = "Incorrect API key provided. You can find your API key at https://platform.openai.com/api-keys."
            return _openai_error(401, message, "invalid_request_error", "invalid_api_key")
        if kind == "forbidden":
            message = "Country, region, or territory not supported"
            return _openai_error(403, message, "request_forbidden", "unsupported_country_region_territory")
        if kind == "not_found":
            message = f"The model `{model}` does not exist or you do not have access to it."
            return _openai_error(404, message, "invalid_request_error", "model_not_found")
        if kind == "server_error":
            message = "The server had an error while processing your request. Sorry about that!"
            return _openai_error(500, message, "server_error", None)
        if kind == "overloaded":
            return _openai_error(503, OPENAI_OVERLOADED, "server_error", None)
        if kind == "bad_request":
            field = behaviour.text("field") or "max_completion_tokens"
            return _openai_error(400, f"Invalid value for '{field}'.", "invalid_request_error", "invalid_value", field)
        if kind == "context_too_long":
            message = (
                "This model's maximum context length is 128000 tokens. However, your messages resulted in "
                "130000 tokens. Please reduce the length of the messages."
            )
            return _openai_error(400, message, "invalid_request_error", "context_length_exceeded", "messages")
        raise ValueError(f"{kind!r} is not an error behaviour")

    @staticmethod
    def _openrouter(behaviour: Behaviour, model: Json) -> Answer:
        kind = behaviour.kind
        if kind == "rate_limit":
            style = behaviour.text("style") or DEFAULT_RETRY_STYLE["openai"]
            headers = retry_headers(style, behaviour.optional_number("retry_after"))
            return _openrouter_error(429, "Rate limit exceeded", headers, error_type="rate_limit_exceeded")
        if kind == "quota":
            headers = retry_headers("retry-after", behaviour.optional_number("retry_after"))
            message = "Insufficient credits. Add more using https://openrouter.ai/settings/credits"
            source = behaviour.text("limit_source")
            return _openrouter_error(402, message, headers, limit_source=source, error_type="payment_required")
        if kind == "invalid":
            return _openrouter_error(401, "User not found.", error_type="authentication")
        if kind == "forbidden":
            return _openrouter_error(
                403,
                f'{model} requires moderation on {PROVIDER}. Your input was flagged for "harassment".',
                reasons=["harassment"],
                flagged_input="the quick brown fox...",
                provider_name=PROVIDER,
                model_slug=model,
            )
        if kind == "not_found":
            return _openrouter_error(404, f"No endpoints found for {model}.")
        if kind == "server_error":
            return _openrouter_error(500, "Internal Server Error", error_type="server")
        if kind == "overloaded":
            return _openrouter_error(503, "Provider overloaded", error_type="provider_overloaded")
        if kind == "bad_request":
            field = behaviour.text("field") or "max_tokens"
            return _openrouter_error(400, f"Invalid value for '{field}'.")
        if kind == "context_too_long":
            message = (
                "This endpoint's maximum context length is 131072 tokens. However, you requested about 140000 "
                "tokens (139000 of text input, 1000 in the output). Please reduce the length of either one."
            )
            return _openrouter_error(400, message, error_type="context_length_exceeded")
        raise ValueError(f"{kind!r} is not an error behaviour")

    def missing_key(self) -> Answer:
        if self.openrouter:
            return _openrouter_error(401, "No auth credentials found")
        message = (
            "You didn't provide an API key. You need to provide your API key in an Authorization header "
            "using Bearer auth (i.e. Authorization: Bearer YOUR_KEY)."
        )
        return _openai_error(401, message, "invalid_request_error", None)

    def models(self) -> Answer:
        data: list[Json]
        if self.openrouter:
            data = [
                {
                    "id": slug,
                    "object": "model",
                    "created": CREATED,
                    "owned_by": slug.split("/", 1)[0],
                    "name": name,
                    "context_length": 131072,
                    "pricing": {"prompt": prompt, "completion": completion},
                }
                for slug, name, prompt, completion in OPENROUTER_MODELS
            ]
        else:
            data = [{"id": m, "object": "model", "created": CREATED, "owned_by": o} for m, o in OPENAI_MODELS]
        return Answer(200, {"object": "list", "data": data})

    def model(self, name: str) -> Answer:
        owner = name.split("/", 1)[0] if self.openrouter and "/" in name else "system"
        return Answer(200, {"id": name, "object": "model", "created": CREATED, "owned_by": owner})

    @staticmethod
    def key_info(credit: KeyCredit, key: str = "") -> Answer:
        """OpenRouter's ``GET /api/v1/key`` body for one key."""
        remaining = credit.limit_remaining
        if remaining is None and credit.limit is not None:
            remaining = max(0.0, credit.limit - credit.usage)
        daily = credit.usage if credit.usage_daily is None else credit.usage_daily
        free_limit = credit.free_limit if credit.free_limit is not None else (50 if credit.is_free_tier else 1000)
        data = {
            "label": credit.label if credit.label is not None else echo_label(key),
            "limit": credit.limit,
            "limit_reset": credit.limit_reset,
            "limit_remaining": None if credit.limit is None else remaining,
            "include_byok_in_limit": False,
            "usage": credit.usage,
            "usage_daily": daily,
            "usage_weekly": credit.usage if credit.usage_weekly is None else credit.usage_weekly,
            "usage_monthly": credit.usage if credit.usage_monthly is None else credit.usage_monthly,
            "byok_usage": 0,
            "byok_usage_daily": 0,
            "byok_usage_weekly": 0,
            "byok_usage_monthly": 0,
            "is_free_tier": credit.is_free_tier,
            "is_management_key": False,
            "is_provisioning_key": False,
            "expires_at": None,
            "free_model_daily_requests": {
                "used": credit.free_used,
                "limit": free_limit,
                "remaining": max(free_limit - credit.free_used, 0),
            },
            "rate_limit": {"requests": -1, "interval": "10s", "note": "This field is deprecated and safe to ignore."},
        }
        return Answer(200, {"data": data})
