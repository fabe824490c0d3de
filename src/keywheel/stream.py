"""A started upstream stream: read to its first event, then iterated or passed through.

:meth:`EventStream.open` sends the request and reads until the first event, so the router can
still fail over before the caller sees anything; after that a failure ends the stream with the
error.  Opened by :meth:`keywheel.router.Router.open_stream`.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator
from contextlib import AbstractAsyncContextManager

from keywheel.calls import Served, Target, key_state_event, scrub, served_event
from keywheel.errors import ResponseTooLarge, UpstreamError
from keywheel.observe import Observer
from keywheel.providers.base import HttpRequest, StreamParser
from keywheel.secrets import Redactor
from keywheel.sse import EventTooLarge
from keywheel.state.base import KeyStore
from keywheel.transport import HttpStream, HttpTransport
from keywheel.types import StreamEnd, StreamEvent, Usage


class EventStream:
    """A started upstream stream, read to its first event; iterate for the rest.

    After the first event has been handed out, a failure ends the iteration with
    the error — there is no failover, so two answers are never mixed.  An error
    event that arrives in the same read as the first events is held back and
    raised right after them.  Leaving early (``aclose``) closes the upstream
    connection at once and frees the key's in-flight slot.

    The adapter's framing (SSE so far) cuts the bytes into events.  Iterate it for canonical
    events, or call :meth:`raw` to get the upstream's own bytes (pass-through) while they are
    still parsed for usage and errors.
    """

    def __init__(
        self,
        cm: AbstractAsyncContextManager[HttpStream],
        resp: HttpStream,
        target: Target,
        parser: StreamParser,
        passthrough: bool = False,
        max_bytes: int | None = None,
    ) -> None:
        self._cm = cm
        # Bytes go to the caller as they are (raw()); events need only be watched.
        self.passthrough = passthrough
        self.response = resp
        self.target = target
        self._parser = parser
        self._framing = target.adapter.framing
        self._decoder = self._framing.decoder(max_bytes)
        self._chunks = resp.chunks()
        self._first: list[StreamEvent] = []
        self._first_raw: list[bytes] = []
        self._held: UpstreamError | None = None  # an error that came right behind the first events
        self._served: Served | None = None
        self._pool: KeyStore | None = None
        self._redactor: Redactor | None = None
        self._observer: Observer | None = None
        self._started = time.perf_counter()
        self._usage: Usage | None = None
        self._finished = False
        self._closed = False

    @classmethod
    async def open(
        cls,
        transport: HttpTransport,
        target: Target,
        http: HttpRequest,
        timeout: float,
        idle_timeout: float,
        *,
        passthrough: bool = False,
        max_bytes: int | None = None,
    ) -> EventStream:
        """``max_bytes`` bounds one event of the stream (and an error body)."""
        cm = transport.stream(http, timeout, min(idle_timeout, timeout))
        resp = await cm.__aenter__()
        try:
            if resp.status >= 300:
                body = await resp.read(max_bytes)
                raise target.adapter.classify_error(resp.status, resp.headers, body)
            stream = cls(cm, resp, target, target.adapter.stream_parser(), passthrough, max_bytes)
            while not stream._first and not stream._finished:
                chunk = await anext(stream._chunks, None)
                if chunk is not None:
                    stream._first_raw.append(chunk)
                stream._first.extend(stream._parse(chunk, hold=True))
            return stream
        except BaseException:
            await cm.__aexit__(None, None, None)
            raise

    def _parse(self, chunk: bytes | None, *, hold: bool = False, tap: bool = False) -> list[StreamEvent]:
        """Events of one chunk (``None``: the connection ended).  With ``hold``, an error
        after events of the same chunk is kept for later instead of raised; with ``tap``
        (pass-through), the parser may skip content it need not translate."""
        events: list[StreamEvent] = []
        parser = self._parser
        feed = parser.tap if tap else parser.feed
        try:
            sse_events = self._decoder.feed(chunk) if chunk is not None else self._decoder.close()
        except EventTooLarge as exc:
            raise ResponseTooLarge(f"{exc} (KEYWHEEL_MAX_EVENT_BYTES)") from None
        try:
            for sse in sse_events:
                got = feed(sse)
                if got:
                    events.extend(got)
                    if hold and self.passthrough:
                        feed = parser.tap  # the first event is in: the rest only needs watching
            if chunk is None and not any(isinstance(e, StreamEnd) for e in events):
                events.extend(parser.close())
        except UpstreamError as exc:
            if not (hold and events):
                raise
            self._held = exc
        for event in events:
            if isinstance(event, StreamEnd):
                self._usage, self._finished = event.usage, True
                self._stamp(event)
        return events

    def bind(
        self, served: Served, pool: KeyStore, redactor: Redactor | None = None, observer: Observer | None = None
    ) -> None:
        self._served, self._pool, self._redactor, self._observer = served, pool, redactor, observer
        for event in self._first:
            if isinstance(event, StreamEnd):
                self._stamp(event)

    @property
    def finished(self) -> bool:
        """The upstream's closing event has been read (what is left is at most the connection's end)."""
        return self._finished

    @property
    def served(self) -> Served:
        assert self._served is not None, "EventStream used before the router bound it"
        return self._served

    async def __aiter__(self) -> AsyncGenerator[StreamEvent, None]:
        error: UpstreamError | None = None
        try:
            for event in self._first:
                yield event
            self._raise_held()
            while not self._finished:
                chunk = await anext(self._chunks, None)
                for event in self._parse(chunk):
                    yield event
                if chunk is None:
                    break
        except UpstreamError as exc:
            error = self._own(exc)
            raise
        finally:
            await self._finish(error)

    def whole(self) -> bytes | None:
        """The upstream's bytes, when the stream ended within the reads that opened it, without an
        error (a short answer, often): what :meth:`raw` would yield, in one piece; else ``None``.
        The stream still needs :meth:`aclose` (which settles its key)."""
        if self._finished and self._held is None:
            return b"".join(self._first_raw)
        return None

    async def raw(self) -> AsyncGenerator[bytes, None]:
        """The upstream's bytes as they come, whole events at a time.  An upstream error
        event is passed on in its bytes (stripped of key pieces) and ends the iteration;
        a broken connection raises.

        The bytes of an event that has not ended yet are held back until it has: an
        error event split across reads must not go out half before it can be redacted."""
        error: UpstreamError | None = None
        tail = b""
        try:
            first = b"".join(self._first_raw)
            if self._held is not None:
                # An error event that came with the first events is passed on: strip it of key pieces.
                yield self._clean(first)
                error = self._own(self._held)
                return
            if self._finished:
                if first:
                    yield first
                return
            send, tail = self._framing.split(first)
            if send:
                yield send
            while not self._finished:
                chunk = await anext(self._chunks, None)
                try:
                    self._parse(chunk, tap=self.passthrough)
                except UpstreamError as exc:
                    error = self._own(exc)
                    if chunk is not None and not isinstance(exc, ResponseTooLarge):
                        yield self._clean(tail + chunk)  # the error event, in the caller's own dialect
                        return
                    raise
                if chunk is None:
                    if tail:
                        yield tail  # a last event without its blank line, parsed without error
                    break
                data = tail + chunk if tail else chunk
                if self._finished:
                    yield data
                    break
                send, tail = self._framing.split(data)
                if send:
                    yield send
        except UpstreamError as exc:
            error = self._own(exc)
            raise
        finally:
            await self._finish(error)

    def _raise_held(self) -> None:
        if self._held is not None:
            held, self._held = self._held, None
            raise held

    def _clean(self, chunk: bytes) -> bytes:
        return self._redactor.redact_bytes(chunk) if self._redactor is not None else chunk

    def _own(self, exc: UpstreamError) -> UpstreamError:
        if self._redactor is not None:
            scrub(exc, self._redactor)
        if self._served is not None:
            exc.provider, exc.key = self._served.target.provider.name, self._served.key.fingerprint
            exc.attempts = self._served.attempts
        return exc

    def _stamp(self, end: StreamEnd) -> None:
        if self._served is not None:
            end.provider = self._served.target.provider.name
            end.key = self._served.key.fingerprint
            end.attempts = self._served.attempts
            end.model = end.model or self._served.target.model

    async def _finish(self, error: UpstreamError | None) -> None:
        if self._closed:
            return
        self._closed = True
        await self._cm.__aexit__(None, None, None)
        if self._pool is None or self._served is None:
            return
        latency = (time.perf_counter() - self._started) * 1000
        if error is not None:
            change = await self._pool.release(self._served.key, error, latency)
            observer = self._observer
            if change is not None and observer is not None and observer.key_states:
                observer.emit(key_state_event(self._served.target.provider.name, change, self._redactor))
        elif self._finished:
            self._served.usage = self._usage
            await self._pool.release(self._served.key, None, latency, self._usage)
        else:
            await self._pool.abandon(self._served.key)
        observer = self._observer
        failed = error is not None or not self._finished
        if observer is not None and (observer.attempts or (observer.failures and failed)):
            outcome = type(error).__name__ if error is not None else "ok" if self._finished else "abandoned"
            served_event(observer, self._served, outcome, latency, self._usage, error)

    async def aclose(self) -> None:
        """Stop reading: close the upstream connection and free the key."""
        await self._finish(None)
