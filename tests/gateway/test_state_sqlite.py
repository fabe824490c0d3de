"""``keywheel serve`` on a SQLite key state, restarted for real: what survives a SIGTERM and a
``kill -9``, what the file holds (no key, no piece of one), and one process per file.

Each test names its own file in its ``tmp_path`` (or runs in one, for serve's default)."""

from __future__ import annotations

import os
import secrets
import signal
import string
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from keywheel.testing import FakeUpstream
from tests.gateway.conftest import ADMIN_KEY, GATEWAY_KEY, Served, free_port, start_gateway
from tests.helpers import fake_env, measured
from tests.state.test_sqlite import assert_no_piece

AUTH = {"authorization": f"Bearer {GATEWAY_KEY}"}
ADMIN = {"authorization": f"Bearer {ADMIN_KEY}"}
HELLO = {"model": "auto", "messages": [{"role": "user", "content": "hello"}]}
ALPHABET = string.ascii_letters + string.digits


def random_key() -> str:
    return "".join(secrets.choice(ALPHABET) for _ in range(16))


def gemini_env(fake: FakeUpstream, keys: list[str], state: str) -> dict[str, str]:
    env = fake_env(fake, gemini=0, openrouter=0, anthropic=0, AI_PROVIDER="gemini", KEYWHEEL_STATE=state)
    env.update({f"GEMINI_API_KEY_{i}": key for i, key in enumerate(keys, start=1)})
    env.update({"KEYWHEEL_GATEWAY_KEYS": GATEWAY_KEY, "KEYWHEEL_ADMIN_KEY": ADMIN_KEY})
    return env


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=30) as client:
        yield client


@pytest.fixture
def started() -> Iterator[list[Served]]:
    """Gateways a test starts, stopped (or killed) at its end whatever happened."""
    served: list[Served] = []
    yield served
    for s in served:
        s.stop()


def keys_by_label(http: httpx.Client, served: Served) -> tuple[dict[str, dict[str, Any]], float]:
    """``/status``'s gemini keys by label (``"1"`` …), and the wall-clock time it was taken (± the round trip)."""
    before = time.time()
    body = http.get(served.url + "/status", headers=ADMIN).json()
    taken = (before + time.time()) / 2
    (gemini,) = [p for p in body["providers"] if p["provider"] == "gemini"]
    return {k["key"].split("#", 1)[1].split(" ", 1)[0]: k for k in gemini["keys"]}, taken


def test_a_restart_keeps_disabled_keys_rests_to_their_deadline_and_the_days_counters_one_process_per_file(
    fake: FakeUpstream, http: httpx.Client, tmp_path: Path, started: list[Served]
) -> None:
    keys = [random_key() for _ in range(3)]
    path = tmp_path / "state.db"
    env = gemini_env(fake, keys, f"sqlite:///{path}")
    fake.set(keys[0], "echo_key", part="middle")  # an invalid key, quoting a piece of itself
    fake.set(keys[1], "rate_limit", retry_after=30.0, times=1)
    first = start_gateway(env, tmp_path / "first.log")
    started.append(first)
    for _ in range(5):
        assert http.post(first.url + "/v1/chat/completions", json=HELLO, headers=AUTH).status_code == 200
    before, taken = keys_by_label(http, first)
    assert before["1"]["state"] == "disabled" and "[redacted]" in before["1"]["reason"]
    assert before["2"]["state"] == "cooling"
    deadline = taken + before["2"]["cooldown_remaining"]
    assert (before["3"]["requests"], before["3"]["successes"]) == (5, 5)
    assert_no_piece(path, keys)  # the file, its -wal and -shm while the gateway runs
    output = refused(env, tmp_path)  # a second gateway on the same file
    assert "KEYWHEEL_STATE" in output and f"in use by process {first.process.pid}" in output, output
    assert "redis://" in output, output

    first.stop()
    assert "Application shutdown complete" in first.log(), first.log()  # drained and closed, not killed
    assert_no_piece(path, keys)
    second = start_gateway(env, tmp_path / "second.log")
    started.append(second)
    after, taken = keys_by_label(http, second)
    assert (after["1"]["state"], after["1"]["reason"]) == ("disabled", before["1"]["reason"])
    assert after["2"]["state"] == "cooling"
    assert abs(taken + after["2"]["cooldown_remaining"] - deadline) <= 0.1
    for label in ("1", "2", "3"):
        fields = ("requests", "successes", "failures", "tokens_in", "tokens_out")
        assert {f: after[label][f] for f in fields} == {f: before[label][f] for f in fields}
    sent = fake.count(keys[0]), fake.count(keys[1])
    for _ in range(2):
        resp = http.post(second.url + "/v1/chat/completions", json=HELLO, headers=AUTH)
        assert resp.status_code == 200 and resp.headers["x-keywheel-key"].startswith("gemini#3")
    assert (fake.count(keys[0]), fake.count(keys[1])) == sent  # neither comes back after the restart
    assert keys_by_label(http, second)[0]["3"]["requests"] == 7  # the day's counters go on
    assert "restored" in second.log() and "1 key(s) disabled, 1 resting" in second.log()


def wait_until(condition: Callable[[], bool], served: Served, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert served.process.poll() is None, served.log()
        assert time.monotonic() < deadline, "the load stalled"
        time.sleep(0.005)


def test_kill_9_under_load_loses_no_decision(
    fake: FakeUpstream, http: httpx.Client, tmp_path: Path, started: list[Served]
) -> None:
    keys = [random_key() for _ in range(8)]
    path = tmp_path / "state.db"
    env = gemini_env(fake, keys, f"sqlite:///{path}")
    served = start_gateway(env, tmp_path / "killed.log")
    started.append(served)
    faults = ["invalid", "rate_limit", "quota", "invalid", "rate_limit"]  # a 429 here says: retry in 600 s
    injected: dict[str, tuple[str, float]] = {}  # key -> (kind, monotonic time set)
    seen: dict[str, str] = {}  # fingerprint label -> the fault outcome a client saw in x-keywheel-attempts
    done = threading.Event()
    finished = [0]
    lock = threading.Lock()

    def client() -> None:
        with httpx.Client(timeout=30) as c:
            while not done.is_set():
                try:
                    resp = c.post(served.url + "/v1/chat/completions", json=HELLO, headers=AUTH)
                except httpx.HTTPError:
                    return  # the gateway was killed
                with lock:
                    finished[0] += 1
                    # "gemini gemini#3 ...ab12 KeyInvalid, gemini gemini#4 ...cd34 ok"
                    for attempt in filter(None, resp.headers.get("x-keywheel-attempts", "").split(", ")):
                        words = attempt.split(" ")
                        if words[-1] in ("KeyInvalid", "RateLimited", "QuotaExhausted"):
                            seen[words[1].split("#")[1]] = words[-1]

    with ThreadPoolExecutor(8) as pool:
        for _ in range(8):
            pool.submit(client)
        for index, kind in enumerate(faults):  # a fault every ~40 requests, on the next key
            target = 40 * (index + 1)
            wait_until(lambda: finished[0] >= target, served)  # noqa: B023 — called at once, in this iteration
            if kind == "rate_limit":
                fake.set(keys[index], kind, retry_after=600.0)
            else:
                fake.set(keys[index], kind)
            injected[keys[index]] = (kind, time.monotonic())
        last = time.monotonic()  # load goes on past the fake's margin below, so its log proves every fault
        wait_until(lambda: finished[0] >= 400 and time.monotonic() > last + 1.5, served)
        served.process.send_signal(signal.SIGKILL)  # mid-load: requests are in flight
        killed = time.monotonic()
        done.set()
    served.process.wait(10)

    # What the fake's log proves: a faulted key got a request after its fault was set, well before the kill.
    proved = {
        str(keys.index(key) + 1)
        for key, (_, since) in injected.items()
        if any(since < at < killed - 1.0 for at in fake.times(key))
    }
    restarted = start_gateway(env, tmp_path / "restarted.log")
    started.append(restarted)
    states, taken = keys_by_label(http, restarted)
    assert seen and proved, f"the faults reached no client ({seen}) or the fake ({proved}) before the kill"
    for label in set(seen) | proved:
        kind = faults[int(label) - 1]
        if kind == "rate_limit":
            assert states[label]["state"] == "cooling" and states[label]["cooldown_remaining"] > 500, states[label]
        elif kind == "invalid":
            assert states[label]["state"] == "disabled", states[label]
        else:
            assert states[label]["state"] != "active", states[label]
    assert all(states[str(i)]["state"] == "active" for i in range(len(faults) + 1, len(keys) + 1)), states


def refused(env: dict[str, str], tmp_path: Path, *args: str, cwd: Path | None = None) -> str:
    """Run ``keywheel serve`` expecting it to refuse to start (exit code 2); its output."""
    done = subprocess.run(
        [sys.executable, "-m", "keywheel.cli", "--env-file", os.devnull, "serve", "--port", str(free_port()), *args],
        env=measured({"PATH": os.environ["PATH"], "HOME": str(tmp_path), "COLUMNS": "300", **env}),
        cwd=cwd,
        capture_output=True,
        timeout=60,
    )
    output = (done.stdout + done.stderr).decode()
    assert done.returncode == 2 and "Traceback" not in output, output
    return output


def test_serve_keeps_its_state_in_dot_keywheel_by_default_and_refuses_workers_on_it(
    fake: FakeUpstream, http: httpx.Client, tmp_path: Path, started: list[Served]
) -> None:
    env = gemini_env(fake, ["test-gemini-key-1"], "")  # blank: not set, so serve's default
    served = start_gateway(env, tmp_path / "serve.log", cwd=tmp_path)
    started.append(served)
    assert http.post(served.url + "/v1/chat/completions", json=HELLO, headers=AUTH).status_code == 200
    assert (tmp_path / ".keywheel" / "state.db").is_file()
    # Refused for the workers before the file is opened (which the gateway above holds).
    output = refused(env, tmp_path, "--workers", "2", cwd=tmp_path)
    assert "--workers 2" in output and "redis://" in output and "in use" not in output, output
