"""A real ``redis-server`` for the tests: on a free loopback port, without persistence.

``redis_server`` (a fixture) starts one per test and stops it by its PID afterwards; it yields
its URL, ``redis://127.0.0.1:PORT/0``.  ``redis_process`` is the same server as a
:class:`RedisServer`: ``kill()`` SIGKILLs it and ``start()`` brings it back on the same port,
empty (an outage test).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    """One redis-server process (restartable on the same port)."""

    def __init__(self, workdir: Path, port: int | None = None) -> None:
        self.workdir = workdir
        self.port = port or _free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        """Start it (again) on its port and wait until it answers PING."""
        assert self.process is None or self.process.poll() is not None, "redis-server is already running"
        log = (self.workdir / f"redis-{self.port}.log").open("ab")
        args = [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        args += ["--dir", str(self.workdir), "--protected-mode", "no"]
        self.process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited: {(self.workdir / f'redis-{self.port}.log').read_text()}")
            if _ping(self.port):
                return self
            time.sleep(0.02)
        self.stop()
        raise RuntimeError("redis-server did not answer PING within 10 s")

    def kill(self) -> None:
        """SIGKILL it (by its PID): an outage, as abrupt as they come."""
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(5)

    def restart(self) -> RedisServer:
        """SIGKILL it and start it again on the same port (empty: no persistence)."""
        self.kill()
        return self.start()

    def stop(self) -> None:
        process = self.process
        if process is not None and process.poll() is None:
            os.kill(process.pid, signal.SIGTERM)
            try:
                process.wait(5)
            except subprocess.TimeoutExpired:
                os.kill(process.pid, signal.SIGKILL)
                process.wait(5)


@pytest.fixture
def redis_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A fresh redis-server on a free loopback port (no persistence), stopped afterwards by its PID;
    ``kill()`` / ``start()`` / ``restart()`` for outage tests."""
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_server(redis_process: RedisServer) -> str:
    """The URL (``redis://127.0.0.1:PORT/0``) of a fresh redis-server (the same as ``redis_process``'s)."""
    return redis_process.url


@pytest.fixture(scope="session")
def redis_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One redis-server for a whole session (tests that FLUSHALL or use their own prefix)."""
    server = RedisServer(tmp_path_factory.mktemp("redis-session")).start()
    try:
        yield server
    finally:
        server.stop()
