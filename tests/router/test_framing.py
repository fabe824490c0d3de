"""A provider whose stream has another framing fits: the framing is the adapter's, not the router's.

An adapter of the OpenAI wire format whose stream comes as newline-delimited JSON (one object a
line, as some providers stream) instead of SSE: the router reads, fails over and passes it
through with the adapter's framing alone.  Over a transport stub, no sockets.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import replace

import orjson

from keywheel.calls import Target
from keywheel.providers.base import Framing, HttpRequest
from keywheel.providers.openai_compat import OpenAICompatAdapter
from keywheel.router import Router, translated
from keywheel.sse import SSEEvent
from keywheel.state.memory import MemoryStore
from keywheel.stream import EventStream
from keywheel.transport import HttpResponse
from keywheel.types import ChatRequest, Message, StreamEnd, TextDelta, TextPart
from tests.router.test_router_unit import settings


class LineDecoder:
    def __init__(self) -> None:
        self._tail = b""

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        *lines, self._tail = (self._tail + chunk).split(b"\n")
        return [SSEEvent(None, line.decode()) for line in lines if line.strip()]

    def close(self) -> list[SSEEvent]:
        tail, self._tail = self._tail, b""
        return [SSEEvent(None, tail.decode())] if tail.strip() else []


class NdjsonFraming:
    name: str = "ndjson"

    def decoder(self, max_event_bytes: int | None = None) -> LineDecoder:
        return LineDecoder()

    def split(self, data: bytes) -> tuple[bytes, bytes]:
        cut = data.rfind(b"\n") + 1
        return data[:cut], data[cut:]


class NdjsonAdapter(OpenAICompatAdapter):
    framing: Framing = NdjsonFraming()


def chunk(text: str | None, finish: str | None = None) -> bytes:
    delta = {"content": text} if text is not None else {}
    body = {"id": "c1", "object": "chat.completion.chunk", "model": "m", "choices": [{"index": 0, "delta": delta}]}
    if finish:
        body["choices"][0]["finish_reason"] = finish  # type: ignore[index]
    return orjson.dumps(body) + b"\n"


# Split mid-line on purpose: the framing, not the read size, decides where an event ends.
WIRE = [chunk("Hel")[:20], chunk("Hel")[20:] + chunk("lo"), chunk(None, "stop") + b"[DONE]\n"]


class Stream:
    status = 200
    headers: Mapping[str, str] = {"content-type": "application/x-ndjson"}

    async def read(self, max_bytes: int | None = None) -> bytes:
        return b"".join(WIRE)

    async def chunks(self) -> AsyncIterator[bytes]:
        for piece in WIRE:
            yield piece


class StubTransport:
    async def send(self, request: HttpRequest, timeout: float, max_bytes: int | None = None) -> HttpResponse:
        raise AssertionError("a stream only")

    @asynccontextmanager
    async def stream(self, request: HttpRequest, timeout: float, idle_timeout: float) -> AsyncIterator[Stream]:
        yield Stream()


def make() -> tuple[Router, list[Target]]:
    cfg = settings(ENABLE_GROQ="false", FALLBACK_ORDER="")
    pools = {n: MemoryStore(n, p.keys) for n, p in cfg.providers.items() if p.enabled}
    router = Router(cfg, pools, StubTransport())
    targets = [replace(t, adapter=NdjsonAdapter()) for t in router.chain()]
    return router, targets


REQUEST = ChatRequest([Message("user", [TextPart("hi")])])


def test_a_stream_in_another_framing_is_read_event_by_event() -> None:
    async def go() -> list[object]:
        router, targets = make()
        stream: EventStream = await router.open_stream(targets, translated(REQUEST))
        return [event async for event in stream]

    events = asyncio.run(go())
    assert [e.text for e in events if isinstance(e, TextDelta)] == ["Hel", "lo"]
    end = events[-1]
    assert isinstance(end, StreamEnd) and end.finish_reason == "stop" and end.provider == "openrouter"


def test_a_pass_through_stream_goes_out_in_whole_frames() -> None:
    async def go() -> list[bytes]:
        router, targets = make()
        stream = await router.open_stream(targets, translated(REQUEST), passthrough="openai")
        return [piece async for piece in stream.raw()]

    pieces = asyncio.run(go())
    assert b"".join(pieces) == b"".join(WIRE)
    assert all(piece.endswith(b"\n") for piece in pieces)  # never half a line, though the wire split one
