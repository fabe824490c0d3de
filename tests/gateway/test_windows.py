"""Quota windows through a real ``keywheel serve`` (one, or three replicas on one redis-server):
the upstream enforces a per-key sliding window (``FakeUpstream(window=…)``) and keywheel, told the
same limit (``GEMINI_RATE=10/5s``), never crosses it, serves what the quota allows, and tells every
refused client when to come back.
"""

from __future__ import annotations

import asyncio
import math
import time
from pathlib import Path

import httpx
import openai
import pytest

from keywheel.state.windows import GUARD
from keywheel.testing import FakeUpstream
from tests.gateway.conftest import ADMIN_KEY, GATEWAY_KEY, free_port, gateways
from tests.test_cli import run

KEYS, LIMIT, SECONDS, RUN = 4, 10, 5.0, 15.0
JITTER = 0.25
OFFERED = 3 * KEYS * LIMIT / SECONDS  # requests per second: 3x the aggregate quota


async def offer(urls: list[str]) -> tuple[list[float], list[tuple[float, float, int, int]]]:
    """Offer OFFERED requests a second for RUN seconds, open loop:
    (served at, [(sent at, refused at, retry-after, retry-after-ms)])."""
    clients = [openai.AsyncOpenAI(base_url=url + "/v1", api_key=GATEWAY_KEY, max_retries=0, timeout=30) for url in urls]
    served: list[float] = []
    refused: list[tuple[float, float, int, int]] = []

    async def one(client: openai.AsyncOpenAI) -> None:
        sent = time.monotonic()
        try:
            await client.chat.completions.create(model="auto", messages=[{"role": "user", "content": "hi"}])
            served.append(time.monotonic())
        except openai.RateLimitError as exc:
            headers = exc.response.headers
            refused.append((sent, time.monotonic(), int(headers["retry-after"]), int(headers["retry-after-ms"])))

    start = time.monotonic()
    tasks = []
    for i in range(int(OFFERED * RUN)):
        delay = start + i / OFFERED - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(clients[i % len(clients)])))
    await asyncio.gather(*tasks)
    for client in clients:
        await client.close()
    return served, refused


def free_at(arrivals: dict[str, list[float]], t: float) -> float:
    """When the upstream's first slot frees after ``t``, judged by its own arrival log."""
    earliest = float("inf")
    for times in arrivals.values():
        before = [a for a in times if a <= t and a > t - SECONDS]
        earliest = min(earliest, t if len(before) < LIMIT else before[-LIMIT] + SECONDS)
    return earliest


@pytest.mark.timeout(120)
@pytest.mark.parametrize("replicas", [1, 3], ids=["one process", "three replicas on redis"])
def test_a_rate_window_is_never_crossed_and_refusals_say_when(
    tmp_path: Path, replicas: int, request: pytest.FixtureRequest
) -> None:
    state = {} if replicas == 1 else {"KEYWHEEL_STATE": request.getfixturevalue("redis_server")}
    with FakeUpstream(window=(LIMIT, SECONDS)) as fake, gateways(fake, tmp_path) as start:
        served = [
            start(
                gemini=KEYS,
                openrouter=0,
                anthropic=0,
                GEMINI_RATE=f"{LIMIT}/{SECONDS:g}s",
                KEYWHEEL_MAX_WAIT="0",
                **state,
            )
            for _ in range(replicas)
        ]
        ok, refused = asyncio.run(offer([s.url for s in served]))
        log = fake.requests
        status = httpx.get(served[0].url + "/status", headers={"authorization": f"Bearer {ADMIN_KEY}"}).json()

    arrivals: dict[str, list[float]] = {}
    for r in log:
        assert r.key is not None
        arrivals.setdefault(r.key, []).append(r.at)
    assert len(arrivals) == KEYS
    assert sum(r.over_window for r in log) == 0  # the upstream answered no 429
    for times in arrivals.values():  # at most LIMIT arrivals in any SECONDS, per key
        assert all(times[i + LIMIT] - times[i] >= SECONDS for i in range(len(times) - LIMIT))
    quota = KEYS * LIMIT * int(RUN / SECONDS)
    assert len(ok) >= 0.98 * quota, (len(ok), quota)
    assert len(ok) + len(refused) == int(OFFERED * RUN)
    assert refused, "3x the quota was offered: some must be refused"
    # The truth: when the upstream's log says a slot frees (plus keywheel's guard against arrival
    # jitter), seen from the moment keywheel decided — somewhere between the client's send and its
    # receipt of the 429 (on a loaded machine, either may lag).  retry-after-ms is the wait;
    # retry-after rounds it up to whole seconds: a client that waits that long finds the slot free,
    # and it frees less than a second before.  JITTER: how late a request may reach the upstream
    # after keywheel counted it.
    wrong = []
    for sent, at, seconds, ms in refused:
        # keywheel decided at some moment between send and receipt; the wait then is not monotonic
        # in that moment (a slot free at the send may be taken by another request before the
        # decision), so judge against the waits at the send, the receipt and every arrival between.
        moments = [sent, at, *(a for times in arrivals.values() for a in times if sent < a < at)]
        waits = [free_at(arrivals, t) - t + GUARD for t in moments]
        shortest, longest = min(waits), max(waits)
        if (
            not shortest - JITTER <= ms / 1000 <= longest + JITTER
            or not shortest - JITTER <= seconds <= longest + 1 + JITTER
        ):
            wrong.append((round(at, 3), seconds, ms, round(shortest, 3), round(longest, 3)))
        assert seconds == max(1, math.ceil(ms / 1000))
    assert not wrong, wrong
    # /status shows each key's window: its use, limit and reset time.
    windows = [g["windows"][0] for g in status["providers"][0]["groups"]]
    assert len(windows) == KEYS
    assert all(w["limit"] == LIMIT and w["seconds"] == SECONDS and 0 <= w["used"] <= LIMIT for w in windows)


def test_keywheel_config_warns_of_keys_that_behave_as_one_group(fake: FakeUpstream, tmp_path: Path) -> None:
    with gateways(fake, tmp_path) as start:
        served = start(gemini=3, openrouter=0, anthropic=0, GEMINI_API_KEY_3_GROUP="solo", GEMINI_RPM="100")
        for key in ("test-gemini-key-1", "test-gemini-key-2"):  # one project's two keys: limited together
            fake.set(key, "rate_limit", retry_after=0.01)
        with httpx.Client(timeout=30) as client:
            for _ in range(6):
                answer = client.post(
                    served.url + "/v1/chat/completions",
                    headers={"authorization": f"Bearer {GATEWAY_KEY}"},
                    json={"model": "auto", "messages": [{"role": "user", "content": "hi"}]},
                )
                assert answer.status_code == 200
                time.sleep(0.03)  # the 10 ms rests end: the next call meets both keys again
        env = {"GEMINI_API_KEY_1": "test-gemini-key-1", "GEMINI_API_KEY_2": "test-gemini-key-2", "GEMINI_RPM": "100"}
        env["GEMINI_RPD"] = "1000"
        env["COLUMNS"] = "200"
        result = run(["config", "--url", served.url, "--admin-key", ADMIN_KEY], env, tmp_path)
    assert result.returncode == 0, result.stderr
    out = " ".join(result.stdout.split())
    assert "were throttled within the same second" in out and "GEMINI_API_KEY_<N>_GROUP" in out, out
    assert "gemini#1" in out and "gemini#2" in out and "seen by the gateway" in out
    assert "100 requests/60s" in out and "1000 requests/day (America/Los_Angeles)" in out  # the windows column
    assert "test-gemini-key-1" not in result.stdout + result.stderr


def test_keywheel_config_says_when_the_gateway_cannot_be_read(tmp_path: Path) -> None:
    env = {"GEMINI_API_KEY_1": "test-gemini-key-1"}
    result = run(["config", "--url", f"http://127.0.0.1:{free_port()}"], env, tmp_path)
    assert result.returncode == 0, result.stderr
    assert "could not read" in result.stdout and "configuration is valid (with warnings)" in result.stdout
