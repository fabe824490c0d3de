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
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import logging
import re
import time
import urllib.parse
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import orjson

from keywheel.client import Wheel, _response
from keywheel.errors import BadRequest, KeywheelError, RequestFault, UpstreamError
from keywheel.gateway.dialects import DIALECTS, Dialect
from keywheel.gateway.dialects.base import InboundRequest
from keywheel.providers.base import HttpRequest
from keywheel.providers.paths import check_model
from keywheel.router import RequestBuilder, Served, Target
from keywheel.secrets import ApiKey, install_log_filter

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

log = logging.getLogger("keywheel.access")

AUTO_MODELS = frozenset({"", "auto", "keywheel", "default"})
JSON_HEADERS = [(b"content-type", b"application/json")]
SSE_HEADERS = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]
# Model-name families that point at a provider when a bare name is given.
FAMILIES = (("claude", "anthropic"), ("gemini", "gemini"), ("gpt-", "openai"), ("o1", "openai"), ("o3", "openai"))


class HttpError(Exception):
    """A gateway-level failure answered before any upstream work."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        self.status, self.message, self.headers = status, message, headers or {}
        super().__init__(message)


def _ascii(fingerprint: str) -> str:
    return fingerprint.replace("…", "...")


class Gateway:
    """The ASGI application.  ``Gateway(wheel)``; one per process (or mounted in-process)."""

    def __init__(self, wheel: Wheel) -> None:
        self.wheel = wheel
        self.settings = wheel.settings
        self.max_body = wheel.settings.max_body_bytes
        self.body_timeout = wheel.settings.body_timeout
        self._client_keys = [k.reveal().encode() for k in self.settings.gateway_keys]
        admin = self.settings.admin_key
        self._admin_key = admin.reveal().encode() if admin is not None else None
        self.openai, self.anthropic, self.gemini = DIALECTS["openai"], DIALECTS["anthropic"], DIALECTS["gemini"]
        install_log_filter()  # key pieces never reach a log line from the gateway's loggers

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
        try:
            status = await self._route(scope, method, path, headers, dialect, receive, send, served)
        except HttpError as err:
            status = err.status
            if err.status == 401:
                code, extra, body = dialect.render_auth_error(err.message)
            else:
                code, extra, body = dialect.render_simple_error(err.status, err.message)
            await _respond(send, code, body, {**extra, **err.headers})
        except KeywheelError as err:
            status, extra, body = dialect.render_error(err)
            if isinstance(err, RequestFault) and err.body and self._same_dialect(err, dialect):
                body = err.body  # the upstream's own words, in the caller's dialect (key pieces already stripped)
            await _respond(send, status, body, {**extra, **_served_headers(err)})
        if log.isEnabledFor(logging.INFO):
            who = f" {served[0].target.provider.name} {_ascii(served[0].key.fingerprint)}" if served else ""
            # The path only, never the query string (?key= may carry a gateway key).
            took = (time.perf_counter() - started) * 1000
            log.info("%s %s %d%s %.1fms", method, _loggable(path), status, who, took)

    def _dialect_of(self, path: str, headers: dict[bytes, bytes]) -> Dialect:
        if path.startswith("/v1beta/") or (path.startswith("/v1/models/") and ":" in path):
            return self.gemini
        if path.startswith("/v1/messages") or b"anthropic-version" in headers:
            return self.anthropic
        return self.openai

    def _same_dialect(self, err: UpstreamError, dialect: Dialect) -> bool:
        provider = self.settings.providers.get(err.provider)
        return provider is not None and provider.dialect == dialect.name

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
        if path == "/status" or path.startswith("/admin/"):
            self._check_admin(scope, headers)
            return await self._admin(method, path, receive, send)
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
            raise HttpError(501, "count_tokens is not supported by keywheel; count with the provider's SDK")
        if dialect is self.gemini and ":" in path:
            model, _, action = path.split("/models/", 1)[1].rpartition(":")
            if action not in ("generateContent", "streamGenerateContent"):
                raise HttpError(404, f"unsupported Gemini method {action!r}")
            _allow(method, "POST")
            stream = action == "streamGenerateContent"
            return await self._chat(self.gemini, model, stream, headers, receive, send, served)
        if path in ("/v1/models", "/v1beta/models"):
            _allow(method, "GET")
            models = [(f"{name}/{self.settings.providers[name].model}", name) for name in self.settings.chain]
            models.insert(0, ("auto", "keywheel"))
            await _respond(send, 200, orjson.dumps(dialect.render_models(models)))
            return 200
        raise HttpError(404, f"no route {method} {path}")

    # --------------------------------------------------------------- security

    def _check_client(self, scope: Scope, headers: dict[bytes, bytes], *, query: bool) -> None:
        if not self._client_keys:
            return  # no gateway keys: serve refuses to bind beyond loopback
        presented = _presented_key(scope, headers, query=query)
        if presented is None or not any(hmac.compare_digest(presented, k) for k in self._client_keys):
            raise HttpError(401, "missing or invalid gateway key")

    def _check_admin(self, scope: Scope, headers: dict[bytes, bytes]) -> None:
        if self._admin_key is None:
            client = scope.get("client")
            if client and _is_loopback(client[0]):
                return
            raise HttpError(403, "admin routes need KEYWHEEL_ADMIN_KEY (or a loopback client when none is set)")
        presented = _presented_key(scope, headers, query=False)
        if presented is None or not hmac.compare_digest(presented, self._admin_key):
            raise HttpError(401, "missing or invalid admin key")

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
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise BadRequest(f"request body is not valid JSON: {exc}", status=400) from None
        inbound = dialect.parse_request(body, path_model)
        stream = inbound.stream or path_stream
        fallback = headers.get(b"x-keywheel-fallback", b"on").lower() not in (b"off", b"false", b"0")
        targets = self._targets(inbound.model, fallback)
        build = _builder(dialect, inbound, body, _forwarded(dialect, headers))
        # Watch for the client going away: cancel this handler, which closes upstream.
        handler = asyncio.current_task()
        assert handler is not None
        state = {"done": False, "gone": False}
        watcher = asyncio.create_task(_watch(receive, handler, state))
        try:
            if stream:
                return await self._stream(dialect, inbound, targets, build, send, served)
            return await self._complete(dialect, inbound, targets, build, send, served)
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
        inbound: InboundRequest,
        targets: list[Target],
        build: RequestBuilder,
        send: Send,
        served: list[Served],
    ) -> int:
        completion, body, who = await self.wheel.router.complete(targets, build)
        served.append(who)
        if who.target.adapter.dialect != dialect.name:
            body = orjson.dumps(dialect.render_response(_response(completion, who), inbound.model))
        await _respond(send, 200, body, _served_headers(who))
        return 200

    async def _stream(
        self,
        dialect: Dialect,
        inbound: InboundRequest,
        targets: list[Target],
        build: RequestBuilder,
        send: Send,
        served: list[Served],
    ) -> int:
        stream = await self.wheel.router.open_stream(targets, build, passthrough=dialect.name)
        who = stream.served
        served.append(who)
        renderer = (
            None
            if who.target.adapter.dialect == dialect.name
            else dialect.stream_renderer(inbound.model, inbound.include_usage)
        )
        await send(
            {"type": "http.response.start", "status": 200, "headers": SSE_HEADERS + _header_list(_served_headers(who))}
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
        except KeywheelError as err:
            # Once the stream has started, errors travel in-band, the dialect's way.
            renderer = renderer or dialect.stream_renderer(inbound.model, inbound.include_usage)
            await send({"type": "http.response.body", "body": renderer.error(err), "more_body": True})
        finally:
            await stream.aclose()
        if not ended:
            await send({"type": "http.response.body", "body": b"", "more_body": False})
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
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_body:
            raise HttpError(413, f"request body over {self.max_body} bytes")
        message = await receive()
        body: bytes = message.get("body", b"")
        if not message.get("more_body"):
            return body
        parts = [body]
        size = len(body)
        try:
            async with asyncio.timeout(self.body_timeout):
                while message.get("more_body"):
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        raise HttpError(400, "client went away while sending the body")
                    chunk = message.get("body", b"")
                    size += len(chunk)
                    if size > self.max_body:
                        raise HttpError(413, f"request body over {self.max_body} bytes")
                    parts.append(chunk)
        except TimeoutError:
            raise HttpError(408, f"request body not received within {self.body_timeout:g} s") from None
        return b"".join(parts)

    # ----------------------------------------------------------------- admin

    async def _admin(self, method: str, path: str, receive: Receive, send: Send) -> int:
        wheel = self.wheel
        if path == "/status":
            _allow(method, "GET")
            await _respond(send, 200, orjson.dumps(wheel.status()))
            return 200
        _allow(method, "POST")
        action = path.removeprefix("/admin/keys/")
        raw = await self._body({}, receive)
        try:
            body = orjson.loads(raw or b"{}")
        except orjson.JSONDecodeError:
            raise HttpError(400, "admin body must be JSON") from None
        try:
            if action == "add":
                result: Any = {"key": wheel.add_key(str(body["provider"]), str(body["key"]))}
            elif action in ("disable", "enable", "remove"):
                fingerprint = str(body["key"]).replace("...", "…")
                if action == "disable":
                    wheel.disable_key(fingerprint, str(body.get("reason") or "disabled by operator"))
                else:
                    getattr(wheel, f"{action}_key")(fingerprint)
                result = {"key": fingerprint, "done": action}
            else:
                raise HttpError(404, f"no admin action {action!r} (add, disable, enable, remove)")
        except KeyError as exc:
            raise HttpError(404, f"not found: {exc}") from None
        except ValueError as exc:
            raise HttpError(409, str(exc)) from None
        await _respond(send, 200, orjson.dumps(result))
        return 200


# -------------------------------------------------------------------- helpers


# Client headers that travel with a pass-through body: they change what the body means.
FORWARDED = {"anthropic": (b"anthropic-beta",)}


_HEADER_VALUE = re.compile(rb"[A-Za-z0-9._,= -]{1,512}")


def _forwarded(dialect: Dialect, headers: dict[bytes, bytes]) -> dict[str, str]:
    names = FORWARDED.get(dialect.name, ())
    out: dict[str, str] = {}
    for name in names:
        value = headers.get(name)
        if value is not None:
            # It reaches a keyed upstream request: only the characters its values use, bounded.
            if not _HEADER_VALUE.fullmatch(value):
                raise HttpError(400, f"header {name.decode()}: invalid value (letters, digits, . _ , = - only)")
            out[name.decode()] = value.decode("ascii")
    return out


def _builder(
    dialect: Dialect, inbound: InboundRequest, body: dict[str, Any], forwarded: dict[str, str]
) -> RequestBuilder:
    """Pass the body through when the upstream speaks the caller's dialect; translate otherwise."""
    same = dialect.name
    request = inbound.request

    def build(target: Target, key: ApiKey, stream: bool) -> HttpRequest:
        adapter = target.adapter
        if adapter.dialect == same:
            http = adapter.build_raw_request(target.endpoint, key, body, target.model, stream=stream)
            if forwarded:
                http.headers.update(forwarded)
            return http
        inbound.check_translatable()
        return adapter.build_request(target.endpoint, key, request, target.model, stream=stream)

    return build


async def _watch(receive: Receive, handler: asyncio.Task[Any], state: dict[str, bool]) -> None:
    message = await receive()
    if message["type"] == "http.disconnect" and not state["done"]:
        state["gone"] = True
        handler.cancel()


def _allow(method: str, *allowed: str) -> None:
    if method not in allowed:
        raise HttpError(405, f"method {method} not allowed here", {"allow": ", ".join(allowed)})


def _loggable(path: str) -> str:
    """A client's path fit for a log line: bounded, control characters escaped (no forged lines)."""
    if len(path) > 200:
        path = path[:200] + "…"
    return path if path.isprintable() else path.encode("unicode_escape").decode("ascii")


def _presented_key(scope: Scope, headers: dict[bytes, bytes], *, query: bool) -> bytes | None:
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


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def _served_headers(source: Served | KeywheelError) -> dict[str, str]:
    if isinstance(source, Served):
        attempts = source.attempts
        out = {"x-keywheel-provider": source.target.provider.name, "x-keywheel-key": _ascii(source.key.fingerprint)}
    else:
        attempts = getattr(source, "attempts", [])
        out = {}
    if attempts:
        out["x-keywheel-attempts"] = ", ".join(f"{a.provider} {_ascii(a.key)} {a.outcome}" for a in attempts)
    return out


def _header_list(headers: dict[str, str]) -> list[tuple[bytes, bytes]]:
    return [(k.encode(), v.encode("latin-1", "replace")) for k, v in headers.items()]


async def _respond(send: Send, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
    head = JSON_HEADERS + _header_list(headers) if headers else list(JSON_HEADERS)
    head.append((b"content-length", b"%d" % len(body)))
    await send({"type": "http.response.start", "status": status, "headers": head})
    await send({"type": "http.response.body", "body": body, "more_body": False})
