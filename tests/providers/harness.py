"""What every adapter test does: build a request's JSON body, and feed a raw stream through
the SSE decoder and the adapter's stream parser in small reads.

Each adapter's test module binds one :class:`AdapterCase` (its adapter, a fake key, an
endpoint, the model) and takes ``body_of`` and ``run_stream`` from it.
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson

from keywheel.providers.base import Adapter, Endpoint
from keywheel.secrets import ApiKey
from keywheel.sse import SSEDecoder
from keywheel.types import ChatRequest, Message, StreamEvent, TextPart


@dataclass(frozen=True)
class AdapterCase:
    adapter: Adapter
    key: ApiKey
    endpoint: Endpoint
    model: str
    #: bytes per read when feeding a stream: a size that splits events, lines and UTF-8 sequences
    step: int

    def body_of(self, request: ChatRequest, *, stream: bool = False) -> dict[str, object]:
        """The JSON body the adapter builds for ``request``."""
        http = self.adapter.build_request(self.endpoint, self.key, request, self.model, stream=stream)
        assert http.body is not None
        parsed: dict[str, object] = orjson.loads(http.body)
        return parsed

    def run_stream(self, raw: bytes) -> list[StreamEvent]:
        """Every event the adapter's stream parser makes of ``raw``, read ``step`` bytes at a time."""
        parser = self.adapter.stream_parser()
        decoder = SSEDecoder()
        out: list[StreamEvent] = []
        for i in range(0, len(raw), self.step):
            for event in decoder.feed(raw[i : i + self.step]):
                out.extend(parser.feed(event))
        for event in decoder.close():
            out.extend(parser.feed(event))
        out.extend(parser.close())
        return out


def user(text: str) -> Message:
    return Message("user", [TextPart(text)])
