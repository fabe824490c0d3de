"""The one pooled HTTP client every adapter's requests go through.

A small seam — :meth:`Transport.send` and :meth:`Transport.stream` — over
``aiohttp``, chosen by measurement (../shared/PERF-NOTES.md: about a tenth of
httpx's CPU per upstream call here).  One ``ClientSession`` (one connection
pool) per event loop, since aiohttp sessions are bound to the loop that made
them: the sync API's loop thread and an application's own loop each get theirs.

Failures to reach the upstream are raised as :class:`keywheel.errors.Timeout`
or :class:`keywheel.errors.NetworkError`; the router fills in provider and key.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Protocol

import aiohttp

from keywheel.deadlines import Deadlines
from keywheel.errors import NetworkError, ResponseTooLarge, Timeout
from keywheel.providers.base import HttpRequest


@dataclass(slots=True)
class HttpResponse:
    status: int
    headers: Mapping[str, str]
    body: bytes


class HttpStream(Protocol):
    """An upstream answer whose body comes in chunks (what :meth:`HttpTransport.stream` yields)."""

    status: int
    headers: Mapping[str, str]

    async def read(self, max_bytes: int | None = None) -> bytes:
        """The whole body (an error's), bounded by ``max_bytes``."""

    def chunks(self) -> AsyncIterator[bytes]:
        """The body's chunks as they come."""


class HttpTransport(Protocol):
    """What the router needs of an HTTP client: the seam a test stub (no sockets) fills."""

    async def send(self, request: HttpRequest, timeout: float, max_bytes: int | None = None) -> HttpResponse:
        """One request, its body read whole; past ``max_bytes`` raises :class:`ResponseTooLarge`."""

    def stream(
        self, request: HttpRequest, timeout: float, idle_timeout: float
    ) -> AbstractAsyncContextManager[HttpStream]:
        """Open a streaming request (``timeout`` to the status line, ``idle_timeout`` per chunk)."""


class StreamingResponse:
    """An upstream answer whose body is read chunk by chunk.

    The wait for each chunk is bounded by the session's per-read timeout
    (aiohttp's ``sock_read``), which costs no timer per chunk.
    """

    __slots__ = ("status", "headers", "_resp")

    def __init__(self, resp: aiohttp.ClientResponse) -> None:
        self.status = resp.status
        self.headers: Mapping[str, str] = resp.headers
        self._resp = resp

    async def read(self, max_bytes: int | None = None) -> bytes:
        try:
            return await _read(self._resp, max_bytes)
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise _wrap(exc) from None

    async def chunks(self) -> AsyncIterator[bytes]:
        content = self._resp.content
        readany = content.readany
        while True:
            try:
                chunk = await readany()
            except (TimeoutError, aiohttp.ClientError) as exc:
                # aiohttp raises a broken connection before handing out what it had
                # already received; the caller is owed those bytes first.
                leftover = _drain(content)
                if leftover:
                    yield leftover
                raise _wrap(exc) from None
            if not chunk:
                return
            yield chunk


async def _read(resp: aiohttp.ClientResponse, max_bytes: int | None) -> bytes:
    """The whole body, or :class:`ResponseTooLarge` (and the connection dropped) past ``max_bytes``."""
    length = resp.content_length
    if max_bytes is None or (length is not None and length <= max_bytes):
        return await resp.read()  # the common case: a declared length within the bound
    if length is None:
        parts: list[bytes] = []
        size = 0
        async for chunk in resp.content.iter_any():
            size += len(chunk)
            if size > max_bytes:
                break
            parts.append(chunk)
        else:
            return b"".join(parts)
    resp.close()
    raise ResponseTooLarge(
        f"upstream answer over the {max_bytes}-byte bound (KEYWHEEL_MAX_RESPONSE_BYTES)", status=resp.status
    )


def _drain(content: aiohttp.StreamReader) -> bytes:
    try:
        return content._read_nowait(-1) if content._buffer else b""  # noqa: SLF001 — see chunks()
    except Exception:  # a timed-out reader refuses; then there is nothing to save
        return b""


def _wrap(exc: BaseException) -> NetworkError | Timeout:
    if isinstance(exc, TimeoutError | aiohttp.ServerTimeoutError):
        return Timeout("upstream did not answer in time")
    # aiohttp's messages name host and port, never headers, so they hold no key.
    return NetworkError(f"{type(exc).__name__}: {exc}")


class _Request(aiohttp.ClientRequest):
    """aiohttp's request without the User-Agent it adds (a request's own one goes out).

    What ``skip_auto_headers=("User-Agent",)`` on the session did, without the multidicts of
    skipped headers aiohttp builds for that on every request (≈13 k instructions a request):
    aiohttp's own ``update_auto_headers`` less its User-Agent line, since adding the header and
    taking it out again cost as much again (``tests/router/test_transport_headers.py`` holds the
    defaults that remain to aiohttp's)."""

    def update_auto_headers(self, skip_auto_headers: Iterable[str] | None) -> None:
        if skip_auto_headers is not None:  # never from keywheel's own calls
            super().update_auto_headers(skip_auto_headers)
            return
        headers = self.headers
        for name, value in self.DEFAULT_HEADERS.items():  # Accept, Accept-Encoding: aiohttp's defaults
            if name not in headers:
                headers[name] = value


class Transport:
    """Pooled async HTTP client; safe to share between event loops."""

    def __init__(self, *, connect_timeout: float = 10.0, limit_per_host: int = 0) -> None:
        self._connect_timeout = connect_timeout
        self._limit_per_host = limit_per_host
        self._sessions: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, aiohttp.ClientSession] = (
            weakref.WeakKeyDictionary()
        )
        # Each loop's request deadlines (keywheel.deadlines: one timer for them all).
        self._deadlines: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Deadlines] = weakref.WeakKeyDictionary()
        self._last: tuple[asyncio.AbstractEventLoop, aiohttp.ClientSession, Deadlines] | None = None
        self._timeouts: dict[float, aiohttp.ClientTimeout] = {}

    def _session(self) -> aiohttp.ClientSession:
        return self._current()[1]

    def _current(self) -> tuple[asyncio.AbstractEventLoop, aiohttp.ClientSession, Deadlines]:
        """The running loop, its session and its deadlines."""
        loop = asyncio.get_running_loop()
        last = self._last
        if last is not None and last[0] is loop and not last[1].closed:
            return last  # the common case: one loop
        session = self._sessions.get(loop)
        if session is None or session.closed:
            connector = aiohttp.TCPConnector(
                limit=0, limit_per_host=self._limit_per_host, ttl_dns_cache=300, enable_cleanup_closed=True
            )
            session = aiohttp.ClientSession(
                connector=connector,
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=self._connect_timeout),
                auto_decompress=True,
                request_class=_Request,  # no User-Agent
            )
            self._sessions[loop] = session
        deadlines = self._deadlines.get(loop)
        if deadlines is None:
            deadlines = self._deadlines[loop] = Deadlines(loop)
        self._last = (loop, session, deadlines)
        return self._last

    async def send(self, request: HttpRequest, timeout: float, max_bytes: int | None = None) -> HttpResponse:
        """One request, its body read whole; past ``max_bytes`` raises :class:`ResponseTooLarge`."""
        last = self._last  # _current()'s common case, without its call
        if last is None or last[0] is not asyncio.get_running_loop() or last[1].closed:
            last = self._current()
        session, deadlines = last[1], last[2]
        task = asyncio.current_task()
        if task is None:  # as aiohttp with a total timeout, or asyncio.timeout(): a deadline needs a task
            raise RuntimeError("Transport.send() must run in an asyncio task")
        cancelling = task.cancelling()
        deadlines.add(task, timeout)
        try:
            async with session.request(request.method, request.url, headers=request.headers, data=request.body) as resp:
                length = resp.content_length
                if max_bytes is None or (length is not None and length <= max_bytes):
                    body = await resp.read()  # the common case, without _read()'s coroutine
                else:
                    body = await _read(resp, max_bytes)
                return HttpResponse(resp.status, resp.headers, body)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise _wrap(exc) from None
        except asyncio.CancelledError:
            if deadlines.passed(task, cancelling):  # cancelled for the deadline, by nobody else
                raise Timeout("upstream did not answer in time") from None
            raise
        finally:
            deadlines.discard(task)

    def stream(self, request: HttpRequest, timeout: float, idle_timeout: float) -> _OpenStream:
        """Open a streaming request (``async with``).  The per-read timeout (the smaller of ``timeout``
        and ``idle_timeout``) bounds the wait for the status line and then for each chunk: one
        mechanism, no timer per chunk."""
        return _OpenStream(self, request, self._stream_timeout(min(timeout, idle_timeout)))

    def _stream_timeout(self, read: float) -> aiohttp.ClientTimeout:
        # Usually the configured idle timeout: cache that one (and only a few others,
        # since a deadline running out gives a new value each time).
        cached = self._timeouts.get(read)
        if cached is None:
            cached = aiohttp.ClientTimeout(total=None, sock_connect=self._connect_timeout, sock_read=read)
            if len(self._timeouts) < 8:
                self._timeouts[read] = cached
        return cached

    async def aclose(self) -> None:
        """Close the session of the running loop (others close with their loops)."""
        loop = asyncio.get_running_loop()
        session = self._sessions.pop(loop, None)
        self._deadlines.pop(loop, None)  # it holds its loop, as the session does: both go here
        if session is not None:
            await session.close()

    def sessions(self) -> list[tuple[asyncio.AbstractEventLoop, aiohttp.ClientSession]]:
        return list(self._sessions.items())


class _OpenStream:
    """:meth:`Transport.stream`'s context: a class of its own, not an ``asynccontextmanager``
    (whose generator machinery costs more than the request's own bookkeeping here)."""

    __slots__ = ("_transport", "_request", "_timeout", "_resp")

    def __init__(self, transport: Transport, request: HttpRequest, timeout: aiohttp.ClientTimeout) -> None:
        self._transport, self._request, self._timeout = transport, request, timeout
        self._resp: aiohttp.ClientResponse | None = None

    async def __aenter__(self) -> StreamingResponse:
        request = self._request
        try:
            resp = await self._transport._session().request(
                request.method, request.url, headers=request.headers, data=request.body, timeout=self._timeout
            )
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise _wrap(exc) from None
        self._resp = resp
        return StreamingResponse(resp)

    async def __aexit__(self, *_: object) -> None:
        resp = self._resp
        if resp is None:
            return
        # Closing (not releasing) drops the connection when the body was not
        # read to the end, so a cancelled stream stops the upstream at once.
        if resp.content.at_eof():
            resp.release()
        else:
            resp.close()
