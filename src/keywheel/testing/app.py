"""The fake upstream's aiohttp application: routes, and how each behaviour plays
out on a live connection (hang, stream cut, in-band error, slow stream).

Handlers run on the fake's own event loop and never block it: every wait is an
``asyncio.sleep`` in short slices that also watch for the client going away,
so a client disconnect is noticed within ``POLL`` seconds.  Handlers never raise
into aiohttp; a connection that is gone gets a throwaway response that aiohttp
discards quietly.
"""

from __future__ import annotations

import asyncio
import json

import orjson
from aiohttp import web

from keywheel.testing._echo import echo_answer, echo_event
from keywheel.testing._openai import OpenAIDialect
from keywheel.testing.behaviours import ERROR_KINDS, WIRE_FAULTS, Behaviour
from keywheel.testing.dialects import Answer, Dialect, Incoming, Json, Turn, cut_point
from keywheel.testing.registry import dialect_for
from keywheel.testing.state import FakeState
from keywheel.testing.wire import play

POLL = 0.05  # seconds between "is the client still there?" checks
MAX_BODY = 64 * 1024 * 1024


def _parse(raw: bytes) -> Json:
    if not raw:
        return None
    try:
        if _LONG_RUN in raw.translate(_DIGITS):  # maybe an integer beyond 64 bits: orjson would make it a float
            return json.loads(raw)
        return orjson.loads(raw)
    except ValueError:  # orjson.JSONDecodeError and json.JSONDecodeError both are
        return None


_DIGITS = bytes(48 if 48 <= c <= 57 else 32 for c in range(256))
_LONG_RUN = b"0" * 19


def _respond(answer: Answer) -> web.Response:
    return web.Response(
        status=answer.status,
        body=orjson.dumps(answer.body),
        headers=dict(answer.headers),
        content_type="application/json",
    )


class FakeApp:
    """Serves the three dialects from one :class:`FakeState`."""

    def __init__(self, state: FakeState) -> None:
        self.state = state
        self.closing = False  # set by the server on stop: pending waits end at once
        self.anthropic = dialect_for("anthropic")
        self.gemini = dialect_for("gemini")
        self.openai = dialect_for("openai")
        self.openrouter = dialect_for("openrouter")

    def build(self) -> web.Application:
        app = web.Application(client_max_size=MAX_BODY)
        route = app.router
        route.add_post("/v1/messages", self._anthropic_messages)
        route.add_post("/v1/messages/count_tokens", self._anthropic_count)
        route.add_get("/v1/models", self._v1_models)
        route.add_post("/v1/chat/completions", self._openai_chat)
        route.add_post("/api/v1/chat/completions", self._openrouter_chat)
        route.add_get("/api/v1/models", self._openrouter_models)
        route.add_get("/api/v1/key", self._openrouter_key)
        route.add_get("/api/v1/auth/key", self._openrouter_key)  # the older path, same body
        route.add_post("/{version:v1beta|v1}/models/{target:[^/]+}", self._gemini_generate)
        route.add_get("/{version:v1beta|v1}/models/{target:[^/]+}", self._one_model)
        route.add_get("/v1beta/models", self._gemini_models)
        return app

    # -- routes ------------------------------------------------------------------------------------------------------

    async def _anthropic_messages(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, self.anthropic, "chat")

    async def _anthropic_count(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, self.anthropic, "count")

    async def _openai_chat(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, self.openai, "chat")

    async def _openrouter_chat(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, self.openrouter, "chat")

    async def _gemini_generate(self, request: web.Request) -> web.StreamResponse:
        action = request.match_info["target"].rpartition(":")[2]
        if action == "countTokens":
            return await self._serve(request, self.gemini, "count")
        if action not in ("generateContent", "streamGenerateContent"):
            raise web.HTTPNotFound()
        return await self._serve(request, self.gemini, "chat")

    def _v1_dialect(self, request: web.Request) -> Dialect:
        """``/v1/models…`` is served to all three providers: tell them apart by how they authenticate."""
        headers = request.headers
        if "anthropic-version" in headers or "x-api-key" in headers:
            return self.anthropic
        if "x-goog-api-key" in headers or "key" in request.query:
            return self.gemini
        return self.openai

    async def _v1_models(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, self._v1_dialect(request), "models")

    async def _one_model(self, request: web.Request) -> web.StreamResponse:
        if ":" in request.match_info["target"]:
            raise web.HTTPMethodNotAllowed("GET", ["POST"])
        v1beta = request.match_info["version"] == "v1beta"
        return await self._serve(request, self.gemini if v1beta else self._v1_dialect(request), "model")

    async def _gemini_models(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, self.gemini, "models")

    async def _openrouter_models(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, self.openrouter, "models")

    async def _openrouter_key(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, self.openrouter, "key")

    # -- one request -------------------------------------------------------------------------------------------------

    async def _serve(self, request: web.Request, dialect: Dialect, endpoint: str) -> web.StreamResponse:
        body = _parse(await request.read())
        headers = {name.lower(): value for name, value in request.headers.items()}
        incoming = Incoming(request.method, request.path, dict(request.query), headers, body)
        key = dialect.credential(incoming)
        stream = endpoint == "chat" and dialect.wants_stream(incoming)
        record, behaviour = self.state.admit(dialect.name, incoming, key, stream)
        if key is None:
            return _respond(dialect.missing_key())
        kind = behaviour.kind
        if kind == "echo_key" and not (stream and behaviour.text("where") == "stream"):
            return _respond(echo_answer(dialect, behaviour, key))
        if kind in ERROR_KINDS:
            return _respond(dialect.error(behaviour, incoming))
        if kind == "hang" and not await self._pause(request, behaviour.number("seconds")):
            return self._gone(key)
        if kind == "break_stream" and not stream:
            return self._cut(request)
        if endpoint == "models":
            return _respond(dialect.models())
        if endpoint == "model":
            return _respond(dialect.model(request.match_info["target"]))
        if endpoint == "key":
            return _respond(OpenAIDialect.key_info(self.state.credit(key), key))
        if endpoint == "count":
            return _respond(dialect.count(incoming))
        problem = dialect.check(incoming)
        if problem is not None:
            return _respond(problem)
        turn = dialect.plan(incoming, record.seq)
        if kind == "oversized":
            return await self._oversized(request, dialect, turn, stream, int(behaviour.number("size")), key)
        if kind in WIRE_FAULTS:
            return await play(self, request, dialect, turn, behaviour, stream, key)
        if not stream:
            return _respond(dialect.failed_response(turn) if kind == "stream_error" else dialect.response(turn))
        return await self._stream(request, dialect, turn, behaviour, key)

    async def _stream(
        self, request: web.Request, dialect: Dialect, turn: Turn, behaviour: Behaviour, key: str
    ) -> web.StreamResponse:
        streamed = dialect.stream(turn)
        frames = streamed.frames
        kind = behaviour.kind
        cut = len(frames)
        if kind in ("break_stream", "stream_error", "echo_key"):
            after = behaviour.params["after"]
            assert isinstance(after, int)
            cut = cut_point(frames, after)
        interval = behaviour.number("interval") if kind == "slow_stream" else 0.0
        stall = -1
        if kind == "stall_stream":
            after = behaviour.params["after"]
            assert isinstance(after, int)
            stall = cut_point(frames, after)
        response = web.StreamResponse(status=200, headers=dict(streamed.headers))
        response.content_type = streamed.media_type
        try:
            await response.prepare(request)
            for index, frame in enumerate(frames[:cut]):
                if interval and index and not await self._pause(request, interval):
                    return self._gone(key, response)
                if index == stall and not await self._pause(request, behaviour.number("seconds")):
                    return self._gone(key, response)
                await response.write(frame.data)
                turn.sent += frame.content
            if kind == "break_stream":
                return await self._abort(request, response)
            if kind == "stream_error":
                for frame in dialect.stream_error(turn):
                    await response.write(frame.data)
            if kind == "echo_key":  # the error event in two writes, split inside the quoted key
                first, second = echo_event(dialect, behaviour, key)
                await response.write(first)
                await asyncio.sleep(POLL)
                await response.write(second)
        except ConnectionError:
            return self._gone(key, response)
        return response

    async def _oversized(
        self, request: web.Request, dialect: Dialect, turn: Turn, stream: bool, size: int, key: str
    ) -> web.StreamResponse:
        """A body of ``size`` bytes sent chunked (no length to refuse it by), or a stream that
        starts normally (one piece of content) and then sends one ``size``-byte event."""
        response = web.StreamResponse(status=200)
        response.content_type = "text/event-stream" if stream else "application/json"
        response.enable_chunked_encoding()
        pad = b"x" * 65536
        try:
            await response.prepare(request)
            if stream:
                frames = dialect.stream(turn).frames
                for frame in frames[: cut_point(frames, 1)]:  # the stream starts, with one piece of content
                    await response.write(frame.data)
                await response.write(b'data: {"pad": "')
            else:
                await response.write(b'{"pad": "')
            for _ in range(size // len(pad) + 1):
                await response.write(pad)
            await response.write(b'"}\n\n' if stream else b'"}')
            await response.write_eof()
        except ConnectionError:
            return self._gone(key, response)
        return response

    # -- connection handling -----------------------------------------------------------------------------------------

    def _client_left(self, request: web.Request) -> bool:
        transport = request.transport
        return transport is None or transport.is_closing()

    async def _pause(self, request: web.Request, seconds: float) -> bool:
        """Wait ``seconds``; False as soon as the client is gone (or the fake stops)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while not (self.closing or self._client_left(request)):
            left = deadline - loop.time()
            if left <= 0:
                return True
            await asyncio.sleep(min(left, POLL))
        if self.closing and request.transport is not None:
            request.transport.abort()
        return False

    def _gone(self, key: str, response: web.StreamResponse | None = None) -> web.StreamResponse:
        """The client went away mid-answer: note it, hand aiohttp something to discard."""
        if not self.closing:
            self.state.record_disconnect(key)
        return response if response is not None else web.Response()

    @staticmethod
    def _cut(request: web.Request) -> web.StreamResponse:
        if request.transport is not None:
            request.transport.close()
        return web.Response()

    @staticmethod
    async def _abort(request: web.Request, response: web.StreamResponse) -> web.StreamResponse:
        """Abort the connection mid-body once what was written has left: no terminating chunk,
        so the client sees a truncated body, never a clean end."""
        transport = request.transport
        if transport is not None:
            for _ in range(100):  # at most ~1 s for the socket buffer to drain
                if transport.is_closing() or transport.get_write_buffer_size() == 0:
                    break
                await asyncio.sleep(0.01)
            transport.abort()
        return response
