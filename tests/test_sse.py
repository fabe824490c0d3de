"""The SSE decoder: the same events however the bytes are cut, LF or CRLF."""

from __future__ import annotations

import pytest

from keywheel.sse import EventTooLarge, SSEDecoder

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


@pytest.mark.parametrize("step", [1000, 4096, 1_000_000])
@pytest.mark.parametrize("line_breaks", [True, False])
def test_an_event_over_the_bound_raises_however_it_arrives(step: int, line_breaks: bool) -> None:
    # With line breaks: many data lines, one event; without: one line held back until its end.
    body = (b"data: " + b"y" * 99 + b"\n") * 1000 if line_breaks else b"data: " + b"y" * 100_000 + b"\n"
    raw = b'data: {"small": 1}\n\n' + body + b"\n"
    decoder = SSEDecoder(max_event_bytes=50_000)
    events = []
    with pytest.raises(EventTooLarge):
        for i in range(0, len(raw), step):
            events += decoder.feed(raw[i : i + step])
    assert len(events) <= 1  # at most the small event came out before the bound tripped


def test_events_within_the_bound_pass() -> None:
    decoder = SSEDecoder(max_event_bytes=50_000)
    raw = (b"data: " + b"z" * 40_000 + b"\n\n") * 3
    events = [e for i in range(0, len(raw), 7000) for e in decoder.feed(raw[i : i + 7000])]
    assert [len(e.data) for e in events] == [40_000] * 3


# Text that is not ASCII, and bytes that are not UTF-8: the whole events are decoded at once,
# which must give what decoding each line alone gives, however the bytes are cut.
UTF8 = "data: h\u00e9llo \u4e16\u754c \U0001f600\n\n".encode() + b"data: bad \xff\xc3\n\nevent: e\ndata: \xe4\xb8\n\n"


def _per_line(raw: bytes) -> list[tuple[str | None, str]]:
    events: list[tuple[str | None, str]] = []
    for block in raw.split(b"\n\n")[:-1]:
        name, data = None, []
        for line in block.split(b"\n"):
            field, _, value = line.decode("utf-8", "replace").partition(": ")
            if field == "event":
                name = value
            else:
                data.append(value)
        events.append((name, "\n".join(data)))
    return events


@pytest.mark.parametrize("step", range(1, 12))
def test_text_that_is_not_ascii_decodes_as_line_by_line_however_it_is_cut(step: int) -> None:
    decoder = SSEDecoder()
    events = [e for i in range(0, len(UTF8), step) for e in decoder.feed(UTF8[i : i + step])]
    events += decoder.close()
    assert [(e.event, e.data) for e in events] == _per_line(UTF8)
    assert events[0].data == "h\u00e9llo \u4e16\u754c \U0001f600" and "\ufffd" in events[1].data


def test_an_event_over_the_bound_in_a_read_of_many_events_raises() -> None:
    decoder = SSEDecoder(max_event_bytes=100)
    with pytest.raises(EventTooLarge):
        decoder.feed(b"data: small\n\n" + b"data: " + b"x" * 200 + b"\n\ndata: next\n\n")
    decoder = SSEDecoder(max_event_bytes=100)
    with pytest.raises(EventTooLarge):
        decoder.feed(b"data: small\n" + b"x" * 200 + b"\n")  # no whole event yet: the tail is over
