"""The SSE decoder: the same events however the bytes are cut, LF or CRLF."""

from __future__ import annotations

import pytest

from keywheel.sse import SSEDecoder

STREAM = (
    b": OPENROUTER PROCESSING\n\n"
    b'data: {"a": 1}\n\n'
    b'event: message_delta\ndata: {"b": 2}\n\n'
    b"data: line one\ndata: line two\n\n"
    b"data: [DONE]\n\n"
)
EXPECTED = [(None, '{"a": 1}'), ("message_delta", '{"b": 2}'), (None, "line one\nline two"), (None, "[DONE]")]


@pytest.mark.parametrize("crlf", [False, True])
@pytest.mark.parametrize("step", [1, 2, 3, 7, 1000])
def test_events_do_not_depend_on_how_the_bytes_are_cut(crlf: bool, step: int) -> None:
    raw = STREAM.replace(b"\n", b"\r\n") if crlf else STREAM
    decoder = SSEDecoder()
    events = []
    for i in range(0, len(raw), step):
        events += decoder.feed(raw[i : i + step])
    events += decoder.close()
    assert [(e.event, e.data) for e in events] == EXPECTED


def test_a_large_event_in_many_chunks_and_a_final_event_without_blank_line() -> None:
    big = b"data: " + b"x" * 300_000 + b"\n\n"
    decoder = SSEDecoder()
    events = []
    for i in range(0, len(big), 4096):
        events += decoder.feed(big[i : i + 4096])
    assert len(events) == 1 and len(events[0].data) == 300_000
    assert decoder.feed(b"data: tail") == []
    assert [(e.event, e.data) for e in decoder.close()] == [(None, "tail")]
