"""A real ``keywheel serve`` process over the fake upstream, for the SDK tests."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from keywheel.testing import FakeUpstream
from tests.helpers import COUNTS, env_of, measured

GATEWAY_KEY = "test-gateway-key-1"
ADMIN_KEY = "test-admin-key-0123456789"


@dataclass
class Served:
    url: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def start_gateway(env: dict[str, str], log_path: Path, *args: str, cwd: Path | None = None) -> Served:
    port = free_port()
    # KEYWHEEL_STATE is explicit (memory unless a test names a file in its tmp_path): no test reads
    # another's key state, and none writes ./.keywheel.
    full = measured({"PATH": os.environ["PATH"], "HOME": str(log_path.parent), "KEYWHEEL_STATE": "memory", **env})
    log = log_path.open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "keywheel.cli", "--env-file", os.devnull, *args, "serve", "--port", str(port)],
        env=full,
        cwd=cwd,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"keywheel serve exited: {log_path.read_text()}")
        try:
            with urllib.request.urlopen(url + "/health", timeout=1) as resp:
                if resp.status == 200:
                    return Served(url, process, log_path)
        except OSError:
            time.sleep(0.05)
    process.kill()
    raise RuntimeError(f"keywheel serve did not come up: {log_path.read_text()}")


GatewayFactory = Callable[..., Served]


@contextmanager
def gateways(fake: FakeUpstream, logs: Path) -> Iterator[GatewayFactory]:
    """A factory of gateways whose providers all point at the fake upstream (gateway and admin keys
    set; keyword args override the env), each stopped on leaving."""
    started: list[Served] = []

    def factory(*args: str, **overrides: str) -> Served:
        counts = {k: overrides.pop(k) for k in COUNTS if k in overrides}
        env = env_of(fake, counts)
        env.update({"KEYWHEEL_GATEWAY_KEYS": GATEWAY_KEY, "KEYWHEEL_ADMIN_KEY": ADMIN_KEY})
        env.update(overrides)
        served = start_gateway(env, logs / f"gateway-{len(started)}.log", *args)
        started.append(served)
        return served

    try:
        yield factory
    finally:
        for served in started:
            served.stop()


@pytest.fixture
def gateway(fake: FakeUpstream, tmp_path: Path) -> Iterator[GatewayFactory]:
    """Start a gateway whose providers all point at the fake upstream; keyword args override the env."""
    with gateways(fake, tmp_path) as factory:
        yield factory
