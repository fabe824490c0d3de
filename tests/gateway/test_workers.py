"""``keywheel serve --workers N``: the workers share one pool with Redis; otherwise it refuses to start."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import httpx

from keywheel.testing import FakeUpstream
from tests.gateway.conftest import ADMIN_KEY, GATEWAY_KEY, free_port
from tests.helpers import env_of, measured

KEYS = [f"test-gemini-key-{i}" for i in range(1, 5)]


def _command(port: int, workers: int) -> list[str]:
    cli = [sys.executable, "-m", "keywheel.cli", "--env-file", os.devnull]
    return [*cli, "serve", "--port", str(port), "--workers", str(workers)]


def _env(fake: FakeUpstream, tmp_path: Path, **extra: str) -> dict[str, str]:
    env = env_of(fake, {"gemini": 4, "openrouter": 0, "anthropic": 0})
    env.update({"KEYWHEEL_GATEWAY_KEYS": GATEWAY_KEY, "KEYWHEEL_ADMIN_KEY": ADMIN_KEY, **extra})
    return measured({"PATH": os.environ["PATH"], "HOME": str(tmp_path), **env})


def test_workers_without_redis_refuse_to_start_and_say_what_to_set(fake: FakeUpstream, tmp_path: Path) -> None:
    done = subprocess.run(
        _command(free_port(), 2), env=_env(fake, tmp_path), capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 2
    out = " ".join((done.stdout + done.stderr).split())
    assert "refusing --workers 2 with KEYWHEEL_STATE=memory" in out
    assert "KEYWHEEL_STATE=redis://" in out


def test_workers_share_one_pool_with_redis(fake: FakeUpstream, tmp_path: Path, redis_server: str) -> None:
    port = free_port()
    log = (tmp_path / "serve.log").open("wb")
    process = subprocess.Popen(
        _command(port, 2), env=_env(fake, tmp_path, KEYWHEEL_STATE=redis_server), stdout=log, stderr=subprocess.STDOUT
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, (tmp_path / "serve.log").read_text()
            try:
                with urllib.request.urlopen(url + "/health", timeout=1):
                    break
            except OSError:
                assert time.monotonic() < deadline, "the workers did not come up"
                time.sleep(0.1)
        body = {"model": "gemini-2.5-flash", "messages": [{"role": "user", "content": "hi"}]}
        auth = {"authorization": f"Bearer {GATEWAY_KEY}"}
        for _ in range(24):  # a new connection each: the kernel spreads them over the workers
            with httpx.Client(timeout=30) as client:
                assert client.post(url + "/v1/chat/completions", json=body, headers=auth).status_code == 200
        order = [KEYS.index(r.key or "") for r in fake.requests]
        assert len(set(order[:4])) == 4 and all(order[i] == order[i + 4] for i in range(20)), order
        with httpx.Client(timeout=10) as client:
            status = client.get(url + "/status", headers={"authorization": f"Bearer {ADMIN_KEY}"}).json()
        assert sum(k["requests"] for p in status["providers"] for k in p["keys"]) == 24
    finally:
        process.terminate()
        process.wait(30)
        log.close()
