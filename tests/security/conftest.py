"""Fixtures for the security suites: a real ``keywheel serve`` and a raw request recorder."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from keywheel.testing import FakeUpstream
from tests.gateway.conftest import ADMIN_KEY, GATEWAY_KEY, GatewayFactory, gateways

__all__ = ["ADMIN_KEY", "GATEWAY_KEY", "Recorder"]

GEMINI_OK = (
    b'{"candidates":[{"content":{"role":"model","parts":[{"text":"ok"}]},"finishReason":"STOP"}],'
    b'"usageMetadata":{"promptTokenCount":1,"candidatesTokenCount":1},"modelVersion":"m","responseId":"r"}'
)


class Recorder:
    """A bare TCP server that records each request line exactly as it arrived on the wire,
    and answers every request with a Gemini-shaped 200 (which the OpenAI and Anthropic
    adapters reject as unparseable: the request line is what the tests look at)."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(16)
        self.port: int = self._sock.getsockname()[1]
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def url(self, path: str = "") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            threading.Thread(target=self._one, args=(conn,), daemon=True).start()

    def _one(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(5)
            data = b""
            try:
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    data += chunk
                head, _, rest = data.partition(b"\r\n\r\n")
                self.lines.append(head.split(b"\r\n", 1)[0].decode("latin-1"))
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value.strip())
                while len(rest) < length:
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    rest += chunk
                sse = b"alt=sse" in head.split(b"\r\n", 1)[0]
                body, kind = (
                    (b"data: %s\r\n\r\n" % GEMINI_OK, b"text/event-stream") if sse else (GEMINI_OK, b"application/json")
                )
                conn.sendall(
                    b"HTTP/1.1 200 OK\r\ncontent-type: %s\r\nconnection: close\r\n"
                    b"content-length: %d\r\n\r\n%s" % (kind, len(body), body)
                )
            except OSError:
                return

    def close(self) -> None:
        self._sock.close()


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    rec = Recorder()
    yield rec
    rec.close()


@pytest.fixture
def serve(fake: FakeUpstream, tmp_path: Path) -> Iterator[GatewayFactory]:
    """``keywheel serve`` over the fake (gateway and admin keys set); keyword args override the env."""
    with gateways(fake, tmp_path) as factory:
        yield factory
