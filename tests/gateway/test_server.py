"""The server around the gateway: request-head timeout, connection bound, malformed HTTP, a busy port."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from keywheel.testing import FakeUpstream
from tests.gateway.conftest import GATEWAY_KEY, GatewayFactory, Served, free_port
from tests.helpers import fake_env, measured

AUTH = {"authorization": f"Bearer {GATEWAY_KEY}"}
HELLO = {"model": "auto", "messages": [{"role": "user", "content": "hello"}]}
PARTIAL_HEAD = b"POST /v1/chat/completions HTTP/1.1\r\nHost: gateway\r\ncontent-type: application/json\r\n"


def _address(served: Served) -> tuple[str, int]:
    host, port = served.url.removeprefix("http://").rsplit(":", 1)
    return host, int(port)


def _closed_within(sock: socket.socket, seconds: float) -> tuple[bool, bytes]:
    """Read until the peer closes (True) or ``seconds`` pass (False); what was received."""
    sock.settimeout(0.5)
    received = b""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            data = sock.recv(65536)
        except TimeoutError:
            continue
        except ConnectionResetError:
            return True, received
        if not data:
            return True, received
        received += data
    return False, received


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=30) as client:
        yield client


def test_a_header_slowloris_does_not_stop_good_requests_and_is_closed_after_the_head_timeout(
    gateway: GatewayFactory, http: httpx.Client
) -> None:
    served = gateway(AI_PROVIDER="gemini", KEYWHEEL_HEADER_TIMEOUT="1.5")
    address = _address(served)
    stalled = [socket.create_connection(address, timeout=5) for _ in range(50)]
    try:
        for sock in stalled:
            sock.sendall(PARTIAL_HEAD)  # half a request head, then nothing
        # Meanwhile, good requests are served.
        for _ in range(10):
            resp = http.post(served.url + "/v1/chat/completions", json=HELLO, headers=AUTH)
            assert resp.status_code == 200
        # And every stalled connection is closed after the head timeout (generous bound: no hang).
        for sock in stalled:
            closed, received = _closed_within(sock, 15)
            assert closed, "a connection with half a request head is still open"
            if received:
                assert received.startswith(b"HTTP/1.1 408 ") and b"application/json" in received, received
                assert b"KEYWHEEL_HEADER_TIMEOUT" in received
    finally:
        for sock in stalled:
            sock.close()
    assert http.get(served.url + "/health").status_code == 200


def test_a_connection_that_sends_nothing_is_closed_too(gateway: GatewayFactory) -> None:
    served = gateway(KEYWHEEL_HEADER_TIMEOUT="1")
    with socket.create_connection(_address(served), timeout=5) as sock:
        closed, _ = _closed_within(sock, 15)
        assert closed
    # A kept-alive connection whose next request head stalls is timed the same way.
    with socket.create_connection(_address(served), timeout=5) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: gateway\r\n\r\n")
        first = b""
        while b'{"status":"ok"}' not in first:
            chunk = sock.recv(65536)
            assert chunk, first
            first += chunk
        assert first.startswith(b"HTTP/1.1 200 "), first
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: gate")
        closed, received = _closed_within(sock, 15)
        assert closed and received.startswith(b"HTTP/1.1 408 "), received


def test_connections_past_the_bound_get_a_503_in_dialect(gateway: GatewayFactory, http: httpx.Client) -> None:
    served = gateway(KEYWHEEL_MAX_CONNECTIONS="5")
    held = [socket.create_connection(_address(served), timeout=5) for _ in range(5)]
    try:
        time.sleep(0.2)  # let the server register them
        resp = http.post(served.url + "/v1/chat/completions", json=HELLO, headers=AUTH)
        assert resp.status_code == 503, resp.text
        assert resp.headers["content-type"] == "application/json" and resp.headers["retry-after"] == "1"
        assert "KEYWHEEL_MAX_CONNECTIONS" in resp.json()["error"]["message"]
        resp = http.post(
            served.url + "/v1/messages",
            json={**HELLO, "max_tokens": 5},
            headers={"x-api-key": GATEWAY_KEY, "anthropic-version": "2023-06-01"},
        )
        assert resp.status_code == 503 and resp.json()["type"] == "error"
    finally:
        for sock in held:
            sock.close()
    deadline = time.monotonic() + 10
    while True:  # once the held connections are gone, requests are served again
        resp = http.post(served.url + "/v1/chat/completions", json=HELLO, headers=AUTH)
        if resp.status_code == 200 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert resp.status_code == 200


def test_malformed_http_gets_a_json_400(gateway: GatewayFactory) -> None:
    served = gateway()
    with socket.create_connection(_address(served), timeout=5) as sock:
        sock.sendall(b"GARBAGE\x00 /\r\n\r\n")
        closed, received = _closed_within(sock, 10)
    assert closed and received.startswith(b"HTTP/1.1 400 "), received
    assert b"application/json" in received and b"text/plain" not in received


def test_a_busy_port_is_named_with_what_to_do_and_exit_code_2(fake: FakeUpstream, tmp_path: Path) -> None:
    port = free_port()
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", port))
        holder.listen()
        env = measured({"PATH": os.environ["PATH"], "HOME": str(tmp_path), **fake_env(fake)})
        done = subprocess.run(
            [sys.executable, "-m", "keywheel.cli", "--env-file", os.devnull, "serve", "--port", str(port)],
            env=env,
            capture_output=True,
            timeout=60,
        )
    output = (done.stdout + done.stderr).decode()
    assert done.returncode == 2, output
    assert f"port {port}" in output and "KEYWHEEL_PORT" in output and "--port" in output, output
    assert "Traceback" not in output and "Errno" not in output, output


def test_an_address_that_cannot_be_bound_is_named_with_exit_code_2(fake: FakeUpstream, tmp_path: Path) -> None:
    env = measured(
        {
            "PATH": os.environ["PATH"],
            "HOME": str(tmp_path),
            "KEYWHEEL_GATEWAY_KEYS": GATEWAY_KEY,
            **fake_env(fake),
        }
    )
    done = subprocess.run(
        [sys.executable, "-m", "keywheel.cli", "--env-file", os.devnull, "serve", "--host", "203.0.113.7"],
        env=env,
        capture_output=True,
        timeout=60,
    )
    output = (done.stdout + done.stderr).decode()
    assert done.returncode == 2, output
    assert "cannot listen on 203.0.113.7:8787" in output and "KEYWHEEL_HOST" in output, output
    assert "Traceback" not in output, output


def test_an_endless_request_head_gets_a_431_before_the_head_timeout(gateway: GatewayFactory) -> None:
    served = gateway(KEYWHEEL_HEADER_TIMEOUT="30")
    with socket.create_connection(_address(served), timeout=5) as sock:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: gateway\r\n")
        # Header after header, never the blank line; the 16th crosses 64 KiB with its last byte,
        # so the gateway has read everything when it answers and closes (no reset).
        for _ in range(16):
            sock.sendall(b"x-pad: " + b"p" * 4089 + b"\r\n")
        closed, received = _closed_within(sock, 10)  # well before the 30 s head timeout
    assert closed and received.startswith(b"HTTP/1.1 431 "), received[:200]
    assert b"application/json" in received
    with httpx.Client(timeout=10) as http:  # a large but bounded head is fine
        resp = http.get(served.url + "/health", headers={"x-pad": "p" * 30_000})
        assert resp.status_code == 200
