"""Incremental Server-Sent Events decoder.

Accepts ``\\n``, ``\\r\\n`` and ``\\r`` line endings (Gemini sends CRLF), skips
comment lines (``: OPENROUTER PROCESSING``), joins multiple ``data:`` lines with
``\\n`` and yields one :class:`SSEEvent` per blank-line-terminated event.
"""

from __future__ import annotations

from dataclasses import dataclass


class EventTooLarge(ValueError):
    """One SSE event is larger than the decoder's bound."""


@dataclass(slots=True)
class SSEEvent:
    event: str | None
    data: str


class SSEDecoder:
    """Bytes in, complete events out.  Keeps only the unfinished tail between feeds.

    A chunk without any line break cannot end an event: it is only set aside, so one
    large event arriving in many chunks is joined once, not once per chunk.
    """

    __slots__ = ("_buf", "_pending", "_pending_size", "_max")

    def __init__(self, max_event_bytes: int | None = None) -> None:
        self._buf = b""
        self._pending: list[bytes] = []
        self._pending_size = 0
        self._max = max_event_bytes

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        if b"\n" not in chunk and b"\r" not in chunk:
            self._pending.append(chunk)
            self._pending_size += len(chunk)
            if self._max is not None and self._pending_size + len(self._buf) > self._max:
                raise EventTooLarge(f"an event of the stream is over {self._max} bytes")
            return []
        if self._pending:
            buf = b"".join([self._buf, *self._pending, chunk])
            self._pending.clear()
            self._pending_size = 0
        else:
            buf = self._buf + chunk if self._buf else chunk
        if b"\r" in buf:
            # A CR at the very end may be the first half of a CRLF: keep it for the next feed.
            hold = buf.endswith(b"\r")
            if hold:
                buf = buf[:-1]
            buf = buf.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
            if hold:
                buf += b"\r"
        blocks = buf.split(b"\n\n")
        self._buf = blocks.pop()
        if self._max is not None and len(buf) > self._max:
            if len(self._buf) > self._max or any(len(block) > self._max for block in blocks):
                raise EventTooLarge(f"an event of the stream is over {self._max} bytes")
        out: list[SSEEvent] = []
        for block in blocks:
            event = _event(block)
            if event is not None:
                out.append(event)
        return out

    def close(self) -> list[SSEEvent]:
        """Flush a final event that was not followed by a blank line."""
        if self._pending:
            self._buf = b"".join([self._buf, *self._pending])
            self._pending.clear()
            self._pending_size = 0
        block = self._buf.replace(b"\r\n", b"\n").replace(b"\r", b"\n").strip(b"\n")
        self._buf = b""
        event = _event(block) if block else None
        return [event] if event is not None else []


def _event(block: bytes) -> SSEEvent | None:
    # The common case, one "data: {...}" line, without splitting into lines.
    if block.startswith(b"data: ") and b"\n" not in block:
        return SSEEvent(None, block[6:].decode("utf-8", "replace"))
    name: str | None = None
    data: list[str] = []
    for raw in block.split(b"\n"):
        if not raw or raw[:1] == b":":
            continue
        line = raw.decode("utf-8", "replace")
        field, sep, value = line.partition(":")
        if sep and value.startswith(" "):
            value = value[1:]
        if field == "data":
            data.append(value)
        elif field == "event":
            name = value
    if not data and name is None:
        return None
    return SSEEvent(name, "\n".join(data))


_EVENT_ENDS = (b"\n\n", b"\r\n\r\n", b"\r\r")
_EVENT_SEPARATORS = (b"\n\n", b"\n\r\n", b"\r\r")


class SSEFraming:
    """Server-Sent Events as a stream framing (see :class:`keywheel.providers.base.Framing`)."""

    name = "sse"

    def decoder(self, max_event_bytes: int | None = None) -> SSEDecoder:
        return SSEDecoder(max_event_bytes)

    def split(self, data: bytes) -> tuple[bytes, bytes]:
        """``data`` split after its last complete event: (what may go out, what must wait)."""
        if data.endswith(_EVENT_ENDS):
            return data, b""  # the common case: a read ends where an event does
        cut = 0
        for separator in _EVENT_SEPARATORS:
            at = data.rfind(separator)
            if at >= 0:
                cut = max(cut, at + len(separator))
        return data[:cut], data[cut:]


SSE = SSEFraming()
