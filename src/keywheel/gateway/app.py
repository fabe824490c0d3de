"""The gateway: a bare ASGI app speaking the OpenAI, Anthropic and Gemini dialects.

Bare ASGI rather than a framework because the hot path's cost is the product
(../shared/PERF-NOTES.md: a framework's routing and streaming response cost
more than the whole floor).  One request:

    authenticate (gateway key, constant time) → read the body (size and time
    limits) → parse it in the caller's dialect → resolve the model to a chain →
    for each attempt, pass the body through untouched when the upstream speaks
    the caller's dialect, else translate → answer in the caller's dialect.

Upstream keys never leave the process: responses carry only fingerprints, and
error bodies are rendered here rather than forwarded, except request faults of
the same dialect, whose bodies the router has already stripped of every piece
of every key.

A client that goes away cancels the handler, which closes the upstream
connection and frees the key's in-flight slot.

Shutdown drains (:meth:`Gateway.drain`, started by the server on SIGTERM): new
requests get a 503 with ``retry-after``; requests in flight may finish until the
drain deadline, then they are cut: a waiting request is answered with the
dialect's 503, an open stream ends with the dialect's in-band error.  No
exception ever reaches the server: anything unforeseen is logged once (type and
traceback, never the request body) and answered as the dialect's 500.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from typing import Any, Protocol

import orjson

from keywheel.calls import Served, Target, chat_response
from keywheel.config import Settings
from keywheel.errors import KeywheelError, RequestFault, ShuttingDown, UpstreamError
from keywheel.gateway.admin import Admin, KeyAdmin
from keywheel.gateway.dialects import DIALECTS, Dialect
from keywheel.gateway.http import (
    HttpError,
    Receive,
    Reply,
    Scope,
    Send,
    landing,
    log_internal,
    loggable,
    read_body,
    request_id,
    served_headers,
    watch_disconnect,
)
from keywheel.gateway.http import allow as _allow
from keywheel.gateway.http import header_list as _header_list
from keywheel.gateway.http import presented_key as _presented_key
from keywheel.gateway.http import respond as _respond
from keywheel.gateway.passthrough import EMPTY, Request, builder, forwarded, loads, lost_ints
from keywheel.observe import Observer, RequestFinished, access_log
from keywheel.providers import FAMILIES
from keywheel.providers._common import dumps as _dumps
from keywheel.providers.paths import check_model
from keywheel.router import RequestBuilder, Router
from keywheel.secrets import ApiKey, install_log_filter
from keywheel.state.windows import body_tokens

log = logging.getLogger("keywheel.access")
errors_log = logging.getLogger("keywheel.gateway")

#: Once cut at the drain deadline, how long handlers get to write their 503 or in-band error.
CUT_GRACE = 3.0
#: The message of a cut handler's cancellation (handlers tell a cut by ``Gateway._cut``).
CUT_REASON = "keywheel: drain deadline"

AUTO_MODELS = frozenset({"", "auto", "keywheel", "default"})
SSE_HEADERS = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]


class Host(KeyAdmin, Protocol):
    """What the gateway needs of a :class:`keywheel.Wheel`: its settings and router, the key
    admin actions, and closing.  (The gateway never imports :mod:`keywheel.client`.)"""

    @property
    def settings(self) -> Settings: ...

    @property
    def router(self) -> Router: ...

    @property
    def observer(self) -> Observer: ...

    async def aclose(self) -> None: ...


class Gateway:
    """The ASGI application.  ``Gateway(wheel)``; one per process (or mounted in-process)."""

    def __init__(self, wheel: Host) -> None:
        self.wheel = wheel
        self.settings = settings = wheel.settings
        self.max_body = settings.max_body_bytes
        self.body_timeout = settings.body_timeout
        self._client_keys = [k.reveal().encode() for k in settings.gateway_keys]
        self.admin = Admin(wheel, settings.admin_key, self.max_body, self.body_timeout)
        self.openai, self.anthropic, self.gemini = DIALECTS["openai"], DIALECTS["anthropic"], DIALECTS["gemini"]
        # Shutdown: the handlers in flight, the ones cut at the drain deadline, the drain itself.
        self._inflight: set[asyncio.Task[Any]] = set()
        self._cut: set[asyncio.Task[Any]] = set()
        self._drain: asyncio.Task[tuple[int, int]] | None = None
        self.refused = 0  # requests answered 503 because the gateway was draining
        install_log_filter()  # key pieces never reach a log line from the gateway's loggers
        self.observer: Observer = wheel.observer
        self.observer.subscribe(access_log, RequestFinished)  # the access log is one subscriber

    # ------------------------------------------------------------------ ASGI

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self._drain is not None:
                    await asyncio.shield(self._drain)
                await self.wheel.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        method: str = scope["method"]
        path: str = scope["path"]
        headers = dict(scope["headers"])
        dialect = self._dialect_of(path, headers)
        served: list[Served] = []
        status = 500
        handler = asyncio.current_task()
        assert handler is not None
        reply = Reply(send, receive, request_id(headers.get(b"x-request-id")))
        self._inflight.add(handler)
        try:
            if self._drain is not None:
                self.refused += 1
                raise ShuttingDown()
            status = await self._route(scope, method, path, headers, dialect, reply.receive, reply.send, served)
        except HttpError as err:
            status = err.status
            if err.status == 401:
                code, extra, body = dialect.render_auth_error(err.message)
            else:
                code, extra, body = dialect.render_simple_error(err.status, err.message)
            await reply.error(code, body, {**extra, **err.headers})
        except KeywheelError as err:
            reply.tries = len(getattr(err, "attempts", None) or ())
            status, extra, body = dialect.render_error(err)
            if isinstance(err, RequestFault) and err.body and self._same_dialect(err, dialect):
                body = err.body  # the upstream's own words, in the caller's dialect (key pieces already stripped)
            await reply.error(status, body, {**extra, **served_headers(err)})
        except asyncio.CancelledError:
            if handler not in self._cut:
                raise  # not ours to answer (the server is tearing the connection down)
            handler.uncancel()
            status, extra, body = dialect.render_error(ShuttingDown())
            await reply.error(status, body, extra)
        except Exception as exc:
            log_internal(exc, method, path)
            status, extra, body = dialect.render_error(KeywheelError())
            await reply.error(status, body, extra)
        finally:
            self._inflight.discard(handler)
        if self.observer.requests:  # the access log, at least (observe.access_log)
            self._finished(reply, method, path, dialect, served, status, started)

    def _finished(
        self, reply: Reply, method: str, path: str, dialect: Dialect, served: list[Served], status: int, started: float
    ) -> None:
        """Emit the request's :class:`RequestFinished`."""
        who = served[0] if served else None
        self.observer.emit(
            RequestFinished(
                reply.request_id.decode("ascii"),
                method,
                loggable(path),  # the path only, never the query string (?key= may carry a gateway key)
                dialect.name,
                who.target.model if who is not None else None,
                who.target.provider.name if who is not None else None,
                who.key.fingerprint if who is not None else None,
                len(who.attempts) if who is not None else reply.tries,
                status,
                (time.perf_counter() - started) * 1000,
                reply.bytes_in,
                reply.bytes_out,
            )
        )

    # --------------------------------------------------------------- shutdown

    def start_drain(self, timeout: float | None = None) -> None:
        """Begin draining (idempotent): see :meth:`drain`.  Needs a running loop."""
        if self._drain is None:
            wait = self.settings.shutdown_timeout if timeout is None else timeout
            self._drain = asyncio.get_running_loop().create_task(self.drain(wait))

    async def drain(self, timeout: float) -> tuple[int, int]:
        """Let the requests in flight finish for up to ``timeout`` seconds, then cut the rest
        (each answers in its dialect: a 503, or an in-band error on an open stream).
        Returns and logs how many were drained and how many were cut."""
        pending = set(self._inflight)
        if pending:
            errors_log.info("shutting down: draining %d request(s) in flight, for up to %g s", len(pending), timeout)
            await asyncio.wait(pending, timeout=timeout)
        still = {task for task in pending if not task.done()}
        for task in still:
            self._cut.add(task)
            task.cancel(CUT_REASON)
        if still:
            await asyncio.wait(still, timeout=CUT_GRACE)
        drained, cut = len(pending) - len(still), len(still)
        errors_log.info(
            "shutdown drain: %d request(s) drained, %d cut at the %g s deadline, %d refused while draining",
            drained,
            cut,
            timeout,
            self.refused,
        )
        return drained, cut

    async def refuse(self, scope: Scope, _receive: Receive, send: Send) -> None:
        """The answer on a connection past ``KEYWHEEL_MAX_CONNECTIONS``: a 503 in the caller's dialect."""
        if scope["type"] != "http":
            return
        dialect = self._dialect_of(scope["path"], dict(scope["headers"]))
        message = "the gateway is at its connection limit (KEYWHEEL_MAX_CONNECTIONS); retry shortly"
        code, extra, body = dialect.render_simple_error(503, message)
        await _respond(send, code, body, {**extra, "retry-after": "1", "connection": "close"})

    def _dialect_of(self, path: str, headers: dict[bytes, bytes]) -> Dialect:
        if path.startswith("/v1beta/") or (path.startswith(("/v1/models/", "/models/")) and ":" in path):
            return self.gemini
        if path.startswith("/v1/messages") or b"anthropic-version" in headers:
            return self.anthropic
        return self.openai

    def _same_dialect(self, err: UpstreamError, dialect: Dialect) -> bool:
        provider = self.settings.providers.get(err.provider)
        return provider is not None and provider.speaks(dialect.name)

    # ---------------------------------------------------------------- routing

    async def _route(
        self,
        scope: Scope,
        method: str,
        path: str,
        headers: dict[bytes, bytes],
        dialect: Dialect,
        receive: Receive,
        send: Send,
        served: list[Served],
    ) -> int:
        if path == "/health":
            _allow(method, "GET", "HEAD")
            await _respond(send, 200, b'{"status":"ok"}')
            return 200
        if path == "/":  # clients probe it unauthenticated (Claude Code sends HEAD / on start): no data here
            return await landing(method, send)
        if path == "/status" or path.startswith("/admin/"):
            self.admin.check(scope, headers)
            return await self.admin.handle(method, path, receive, send)
        # ?key= only on the Gemini routes (Google's REST convention); elsewhere keys go in headers.
        self._check_client(scope, headers, query=dialect is self.gemini)
        if path == "/v1/chat/completions":
            _allow(method, "POST")
            return await self._chat(self.openai, None, False, headers, receive, send, served)
        if path == "/v1/responses":
            _allow(method, "POST")
            return await self._chat(DIALECTS["responses"], None, False, headers, receive, send, served)
        if path == "/v1/messages":
            _allow(method, "POST")
            return await self._chat(self.anthropic, None, False, headers, receive, send, served)
        if path == "/v1/messages/count_tokens":
            _allow(method, "POST")
            return await self._count_tokens(headers, receive, send, served)
        if dialect is self.gemini and ":" in path:  # /v1beta/models/…, /v1/models/… or /models/… (no version)
            return await self._gemini_call(method, path, headers, receive, send, served)
        if path in ("/v1/models", "/v1beta/models", "/models") or (
            path.startswith(("/v1/models/", "/v1beta/models/", "/models/")) and ":" not in path
        ):
            return await self._model_info(scope, method, path, headers, send)
        raise HttpError(404, f"no route {method} {path}")

    async def _gemini_call(
        self,
        method: str,
        path: str,
        headers: dict[bytes, bytes],
        receive: Receive,
        send: Send,
        served: list[Served],
    ) -> int:
        """``…/models/{model}:generateContent`` and ``:streamGenerateContent``."""
        if "/models/" not in path:
            raise HttpError(404, f"no route {method} {path[:200]}: expected /v1beta/models/<model>:<method>")
        model, _, action = path.split("/models/", 1)[1].rpartition(":")
        if action not in ("generateContent", "streamGenerateContent"):
            raise HttpError(404, f"unsupported Gemini method {action!r}")
        _allow(method, "POST")
        stream = action == "streamGenerateContent"
        return await self._chat(self.gemini, model, stream, headers, receive, send, served)

    async def _model_info(self, scope: Scope, method: str, path: str, headers: dict[bytes, bytes], send: Send) -> int:
        """The model list (``…/models``), or one model (``…/models/{id}``: openai/anthropic
        ``models.retrieve``, google-genai ``models.get``), in the dialect the caller parses."""
        _allow(method, "GET")
        if path in ("/v1/models", "/v1beta/models", "/models"):
            listing = self._models_dialect(scope, path, headers)
            await _respond(send, 200, orjson.dumps(listing.render_models(self._models())))
            return 200
        base, _, name = path.partition("/models/")
        listing = self._models_dialect(scope, base + "/models", headers)
        rendered = listing.render_models([self._model_entry(name)])
        entries = rendered.get("data") or rendered.get("models") or [{}]
        await _respond(send, 200, orjson.dumps(entries[0]))
        return 200

    def _models(self) -> list[tuple[str, str]]:
        """``(model id as clients name it, provider)``: ``auto``, then each provider's configured model."""
        models = [(f"{name}/{self.settings.providers[name].model}", name) for name in self.settings.chain]
        models.insert(0, ("auto", "keywheel"))
        return models

    def _model_entry(self, name: str) -> tuple[str, str]:
        """One model by the name a client asks for: a listed one, or any name the gateway would route."""
        name = name.removeprefix("models/")
        for entry in self._models():
            if entry[0] == name:
                return entry
        provider, _ = self.resolve_model(name)  # an unknown provider prefix is a 404
        return name, provider or "keywheel"

    def _models_dialect(self, scope: Scope, path: str, headers: dict[bytes, bytes]) -> Dialect:
        """The shape of a model list the caller's SDK parses: ``/v1/models`` serves all three.

        Told apart as the SDKs authenticate: google-genai by ``x-goog-api-key`` (or ``?key=``,
        or its ``x-goog-api-client`` / user agent), the anthropic SDK by ``anthropic-version``
        (or ``x-api-key``), anything else (``Authorization: Bearer``) is OpenAI.
        """
        if path != "/v1/models":
            return self.gemini
        agent = headers.get(b"user-agent", b"")
        query: bytes = scope.get("query_string", b"")
        if (
            b"x-goog-api-key" in headers
            or b"x-goog-api-client" in headers
            or b"google-genai" in agent
            or query.startswith(b"key=")
            or b"&key=" in query
        ):
            return self.gemini
        if b"anthropic-version" in headers or b"x-api-key" in headers:
            return self.anthropic
        return self.openai

    # --------------------------------------------------------------- security

    def _check_client(self, scope: Scope, headers: dict[bytes, bytes], *, query: bool) -> None:
        if not self._client_keys:
            return  # no gateway keys: serve refuses to bind beyond loopback
        presented = _presented_key(scope, headers, query=query)
        if presented is None or not any(hmac.compare_digest(presented, k) for k in self._client_keys):
            raise HttpError(401, "missing or invalid gateway key")

    # ------------------------------------------------------------------ chat

    async def _chat(
        self,
        dialect: Dialect,
        path_model: str | None,
        path_stream: bool,
        headers: dict[bytes, bytes],
        receive: Receive,
        send: Send,
        served: list[Served],
    ) -> int:
        raw = await self._body(headers, receive)
        body = loads(raw)
        # Lenient: only what keywheel itself needs is checked here (a JSON object, the model, the
        # stream flag).  The rest is judged by the upstream on a pass-through, or by the dialect's
        # full parse when some target of the chain needs a translation.
        model, stream = dialect.peek(body, path_model)
        stream = stream or path_stream
        fallback = headers.get(b"x-keywheel-fallback", b"on").lower() not in (b"off", b"false", b"0")
        request = Request(dialect, raw, body, path_model, model)
        targets = request.usable(self._targets(model, fallback))
        build = builder(dialect, request, forwarded(dialect, headers))
        # Watch for the client going away: cancel this handler, which closes upstream.
        handler = asyncio.current_task()
        assert handler is not None
        state = {"done": False, "gone": False}
        watcher = asyncio.create_task(watch_disconnect(receive, handler, state))
        try:
            tokens = body_tokens(len(raw), body)
            if stream:
                return await self._stream(dialect, request, targets, build, send, served, tokens)
            return await self._complete(dialect, targets, build, send, served, tokens)
        except asyncio.CancelledError:
            if state["gone"]:
                handler.uncancel()
                return 499
            raise
        finally:
            state["done"] = True
            watcher.cancel()

    async def _complete(
        self,
        dialect: Dialect,
        targets: list[Target],
        build: RequestBuilder,
        send: Send,
        served: list[Served],
        tokens: int,
    ) -> int:
        completion, body, who = await self.wheel.router.complete(targets, build, tokens=tokens)
        served.append(who)
        if not who.target.speaks(dialect.name):
            answer = chat_response(completion, who)  # names the model that served, not the caller's "auto"
            body = orjson.dumps(dialect.render_response(answer, answer.model))
        await _respond(send, 200, body, served_headers(who))
        return 200

    async def _stream(
        self,
        dialect: Dialect,
        request: Request,
        targets: list[Target],
        build: RequestBuilder,
        send: Send,
        served: list[Served],
        tokens: int,
    ) -> int:
        stream = await self.wheel.router.open_stream(targets, build, passthrough=dialect.name, tokens=tokens)
        who = stream.served
        served.append(who)
        # A translated stream names the model asked of the provider that serves it, not the caller's "auto".
        renderer = (
            None
            if who.target.speaks(dialect.name)
            else dialect.stream_renderer(who.target.model, request.include_usage())
        )
        await send(
            {"type": "http.response.start", "status": 200, "headers": SSE_HEADERS + _header_list(served_headers(who))}
        )
        ended = False
        try:
            if renderer is None:
                async for chunk in stream.raw():
                    # The chunk that closes the stream also ends the response: one write fewer.
                    ended = stream.finished
                    await send({"type": "http.response.body", "body": chunk, "more_body": not ended})
                    if ended:
                        break
            else:
                start = renderer.start()
                if start:
                    await send({"type": "http.response.body", "body": start, "more_body": True})
                async for event in stream:
                    await send({"type": "http.response.body", "body": renderer.event(event), "more_body": True})
        except (KeywheelError, Exception, asyncio.CancelledError) as exc:
            # Once the stream has started, errors travel in-band, the dialect's way.
            err = self._in_band(exc)
            if ended:
                raise  # the response is complete: nothing more may be sent
            renderer = renderer or dialect.stream_renderer(who.target.model, False)
            await send({"type": "http.response.body", "body": renderer.error(err), "more_body": True})
        finally:
            await stream.aclose()
        if not ended:
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        return 200

    def _in_band(self, exc: BaseException) -> KeywheelError:
        """The error a started stream ends with, in-band; re-raises a cancellation not of our drain."""
        if isinstance(exc, asyncio.CancelledError):
            task = asyncio.current_task()
            if task is None or task not in self._cut:
                raise exc
            task.uncancel()
            return ShuttingDown()
        if isinstance(exc, KeywheelError):
            return exc
        log_internal(exc, "POST", "(stream)")
        return KeywheelError()

    async def _count_tokens(
        self, headers: dict[bytes, bytes], receive: Receive, send: Send, served: list[Served]
    ) -> int:
        """``POST /v1/messages/count_tokens``: the Anthropic provider's own count when the model
        routes there, Gemini's ``:countTokens`` when it routes to Gemini (both through key rotation
        and fallback, like any request), else an estimate, flagged ``x-keywheel-estimate: true``."""
        dialect = self.anthropic
        raw = await self._body(headers, receive)
        body = loads(raw)
        model, _ = dialect.peek(body)
        fallback = headers.get(b"x-keywheel-fallback", b"on").lower() not in (b"off", b"false", b"0")
        request = Request(dialect, raw, body, None, model, {"max_tokens": 1})
        chain = self._targets(model, fallback)
        targets = [t for t in chain if t.adapter.dialect in COUNTERS]
        if targets and chain[0].adapter.dialect in COUNTERS:
            targets = request.usable(targets)
        else:
            targets = []
        if not targets:
            estimate = {"input_tokens": max(1, len(raw) // 4)}  # ~4 bytes of JSON a token: the order of magnitude
            await _respond(send, 200, orjson.dumps(estimate), {"x-keywheel-estimate": "true"})
            return 200
        extra = forwarded(dialect, headers)

        async def attempt(target: Target, key: ApiKey, timeout: float) -> bytes:
            adapter = target.adapter
            if adapter.dialect == "anthropic":
                http = adapter.build_raw_request(target.endpoint, key, EMPTY, target.model, stream=False)
                http.url += "/count_tokens"
                http.body = _dumps({**request.body, "model": target.model})
                if lost_ints(http.body):
                    http.body = _dumps({**request.exact(), "model": target.model})
                http.headers.update(extra)
                return await self.wheel.router.send(target, http, timeout)
            http = adapter.build_request(target.endpoint, key, request.inbound().request, target.model, stream=False)
            http.url = http.url.removesuffix(":generateContent") + ":countTokens"
            inner = {"model": f"models/{target.model}", **orjson.loads(http.body or b"{}")}
            http.body = orjson.dumps({"generateContentRequest": inner})
            answer = orjson.loads(await self.wheel.router.send(target, http, timeout))
            total = answer.get("totalTokens") if isinstance(answer, dict) else None
            return orjson.dumps({"input_tokens": total if isinstance(total, int) else 0})

        router = self.wheel.router
        answer, who = await router.execute(targets, attempt)
        await router.settle(who, None)
        served.append(who)
        await _respond(send, 200, answer, served_headers(who))
        return 200

    def _targets(self, model: str, fallback: bool) -> list[Target]:
        provider, chosen = self.resolve_model(model)
        router = self.wheel.router
        return router.chain(provider, chosen, fallback=fallback if provider else True)

    def resolve_model(self, model: str) -> tuple[str | None, str | None]:
        """``auto`` → the chain; a provider's configured model → that provider;
        ``<provider>/<model>`` → that provider first; a bare name → the provider whose
        model family it is, else the chain."""
        settings = self.settings
        if model in AUTO_MODELS:
            return None, None
        check_model(model)  # a 400 naming `model` for what cannot be a model id, before anything else
        for name in settings.chain:  # a configured model, slashes and all ("openai/gpt-4o-mini")
            if settings.providers[name].model == model:
                return name, model
        head, sep, rest = model.partition("/")
        if sep:
            cfg = settings.providers.get(head)
            if cfg is None or not cfg.enabled:
                enabled = ", ".join(settings.chain)
                raise HttpError(404, f"unknown provider {head!r} in model {model!r} (configured: {enabled})")
            return head, rest or None
        for prefix, name in FAMILIES:
            if model.startswith(prefix) and name in settings.chain:
                return name, model
        return None, None

    # ------------------------------------------------------------------ body

    async def _body(self, headers: dict[bytes, bytes], receive: Receive) -> bytes:
        return await read_body(headers, receive, self.max_body, self.body_timeout)


# -------------------------------------------------------------------- helpers


# The upstream dialects that count tokens themselves (Anthropic's count_tokens, Gemini's :countTokens).
COUNTERS = frozenset({"anthropic", "gemini"})
