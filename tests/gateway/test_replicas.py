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
