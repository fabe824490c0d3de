"""Defect 2: a key partly echoed by the upstream is redacted wherever text leaves the process."""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import socket
import string
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from keywheel import KeywheelError, Wheel
from keywheel.config import settings_from_env
from keywheel.secrets import Redactor
from keywheel.testing import FakeUpstream
from keywheel.testing._echo import PARTS, piece
from tests.gateway.conftest import GatewayFactory, free_port, start_gateway
from tests.helpers import fake_env, measured
from tests.security.conftest import ADMIN_KEY, GATEWAY_KEY

HELLO = [{"role": "user", "content": "hello"}]


ALPHABET = string.ascii_letters + string.digits  # not hex: no chance match with hex ids


def random_key(provider: str) -> str:
    return f"test-{provider}-{''.join(secrets.choice(ALPHABET) for _ in range(16))}"  # a 16-character random body


def test_every_piece_of_eight_or_more_is_redacted() -> None:
    key = "sk-ant-api03-" + "Q7f2Kd9xLm4Pz8Rt"
    redactor = Redactor([key], ["anthropic", "https://api.anthropic.com", "claude-sonnet-4-6"])
    for start in range(len(key) - 8 + 1):
        for end in range(start + 8, len(key) + 1):
            text = f"Incorrect API key provided: {key[start:end]}."
            out = redactor.redact(text)
            # What is left of the key is public (a known prefix) or shorter than 8.
            if any(key[i : i + 8] in out for i in range(13 - 7, len(key) - 7)):
                pytest.fail(f"a piece survived: {out!r}")
    assert redactor.redact("provider anthropic, model claude-sonnet-4-6, key sk-ant-api03-…") == (
        "provider anthropic, model claude-sonnet-4-6, key sk-ant-api03-…"
    )
    assert redactor.redact("sk-ant-api03-Q7f2Kd9x…Rt") == "sk-ant[redacted]…Rt"
    assert redactor.redact("7 chars: Q7f2Kd9") == "7 chars: Q7f2Kd9"
    clean = "nothing to see here, at all, for a long while"
    assert redactor.redact(clean) is clean


def test_a_fake_key_does_not_blank_provider_names() -> None:
    public_config = [("openrouter", "http://127.0.0.1:1/api/v1", "openai/gpt-4o-mini")]
    redactor = Redactor.for_settings(["test-openrouter-key-1"], public_config)
    public = "openrouter openrouter#1 …ab12 http://127.0.0.1:1/api/v1 openai/gpt-4o-mini test-openrouter-key-"
    assert redactor.redact(public) == public
    assert "test-openrouter-key-1" not in redactor.redact("got test-openrouter-key-1!")


def test_keys_added_and_removed_at_runtime() -> None:
    redactor = Redactor()
    added = random_key("gemini")
    assert redactor.redact(added) == added
    redactor.add(added)
    assert redactor.redact(added[3:14]) == "[redacted]"
    redactor.remove(added)
    assert redactor.redact(added[3:14]) == added[3:14]


@pytest.mark.parametrize("status", [401, 400])
def test_library_partial_echo_leaves_no_piece(
    fake: FakeUpstream, caplog: pytest.LogCaptureFixture, status: int
) -> None:
    caplog.set_level(logging.DEBUG)
    env = fake_env(fake, gemini=1, openrouter=1, anthropic=1)
    keys = {p: random_key(p) for p in ("gemini", "openrouter", "anthropic")}
    for provider, key in keys.items():
        env[f"{provider.upper()}_API_KEY_1"] = key
    wheel = Wheel(settings_from_env(env))
    added = random_key("gemini")
    wheel.add_key("gemini", added)  # a key added at runtime is covered too
    texts: list[str] = []
    try:
        for provider in keys:
            for part in PARTS:
                for key in [keys[provider], added] if provider == "gemini" else [keys[provider]]:
                    fake.set(key, "echo_key", part=part, status=status)
                for stream in (False, True):
                    try:
                        if stream:
                            list(wheel.stream(HELLO, provider=provider, fallback=False))
                        else:
                            wheel.chat(HELLO, provider=provider, fallback=False)
                    except KeywheelError as exc:
                        texts += [str(exc), repr(exc), "".join(traceback.format_exception(exc))]
                        texts += [str(getattr(exc, "body", b"")), str(getattr(exc, "request_id", ""))]
                        texts += [repr(a) for a in getattr(exc, "attempts", [])]
                    texts.append(json.dumps(wheel.status()))
                    for pool in wheel.pools.values():
                        for k in pool.keys_nowait():  # type: ignore[attr-defined]  # a MemoryStore
                            wheel.enable_key(k.fingerprint)
    finally:
        wheel.close()
    texts += [r.getMessage() for r in caplog.records] + [caplog.text]
    everything = "\n".join(texts)
    assert "[redacted]" in everything  # the pieces did come back, and were caught
    echoed = {piece(k, p) for k in [*keys.values(), added] for p in ("middle", "chopped")}
    for text in echoed:
        assert text not in everything
    for key in [*keys.values(), added]:
        body = key.split("-", 2)[2]
        for i in range(len(body) - 7):
            assert body[i : i + 8] not in everything, f"a piece of {key[:12]}… leaked"


def test_gateway_passes_a_same_dialect_400_on_without_the_piece(serve: GatewayFactory, fake: FakeUpstream) -> None:
    key = random_key("openrouter")
    served = serve("--log-level", "DEBUG", openrouter="1", OPENROUTER_API_KEY_1=key)
    headers = {"authorization": f"Bearer {GATEWAY_KEY}", "x-keywheel-fallback": "off"}
    fake.set(key, "echo_key", part="middle", status=400)
    resp = httpx.post(
        served.url + "/v1/chat/completions", headers=headers, json={"model": "openrouter/x-1", "messages": HELLO}
    )
    assert resp.status_code == 400
    assert resp.json()["error"]["metadata"] == {"key": "[redacted]"}  # the upstream's own body, passed on
    assert piece(key, "middle") not in resp.text
    fake.set(key, "echo_key", part="chopped", status=401)
    resp = httpx.post(
        served.url + "/v1/chat/completions", headers=headers, json={"model": "openrouter/x-1", "messages": HELLO}
    )
    assert resp.status_code == 502 and key[:-1] not in resp.text
    status = httpx.get(served.url + "/status", headers={"authorization": f"Bearer {ADMIN_KEY}"}).text
    assert "invalid key" in status and "[redacted]" in status
    # A key added at runtime through the admin API is covered at once.
    added = random_key("openrouter")
    admin = {"authorization": f"Bearer {ADMIN_KEY}"}
    assert httpx.post(served.url + "/admin/keys/add", headers=admin, json={"provider": "openrouter", "key": added})
    fake.set(added, "echo_key", part="middle", status=401)
    resp = httpx.post(
        served.url + "/v1/chat/completions", headers=headers, json={"model": "openrouter/x-1", "messages": HELLO}
    )
    assert resp.status_code == 502 and piece(added, "middle") not in resp.text
    served.stop()
    log = served.log()
    assert "attempt failed" in log
    for k in (key, added):
        assert piece(k, "middle") not in log and k[:-1] not in log


def _split_error_stream(key: str) -> Iterator[int]:
    """A bare upstream that streams one content event, then an error event quoting the key
    minus its last character, split across two writes in the middle of the quote."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    delta = {"index": 0, "delta": {"role": "assistant", "content": "Hi"}, "finish_reason": None}
    content = {"id": "c1", "object": "chat.completion.chunk", "created": 0, "model": "m", "choices": [delta]}
    error = json.dumps({"error": {"message": f"Incorrect API key provided: {key[:-1]}", "code": 401}})
    cut = error.index(key[:8]) + len(key) // 2
    parts = [f"data: {json.dumps(content)}\n\ndata: {error[:cut]}".encode(), f"{error[cut:]}\n\n".encode()]

    def serve() -> None:
        while True:
            try:
                conn, _ = sock.accept()
            except OSError:
                return
            with conn:
                data = b""
                while b"\r\n\r\n" not in data:
                    data += conn.recv(65536)
                head = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n"
                conn.sendall(head + parts[0])
                time.sleep(0.3)
                conn.sendall(parts[1])

    threading.Thread(target=serve, daemon=True).start()
    yield sock.getsockname()[1]
    sock.close()


def test_an_error_event_split_across_reads_is_redacted_whole(fake: FakeUpstream, tmp_path: Path) -> None:
    key = random_key("openrouter")
    for port in _split_error_stream(key):  # one upstream, closed after the loop
        env = fake_env(fake, gemini=0, openrouter=0, anthropic=0)
        env.update({"OPENROUTER_API_KEY_1": key, "OPENROUTER_BASE_URL": f"http://127.0.0.1:{port}/api/v1"})
        served = start_gateway(env, tmp_path / "split.log")
        try:
            with httpx.stream(
                "POST",
                served.url + "/v1/chat/completions",
                json={"model": "openrouter/x-1", "messages": HELLO, "stream": True},
                timeout=10,
            ) as resp:
                assert resp.status_code == 200
                received = b"".join(resp.iter_raw()).decode()
        finally:
            served.stop()
        # Where the redaction starts depends on the random key (a piece it shares with a public
        # name stays); that no piece of its body is left is the check below.
        assert '"content": "Hi"' in received and re.search(
            r"Incorrect API key provided: test-\S*\[redacted\]", received
        )
        body = key.split("-", 2)[2]
        assert not any(body[i : i + 8] in received for i in range(len(body) - 7)), received


@pytest.mark.parametrize("dialect", ["openai", "anthropic", "gemini"])
def test_an_in_band_error_event_quoting_the_key_is_redacted(
    serve: GatewayFactory, fake: FakeUpstream, dialect: str
) -> None:
    """After the first content event an error event quotes the key, split across two reads:
    passed through (same dialect) or rendered (other dialects), no piece reaches the client."""
    keys = {p: random_key(p) for p in ("gemini", "openrouter", "anthropic")}
    env = {f"{p.upper()}_API_KEY_1": k for p, k in keys.items()}
    served = serve(gemini="1", openrouter="1", anthropic="1", **env)
    for key in keys.values():
        fake.set(key, "echo_key", part="chopped", where="stream")
    received = []
    for provider, model in (("gemini", "gemini-2.5-flash"), ("openrouter", "x-1"), ("anthropic", "claude-x")):
        headers = {"authorization": f"Bearer {GATEWAY_KEY}", "x-keywheel-fallback": "off"}
        if dialect == "openai":
            path, body = "/v1/chat/completions", {"model": f"{provider}/{model}", "messages": HELLO, "stream": True}
        elif dialect == "anthropic":
            body = {"model": f"{provider}/{model}", "max_tokens": 9, "messages": HELLO, "stream": True}
            path = "/v1/messages"
        else:
            path, body = f"/v1beta/models/{provider}/{model}:streamGenerateContent?alt=sse", {"contents": [
                {"role": "user", "parts": [{"text": "hello"}]}]}  # fmt: skip
        with httpx.stream("POST", served.url + path, json=body, headers=headers, timeout=10) as resp:
            assert resp.status_code == 200
            received.append(b"".join(resp.iter_raw()).decode())
    text = "\n".join(received)
    assert text.count("Incorrect API key provided: test-") == 3, text  # the errors did arrive, in-band
    for key in keys.values():
        body_of_key = key.split("-", 2)[2]
        assert not any(body_of_key[i : i + 8] in text for i in range(len(body_of_key) - 7)), text


def test_worker_processes_redact_their_logs_too(fake: FakeUpstream, tmp_path: Path, redis_server: str) -> None:
    """``serve --workers 2`` (on Redis): each worker configures its own logging, with the same filter."""
    key = random_key("openrouter")
    env = fake_env(fake, gemini=0, openrouter=1, anthropic=0, KEYWHEEL_STATE=redis_server)
    env.update({"OPENROUTER_API_KEY_1": key, "PATH": os.environ["PATH"], "HOME": str(tmp_path)})
    port = free_port()
    log_path = tmp_path / "workers.log"
    with log_path.open("wb") as log:
        command = [sys.executable, "-m", "keywheel.cli", "--log-level", "DEBUG", "--env-file", os.devnull]
        process = subprocess.Popen(
            [*command, "serve", "--port", str(port), "--workers", "2"],
            env=measured(env),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and process.poll() is None:
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        assert process.poll() is None, log_path.read_text()
        fake.set(key, "echo_key", part="middle", status=400)
        for _ in range(4):
            resp = httpx.post(url + "/v1/chat/completions", json={"model": "openrouter/x-1", "messages": HELLO})
            assert resp.status_code == 400 and piece(key, "middle") not in resp.text
    finally:
        process.terminate()
        process.wait(15)
    text = log_path.read_text(errors="replace")
    assert text.count("attempt failed") >= 4 and "[redacted]" in text, text[-2000:]
    assert piece(key, "middle") not in text
