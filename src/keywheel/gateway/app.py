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
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import orjson

from keywheel.calls import Served, Target, chat_response
from keywheel.config import Settings
from keywheel.errors import KeywheelError, RequestFault, ShuttingDown, UpstreamError
from keywheel.gateway.admin import Admin, KeyAdmin, Summary
from keywheel.gateway.dialects import DIALECTS, Dialect
from keywheel.gateway.http import (
    HttpError,
    Receive,
    Reply,
    Scope,
    Send,
    Watch,
    landing,
    log_internal,
    loggable,
    read_body,
    relay,
    request_id,
    served_header_list,
    served_headers,
    watch_client,
)
from keywheel.gateway.http import allow as _allow
from keywheel.gateway.http import presented_key as _presented_key
from keywheel.gateway.http import respond as _respond
from keywheel.gateway.models import model_info
from keywheel.gateway.page import status_page, wants_page
from keywheel.gateway.passthrough import EMPTY, Request, builder, forwarded, loads, lost_ints
from keywheel.gateway.reload import listen_for_sighup, reload
from keywheel.gateway.scrape import scrape
from keywheel.observe import KeyStateChanged, Observer, RequestFinished, access_log, key_state_log
from keywheel.ops.metrics import metrics_for
from keywheel.ops.recovery import Upkeep
from keywheel.ops.shared_metrics import process_metrics
from keywheel.providers import FAMILIES
from keywheel.providers._common import dumps as _dumps
from keywheel.providers.paths import check_model
from keywheel.router import RequestBuilder, Router
from keywheel.secrets import ApiKey, install_log_filter
from keywheel.state.windows import body_tokens
from keywheel.status import Credit

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

    @property
    def credits(self) -> dict[str, Credit]: ...

    async def aclose(self) -> None: ...

    async def areload(self, settings: Settings) -> Summary: ...  # keywheel.Wheel.areload


class Gateway:
    """The ASGI application.  ``Gateway(wheel)``; one per process (or mounted in-process).
    ``source`` reads the configuration again, for reloads (:mod:`keywheel.gateway.reload`)."""

    def __init__(self, wheel: Host, source: Callable[[], Settings] | None = None) -> None:
        self.wheel = wheel
        self.source = source
        router = wheel.router
        # Key checks, background re-probes and credit readings (keywheel.ops), started with the server.
        self.upkeep = Upkeep(
            wheel.settings, router.pools, router.transport, router.redactor.redact, wheel.observer, wheel.credits
        )
        self.configure(wheel.settings)
        self.openai, self.anthropic, self.gemini = DIALECTS["openai"], DIALECTS["anthropic"], DIALECTS["gemini"]
        # Shutdown: the handlers in flight, the ones cut at the drain deadline, the drain itself.
        self._inflight: set[asyncio.Task[Any]] = set()
        self._cut: set[asyncio.Task[Any]] = set()
        self._drain: asyncio.Task[tuple[int, int]] | None = None
        self.refused = 0  # requests answered 503 because the gateway was draining
        self._target_cache: tuple[Router | None, dict[tuple[str, bool], list[Target]]] = (None, {})
        install_log_filter()  # key pieces never reach a log line from the gateway's loggers
        self.observer: Observer = wheel.observer
        self.observer.subscribe(access_log, RequestFinished)  # the access log is one subscriber,
        self.observer.subscribe(key_state_log, KeyStateChanged)  # the key-state log another
        self.metrics = metrics_for(self.observer, self.settings.metrics, process_metrics)  # None when off

    def configure(self, settings: Settings) -> None:
        """Take the gateway's own settings (at start and on a reload)."""
        self.settings = settings
        self.max_body = settings.max_body_bytes
        self.body_timeout = settings.body_timeout
        self._client_keys = [k.reveal().encode() for k in settings.gateway_keys]
        self.upkeep.settings, self.upkeep.pools = settings, self.wheel.router.pools  # a reload's keys probed too
        self.admin = Admin(
            self.wheel, settings.admin_key, self.max_body, self.body_timeout, lambda: reload(self), self.upkeep
        )

    # ------------------------------------------------------------------ ASGI

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """One HTTP request (or the lifespan), answered.  The handler itself, not a layer over it:
        every frame of a request's chain of awaits runs again each time the request resumes."""
        if scope["type"] != "http":
            if scope["type"] == "lifespan":
                await self._lifespan(receive, send)
            return
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
            if self._drain is not None and not scope.get("keywheel.accepted_before_drain"):
                self.refused += 1
                raise ShuttingDown()
            status = await self._route(scope, method, path, headers, dialect, reply.receive, reply.send, served)
        except (HttpError, KeywheelError) as err:
            status = await self._answer_error(err, dialect, reply)
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

    async def _answer_error(self, err: HttpError | KeywheelError, dialect: Dialect, reply: Reply) -> int:
        """Answer a request that failed before (or instead of) its answer; its status."""
        if isinstance(err, HttpError):
            if err.status == 401:
                code, extra, body = dialect.render_auth_error(err.message)
            else:
                code, extra, body = dialect.render_simple_error(err.status, err.message)
            await reply.error(code, body, {**extra, **err.headers})
            return err.status
        reply.tries = len(getattr(err, "attempts", None) or ())
        status, extra, body = dialect.render_error(err)
        if isinstance(err, RequestFault) and err.body and self._same_dialect(err, dialect):
            body = err.body  # the upstream's own words, in the caller's dialect (key pieces already stripped)
        await reply.error(status, body, {**extra, **served_headers(err)})
        return status

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self.upkeep.start()
                listen_for_sighup(self)
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self._drain is not None:
                    await asyncio.shield(self._drain)
                await self.upkeep.stop()
                await self.wheel.aclose()
                if self.metrics is not None:
                    self.metrics.flush()  # a worker of --workers N: its last counts, for the others' scrapes
                await send({"type": "lifespan.shutdown.complete"})
                return

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
                who.usage if who is not None else None,
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

    def _route(
        self,
        scope: Scope,
        method: str,
        path: str,
        headers: dict[bytes, bytes],
        dialect: Dialect,
        receive: Receive,
        send: Send,
        served: list[Served],
    ) -> Awaitable[int]:
        """The route's handler, called: a plain function returning its coroutine (one frame fewer
        to run again each time the request resumes)."""
        if path == "/health":
            _allow(method, "GET", "HEAD")
            return _health(send)
        if path == "/" or path == "/status.html":  # no data here: clients probe / unauthenticated (Claude Code)
            return (status_page if path != "/" or wants_page(headers) else landing)(method, send)
        if path == "/metrics":
            check = None if self.settings.metrics_public else self.admin.check
            return scrape(self.metrics, check, self.wheel.asnapshot, scope, method, headers, send)
        if path == "/status" or path.startswith("/admin/"):
            self.admin.check(scope, headers)
            return self.admin.handle(method, path, receive, send)
        # ?key= only on the Gemini routes (Google's REST convention); elsewhere keys go in headers.
        self._check_client(scope, headers, query=dialect is self.gemini)
        if path == "/v1/chat/completions":
            _allow(method, "POST")
            return self._chat(scope, self.openai, None, False, headers, receive, send, served)
        if path == "/v1/responses":
            _allow(method, "POST")
            return self._chat(scope, DIALECTS["responses"], None, False, headers, receive, send, served)
        if path == "/v1/messages":
            _allow(method, "POST")
            return self._chat(scope, self.anthropic, None, False, headers, receive, send, served)
        if path == "/v1/messages/count_tokens":
            _allow(method, "POST")
            return self._count_tokens(headers, receive, send, served)
        if dialect is self.gemini and ":" in path:  # /v1beta/models/…, /v1/models/… or /models/… (no version)
            return self._gemini_call(scope, method, path, headers, receive, send, served)
        if path in ("/v1/models", "/v1beta/models", "/models") or (
            path.startswith(("/v1/models/", "/v1beta/models/", "/models/")) and ":" not in path
        ):
            return model_info(self.settings, self.resolve_model, scope, method, path, headers, send)
        raise HttpError(404, f"no route {method} {path}")

    async def _gemini_call(
        self,
        scope: Scope,
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
        return await self._chat(scope, self.gemini, model, stream, headers, receive, send, served)

    # --------------------------------------------------------------- security

    def _check_client(self, scope: Scope, headers: dict[bytes, bytes], *, query: bool) -> None:
        if not self._client_keys:
            return  # no gateway keys: serve refuses to bind beyond loopback
        presented = _presented_key(scope, headers, query=query)
        if presented is not None:
            for key in self._client_keys:
                if hmac.compare_digest(presented, key):
                    return
        raise HttpError(401, "missing or invalid gateway key")

    # ------------------------------------------------------------------ chat

    async def _chat(
        self,
        scope: Scope,
        dialect: Dialect,
        path_model: str | None,
        path_stream: bool,
        headers: dict[bytes, bytes],
        receive: Receive,
        send: Send,
        served: list[Served],
    ) -> int:
        raw = await read_body(headers, receive, self.max_body, self.body_timeout)
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
        watch = Watch(handler)
        watcher = watch_client(scope, receive, watch)
        try:
            tokens = body_tokens(len(raw), body)
            if stream:
                return await self._stream(dialect, request, targets, build, send, served, tokens)
            return await self._complete(dialect, targets, build, send, served, tokens)
        except asyncio.CancelledError:
            if watch.gone:
                handler.uncancel()
                return 499
            raise
        finally:
            watch.done = True
            if watcher is not None:
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
        await _respond(send, 200, body, served_header_list(who))
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
        await send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS + served_header_list(who)})
        ended = False
        try:
            if renderer is None:
                ended = await relay(stream, send)
            else:
                start = renderer.start()
                if start:
                    await send({"type": "http.response.body", "body": start, "more_body": True})
                async for event in stream:
                    await send({"type": "http.response.body", "body": renderer.event(event), "more_body": True})
        except (KeywheelError, Exception, asyncio.CancelledError) as exc:
            # Once the stream has started, errors travel in-band, the dialect's way.
            err = self._in_band(exc)
            if renderer is None and stream.finished:
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
        raw = await read_body(headers, receive, self.max_body, self.body_timeout)
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
        """The chain a request's model (and fallback header) routes to; cached per model, as the
        router caches chains (the configuration does not change under a router)."""
        router = self.wheel.router
        cache = self._target_cache
        if cache[0] is not router:
            cache = self._target_cache = (router, {})
        targets = cache[1].get((model, fallback))
        if targets is None:
            provider, chosen = self.resolve_model(model)
            targets = router.chain(provider, chosen, fallback=fallback if provider else True)
            if len(cache[1]) < 256:  # models come from callers: keep the cache bounded
                cache[1][(model, fallback)] = targets
        return targets

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


# -------------------------------------------------------------------- helpers


async def _health(send: Send) -> int:
    await _respond(send, 200, b'{"status":"ok"}')
    return 200


# The upstream dialects that count tokens themselves (Anthropic's count_tokens, Gemini's :countTokens).
COUNTERS = frozenset({"anthropic", "gemini"})
