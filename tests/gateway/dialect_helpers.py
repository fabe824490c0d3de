"""Shared by the dialect tests: the three dialects, a canonical answer and event sequence,
and SDK clients that read rendered bytes through ``httpx2.MockTransport``."""

from __future__ import annotations

from collections.abc import Callable

import anthropic
import httpx2
import openai
from google import genai
from google.genai import types as gtypes

from keywheel.gateway.dialects import AnthropicDialect, GeminiDialect, OpenAIDialect
from keywheel.gateway.dialects.base import Dialect
from keywheel.sse import SSEDecoder, SSEEvent
from keywheel.types import (
    ChatResponse,
    StreamEnd,
    StreamEvent,
    TextDelta,
    ToolCall,
    ToolCallDelta,
    Usage,
)

OPENAI = OpenAIDialect()
ANTHROPIC = AnthropicDialect()
GEMINI = GeminiDialect()
CALC_SCHEMA = {"type": "object", "properties": {"expr": {"type": "string"}}}
BASE = "http://gateway.test"

RESPONSE = ChatResponse(
    text="Two plus two is 4.",
    tool_calls=[ToolCall("call_1", "calc", {"expr": "2+2"}, {"thoughtSignature": "c2ln"})],
    finish_reason="tool_calls",
    usage=Usage(12, 7),
    provider="gemini",
    model="gemini-2.5-flash",
    key="gemini#1 …abcd",
    attempts=[],
    id="r1",
)
# Text, then a call in two fragments, then a call with no arguments, then the end.
EVENTS: list[StreamEvent] = [
    TextDelta("Two plus"),
    TextDelta(" two is ✓ 4."),
    ToolCallDelta(0, id="toolu_1", name="calc", arguments='{"expr": '),
    ToolCallDelta(0, arguments='"2+2"}'),
    ToolCallDelta(1, id="toolu_2", name="clock"),
    StreamEnd("tool_calls", Usage(12, 7)),
]


def stream_bytes(dialect: Dialect, events: list[StreamEvent], *, include_usage: bool = True) -> bytes:
    renderer = dialect.stream_renderer("auto", include_usage)
    return renderer.start() + b"".join(renderer.event(ev) for ev in events)


def sse(raw: bytes) -> list[SSEEvent]:
    decoder = SSEDecoder()
    return decoder.feed(raw) + decoder.close()


def transport(handler: Callable[[httpx2.Request], httpx2.Response]) -> httpx2.Client:
    return httpx2.Client(transport=httpx2.MockTransport(handler))


def serve(status: int, body: bytes, headers: dict[str, str] | None = None) -> httpx2.Client:
    return transport(lambda _req: httpx2.Response(status, content=body, headers=headers))


def openai_client(http: httpx2.Client) -> openai.OpenAI:
    return openai.OpenAI(api_key="gw-key", base_url=f"{BASE}/v1", http_client=http, max_retries=0)


def anthropic_client(http: httpx2.Client) -> anthropic.Anthropic:
    return anthropic.Anthropic(api_key="gw-key", base_url=BASE, http_client=http, max_retries=0)


def genai_client(http: httpx2.Client) -> genai.Client:
    options = gtypes.HttpOptions(base_url=BASE, api_version="v1beta", httpx_client=http)
    return genai.Client(api_key="gw-key", http_options=options)
