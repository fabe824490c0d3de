"""Probe outcomes at the edges: a 5xx, a 400, a refused connection, a 200 that is no answer,
a ``/key`` body that is not one, an answer over the size bound — over real loopback sockets."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from keywheel.config import settings_from_env
from keywheel.ops.probes import MAX_PROBE_BYTES, Prober, ProbeResult
from keywheel.testing import FakeUpstream
from keywheel.transport import Transport
from tests.gateway.conftest import free_port

ANSWERS = {
    "/html/models": (200, "text/html", b"<html>captive portal</html>"),
    "/empty/key": (200, "application/json", b'{"data": {"label": "x"}}'),
    "/big/models": (200, "application/json", b'{"data": "' + b"x" * (MAX_PROBE_BYTES + 10) + b'"}'),
}


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 — http.server's name
        status, kind, body = ANSWERS.get(self.path, (404, "text/plain", b"no"))
        self.send_response(status)
        self.send_header("content-type", kind)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def odd_host() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def probe_all(env: dict[str, str]) -> dict[str, ProbeResult]:
    settings = settings_from_env(env)

    async def run() -> list[ProbeResult]:
        transport = Transport()
        try:
            prober = Prober(settings, transport, lambda text: text)
            return await prober.probe_all(prober.keys())
        finally:
            await transport.aclose()

    return {r.provider: r for r in asyncio.run(run())}


def custom(name: str, base: str) -> dict[str, str]:
    upper = name.upper()
    return {
        f"{upper}_BASE_URL": base,
        f"{upper}_MODEL": "m",
        f"{upper}_API_KEY_1": f"test-{name}-key-1",
        f"ENABLE_{upper}": "true",
    }


def test_edges(fake: FakeUpstream, odd_host: str) -> None:
    fake.set("test-gemini-key-1", "server_error")
    fake.set("test-anthropic-key-1", "bad_request")
    env = {
        "GEMINI_API_KEY_1": "test-gemini-key-1",
        "GEMINI_BASE_URL": fake.gemini_base_url,
        "ANTHROPIC_API_KEY_1": "test-anthropic-key-1",
        "ANTHROPIC_BASE_URL": fake.anthropic_base_url,
        "OPENROUTER_API_KEY_1": "test-openrouter-key-1",
        "OPENROUTER_BASE_URL": odd_host + "/empty",
        **custom("closed", f"http://127.0.0.1:{free_port()}/v1"),
        **custom("html", odd_host + "/html"),
        **custom("big", odd_host + "/big"),
    }
    got = {name: (r.outcome, r.detail) for name, r in probe_all(env).items()}
    assert got["gemini"][0] == "unreachable" and "500" in got["gemini"][1]
    assert got["anthropic"][0] == "unverified" and "BadRequest" in got["anthropic"][1]
    assert got["closed"][0] == "unreachable" and got["closed"][1].startswith("cannot connect")
    assert got["html"] == ("unverified", "HTTP 200 but not a JSON answer")
    assert got["big"] == ("unverified", "the probe's answer is too large")
    assert got["openrouter"] == ("unverified", "the /key answer has no data.limit")


def test_a_probe_answer_quoting_the_key_is_redacted(fake: FakeUpstream) -> None:
    from keywheel.calls import redactor_for
    from tests.ops.test_keys_check import secret

    key = secret("test-gemini-")
    fake.set(key, "echo_key", part="middle")
    settings = settings_from_env({"GEMINI_API_KEY_1": key, "GEMINI_BASE_URL": fake.gemini_base_url})

    async def run() -> list[ProbeResult]:
        transport = Transport()
        try:
            prober = Prober(settings, transport, redactor_for(settings).redact)
            return await prober.probe_all(prober.keys())
        finally:
            await transport.aclose()

    (result,) = asyncio.run(run())
    assert result.outcome == "invalid" and "[redacted]" in result.detail
    middle = key[(len(key) - 12) // 2 :][:12]
    assert middle not in result.detail and all(key[i : i + 8] not in result.detail for i in range(len(key) - 7))


def test_probes_run_at_most_the_concurrency_bound_at_once(fake: FakeUpstream) -> None:
    env = {"GEMINI_BASE_URL": fake.gemini_base_url, "KEYWHEEL_PROBE_CONCURRENCY": "2"}
    for i in range(1, 5):
        env[f"GEMINI_API_KEY_{i}"] = f"test-gemini-key-{i}"
        fake.set(f"test-gemini-key-{i}", "hang", seconds=0.6)
    results = probe_all(env)
    assert results["gemini"].outcome == "ok"
    arrivals = sorted(r.at for r in fake.requests)
    assert len(arrivals) == 4
    # Two at once: the third starts only when one of the first two has answered (after its 0.6 s).
    assert arrivals[2] - arrivals[0] >= 0.55 and arrivals[3] - arrivals[1] >= 0.55
