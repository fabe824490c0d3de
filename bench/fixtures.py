"""What the stand-in upstream answers, what the clients send, and how a good answer is recognised.

The answers follow ../shared/PROVIDERS.md (OpenRouter = OpenAI chat shape + usage with cost;
Anthropic A4 event sequence; Gemini CRLF SSE).  They are rendered into the nginx config by
nginx_upstream.py, so they must not contain a ``$`` (nginx would read it as a variable).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

CREATED = 1764100000
WORDS = ["The", " answer", " to", " 2+2", " is", " 4", "."]  # 7 content deltas -> ~10 events per stream
TEXT = "".join(WORDS)

OPENAI_MODEL = "openai/gpt-4o-mini"
ANTHROPIC_MODEL = "claude-sonnet-4-5"
GEMINI_MODEL = "gemini-2.5-flash"


def _compact(obj: object) -> str:
    return json.dumps(obj, separators=(",", ":"))


def _sse(events: list[str], newline: str = "\n") -> str:
    return "".join(f"{event}{newline}{newline}" for event in events)


# --- OpenAI / OpenRouter ---------------------------------------------------------------------

OPENAI_USAGE = {"prompt_tokens": 20, "completion_tokens": 7, "total_tokens": 27, "cost": 0.00006}


def openai_chat() -> str:
    return _compact(
        {
            "id": "gen-bench-1",
            "object": "chat.completion",
            "created": CREATED,
            "model": OPENAI_MODEL,
            "provider": "OpenAI",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": TEXT},
                    "finish_reason": "stop",
                    "native_finish_reason": "stop",
                    "logprobs": None,
                }
            ],
            "usage": OPENAI_USAGE,
        }
    )


def openai_stream() -> str:
    def chunk(delta: dict[str, str], finish: str | None = None, **extra: object) -> str:
        body = {
            "id": "gen-bench-1",
            "object": "chat.completion.chunk",
            "created": CREATED,
            "model": OPENAI_MODEL,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            **extra,
        }
        return "data: " + _compact(body)

    events = [": OPENROUTER PROCESSING", chunk({"role": "assistant", "content": ""})]
    events += [chunk({"content": word}) for word in WORDS]
    events.append(chunk({"content": ""}, "stop"))
    events.append(chunk({"content": ""}, "stop", usage=OPENAI_USAGE))
    events.append("data: [DONE]")
    return _sse(events)


# --- Anthropic ---------------------------------------------------------------------------------


def anthropic_message() -> str:
    return _compact(
        {
            "id": "msg_bench1",
            "type": "message",
            "role": "assistant",
            "model": ANTHROPIC_MODEL,
            "content": [{"type": "text", "text": TEXT}],
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": {"input_tokens": 20, "output_tokens": 7},
        }
    )


def anthropic_stream() -> str:
    def event(name: str, **data: object) -> str:
        return f"event: {name}\ndata: " + _compact({"type": name, **data})

    start: dict[str, object] = {
        "id": "msg_bench1",
        "type": "message",
        "role": "assistant",
        "model": ANTHROPIC_MODEL,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {"input_tokens": 20, "output_tokens": 1},
    }
    events = [
        event("message_start", message=start),
        event("content_block_start", index=0, content_block={"type": "text", "text": ""}),
        event("ping"),
    ]
    events += [event("content_block_delta", index=0, delta={"type": "text_delta", "text": w}) for w in WORDS]
    events += [
        event("content_block_stop", index=0),
        event("message_delta", delta={"stop_reason": "end_turn", "stop_sequence": None}, usage={"output_tokens": 7}),
        event("message_stop"),
    ]
    return _sse(events)


# --- Gemini ------------------------------------------------------------------------------------


def _gemini_response(text: str, usage_tokens: int, finish: bool) -> dict[str, object]:
    candidate: dict[str, object] = {"content": {"role": "model", "parts": [{"text": text}]}, "index": 0}
    if finish:
        candidate["finishReason"] = "STOP"
    return {
        "candidates": [candidate],
        "usageMetadata": {
            "promptTokenCount": 20,
            "candidatesTokenCount": usage_tokens,
            "totalTokenCount": 20 + usage_tokens,
        },
        "modelVersion": GEMINI_MODEL,
        "responseId": "bench-gemini-1",
    }


def gemini_response() -> str:
    return _compact(_gemini_response(TEXT, len(WORDS), finish=True))


def gemini_stream() -> str:
    last = len(WORDS) - 1
    events = ["data: " + _compact(_gemini_response(word, i + 1, finish=i == last)) for i, word in enumerate(WORDS)]
    return _sse(events, newline="\r\n")


def openrouter_429() -> str:
    """OpenRouter's rate-limit answer (sent with ``retry-after``), for keys named ``...-cool-N``."""
    return _compact(
        {
            "error": {
                "code": 429,
                "message": "Rate limit exceeded: bench cooling key",
                "metadata": {"error_type": "rate_limit_exceeded"},
            }
        }
    )


# --- OpenRouter key info -------------------------------------------------------------------------


def openrouter_key() -> str:
    return _compact(
        {
            "data": {
                "label": "sk-or-v1-ben...ch",
                "limit": None,
                "limit_reset": None,
                "limit_remaining": None,
                "include_byok_in_limit": False,
                "usage": 0.25,
                "usage_daily": 0.01,
                "usage_weekly": 0.05,
                "usage_monthly": 0.25,
                "is_free_tier": False,
                "is_management_key": False,
                "is_provisioning_key": False,
                "expires_at": None,
                "free_model_daily_requests": {"used": 0, "limit": 1000, "remaining": 1000},
            }
        }
    )


# --- What clients send ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Dialect:
    """One inbound API shape: where requests go, what they carry, how a good answer looks."""

    name: str
    body: Callable[[bool], bytes]
    path: Callable[[bool], str]
    ok: Callable[[bytes, bool], bool]


def openai_body(stream: bool, model: str = OPENAI_MODEL) -> bytes:
    body: dict[str, object] = {
        "model": model,
        "max_tokens": 64,
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 2+2?"}],
    }
    if stream:
        body["stream"] = True
    return _compact(body).encode()


def _anthropic_body(stream: bool) -> bytes:
    body: dict[str, object] = {
        "model": ANTHROPIC_MODEL,
        "max_tokens": 64,
        "system": "Be brief.",
        "messages": [{"role": "user", "content": "What is 2+2?"}],
    }
    if stream:
        body["stream"] = True
    return _compact(body).encode()


def _gemini_body(_stream: bool) -> bytes:
    return _compact(
        {
            "contents": [{"role": "user", "parts": [{"text": "What is 2+2?"}]}],
            "systemInstruction": {"parts": [{"text": "Be brief."}]},
            "generationConfig": {"maxOutputTokens": 64},
        }
    ).encode()


def _gemini_path(stream: bool) -> str:
    action = "streamGenerateContent?alt=sse" if stream else "generateContent"
    return f"/v1beta/models/{GEMINI_MODEL}:{action}"


def _json_has(body: bytes, key: str) -> bool:
    try:
        return bool(json.loads(body).get(key))
    except ValueError:
        return False


def _openai_ok(body: bytes, stream: bool) -> bool:
    if stream:
        return b"chat.completion.chunk" in body and body.rstrip().endswith(b"data: [DONE]")
    return _json_has(body, "choices")


def _anthropic_ok(body: bytes, stream: bool) -> bool:
    if stream:
        return b"event: message_stop" in body
    return _json_has(body, "content")


def _gemini_ok(body: bytes, stream: bool) -> bool:
    if stream:
        events = [e for e in body.replace(b"\r\n", b"\n").split(b"\n\n") if e.startswith(b"data:")]
        return bool(events) and b'"finishReason"' in events[-1]
    return _json_has(body, "candidates")


DIALECTS = {
    "openai": Dialect("openai", openai_body, lambda _stream: "/v1/chat/completions", _openai_ok),
    "anthropic": Dialect("anthropic", _anthropic_body, lambda _stream: "/v1/messages", _anthropic_ok),
    "gemini": Dialect("gemini", _gemini_body, _gemini_path, _gemini_ok),
}


async def run_calls(call: Callable[[], Awaitable[object]], count: int, concurrency: int) -> None:
    """``count`` calls, one after another or shared by ``concurrency`` tasks (the in-process workers)."""
    if concurrency <= 1:
        for _ in range(count):
            await call()
        return
    left = count

    async def task() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            await call()

    await asyncio.gather(*(task() for _ in range(concurrency)))
