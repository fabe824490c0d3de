"""``keywheel serve --workers 2`` on a real redis-server: a reload restarts the workers one at a
time, each draining, under constant load; ``/metrics`` sums every worker."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from keywheel.testing import FakeUpstream
from tests.gateway.conftest import ADMIN_KEY, GATEWAY_KEY, GatewayFactory, free_port
from tests.helpers import env_of, measured

BODY = {"model": "gemini-2.5-flash", "messages": [{"role": "user", "content": "hi"}]}
AUTH = {"authorization": f"Bearer {GATEWAY_KEY}"}
ADMIN = {"authorization": f"Bearer {ADMIN_KEY}"}
ADDED = "test-gemini-key-5"


class Served:
    def __init__(self, process: subprocess.Popen[bytes], url: str, log: Path) -> None:
        self.process, self.url, self.log = process, url, log

    def workers(self) -> set[int]:
        """The PIDs of the parent's worker processes (multiprocessing's resource tracker left out)."""
        found = set()
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
                command = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            parent = int(stat.rsplit(")", 1)[1].split()[1])
            if parent == self.process.pid and b"spawn_main" in command and b"resource_tracker" not in command:
                found.add(int(entry.name))
        return found

    def wait_for(self, check: Callable[[], bool], what: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            assert self.process.poll() is None, self.log.read_text()
            assert time.monotonic() < deadline, f"{what}; log: {self.log.read_text()}"
            time.sleep(0.1)


@pytest.fixture
def served(fake: FakeUpstream, tmp_path: Path, redis_server: str) -> Iterator[Served]:
    env_file = tmp_path / "gateway.env"
    env_file.write_text("")
    env = env_of(fake, {"gemini": 4, "openrouter": 0, "anthropic": 0})
    env.update({"KEYWHEEL_GATEWAY_KEYS": GATEWAY_KEY, "KEYWHEEL_ADMIN_KEY": ADMIN_KEY, "KEYWHEEL_STATE": redis_server})
    env.update({"KEYWHEEL_SHUTDOWN_TIMEOUT": "20"})
    port = free_port()
    log = tmp_path / "serve.log"
    command = [sys.executable, "-m", "keywheel.cli", "--env-file", str(env_file)]
    with log.open("wb") as out:
        process = subprocess.Popen(
            [*command, "serve", "--port", str(port), "--workers", "2"],
            env=measured({"PATH": os.environ["PATH"], "HOME": str(tmp_path), **env}),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    running = Served(process, f"http://127.0.0.1:{port}", log)
    try:
        running.wait_for(lambda: _healthy(running.url) and len(running.workers()) == 2, "the workers did not come up")
        # Both have read the configuration (a test then writes a broken one into the env file).
        running.wait_for(lambda: log.read_text().count("Application startup complete") == 2, "not both started")
        yield running
    finally:
        process.terminate()
        process.wait(60)


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/health", timeout=1) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


class Load:
    """Client threads sending chat completions back to back, each on a new connection, until stopped."""

    def __init__(self, url: str, threads: int) -> None:
        self.url = url
        self.ok = 0
        self.failures: list[str] = []
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self.run) for _ in range(threads)]

    def run(self) -> None:
        with httpx.Client(timeout=30, limits=httpx.Limits(max_keepalive_connections=0)) as client:
            while not self.stop.is_set():
                self.once(client)

    def once(self, client: httpx.Client) -> None:
        try:
            resp = client.post(self.url + "/v1/chat/completions", json=BODY, headers=AUTH)
            outcome = "" if resp.status_code == 200 else f"{resp.status_code} {resp.text[:200]}"
        except httpx.HTTPError as exc:
            outcome = f"{type(exc).__name__}: {exc}"
        with self.lock:
            if outcome:
                self.failures.append(outcome)
            else:
                self.ok += 1

    def __enter__(self) -> Load:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(60)


def _scrape(url: str) -> tuple[str, float]:
    """One scrape on a new connection: the answering worker's PID and keywheel_requests_total summed."""
    with httpx.Client(timeout=10) as client:
        resp = client.get(url + "/metrics", headers=ADMIN)
    assert resp.status_code == 200, resp.text
    total = 0.0
    for family in text_string_to_metric_families(resp.text):
        if family.name == "keywheel_requests":
            total += sum(s.value for s in family.samples if s.name == "keywheel_requests_total")
    return resp.headers["x-keywheel-worker"], total


def _scrapes_from_every_worker(served: Served, expected: int) -> dict[str, float]:
    """Scrape until both workers have answered (the counts of the others are at most 0.1 s old:
    the first scrape waits for the total); every scrape must show exactly ``expected``."""
    served.wait_for(lambda: _scrape(served.url)[1] >= expected, f"/metrics never counted {expected} requests", 10)
    seen: dict[str, float] = {}
    for _ in range(200):
        worker, total = _scrape(served.url)
        assert total == expected, (worker, total, expected)
        seen[worker] = total
        if len(seen) == 2:
            break
    assert set(map(int, seen)) == served.workers(), seen
    return seen


def test_reload_restarts_workers_one_at_a_time_under_load_and_metrics_sum_them(
    served: Served, fake: FakeUpstream, tmp_path: Path
) -> None:
    env_file = tmp_path / "gateway.env"
    before = served.workers()
    with httpx.Client(timeout=30) as admin:
        # A broken configuration is refused whole, by the worker that takes the request and by the parent.
        env_file.write_text("KEYWHEEL_TIMEOUT=soon\n")
        refused = admin.post(served.url + "/admin/reload", headers=ADMIN)
        assert refused.status_code == 400 and "KEYWHEEL_TIMEOUT" in refused.json()["problems"]
        os.kill(served.process.pid, signal.SIGHUP)
        served.wait_for(lambda: "workers keep the running configuration" in served.log.read_text(), "no refusal")
        served.wait_for(lambda: served.workers() == before, "a refused reload changed the workers", 10)

        env_file.write_text(f"GEMINI_API_KEY_5={ADDED}\n")
        for key in [*(f"test-gemini-key-{i}" for i in range(1, 5)), ADDED]:  # answers take ~0.35 s:
            fake.set(key, "trickle", interval=0.05, size=64)  # requests are in flight at each SIGTERM
        with Load(served.url, threads=4) as load:
            served.wait_for(lambda: load.ok >= 8, "no load")
            reloaded = admin.post(served.url + "/admin/reload", headers=ADMIN)
            assert reloaded.status_code == 200, reloaded.text
            assert reloaded.json()["added"] and reloaded.json()["kept"] == 4
            served.wait_for(lambda: not (served.workers() & before), "the workers were not all replaced")
            served.wait_for(lambda: "every worker runs the configuration read anew" in served.log.read_text(), "")
            after = len(fake.requests)
            served.wait_for(lambda: len(fake.requests) >= after + 12, "no load after the reload")
    assert load.failures == [], load.failures[:5]
    assert len(served.workers()) == 2
    assert ADDED in {r.key for r in fake.requests[after:]}  # the added key serves
    log = served.log.read_text()
    assert log.count("replaced by") == 2
    # The counts of the replaced workers are kept: the total is every request answered.
    assert len(_scrapes_from_every_worker(served, load.ok)) == 2
    drained = [int(n) for n in re.findall(r"shutdown drain: (\d+) request\(s\) drained, 0 cut", log)]
    assert sum(drained) >= 1, log  # the old workers had requests in flight, and let them finish


def _of_parent(parent: int) -> set[int]:
    """Every live process started by the ``keywheel serve`` whose PID is ``parent`` (its workers,
    wherever they were reparented): they carry its PID in their environment."""
    mark = f"KEYWHEEL_SUPERVISOR_PID={parent}".encode()
    found = set()
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and mark in (entry / "environ").read_bytes().split(b"\0"):
                if "(zombie)" not in (entry / "status").read_text() and " Z " not in (entry / "stat").read_text():
                    found.add(int(entry.name))
        except OSError:
            continue
    return found


def test_a_stop_during_a_rolling_restart_stops_everything(served: Served) -> None:
    assert _of_parent(served.process.pid) >= served.workers()
    os.kill(served.process.pid, signal.SIGHUP)
    served.wait_for(lambda: len(served.workers()) == 3, "no replacement worker started")
    served.process.terminate()
    assert served.process.wait(60) is not None
    log = served.log.read_text()
    assert "did not come up" not in log and log.count("replaced by") < 2  # the restart ended there
    deadline = time.monotonic() + 30
    while _of_parent(served.process.pid):
        assert time.monotonic() < deadline, _of_parent(served.process.pid)
        time.sleep(0.1)


def test_a_connection_accepted_before_the_drain_gets_its_request_served(gateway: GatewayFactory) -> None:
    """A worker that stops (a rolling restart) serves the first request of a connection it had
    accepted before it stopped listening, then closes it; a connection that sends nothing is closed."""
    served = gateway()
    port = int(served.url.rsplit(":", 1)[1])
    body = json.dumps(BODY).encode()
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\nauthorization: Bearer {GATEWAY_KEY}\r\n"
        f"content-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", port)) as late, socket.create_connection(("127.0.0.1", port)) as idle:
        time.sleep(0.3)  # both accepted by the gateway's loop
        served.process.send_signal(signal.SIGTERM)
        time.sleep(0.3)  # the drain has begun
        late.sendall(head + body)
        late.settimeout(20)
        answer = b""
        while chunk := late.recv(65536):
            answer += chunk
        idle.settimeout(20)
        assert idle.recv(1) == b""  # closed without a word: it never asked anything
    status_line, _, rest = answer.partition(b"\r\n")
    assert status_line == b"HTTP/1.1 200 OK", answer[:300]
    assert b"connection: close" in rest.lower() and b'"choices"' in rest
    assert served.process.wait(30) is not None
