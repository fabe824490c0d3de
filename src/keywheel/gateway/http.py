"""The gateway's HTTP plumbing: ASGI types, errors answered before any upstream work,
the request body with its bounds, credentials as presented, and plain JSON answers."""

from __future__ import annotations

import asyncio
import ipaddress
import itertools
import logging
import os
import re
import traceback
import urllib.parse
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from keywheel.calls import Served
from keywheel.errors import KeywheelError
from keywheel.stream import EventStream

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

JSON_HEADERS = [(b"content-type", b"application/json")]


class HttpError(Exception):
    """A gateway-level failure answered before any upstream work."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        self.status, self.message, self.headers = status, message, headers or {}
        super().__init__(message)


def allow(method: str, *allowed: str) -> None:
    if method not in allowed:
        raise HttpError(405, f"method {method} not allowed here", {"allow": ", ".join(allowed)})


async def read_body(headers: dict[bytes, bytes], receive: Receive, max_body: int, body_timeout: float) -> bytes:
    """The request body, bounded in size (413) and in time (408)."""
    length = headers.get(b"content-length")
    if length is not None and length.isdigit() and int(length) > max_body:
        raise HttpError(413, f"request body over {max_body} bytes")
    # The first read is bounded too: a head that announces a body and sends none must not hold its
    # connection for good.  A timer that cancels this task, as asyncio.timeout() does, for a few
    # calls less: the body is nearly always in by now, and the timer is cancelled unfired.
    task = asyncio.current_task()
    assert task is not None
    cancelling, fired = task.cancelling(), list[bool]()
    timer = asyncio.get_running_loop().call_later(body_timeout, _body_late, task, fired)
    try:
        message = await receive()
        body: bytes = message.get("body", b"")
        if not message.get("more_body"):
            return body
        parts = [body]
        size = len(body)
        while message.get("more_body"):
            message = await receive()
            if message["type"] == "http.disconnect":
                raise HttpError(400, "client went away while sending the body")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > max_body:
                raise HttpError(413, f"request body over {max_body} bytes")
            parts.append(chunk)
    except asyncio.CancelledError:
        if fired and task.uncancel() <= cancelling:
            raise HttpError(408, f"request body not received within {body_timeout:g} s") from None
        raise
    finally:
        timer.cancel()
    return b"".join(parts)


def _body_late(task: asyncio.Task[Any], fired: list[bool]) -> None:
    fired.append(True)
    task.cancel()


def presented_key(scope: Scope, headers: dict[bytes, bytes], *, query: bool) -> bytes | None:
    auth = headers.get(b"authorization")
    if auth is not None and auth[:7].lower() == b"bearer ":
        return auth[7:].strip()
    for name in (b"x-api-key", b"x-goog-api-key"):
        value = headers.get(name)
        if value is not None:
            return value.strip()
    if not query:
        return None
    query_string: bytes = scope.get("query_string", b"")
    for pair in query_string.split(b"&"):
        if pair.startswith(b"key="):
            return urllib.parse.unquote_to_bytes(pair[4:])
    return None


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def header_list(headers: dict[str, str]) -> list[tuple[bytes, bytes]]:
    return [(k.encode(), v.encode("latin-1", "replace")) for k, v in headers.items()]


async def respond(
    send: Send, status: int, body: bytes, headers: dict[str, str] | list[tuple[bytes, bytes]] | None = None
) -> None:
    """A whole JSON answer; ``headers`` as a dict, or as header tuples (never changed here)."""
    if headers:
        head = JSON_HEADERS + (headers if isinstance(headers, list) else header_list(headers))
    else:
        head = list(JSON_HEADERS)
    head.append((b"content-length", b"%d" % len(body)))
    await send({"type": "http.response.start", "status": status, "headers": head})
    await send({"type": "http.response.body", "body": body, "more_body": False})


errors_log = logging.getLogger("keywheel.gateway")


def loggable(path: str) -> str:
    """A client's path fit for a log line: bounded, control characters escaped (no forged lines)."""
    if len(path) > 200:
        path = path[:200] + "…"
    return path if path.isprintable() else path.encode("unicode_escape").decode("ascii")


class Reply:
    """``send`` that remembers whether the response has started, so an error met later
    is not answered with a second response head; it puts the request id on the head and
    counts the bytes both ways (for :class:`RequestFinished`)."""

    __slots__ = ("_send", "_receive", "started", "request_id", "bytes_in", "bytes_out", "tries")

    def __init__(self, send: Send, receive: Receive, request_id: bytes) -> None:
        self._send, self._receive = send, receive
        self.started = False
        self.request_id = request_id
        self.bytes_in = self.bytes_out = self.tries = 0

    def send(self, message: Message) -> Awaitable[None]:
        """The server's ``send(message)``, to await (a plain function: no frame of its own to resume)."""
        self.started = True
        if message["type"] == "http.response.start":
            message["headers"] = [*message["headers"], (b"x-request-id", self.request_id)]
        else:
            self.bytes_out += len(message.get("body", b""))
        return self._send(message)

    async def receive(self) -> Message:
        message = await self._receive()
        self.bytes_in += len(message.get("body", b""))
        return message

    async def error(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        if not self.started:
            await respond(self.send, status, body, headers)


#: A client's ``x-request-id`` is kept when it is this (it goes back in a header and into events).
_REQUEST_ID = re.compile(rb"[A-Za-z0-9._:+=/-]{1,128}")
_ID_PREFIX = os.urandom(6).hex().encode()  # per process: ids of several workers never collide
_ids = itertools.count(1)


def request_id(given: bytes | None) -> bytes:
    """The client's ``x-request-id`` when it is plain and bounded, else a new one (``kw-…``)."""
    if given is not None and _REQUEST_ID.fullmatch(given):
        return given
    return b"kw-%s-%d" % (_ID_PREFIX, next(_ids))


LANDING = (
    b"<!doctype html><html><head><meta charset=utf-8><title>keywheel</title></head><body>"
    b"<h1>keywheel</h1><p>An LLM gateway. It speaks the OpenAI (<code>/v1/chat/completions</code>), "
    b"Anthropic (<code>/v1/messages</code>) and Gemini (<code>/v1beta/models/{model}:generateContent</code>) "
    b"APIs to clients holding a gateway key.</p><p>Operators: the <a href=/status.html>status page</a>.</p>"
    b"</body></html>\n"
)


def ascii_fingerprint(fingerprint: str) -> str:
    return fingerprint.replace("…", "...")


#: The scope key of a request served by keywheel's own server (:class:`~keywheel.gateway.server.GatewayProtocol`),
#: which calls ``scope[ON_LOST].lost()`` when the client goes away before the response is complete: a chat
#: handler puts its :class:`Watch` there, and needs no task of its own watching ``receive``.
ON_LOST = "keywheel.on_lost"


class Watch:
    """A handler's watch on its client: when the client goes away before the handler is done,
    the handler is cancelled (which closes its upstream call) and knows why (``gone``)."""

    __slots__ = ("handler", "done", "gone")

    def __init__(self, handler: asyncio.Task[Any]) -> None:
        self.handler = handler
        self.done = self.gone = False

    def lost(self) -> None:
        if not self.done:
            self.gone = True
            self.handler.cancel()


def watch_client(scope: Scope, receive: Receive, watch: Watch) -> asyncio.Task[None] | None:
    """Start watching for the client going away: through keywheel's own server when it serves
    ``scope`` (no task), else a task waiting for ``http.disconnect`` on ``receive`` (returned: cancel it
    when done)."""
    if ON_LOST in scope:
        scope[ON_LOST] = watch
        return None
    return asyncio.create_task(watch_disconnect(receive, watch))


async def watch_disconnect(receive: Receive, watch: Watch) -> None:
    message = await receive()
    if message["type"] == "http.disconnect":
        watch.lost()


#: served_header_list's answers for the common case (one attempt, which served), by provider and key.
_SERVED_HEADS: dict[tuple[str, str, str, str, str], list[tuple[bytes, bytes]]] = {}


def served_header_list(who: Served) -> list[tuple[bytes, bytes]]:
    """:func:`served_headers` of an answer, as header tuples (shared: never change the list)."""
    if len(who.attempts) != 1:
        return header_list(served_headers(who))
    only = who.attempts[0]
    cache_key = (who.target.provider.name, who.key.fingerprint, only.provider, only.key, only.outcome)
    head = _SERVED_HEADS.get(cache_key)
    if head is None:
        if len(_SERVED_HEADS) >= 4096:  # keys come and go (reloads): bounded
            _SERVED_HEADS.clear()
        head = _SERVED_HEADS[cache_key] = header_list(served_headers(who))
    return head


def served_headers(source: Served | KeywheelError) -> dict[str, str]:
    if isinstance(source, Served):
        attempts = source.attempts
        out = {
            "x-keywheel-provider": source.target.provider.name,
            "x-keywheel-key": ascii_fingerprint(source.key.fingerprint),
        }
    else:
        attempts = getattr(source, "attempts", [])
        out = {}
    if attempts:
        out["x-keywheel-attempts"] = ", ".join(f"{a.provider} {ascii_fingerprint(a.key)} {a.outcome}" for a in attempts)
    return out


def log_internal(exc: BaseException, method: str, path: str) -> None:
    """Log an unforeseen exception once: its type and where it was raised, never its
    message (which may quote the request) nor the request body."""
    frames = "".join(traceback.format_tb(exc.__traceback__)).rstrip()
    errors_log.error("internal error %s answering %s %s:\n%s", type(exc).__name__, method, path[:200], frames)


async def landing(method: str, send: Send) -> int:
    """``GET``/``HEAD /``: a page that says what this is, and holds no data."""
    allow(method, "GET", "HEAD")
    head = [(b"content-type", b"text/html; charset=utf-8"), (b"content-length", b"%d" % len(LANDING))]
    await send({"type": "http.response.start", "status": 200, "headers": head})
    await send({"type": "http.response.body", "body": LANDING if method == "GET" else b""})
    return 200


async def relay(stream: EventStream, send: Send) -> bool:
    """A pass-through stream's bytes to the caller as they come; whether the response is complete.
    The chunk that closes the stream also ends the response (one write fewer), and a stream over
    already goes in one write.  (Raising, the response is complete when ``stream.finished``.)"""
    whole = stream.whole()
    if whole is not None:
        await send({"type": "http.response.body", "body": whole, "more_body": False})
        return True
    async for chunk in stream.raw():
        ended = stream.finished
        await send({"type": "http.response.body", "body": chunk, "more_body": not ended})
        if ended:
            return True
    return False  # the connection's end closed the stream, with nothing more to send
