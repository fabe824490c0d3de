"""Three ``keywheel serve`` replicas on one redis-server, over the fake upstream: one pool.

The fake's request log is the judge: which key each upstream request carried, and when.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import httpx

from keywheel.secrets import ApiKey
from keywheel.testing import FakeUpstream
from tests.gateway.conftest import ADMIN_KEY, GATEWAY_KEY, GatewayFactory, Served

KEYS = [f"test-gemini-key-{i}" for i in range(1, 5)]
SKEWED = str(Path(__file__).parent / "skewed")


def _replicas(gateway: GatewayFactory, redis_url: str, skews: tuple[float, ...] = (0, 0, 0)) -> list[Served]:
    return [
        gateway(
            gemini=4,
            openrouter=0,
            anthropic=0,
            KEYWHEEL_STATE=redis_url,
            KEYWHEEL_MAX_WAIT="5",
            PYTHONPATH=SKEWED,
            KEYWHEEL_TEST_CLOCK_SKEW=str(skew),
        )
        for skew in skews
    ]


async def _chat(client: httpx.AsyncClient, url: str) -> int:
    resp = await client.post(
        url + "/v1/chat/completions",
        json={"model": "gemini-2.5-flash", "messages": [{"role": "user", "content": "hi"}]},
        headers={"authorization": f"Bearer {GATEWAY_KEY}"},
    )
    return resp.status_code


async def _load(urls: list[str], n: int, concurrency: int) -> list[int]:
    """``n`` requests spread round-robin over ``urls``, ``concurrency`` at a time; their statuses."""
    sem = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(timeout=30) as client:

        async def one(i: int) -> int:
            async with sem:
                return await _chat(client, urls[i % len(urls)])

        return list(await asyncio.gather(*(one(i) for i in range(n))))


def _fingerprint(i: int) -> str:
    return ApiKey(KEYS[i - 1], "gemini", str(i)).fingerprint


async def test_three_replicas_share_one_round_robin_and_admin(
    fake: FakeUpstream, gateway: GatewayFactory, redis_server: str
) -> None:
    replicas = _replicas(gateway, redis_server)
    urls = [r.url for r in replicas]
    # One at a time over replicas 0, 1, 2, 0, ...: the keys follow one ring, not one ring per replica.
    assert await _load(urls, 24, 1) == [200] * 24
    order = [KEYS.index(r.key or "") for r in fake.requests]
    assert len(set(order[:4])) == 4 and all(order[i] == order[i + 4] for i in range(20)), order
    fake.reset()
    statuses = await _load(urls, 1200, 12)
    assert statuses == [200] * 1200
    counts = [fake.count(k) for k in KEYS]
    assert all(299 <= c <= 301 for c in counts), counts
    assert sum(counts) == 1200

    # A key disabled through one replica's admin route gets no request from the others.
    async with httpx.AsyncClient(timeout=10) as client:
        resp = await client.post(
            urls[0] + "/admin/keys/disable",
            json={"key": _fingerprint(2), "reason": "off for the test"},
            headers={"authorization": f"Bearer {ADMIN_KEY}"},
        )
        assert resp.status_code == 200, resp.text
        status = (await client.get(urls[2] + "/status", headers={"authorization": f"Bearer {ADMIN_KEY}"})).json()
    keys = {k["key"]: k for p in status["providers"] for k in p["keys"]}
    assert keys[_fingerprint(2)]["state"] == "disabled"
    assert sum(k["requests"] for k in keys.values()) == 1224  # every replica's counters, in one place
    before = fake.count(KEYS[1])
    assert await _load(urls[1:], 90, 6) == [200] * 90
    assert fake.count(KEYS[1]) == before
    assert [fake.count(k) for k in (KEYS[0], KEYS[2], KEYS[3])] == [c + 30 for c in (counts[0], counts[2], counts[3])]


async def test_a_429_rests_the_key_on_every_replica_even_with_skewed_clocks(
    fake: FakeUpstream, gateway: GatewayFactory, redis_server: str
) -> None:
    """The key answered 429 with a 2 s retry time gets no request from any replica for those 2 s;
    two of the three replicas' clocks are 5 s off (decisions use Redis TIME)."""
    replicas = _replicas(gateway, redis_server, skews=(0.0, 5.0, -5.0))
    urls = [r.url for r in replicas]
    assert await _load(urls, 12, 3) == [200] * 12
    fake.set(KEYS[0], "rate_limit", retry_after=2.0, times=1)
    started = time.monotonic()
    assert await _load(urls, 12, 3) == [200] * 12
    # Every replica, whatever its clock, sees the same rest (its length is read on Redis's clock).
    rests = []
    async with httpx.AsyncClient(timeout=10) as client:
        for url in urls:
            status = (await client.get(url + "/status", headers={"authorization": f"Bearer {ADMIN_KEY}"})).json()
            key = next(k for p in status["providers"] for k in p["keys"] if k["key"] == _fingerprint(1))
            assert key["state"] == "cooling"
            rests.append(key["cooldown_remaining"])
    assert all(0 < r <= 2.0 for r in rests) and max(rests) - min(rests) < 0.5, rests
    while time.monotonic() - started < 3.5:
        assert await _load(urls, 12, 3) == [200] * 12
    limited = [r for r in fake.requests if r.key == KEYS[0]]
    answered_429 = limited[3].at  # three served before, then the one that met the 429
    after = [r.at - answered_429 for r in limited[4:]]
    # Selected before keywheel received the 429 (at most the two other replicas' requests in flight):
    # within a few ms of it.  None may come in the 2 s after.
    assert not [t for t in after if 0.05 < t < 2.0], after
    assert any(2.0 <= t < 3.5 for t in after), after  # and it serves again once the rest is over
    assert all(fake.count(k) > 10 for k in KEYS[1:])
    assert os.environ.get("KEYWHEEL_TEST_CLOCK_SKEW") is None  # only the replicas were skewed


async def _states(client: httpx.AsyncClient, url: str) -> dict[str, tuple[str, str]]:
    status = (await client.get(url + "/status", headers={"authorization": f"Bearer {ADMIN_KEY}"})).json()
    return {k["key"]: (k["state"], k["cause"]) for p in status["providers"] for k in p["keys"]}


async def test_with_three_replicas_each_probe_happens_once(
    fake: FakeUpstream, gateway: GatewayFactory, redis_server: str
) -> None:
    """A key disabled by one 401 is probed once by one of the three replicas and is back on all
    three; a key that stays dead is never probed twice within one interval, whichever replica
    probes it (the lease on the key is shared, and covers the interval and the probe)."""
    interval = 0.4
    replicas = [
        gateway(
            gemini=3,
            openrouter=0,
            anthropic=0,
            KEYWHEEL_STATE=redis_server,
            KEYWHEEL_PROBE_INTERVAL=str(interval),
            KEYWHEEL_PROBE_TIMEOUT="0.5",
        )
        for _ in range(3)
    ]
    urls = [r.url for r in replicas]
    transient, dead = KEYS[0], KEYS[1]
    fake.set(transient, "invalid", times=1)  # one 401, then the key is good again
    fake.set(dead, "invalid")
    async with httpx.AsyncClient(timeout=10) as client:
        for _ in range(3):  # until both have met a 401 (the shared ring may start anywhere)
            assert await _chat(client, urls[0]) == 200
        mark = len(fake.requests)
        # Key 1 met its 401 (and may be probed back already: the replicas' rounds run every 0.4 s).
        assert {r.key for r in fake.requests[:mark] if r.method == "POST"} == {transient, dead, KEYS[2]}
        assert (await _states(client, urls[1]))[_fingerprint(2)] == ("disabled", "invalid")
        deadline = time.monotonic() + 15
        while [(await _states(client, url))[_fingerprint(1)] for url in urls] != [("active", "")] * 3:
            assert time.monotonic() < deadline, "key 1 did not come back"
            await asyncio.sleep(0.05)
        await asyncio.sleep(interval * 8)  # every replica has had several rounds since
        for url in urls:  # back on all three, and stays back; the dead key stays out
            states = await _states(client, url)
            assert states[_fingerprint(1)] == ("active", "") and states[_fingerprint(2)] == ("disabled", "invalid")
    probes = [r for r in fake.requests if r.method == "GET" and r.path == "/v1beta/models"]
    assert [r.key for r in probes if r.key == transient] == [transient]  # one probe, by one replica
    dead_probes = [r.at for r in probes if r.key == dead]
    assert len(dead_probes) >= 2, dead_probes
    gaps = [b - a for a, b in zip(dead_probes, dead_probes[1:], strict=False)]
    assert min(gaps) >= interval * 0.9, gaps  # never two probes of one key in one interval
    assert not [r for r in fake.requests[mark:] if r.key in (transient, dead) and r.method != "GET"]
