"""How the fake upstream plays the wire faults (``behaviours.WIRE_FAULTS``): TCP resets,
trickled bodies, and 200s that are not what they claim — garbage, HTML, an error object,
a stream without its end.

Each is played on a chat request after the dialect has planned its reply, so a cut or a
trickle carries the real answer's bytes.  Like the rest of the fake, nothing here blocks
the loop and nothing raises into aiohttp.
"""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import Mapping, Sequence
from typing import Protocol

import orjson
from aiohttp import web

from keywheel.testing.behaviours import Behaviour
from keywheel.testing.dialects import Dialect, Turn, cut_point


class FakeApp(Protocol):
    """What a wire fault needs of the fake's app (:class:`keywheel.testing.app.FakeApp`)."""

    async def _pause(self, request: web.Request, seconds: float) -> bool: ...

    def _gone(self, key: str, response: web.StreamResponse | None = None) -> web.StreamResponse: ...


#: What a proxy or captive portal puts in front of an API.
HTML_PAGE = (
    b"<!DOCTYPE html>\n<html><head><title>502 Bad Gateway</title></head>\n"
    b"<body><h1>Bad Gateway</h1><p>The upstream server is temporarily unavailable.</p></body></html>\n"
)
GARBAGE_JSON = b'{"id": "fake-garbage", "choices": [{"message": {"content": "cut off here'
GARBAGE_SSE = (b'data: {"choices": [{"delta": {"content": "cut off\n\n', b"data: \x00\xff not json at all\n\n")
RESET_GRACE = 0.1  # seconds between the last byte written and the reset, for the client to read it


async def play(
    app: FakeApp, request: web.Request, dialect: Dialect, turn: Turn, behaviour: Behaviour, stream: bool, key: str
) -> web.StreamResponse:
    """Answer a chat request with the wire fault ``behaviour``."""
    kind = behaviour.kind
    if kind == "reset":
        after = behaviour.params["after"]
        if after is None:
            return reset(request)
        assert isinstance(after, int)
        if stream:
            streamed = dialect.stream(turn)
            frames = streamed.frames[: cut_point(streamed.frames, after)]
            pieces = [frame.data for frame in frames]
            return await _send(app, request, key, 200, streamed.media_type, streamed.headers, pieces, cut=True)
        answer = dialect.response(turn)
        body = orjson.dumps(answer.body)
        half = [body[: len(body) // 2]]
        return await _send(app, request, key, 200, "application/json", answer.headers, half, length=len(body), cut=True)
    if kind == "trickle":
        size = max(int(behaviour.number("size")), 1)
        if stream:
            streamed = dialect.stream(turn)
            media, headers, data = streamed.media_type, streamed.headers, b"".join(f.data for f in streamed.frames)
        else:
            answer = dialect.response(turn)
            media, headers, data = "application/json", answer.headers, orjson.dumps(answer.body)
        pieces = [data[i : i + size] for i in range(0, len(data), size)]
        interval = behaviour.number("interval")
        return await _send(app, request, key, 200, media, headers, pieces, interval=interval)
    if kind == "garbage":
        if stream:
            return await _send(app, request, key, 200, "text/event-stream", {}, GARBAGE_SSE)
        return await _send(app, request, key, 200, "application/json", {}, [GARBAGE_JSON])
    if kind == "html":
        return await _send(app, request, key, 200, "text/html", {}, [HTML_PAGE])
    if kind == "error_200":
        if stream:
            streamed = dialect.stream(turn)
            head = streamed.frames[: cut_point(streamed.frames, 0)]
            pieces = [frame.data for frame in [*head, *dialect.stream_error(turn)]]
            return await _send(app, request, key, 200, streamed.media_type, streamed.headers, pieces)
        answer = dialect.error_in_200(turn)
        return await _send(app, request, key, 200, "application/json", answer.headers, [orjson.dumps(answer.body)])
    if kind == "no_terminator":
        if stream:
            streamed = dialect.unterminated(turn)
            pieces = [frame.data for frame in streamed.frames]
            return await _send(app, request, key, 200, streamed.media_type, streamed.headers, pieces)
        whole = dialect.response(turn)  # a non-streamed answer is whole
        return await _send(app, request, key, 200, "application/json", whole.headers, [orjson.dumps(whole.body)])
    raise ValueError(f"{kind!r} is not a wire fault")


def reset(request: web.Request) -> web.StreamResponse:
    """Reset the connection (RST, not FIN): SO_LINGER 0, then close."""
    transport = request.transport
    if transport is not None:
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()
    return web.Response()


async def _send(
    app: FakeApp,
    request: web.Request,
    key: str,
    status: int,
    media_type: str,
    headers: Mapping[str, str],
    pieces: Sequence[bytes],
    *,
    length: int | None = None,
    interval: float = 0.0,
    cut: bool = False,
) -> web.StreamResponse:
    """Write ``pieces`` (``interval`` apart); with ``cut``, reset the connection after them."""
    response = web.StreamResponse(status=status, headers=dict(headers))
    response.content_type = media_type
    if length is not None:
        response.content_length = length
    try:
        await response.prepare(request)
        for index, piece in enumerate(pieces):
            if interval and index and not await app._pause(request, interval):  # noqa: SLF001
                return app._gone(key, response)  # noqa: SLF001
            await response.write(piece)
        if cut:
            transport = request.transport
            for _ in range(100):  # at most ~1 s for what was written to leave
                if transport is None or transport.is_closing() or transport.get_write_buffer_size() == 0:
                    break
                await asyncio.sleep(0.01)
            if not await app._pause(request, RESET_GRACE):  # noqa: SLF001
                return app._gone(key, response)  # noqa: SLF001
            reset(request)
    except ConnectionError:
        return app._gone(key, response)  # noqa: SLF001
    return response
