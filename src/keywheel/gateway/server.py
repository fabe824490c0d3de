"""How ``keywheel serve`` runs the gateway: uvicorn (httptools), with keywheel's
connection rules added to its protocol class.

:class:`GatewayProtocol` is uvicorn's httptools protocol plus what it lacks:

- a request-head timeout: a connection that has not sent a complete request head
  within ``KEYWHEEL_HEADER_TIMEOUT`` seconds of connecting (or of starting its next
  request) gets a 408 and is closed, so a header slowloris holds no slot for long;
- a bound on the size of a request head (:data:`MAX_HEAD_BYTES`, a 431 past it);
- a connection bound: past ``KEYWHEEL_MAX_CONNECTIONS`` open connections, a new
  connection's request is answered with a 503 in the caller's dialect (JSON, with
  ``retry-after``) and the connection is closed;
- the client's going away told to the request's handler (``scope[ON_LOST]``, see
  :func:`keywheel.gateway.http.watch_client`), without a task per request waiting for it;
- the start of the drain: uvicorn calls ``shutdown()`` on every connection when it
  gets SIGTERM/SIGINT (after it has stopped listening); the first call starts
  :meth:`Gateway.drain`, which lets requests finish until ``KEYWHEEL_SHUTDOWN_TIMEOUT``
  and then cuts the rest in their dialect.  uvicorn's own graceful timeout is set
  :data:`~keywheel.gateway.app.CUT_GRACE` seconds later, so its hard cancel (which
  would log a traceback and send a text/plain 500) only meets handlers that could
  not even write their 503.

The port is bound here, before uvicorn starts, so a busy port is reported
plainly (which port, what to change) with exit code 2.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import socket
from typing import Any, cast

import orjson
import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from keywheel.config import Settings
from keywheel.gateway.app import CUT_GRACE, Gateway
from keywheel.gateway.http import ON_LOST

log = logging.getLogger("keywheel.gateway")

APP_FACTORY = "keywheel.gateway.factory:app_from_env"
#: A request head (request line and headers) larger than this gets a 431; httptools sets no bound.
MAX_HEAD_BYTES = 64 * 1024
#: Seconds a connection accepted just before a drain has to send its request (see ``shutdown``).
LATE_GRACE = 2.0
#: The scope key marking such a request: the draining gateway serves it rather than refusing it.
LATE = "keywheel.accepted_before_drain"


def find_gateway(app: Any) -> Gateway | None:
    """The :class:`Gateway` inside uvicorn's middleware wrapping (``.app`` links), if any."""
    for _ in range(8):
        if isinstance(app, Gateway):
            return app
        app = getattr(app, "app", None)
        if app is None:
            return None
    return None


def _raw_error(status: int, reason: str, body: bytes) -> bytes:
    head = (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    )
    return head.encode() + body


class GatewayProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a request-head timeout, a connection bound and the drain hook."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.gateway = find_gateway(self.app)
        # The head timer: one per connection, not one per request.  A head's start is noted
        # (`_head_since`, loop time; None once it is complete) and the timer, when it fires, checks
        # the head in progress and sets itself again for what that head has left.
        self._head_timer: asyncio.TimerHandle | None = None
        self._head_since: float | None = None
        self._over_limit = False
        self._in_head = True  # between the start of a request (or of the connection) and its complete head
        self._head_bytes = 0
        self._late = False  # a connection accepted before the drain, whose first request comes after

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)  # type: ignore[arg-type]
        gateway = self.gateway
        if gateway is not None:
            self._over_limit = len(self.connections) > gateway.settings.max_connections
            self._arm()

    def _arm(self) -> None:
        """A request head starts: time it."""
        gateway = self.gateway
        if gateway is not None:
            self._head_since = self.loop.time()
            if self._head_timer is None:
                self._head_timer = self.loop.call_later(gateway.settings.header_timeout, self._head_timed_out)

    def _disarm(self) -> None:
        self._head_since = None
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._in_head and not self.transport.is_closing():
            self._head_bytes += len(data)
            if self._head_bytes > MAX_HEAD_BYTES:
                self._refuse_head(431, "Request Header Fields Too Large", f"request head over {MAX_HEAD_BYTES} bytes")

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head, self._head_bytes = True, 0
        self._arm()  # the next request on a kept-alive connection: its head is timed too

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._head_since = None  # the timer stays: it finds no head in progress, or the next one's
        if self._over_limit and self.gateway is not None:
            self.app = self.gateway.refuse
        scope = cast(dict[str, Any], self.scope)
        if self._late:
            scope[LATE] = True  # the gateway serves it though it drains
        scope[ON_LOST] = None  # a chat handler's Watch, told in connection_lost if the client goes away first
        super().on_headers_complete()
        if self._late and self.cycle is not None:
            self.cycle.keep_alive = False

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        cycle = self.cycle
        super().connection_lost(exc)
        if cycle is not None and not cycle.response_complete:
            watch = cast(dict[str, Any], cycle.scope).get(ON_LOST)
            if watch is not None:
                watch.lost()

    def _head_timed_out(self) -> None:
        self._head_timer = None
        transport = self.transport
        since = self._head_since
        if transport.is_closing() or since is None or self.gateway is None:
            return  # no head in progress: the next one sets the timer again
        left = since + self.gateway.settings.header_timeout - self.loop.time()
        if left > 0:  # a later head than the one the timer was set for
            self._head_timer = self.loop.call_later(left, self._head_timed_out)
            return
        if self.cycle is not None and not self.cycle.response_complete:
            self._arm()  # a pipelined head behind a running request: that request may finish first
            return
        timeout = self.gateway.settings.header_timeout
        reason = f"request head not received within {timeout:g} s (KEYWHEEL_HEADER_TIMEOUT)"
        self._refuse_head(408, "Request Timeout", reason)
        transport.close()

    def _refuse_head(self, status: int, phrase: str, message: str) -> None:
        """Answer a request whose head never came whole (OpenAI-shaped: its dialect is unknown), and close."""
        self._disarm()
        if self.cycle is None or self.cycle.response_complete:
            if self.gateway is not None:
                _, _, body = self.gateway.openai.render_simple_error(status, message)
            else:
                body = orjson.dumps({"error": {"message": message, "type": "invalid_request_error"}})
            self.transport.write(_raw_error(status, phrase, body))
        self.transport.close()

    def send_400_response(self, msg: str) -> None:
        """A request uvicorn cannot parse: a JSON 400 (uvicorn's own is text/plain)."""
        body = orjson.dumps({"error": {"message": msg, "type": "invalid_request_error", "code": "bad_http"}})
        self.transport.write(_raw_error(400, "Bad Request", body))
        self.transport.close()

    def shutdown(self) -> None:
        if self.gateway is not None:
            self.gateway.start_drain()
            if self.cycle is None and not self.transport.is_closing():
                # Accepted before the listening socket closed, its request not read yet (a worker
                # replaced by a rolling restart): that first request is served, then the connection
                # closes; one that sends nothing within LATE_GRACE is closed.
                self._late = True
                self.loop.call_later(LATE_GRACE, self._late_timed_out)
                return
        super().shutdown()

    def _late_timed_out(self) -> None:
        if self.cycle is None:
            self.transport.close()


class BindError(Exception):
    """The listening socket could not be bound; ``in_use``: another process holds the port."""

    def __init__(self, host: str, port: int, reason: str, *, in_use: bool) -> None:
        self.host, self.port, self.reason, self.in_use = host, port, reason, in_use
        super().__init__(f"cannot listen on {host}:{port}: {reason}")


def bind(host: str, port: int) -> socket.socket:
    """Bind the listening socket (IPv4 first when a name has both); :class:`BindError` when it cannot be."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise BindError(host, port, f"cannot resolve {host!r} ({exc.strerror or exc})", in_use=False) from None
    family, kind, proto, _, address = next((i for i in infos if i[0] == socket.AF_INET), infos[0])
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        in_use = exc.errno == errno.EADDRINUSE
        raise BindError(host, port, exc.strerror or str(exc), in_use=in_use) from None
    sock.set_inheritable(True)
    return sock


def fit_file_limit(max_connections: int) -> None:
    """Raise the soft open-file limit toward what the connection bound needs (each client
    connection may hold an upstream connection too); warn when the hard limit is lower."""
    try:
        import resource
    except ImportError:  # not on this platform
        return
    needed = 2 * max_connections + 256
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
        if soft < needed:
            log.warning(
                "KEYWHEEL_MAX_CONNECTIONS=%d needs about %d open files, but the limit is %d: "
                "lower KEYWHEEL_MAX_CONNECTIONS or raise the limit (ulimit -n)",
                max_connections,
                needed,
                soft,
            )


def config(app: Gateway | str, settings: Settings, *, workers: int, log_level: str) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        factory=isinstance(app, str),
        workers=workers,
        loop="uvloop",
        http=GatewayProtocol,
        # No WebSocket routes: an upgrade request is answered as plain HTTP (uvicorn would otherwise
        # hand the app a 'websocket' scope it does not serve, and answer a text/plain 500).
        ws="none",
        # keywheel's own access log (keywheel.access) logs paths, never query strings.
        access_log=False,
        log_level=log_level.lower(),
        # No handlers of uvicorn's own: its records reach the root handlers, which redact key pieces.
        log_config=None,
        lifespan="on",
        # The gateway cuts late requests itself at the drain deadline; uvicorn's hard
        # cancel comes CUT_GRACE later, for handlers that could not even answer.
        timeout_graceful_shutdown=int(settings.shutdown_timeout + CUT_GRACE + 1),
    )


def serve(
    wheel_app: Gateway | None,
    settings: Settings,
    *,
    host: str,
    port: int,
    workers: int,
    log_level: str,
    env_file: str | None,
) -> None:
    """Run until SIGTERM/SIGINT.  ``wheel_app`` is the gateway for one worker; with more,
    each worker builds its own from the environment.  Raises :class:`BindError`."""
    sock = bind(host, port)
    fit_file_limit(settings.max_connections)
    if workers > 1:
        from keywheel.config import config_source
        from keywheel.gateway.supervisor import Supervisor

        if env_file:
            os.environ["KEYWHEEL_ENV_FILE"] = env_file
        os.environ["KEYWHEEL_LOG_LEVEL"] = log_level.upper()
        cfg = config(APP_FACTORY, settings, workers=workers, log_level=log_level)
        Supervisor(cfg, [sock], config_source(env_file)).run()  # reload: rolling restart (gateway/supervisor.py)
        return
    assert wheel_app is not None
    cfg = config(wheel_app, settings, workers=1, log_level=log_level)
    uvicorn.Server(cfg).run(sockets=[sock])
