"""Gateway behaviour over real sockets: rotation, cooldowns, failover, bad input, disconnects, leaks."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import httpx2
import openai
import pytest

from keywheel import Wheel
from keywheel.config import settings_from_env
from keywheel.testing import FakeUpstream
from tests.gateway.conftest import ADMIN_KEY, GATEWAY_KEY, GatewayFactory, Served
from tests.helpers import fake_env

AUTH = {"authorization": f"Bearer {GATEWAY_KEY}"}
HELLO = {"model": "auto", "messages": [{"role": "user", "content": "hello"}]}
GEMINI_KEYS = [f"test-gemini-key-{i}" for i in range(1, 5)]


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=30) as client:
        yield client


def test_rotation_through_the_gateway_is_exact(gateway: GatewayFactory, fake: FakeUpstream) -> None:
    served = gateway(AI_PROVIDER="gemini")
    client = openai.OpenAI(base_url=served.url + "/v1", api_key=GATEWAY_KEY, max_retries=0)
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            for _ in range(50):
                client.chat.completions.create(model="auto", messages=[{"role": "user", "content": "hi"}])
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    counts = [fake.count(k) for k in GEMINI_KEYS]
    assert sum(counts) == 800 and all(abs(c - 200) <= 1 for c in counts), counts


def test_cooldown_and_failover_headers(gateway: GatewayFactory, fake: FakeUpstream, http: httpx.Client) -> None:
    served = gateway(AI_PROVIDER="gemini", FALLBACK_ORDER="openrouter")
    fake.set("test-gemini-key-1", "rate_limit", retry_after=2.0, times=1)
    started = time.monotonic()
    while time.monotonic() - started < 3.0:
        assert http.post(served.url + "/v1/chat/completions", json=HELLO, headers=AUTH).status_code == 200
        time.sleep(0.02)
    times = fake.times("test-gemini-key-1")
    assert len(times) >= 2 and times[1] - times[0] >= 2.0

    for key in GEMINI_KEYS:
        fake.set(key, "server_error")
    resp = http.post(served.url + "/v1/chat/completions", json=HELLO, headers=AUTH)
    assert resp.status_code == 200
    assert resp.headers["x-keywheel-provider"] == "openrouter"
    assert resp.headers["x-keywheel-attempts"].count("ServerError") == 2
    assert resp.headers["x-keywheel-attempts"].endswith("ok")

    # x-keywheel-fallback: off keeps the call on the named provider
    resp = http.post(
        served.url + "/v1/chat/completions",
        headers={**AUTH, "x-keywheel-fallback": "off"},
        json={**HELLO, "model": "gemini/gemini-2.5-flash"},
    )
    assert resp.status_code in (502, 503)
    assert "gemini" in resp.json()["error"]["message"]


def test_model_names_route_as_documented(gateway_once: Served, http: httpx.Client) -> None:
    def provider_for(model: str) -> str:
        resp = http.post(gateway_once.url + "/v1/chat/completions", json={**HELLO, "model": model}, headers=AUTH)
        provider: str = resp.headers.get("x-keywheel-provider", str(resp.status_code))
        return provider

    assert provider_for("auto") == "gemini"  # the primary
    assert provider_for("openai/gpt-4o-mini") == "openrouter"  # OPENROUTER_MODEL's default, slash and all
    assert provider_for("anthropic/claude-x") == "anthropic"  # provider prefix
    assert provider_for("openrouter/meta-llama/llama-3.3-70b-instruct") == "openrouter"
    assert provider_for("claude-sonnet-4-6") == "anthropic"  # family
    assert provider_for("some-local-model") == "gemini"  # unknown bare name: the chain
    assert provider_for("mistral/large") == "404"


def test_pass_through_keeps_fields_keywheel_does_not_model(
    gateway: GatewayFactory, fake: FakeUpstream, http: httpx.Client
) -> None:
    served = gateway(AI_PROVIDER="openrouter")
    body = {
        **HELLO,
        "model": "openrouter/meta-llama/llama-3.3-70b-instruct:free",
        "top_k": 7,
        "provider": {"order": ["x"]},
        "reasoning": {"effort": "low"},
    }
    assert http.post(served.url + "/v1/chat/completions", json=body, headers=AUTH).status_code == 200
    (sent,) = fake.requests
    assert sent.body["model"] == "meta-llama/llama-3.3-70b-instruct:free"
    assert sent.body["top_k"] == 7 and sent.body["provider"] == {"order": ["x"]}
    assert sent.body["reasoning"] == {"effort": "low"}
    assert sent.key == "test-openrouter-key-1" and GATEWAY_KEY not in str(sent.headers)


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/v1/chat/completions", b"{not json", "JSON"),
        ("/v1/chat/completions", b"[1, 2]", "body"),
        ("/v1/chat/completions", b'{"model": "auto"}', "messages"),
        ("/v1/chat/completions", b'{"model": "auto", "messages": "hi"}', "messages"),
        # What only a translation judges: the model routes to a provider of another dialect, no fallback.
        (
            "/v1/chat/completions",
            b'{"model": "gemini-2.5-flash", "messages": [{"role": "robot", "content": "x"}]}',
            "messages[0].role",
        ),
        (
            "/v1/chat/completions",
            b'{"model": "gemini-2.5-flash", "messages": [{"role": "user", "content": "x"}], "max_tokens": "many"}',
            "max_tokens",
        ),
        (
            "/v1/messages",
            b'{"model": "gemini-2.5-flash", "messages": [{"role": "user", "content": "x"}]}',
            "max_tokens",
        ),
        (
            "/v1/messages",
            b'{"model": "gemini-2.5-flash", "max_tokens": 5, "messages": [{"role": "robot", "content": "x"}]}',
            "messages[0].role",
        ),
        # What keywheel itself needs, whatever the target: model and stream flag.
        ("/v1/messages", b'{"model": 5, "max_tokens": 5, "messages": []}', "model"),
        ("/v1/chat/completions", b'{"model": "auto", "stream": "yes", "messages": []}', "stream"),
        ("/v1beta/models/claude-sonnet-4-6:generateContent", b'{"contents": 5}', "contents"),
        (
            "/v1beta/models/claude-sonnet-4-6:generateContent",
            b'{"contents": [{"role": "user", "parts": [{"text": 5}]}]}',
            "contents[0].parts[0].text",
        ),
    ],
)
def test_bad_input_gets_400_naming_the_field_and_the_server_stays_up(
    gateway_once: Served, http: httpx.Client, path: str, body: bytes, field: str
) -> None:
    headers = {**AUTH, "content-type": "application/json", "anthropic-version": "2023-06-01"}
    headers["x-keywheel-fallback"] = "off"
    resp = http.post(gateway_once.url + path, content=body, headers=headers)
    assert resp.status_code == 400, resp.text
    assert field in resp.text
    if path.startswith("/v1beta"):
        assert resp.json()["error"]["status"] == "INVALID_ARGUMENT"
    elif path == "/v1/messages":
        assert resp.json()["type"] == "error" and resp.json()["error"]["type"] == "invalid_request_error"
    else:
        assert resp.json()["error"]["type"] == "invalid_request_error"
    ok = http.post(gateway_once.url + "/v1/chat/completions", json=HELLO, headers=AUTH)
    assert ok.status_code == 200


@pytest.fixture(scope="module")
def gateway_once(tmp_path_factory: pytest.TempPathFactory, fake_server: FakeUpstream) -> Iterator[Served]:
    from tests.gateway.conftest import start_gateway

    env = fake_env(
        fake_server,
        AI_PROVIDER="gemini",
        KEYWHEEL_GATEWAY_KEYS=GATEWAY_KEY,
        KEYWHEEL_MAX_BODY_BYTES="100000",
        KEYWHEEL_BODY_TIMEOUT="1",
        KEYWHEEL_ADMIN_KEY=ADMIN_KEY,
    )
    served = start_gateway(env, tmp_path_factory.mktemp("gw") / "gateway.log")
    yield served
    served.stop()


def test_limits_methods_and_routes(gateway_once: Served, http: httpx.Client) -> None:
    url = gateway_once.url
    big = {"model": "auto", "messages": [{"role": "user", "content": "x" * 200_000}]}
    resp = http.post(url + "/v1/chat/completions", json=big, headers=AUTH)
    assert resp.status_code == 413 and resp.json()["error"]["type"] == "request_too_large"
    resp = http.get(url + "/v1/chat/completions", headers=AUTH)
    assert resp.status_code == 405 and "POST" in resp.headers["allow"]
    assert http.get(url + "/nope", headers=AUTH).status_code == 404
    resp = http.post(url + "/v1/messages/count_tokens", json={}, headers={**AUTH, "anthropic-version": "2023-06-01"})
    assert resp.status_code == 400 and resp.json()["type"] == "error" and "model" in resp.json()["error"]["message"]
    assert http.get(url + "/health").json() == {"status": "ok"}
    assert http.post(url + "/v1/chat/completions", json=HELLO).status_code == 401


def test_slow_body_times_out_and_server_stays_up(gateway_once: Served, http: httpx.Client) -> None:
    host, port = gateway_once.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
            b"authorization: Bearer " + GATEWAY_KEY.encode() + b'\r\ncontent-length: 500\r\n\r\n{"mo'
        )
        time.sleep(0.3)
        sock.sendall(b'del": ')  # a second piece, then silence
        reply = sock.recv(4096)
    assert b" 408 " in reply.split(b"\r\n", 1)[0]
    assert http.post(gateway_once.url + "/v1/chat/completions", json=HELLO, headers=AUTH).status_code == 200


def test_status_needs_the_admin_key_and_shows_fingerprints(gateway_once: Served, http: httpx.Client) -> None:
    url = gateway_once.url
    assert http.get(url + "/status", headers=AUTH).status_code == 401
    status = http.get(url + "/status", headers={"authorization": f"Bearer {ADMIN_KEY}"}).json()
    keys = [k["key"] for p in status["providers"] for k in p["keys"]]
    assert keys[0].startswith("gemini#1 ") and all("test-" not in k for k in keys)


def test_admin_actions_over_http(gateway: GatewayFactory, fake: FakeUpstream, http: httpx.Client) -> None:
    served = gateway(AI_PROVIDER="gemini", gemini="2")
    admin = {"authorization": f"Bearer {ADMIN_KEY}"}
    status = http.get(served.url + "/status", headers=admin).json()
    first = status["providers"][0]["keys"][0]["key"]
    assert http.post(served.url + "/admin/keys/disable", json={"key": first}, headers=AUTH).status_code == 401
    assert (
        http.post(
            served.url + "/admin/keys/disable", json={"key": first, "reason": "rotating"}, headers=admin
        ).status_code
        == 200
    )
    for _ in range(4):
        http.post(served.url + "/v1/chat/completions", json=HELLO, headers=AUTH)
    assert fake.count("test-gemini-key-1") == 0
    added = http.post(
        served.url + "/admin/keys/add", json={"provider": "gemini", "key": "test-gemini-key-7"}, headers=admin
    )
    assert added.status_code == 200 and "test-gemini-key-7" not in added.text
    assert http.post(served.url + "/admin/keys/enable", json={"key": first}, headers=admin).status_code == 200
    for _ in range(6):
        http.post(served.url + "/v1/chat/completions", json=HELLO, headers=AUTH)
    assert fake.count("test-gemini-key-1") >= 1 and fake.count("test-gemini-key-7") >= 1
    missing = http.post(served.url + "/admin/keys/remove", json={"key": "gemini#9 ...0000"}, headers=admin)
    assert missing.status_code == 404


def test_status_command_reads_a_live_gateway(gateway_once: Served, http: httpx.Client) -> None:
    http.post(gateway_once.url + "/v1/chat/completions", json=HELLO, headers=AUTH)
    env = {"PATH": "/usr/bin:/bin", "COLUMNS": "200", "KEYWHEEL_ADMIN_KEY": ADMIN_KEY}
    cmd = [sys.executable, "-m", "keywheel.cli", "status", "--url", gateway_once.url]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 0, result.stderr
    assert "keys (live)" in result.stdout and "gemini#1" in result.stdout
    assert ADMIN_KEY not in result.stdout + result.stderr
    bad = subprocess.run(
        cmd + ["--admin-key", "wrong-admin-key-000000"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert bad.returncode == 1 and "401" in bad.stderr


def test_client_disconnect_mid_stream_closes_upstream(gateway: GatewayFactory, fake: FakeUpstream) -> None:
    served = gateway(AI_PROVIDER="gemini")
    fake.set("test-gemini-key-1", "slow_stream", interval=0.3)
    body = {**HELLO, "stream": True}
    with (
        httpx.Client(timeout=10) as client,
        client.stream("POST", served.url + "/v1/chat/completions", json=body, headers=AUTH) as resp,
    ):
        assert resp.status_code == 200
        next(resp.iter_raw())
        closed_at = time.monotonic()
    deadline = closed_at + 3
    while not fake.disconnects and time.monotonic() < deadline:
        time.sleep(0.02)
    assert fake.disconnects, "the upstream never saw the client go away"
    assert fake.disconnects[0][1] - closed_at < 1.0
    status = httpx.get(served.url + "/status", headers={"authorization": f"Bearer {ADMIN_KEY}"}).json()
    assert status["providers"][0]["keys"][0]["in_flight"] == 0


def test_client_disconnect_mid_request_closes_upstream(gateway: GatewayFactory, fake: FakeUpstream) -> None:
    served = gateway(AI_PROVIDER="gemini")
    fake.set("test-gemini-key-1", "hang", seconds=10)
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(served.url + "/v1/chat/completions", json=HELLO, headers=AUTH, timeout=0.5)
    closed_at = time.monotonic()
    while not fake.disconnects and time.monotonic() < closed_at + 3:
        time.sleep(0.02)
    assert fake.disconnects and fake.disconnects[0][1] - closed_at < 1.0


def test_a_full_run_logs_no_upstream_key(gateway: GatewayFactory, fake: FakeUpstream, http: httpx.Client) -> None:
    served = gateway("--log-level", "DEBUG", AI_PROVIDER="gemini")
    for key, kind in zip(GEMINI_KEYS, ("rate_limit", "invalid", "quota", "server_error"), strict=True):
        fake.set(key, kind)
    fake.set("test-openrouter-key-1", "break_stream")
    for path, extra in (("/v1/chat/completions", {}), ("/v1/chat/completions", {"stream": True})):
        for _ in range(3):
            http.post(served.url + path, json={**HELLO, **extra}, headers=AUTH)
    http.get(served.url + "/status", headers={"authorization": f"Bearer {ADMIN_KEY}"})
    served.stop()
    log = served.log()
    assert "POST /v1/chat/completions" in log  # every request is logged
    for provider, n in (("gemini", 4), ("openrouter", 2), ("anthropic", 2)):
        for i in range(1, n + 1):
            assert f"test-{provider}-key-{i}" not in log


def test_run_serves_the_gateway_when_keys_are_configured(fake: FakeUpstream, tmp_path: Path) -> None:
    from tests.gateway.conftest import free_port

    port = free_port()
    (tmp_path / ".env").write_text(
        "".join(f"{k}={v}\n" for k, v in fake_env(fake, AI_PROVIDER="gemini").items()) + f"KEYWHEEL_PORT={port}\n"
    )
    env = {"PATH": "/usr/bin:/bin", "KEYWHEEL_PORT": str(port)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "keywheel.cli", "run"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 20
        answer = None
        while time.monotonic() < deadline and answer is None:
            try:
                answer = httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions", json=HELLO, timeout=5)
            except httpx.TransportError:
                time.sleep(0.1)
        assert answer is not None and answer.status_code == 200
        assert answer.headers["x-keywheel-provider"] == "gemini"
    finally:
        proc.terminate()
        proc.wait(10)


def test_serve_refuses_a_public_address_without_gateway_keys(tmp_path: object) -> None:
    env = {"PATH": "/usr/bin:/bin", "GEMINI_API_KEY_1": "test-gemini-key-1", "KEYWHEEL_STATE": "memory"}
    result = subprocess.run(
        [sys.executable, "-m", "keywheel.cli", "--env-file", os.devnull, "serve", "--host", "0.0.0.0"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2 and "KEYWHEEL_GATEWAY_KEYS" in result.stderr


async def test_in_process_mount_with_asgi_transport(fake: FakeUpstream) -> None:
    wheel = Wheel(settings_from_env(fake_env(fake, AI_PROVIDER="gemini")))
    app = wheel.asgi_app()
    # The openai SDK runs on httpx2 (the successor of httpx), which has the same ASGITransport.
    client = openai.AsyncOpenAI(
        base_url="http://keywheel/v1",
        api_key="unused",
        max_retries=0,
        http_client=httpx2.AsyncClient(transport=httpx2.ASGITransport(app)),
    )
    completion = await client.chat.completions.create(model="auto", messages=[{"role": "user", "content": "hi"}])
    assert "from fake gemini" in (completion.choices[0].message.content or "")
    await client.close()
    await wheel.aclose()
    wheel.close()


async def test_under_another_asgi_server_a_client_going_away_still_closes_upstream(fake: FakeUpstream) -> None:
    """keywheel's own server tells the handler (scope["keywheel.on_lost"]); under any other ASGI
    server a task watches ``receive`` for ``http.disconnect`` instead: the upstream call is closed either way."""
    import uvicorn

    wheel = Wheel(settings_from_env(fake_env(fake, AI_PROVIDER="gemini")))
    fake.set("test-gemini-key-1", "slow_stream", interval=0.3)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = uvicorn.Config(wheel.asgi_app(), host="127.0.0.1", port=port, lifespan="off", log_level="warning")
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve())
    try:
        while not server.started:
            await asyncio.sleep(0.02)
        async with (
            httpx.AsyncClient(timeout=10) as client,
            client.stream(
                "POST", f"http://127.0.0.1:{port}/v1/chat/completions", json={**HELLO, "stream": True}
            ) as resp,
        ):
            assert resp.status_code == 200
            await anext(resp.aiter_raw())
            closed_at = time.monotonic()
        while not fake.disconnects and time.monotonic() < closed_at + 3:
            await asyncio.sleep(0.02)
        assert fake.disconnects, "the upstream never saw the client go away"
        assert fake.disconnects[0][1] - closed_at < 1.0
    finally:
        server.should_exit = True
        await serving
        await wheel.aclose()
