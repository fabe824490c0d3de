"""SIGTERM under load: requests in flight drain, late ones end in their dialect, nothing is text/plain."""

from __future__ import annotations

import re
import signal
import socket
import threading
import time
from dataclasses import dataclass, field

import httpx
import pytest

from keywheel.testing import FakeUpstream
from tests.gateway.conftest import GATEWAY_KEY, GatewayFactory

SHUTDOWN_TIMEOUT = 4.0
USER = [{"role": "user", "content": "hello"}]
OPENAI = {"authorization": f"Bearer {GATEWAY_KEY}", "x-keywheel-fallback": "off"}
ANTHROPIC = {"x-api-key": GATEWAY_KEY, "anthropic-version": "2023-06-01", "x-keywheel-fallback": "off"}
GEMINI = {"x-goog-api-key": GATEWAY_KEY, "x-keywheel-fallback": "off"}


@dataclass
class Call:
    """One request of the mix and what it must end with."""

    name: str
    path: str
    headers: dict[str, str]
    body: dict[str, object]
    stream: bool
    expect: str  # "ok" | "503" | "in-band"
    status: int = 0
    content_type: str = ""
    text: str = ""
    retry_after: str | None = None
    error: str = ""
    done: threading.Event = field(default_factory=threading.Event)


def _mix() -> list[Call]:
    calls: list[Call] = []

    def add(n: int, *args: object) -> None:
        calls.extend(Call(f"{args[0]}-{i}", *args[1:]) for i in range(n))  # type: ignore[arg-type]

    # Gemini's key answers after 2 s: inside the shutdown timeout.
    fast = {"model": "gemini/gemini-2.5-flash", "messages": USER}
    add(6, "openai-fast", "/v1/chat/completions", OPENAI, fast, False, "ok")
    add(4, "openai-fast-stream", "/v1/chat/completions", OPENAI, {**fast, "stream": True}, True, "ok")
    gemini_body = {"contents": [{"role": "user", "parts": [{"text": "hello"}]}]}
    add(3, "gemini-fast", "/v1beta/models/gemini-2.5-flash:generateContent", GEMINI, gemini_body, False, "ok")
    gemini_stream = "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
    add(3, "gemini-fast-stream", gemini_stream, GEMINI, gemini_body, True, "ok")
    # Anthropic's key starts its stream, then stalls: cut with the in-band error.
    stalled = {"model": "anthropic/claude-x", "max_tokens": 50, "messages": USER, "stream": True}
    add(4, "anthropic-stalled-stream", "/v1/messages", ANTHROPIC, stalled, True, "in-band")
    add(4, "openai-stalled-stream", "/v1/chat/completions", OPENAI, stalled, True, "in-band")
    # OpenRouter's key never answers: cut with a 503 and retry-after, in the caller's dialect.
    hung = {"model": "openrouter/x", "messages": USER}
    add(4, "openai-hung", "/v1/chat/completions", OPENAI, hung, False, "503")
    add(2, "anthropic-hung", "/v1/messages", ANTHROPIC, {**hung, "max_tokens": 50}, False, "503")
    add(2, "anthropic-hung-stream", "/v1/messages", ANTHROPIC, {**hung, "max_tokens": 50, "stream": True}, True, "503")
    return calls


def _run(url: str, call: Call) -> None:
    try:
        with httpx.Client(timeout=30) as client:
            with client.stream("POST", url + call.path, headers=call.headers, json=call.body) as resp:
                call.status = resp.status_code
                call.content_type = resp.headers.get("content-type", "")
                call.retry_after = resp.headers.get("retry-after")
                call.text = resp.read().decode()
    except httpx.HTTPError as exc:
        call.error = f"{type(exc).__name__}: {exc}"
    finally:
        call.done.set()


def test_sigterm_drains_in_flight_requests_and_cuts_late_ones_in_dialect(
    gateway: GatewayFactory, fake: FakeUpstream
) -> None:
    served = gateway(
        AI_PROVIDER="gemini",
        FALLBACK_ORDER="openrouter,anthropic",
        gemini="1",
        openrouter="1",
        anthropic="1",
        KEYWHEEL_SHUTDOWN_TIMEOUT=str(SHUTDOWN_TIMEOUT),
    )
    fake.set("test-gemini-key-1", "hang", seconds=2.0)
    fake.set("test-anthropic-key-1", "stall_stream", after=1, seconds=60.0)
    fake.set("test-openrouter-key-1", "hang", seconds=60.0)
    calls = _mix()
    assert len(calls) == 32
    threads = [threading.Thread(target=_run, args=(served.url, call), daemon=True) for call in calls]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 15
    while len(fake.requests) < len(calls) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert len(fake.requests) == len(calls), "not every request reached the upstream"

    served.process.send_signal(signal.SIGTERM)
    # New connections are refused at once (the listening socket is closed).
    port = int(served.url.rsplit(":", 1)[1])
    refused = False
    deadline = time.monotonic() + 2
    while not refused and time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            time.sleep(0.05)
        except OSError:
            refused = True
    assert refused, "the gateway still accepted connections after SIGTERM"

    for call in calls:
        assert call.done.wait(SHUTDOWN_TIMEOUT + 15), f"{call.name} never ended"
    assert served.process.wait(15) in (0, -signal.SIGTERM)  # uvicorn re-raises the signal once done

    for call in calls:
        where = f"{call.name}: {call.status} {call.content_type} {call.error} {call.text[:300]!r}"
        assert not call.error, where
        assert "text/plain" not in call.content_type, where
        if call.expect == "ok":
            assert call.status == 200, where
            if call.name.startswith("openai-fast-stream"):
                assert call.text.rstrip().endswith("data: [DONE]"), where
            elif call.name.startswith("gemini-fast-stream"):
                assert '"finishReason"' in call.text, where
        elif call.expect == "503":
            assert call.status == 503 and call.content_type.startswith("application/json"), where
            assert call.retry_after is not None and int(call.retry_after) >= 1, where
            assert "shutting down" in call.text, where
            if call.name.startswith("anthropic"):
                assert call.text.startswith('{"type":"error","error":{"type":'), where
            else:
                assert '"error"' in call.text, where
        else:  # in-band: the stream had started; it ends with the dialect's error event
            assert call.status == 200 and call.content_type.startswith("text/event-stream"), where
            assert "shutting down" in call.text, where
            if call.name.startswith("anthropic"):
                assert "event: error" in call.text, where
            else:
                assert '"code":"shutting_down"' in call.text and call.text.endswith("data: [DONE]\n\n"), where

    log = served.log()
    assert "Traceback" not in log and "Exception in ASGI application" not in log, log
    # Under load a fast request may finish before the signal lands: it is then not counted as drained.
    counts = re.search(r"shutdown drain: (\d+) request\(s\) drained, (\d+) cut", log)
    assert counts is not None, log
    assert 0 < int(counts[1]) <= 16 and int(counts[2]) == 16, counts[0]


@pytest.mark.parametrize("shutdown_timeout", ["30"])
def test_sigterm_with_nothing_in_flight_exits_at_once(gateway: GatewayFactory, shutdown_timeout: str) -> None:
    served = gateway(KEYWHEEL_SHUTDOWN_TIMEOUT=shutdown_timeout)
    with httpx.Client(timeout=10) as client:
        assert client.get(served.url + "/health").status_code == 200
    started = time.monotonic()
    served.process.send_signal(signal.SIGTERM)
    assert served.process.wait(15) in (0, -signal.SIGTERM)  # uvicorn re-raises the signal once done
    assert time.monotonic() - started < 10  # generous: an idle gateway does not wait out the drain timeout
    assert "Traceback" not in served.log()


def test_a_rolling_restart_of_two_replicas_loses_nothing(gateway: GatewayFactory, fake: FakeUpstream) -> None:
    """Clients that retry a 503 (or a refused connection) on the other replica see every request served."""
    replicas = [gateway(AI_PROVIDER="gemini", KEYWHEEL_SHUTDOWN_TIMEOUT="5") for _ in range(2)]
    for i in range(1, 5):
        fake.set(f"test-gemini-key-{i}", "hang", seconds=0.3)
    body = {"model": "auto", "messages": USER}
    outcomes: list[tuple[int, str]] = []
    answers: list[str] = []
    stop = threading.Event()

    def client(first: int) -> None:
        with httpx.Client(timeout=30) as http:
            n = first
            while not stop.is_set():
                for attempt in range(6):  # the client's retry policy: the other replica, then back
                    url = replicas[(n + attempt) % 2].url
                    try:
                        resp = http.post(url + "/v1/chat/completions", json=body, headers=OPENAI)
                    except httpx.TransportError:
                        continue
                    answers.append(resp.headers.get("content-type", ""))
                    if resp.status_code == 503 and resp.headers.get("retry-after"):
                        continue
                    outcomes.append((resp.status_code, url))
                    break
                else:
                    outcomes.append((0, "gave up"))
                n += 1

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(6)]
    for thread in threads:
        thread.start()
    time.sleep(1.0)
    replicas[0].process.send_signal(signal.SIGTERM)  # the first replica restarts; the second carries on
    assert replicas[0].process.wait(20) in (0, -signal.SIGTERM)
    time.sleep(0.5)
    stop.set()
    for thread in threads:
        thread.join(30)
    assert outcomes and all(status == 200 for status, _ in outcomes), [o for o in outcomes if o[0] != 200]
    assert {url for _, url in outcomes} == {replicas[0].url, replicas[1].url}
    assert all(kind.startswith("application/json") for kind in answers), set(answers)
    assert "Traceback" not in replicas[0].log()
