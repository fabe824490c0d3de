"""The fuzz suites' plumbing: a recording relay in front of the fake upstream, a raw-socket
HTTP exchange, and the invariant every answer of the gateway must meet.

Everything goes over real loopback sockets.  The relay exists because the fake upstream only
records requests that hit one of its routes; a model name that steers a keyed request
elsewhere (``..`` resolved by the HTTP client) would land on a 404 the fake never logs.  The
relay parses every request head the gateway sends upstream and keeps its exact target.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

import httptools
from hypothesis import HealthCheck, settings

#: How many examples each property runs: small and fixed in ``make test``, large in ``make fuzz``.
EXAMPLES = int(os.environ.get("KEYWHEEL_FUZZ_EXAMPLES", "0") or 0)


def examples(default: int) -> int:
    return EXAMPLES or default


def fuzz_settings(default_examples: int) -> settings:
    """The suites' hypothesis settings: the same derandomized sequence each run, no example
    database, no deadline (a served gateway answers in its own time)."""
    return settings(
        max_examples=examples(default_examples),
        derandomize=True,
        database=None,
        deadline=None,
        print_blob=False,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
    )


#: pytest-timeout for one property: generous, and growing with a long ``make fuzz`` run.
TIMEOUT = 300 + EXAMPLES // 2


# ----------------------------------------------------------------------------------------- relay


class Relay:
    """A TCP relay on loopback that records the target of every HTTP request passing through it."""

    def __init__(self, upstream_port: int) -> None:
        self._upstream = upstream_port
        self._lock = threading.Lock()
        self._targets: list[str] = []
        self._loop = asyncio.new_event_loop()
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self.port: int = self._sock.getsockname()[1]
        self._thread = threading.Thread(target=self._run, name="fuzz-relay", daemon=True)
        self._started = threading.Event()
        self._stop: asyncio.Event | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Relay:
        self._thread.start()
        if not self._started.wait(10):
            raise RuntimeError("relay did not start")
        return self

    def stop(self) -> None:
        if self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    def take(self) -> list[str]:
        """The request targets seen since the last call (and forget them)."""
        with self._lock:
            out, self._targets = self._targets, []
        return out

    def _run(self) -> None:
        self._loop.run_until_complete(self._serve())
        self._loop.close()

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        server = await asyncio.start_server(self._connection, sock=self._sock)
        self._started.set()
        async with server:
            await self._stop.wait()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        relay = self

        class Heads:
            def on_url(self, url: bytes) -> None:
                with relay._lock:
                    relay._targets.append(url.decode("latin-1"))

        parser = httptools.HttpRequestParser(Heads())
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self._upstream)
        except OSError:
            writer.close()
            return

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter, watch: bool) -> None:
            try:
                while data := await src.read(65536):
                    if watch:
                        try:
                            parser.feed_data(data)
                        except httptools.HttpParserError:
                            with relay._lock:
                                relay._targets.append("<unparseable request from the gateway>")
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                dst.close()

        await asyncio.gather(pump(reader, up_writer, True), pump(up_reader, writer, False))


# -------------------------------------------------------------------------------- raw exchanges


@dataclass
class Answer:
    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key == name:
                return value
        return None

    def header_count(self, name: str) -> int:
        return sum(1 for key, _ in self.headers if key == name)


@dataclass
class Exchange:
    """What came back on one connection: complete answers, and whether the server hung or closed."""

    answers: list[Answer] = field(default_factory=list)
    closed: bool = False  # the server closed the connection
    timed_out: bool = False  # nothing more came within the wait, and no close
    partial: bytes = b""  # bytes of an answer that never completed


class _ResponseCollector:
    def __init__(self) -> None:
        self.answers: list[Answer] = []
        self._headers: list[tuple[str, str]] = []
        self._body: list[bytes] = []
        self._name = ""
        self.parser = httptools.HttpResponseParser(self)

    def on_message_begin(self) -> None:
        self._headers, self._body = [], []

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name.decode("latin-1").lower(), value.decode("latin-1")))

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        self.answers.append(Answer(self.parser.get_status_code(), self._headers, b"".join(self._body)))


def exchange(port: int, raw: bytes, *, wait: float = 15.0, idle: float = 0.3, head: bool = False) -> Exchange:
    """Send ``raw`` bytes on a fresh connection and collect every answer.

    No half-close: uvicorn takes a client's EOF as a disconnect (and the gateway then rightly
    drops the request), so the write side stays open and the server decides when to close.

    Reads until the server closes; after one complete answer, an ``idle`` pause also ends it
    (a kept-alive connection).  ``wait`` bounds the whole exchange: past it, ``timed_out``.
    """
    collector = _ResponseCollector()
    out = Exchange()
    received = b""
    deadline = time.monotonic() + wait
    with socket.create_connection(("127.0.0.1", port), timeout=wait) as sock:
        try:
            sock.sendall(raw)
        except OSError:
            pass  # the server may close early on garbage: what it answered is still readable
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                out.timed_out = True
                break
            final = any(a.status >= 200 for a in collector.answers)  # not "100 Continue"
            sock.settimeout(min(left, idle) if final else left)
            try:
                data = sock.recv(65536)
            except TimeoutError:
                if final:
                    break
                out.timed_out = True
                break
            except OSError:
                out.closed = True
                break
            if not data:
                out.closed = True
                break
            received += data
            try:
                collector.parser.feed_data(data)
            except httptools.HttpParserError:
                out.partial = received
                break
    out.answers = collector.answers
    if not out.answers and received:
        out.partial = received
        if head:  # an answer to HEAD announces a body it does not send: read its head alone
            out.answers = _head_only(received)
    return out


def _head_only(received: bytes) -> list[Answer]:
    head, sep, _ = received.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    parts = status_line.split(" ", 2)
    if not sep or len(parts) < 2 or not parts[1].isdigit():
        return []
    headers = [(k.strip().lower(), v.strip()) for k, _, v in (line.partition(":") for line in lines)]
    return [Answer(int(parts[1]), headers, b"")]


def http_request(
    method: str, target: str, body: bytes = b"", headers: list[tuple[str, str]] | None = None, *, close: bool = True
) -> bytes:
    """A well-formed HTTP/1.1 request's bytes (the target is sent exactly as given)."""
    lines = [f"{method} {target} HTTP/1.1", "host: 127.0.0.1"]
    lines += [f"{k}: {v}" for k, v in headers or []]
    lines.append(f"content-length: {len(body)}")
    if close:
        lines.append("connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


# ------------------------------------------------------------------------------------ invariant


def dialect_path(target: str) -> str:
    """The decoded path of a request target, as the server hands it to the app."""
    try:
        raw_path = httptools.parse_url(target.encode("latin-1", "replace")).path or b""
    except httptools.HttpParserInvalidURLError:
        raw_path = target.partition("?")[0].encode("latin-1", "replace")
    return unquote(raw_path.decode("latin-1"))


def dialect_of(target: str, headers: list[tuple[str, str]] | None = None) -> str:
    """The dialect the gateway answers a request in, from its (decoded) path, as README documents:
    the Gemini routes, then the Anthropic routes or an ``anthropic-version`` header, else OpenAI."""
    path = dialect_path(target)
    if path.startswith("/v1beta/") or (path.startswith(("/v1/models/", "/models/")) and ":" in path):
        return "gemini"
    if path.startswith("/v1/messages") or any(k.lower() == "anthropic-version" for k, _ in headers or []):
        return "anthropic"
    return "openai"


def _is_str(value: Any) -> bool:
    return isinstance(value, str)


def _openai_error(body: Any) -> bool:
    # error.message is what the openai SDK reads; a top-level "type" or an error.status would be
    # Anthropic's or Gemini's shape.  (An OpenRouter 4xx passed through may carry a numeric code.)
    error = body.get("error") if isinstance(body, dict) else None
    return (
        isinstance(error, dict)
        and _is_str(error.get("message"))
        and "type" not in body
        and not _is_str(error.get("status"))
    )


def _anthropic_error(body: Any) -> bool:
    error = body.get("error") if isinstance(body, dict) else None
    return (
        isinstance(body, dict)
        and body.get("type") == "error"
        and isinstance(error, dict)
        and _is_str(error.get("type"))
        and _is_str(error.get("message"))
    )


def _gemini_error(body: Any) -> bool:
    error = body.get("error") if isinstance(body, dict) else None
    return (
        isinstance(error, dict)
        and isinstance(error.get("code"), int)
        and _is_str(error.get("message"))
        and _is_str(error.get("status"))
    )


#: Each inbound dialect's error shape, by the ``Case.dialect`` its strategy gives.
ERROR_SHAPES = {
    "openai": _openai_error,
    "anthropic": _anthropic_error,
    "gemini": _gemini_error,
    "responses": _openai_error,  # OpenAI Responses (/v1/responses) answers errors in OpenAI's shape
}

GATEWAY_STATUSES = frozenset({429, 502, 503})  # upstream trouble the gateway reports, in dialect


def violations(answer: Answer, dialect: str, also: frozenset[int] = frozenset(), *, head: bool = False) -> list[str]:
    """Why ``answer`` breaks the invariant (empty when it holds).

    A 2xx; or a 4xx whose body is JSON in the caller's dialect's error shape; or a 429/502/503
    in that shape, with ``retry-after`` on 429 and 503.  Never another 5xx (but those in ``also``,
    e.g. a route's documented 501), never text/plain.  ``head``: the answer to HEAD, which has no body.
    """
    status = answer.status
    kind = (answer.header("content-type") or "").split(";")[0].strip()
    if 200 <= status < 300:
        if kind not in ("application/json", "text/event-stream"):
            return [f"{status} with content-type {kind!r}"]
        return []
    problems = []
    if not (400 <= status < 500 or status in GATEWAY_STATUSES or status in also):
        problems.append(f"status {status}")
    if status in (429, 503) and answer.header("retry-after") is None:
        problems.append(f"{status} without retry-after")
    if kind != "application/json":
        problems.append(f"content-type {kind!r}")
    if head:
        return problems
    try:
        body = json.loads(answer.body)
    except ValueError:
        return [*problems, f"body is not JSON: {answer.body[:200]!r}"]
    if not ERROR_SHAPES[dialect](body):
        problems.append(f"body not in the {dialect} error shape: {answer.body[:300]!r}")
    return problems


# Upstream request targets keywheel may send (the fake's endpoints; base URLs carry no prefix here).
_FIXED_TARGETS = frozenset({"/v1/messages", "/v1/messages/count_tokens", "/api/v1/chat/completions"})
_GEMINI_TARGET = re.compile(
    r"^/v1beta/(models|tunedModels)/([^/?#]+):(generateContent|streamGenerateContent|countTokens)(\?alt=sse)?$"
)
_SEGMENT_BAD = re.compile(r"[/\\?#%\x00-\x20\x7f]")


def upstream_violations(targets: list[str], allowed_models: set[str]) -> list[str]:
    """Why any upstream request target is not one of the expected endpoints.

    A Gemini target must name, as one path segment, either the configured model or the model the
    caller asked for (with any ``<provider>/`` or ``models/`` prefix removed): a model name must
    never steer the path.
    """
    problems = []
    for target in targets:
        if target in _FIXED_TARGETS:
            continue
        match = _GEMINI_TARGET.match(target)
        if match is None:
            problems.append(f"upstream request to {target!r}")
            continue
        segment = unquote(match.group(2))
        if _SEGMENT_BAD.search(segment) or segment in (".", "..") or segment not in allowed_models:
            problems.append(f"upstream request to {target!r}: model segment {segment!r} not one asked for")
    return problems


def allowed_models(requested: Any, configured: set[str]) -> set[str]:
    """The Gemini model names a request may legitimately put in the upstream path."""
    allowed = set(configured)
    if isinstance(requested, str):
        for name in (requested, requested.partition("/")[2]):
            for bare in (name, name.removeprefix("models/")):
                allowed.add(bare)
                allowed.add(bare.removeprefix("tunedModels/"))
    return allowed
