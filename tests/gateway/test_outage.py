"""SIGKILL the redis-server under load and restart it 5 s later: local state carries the
replicas through (``KEYWHEEL_REDIS_FALLBACK=local``) and they converge again; ``=fail`` answers
503s in the caller's dialect and nothing hangs."""

from __future__ import annotations

import asyncio
import time

import httpx

from keywheel.secrets import ApiKey
from keywheel.testing import FakeUpstream
from tests.gateway.conftest import ADMIN_KEY, GATEWAY_KEY, GatewayFactory
from tests.redis_server import RedisServer

KEYS = [f"test-gemini-key-{i}" for i in range(1, 5)]
CHAT = {"model": "gemini-2.5-flash", "messages": [{"role": "user", "content": "hi"}]}
AUTH = {"authorization": f"Bearer {GATEWAY_KEY}"}


async def _traffic(client: httpx.AsyncClient, urls: list[str], stop: asyncio.Event, out: list[int]) -> None:
    i = 0
    while not stop.is_set():
        resp = await client.post(urls[i % len(urls)] + "/v1/chat/completions", json=CHAT, headers=AUTH)
        out.append(resp.status_code)
        i += 1


async def test_local_mode_rides_out_an_outage_and_converges(
    fake: FakeUpstream, gateway: GatewayFactory, redis_process: RedisServer
) -> None:
    replicas = [
        gateway(gemini=4, openrouter=0, anthropic=0, KEYWHEEL_STATE=redis_process.url, KEYWHEEL_MAX_WAIT="5")
        for _ in range(2)
    ]
    urls = [r.url for r in replicas]
    statuses: list[int] = []
    stop = asyncio.Event()
    async with httpx.AsyncClient(timeout=30) as client:
        workers = [
            asyncio.create_task(_traffic(client, urls[i % 2 :] + urls[: i % 2], stop, statuses)) for i in range(4)
        ]
        await asyncio.sleep(1.0)
        redis_process.kill()
        killed = len(statuses)
        await asyncio.sleep(1.0)
        fake.set(KEYS[2], "rate_limit", retry_after=60.0, times=1)  # a rest decided alone, by one replica
        await asyncio.sleep(4.0)
        during = len(statuses) - killed
        redis_process.start()  # back (empty), 5 s later
        back = time.monotonic()
        await asyncio.sleep(2.0)
        resp = await client.post(
            urls[0] + "/admin/keys/disable",
            json={"key": ApiKey(KEYS[3], "gemini", "4").fingerprint},
            headers={"authorization": f"Bearer {ADMIN_KEY}"},
        )
        assert resp.status_code == 200, resp.text
        disabled = time.monotonic()
        await asyncio.sleep(2.0)
        stop.set()
        await asyncio.gather(*workers)
    assert during > 50  # the outage was under load
    assert set(statuses) == {200}, [s for s in statuses if s != 200][:5]  # no request failed because of it
    limited = [r.at for r in fake.requests if r.key == KEYS[2]]
    assert limited and max(limited) < back + 2.0  # the merged rest holds on every replica within 2 s
    assert not [r for r in fake.requests if r.key == KEYS[3] and r.at > disabled + 0.05]  # shared again
    logs = [r.log() for r in replicas]
    assert all(log.count("unavailable") == 1 and log.count("is back") == 1 for log in logs), logs


async def test_fail_mode_answers_503_in_the_callers_dialect(
    fake: FakeUpstream, gateway: GatewayFactory, redis_process: RedisServer
) -> None:
    served = gateway(gemini=4, openrouter=0, anthropic=0, KEYWHEEL_STATE=redis_process.url)
    served_fail = gateway(
        gemini=4, openrouter=0, anthropic=0, KEYWHEEL_STATE=redis_process.url, KEYWHEEL_REDIS_FALLBACK="fail"
    )
    async with httpx.AsyncClient(timeout=30) as client:
        url = served_fail.url
        assert (await client.post(url + "/v1/chat/completions", json=CHAT, headers=AUTH)).status_code == 200
        redis_process.kill()
        started = time.monotonic()
        openai = await client.post(url + "/v1/chat/completions", json=CHAT, headers=AUTH)
        anthropic = await client.post(
            url + "/v1/messages",
            json={"model": "claude-x", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]},
            headers={"x-api-key": GATEWAY_KEY, "anthropic-version": "2023-06-01"},
        )
        gemini = await client.post(
            url + "/v1beta/models/gemini-2.5-flash:generateContent",
            json={"contents": [{"role": "user", "parts": [{"text": "hi"}]}]},
            headers={"x-goog-api-key": GATEWAY_KEY},
        )
        assert time.monotonic() - started < 5.0  # nothing hangs
        assert (openai.status_code, anthropic.status_code, gemini.status_code) == (503, 503, 503)
        assert "KEYWHEEL_REDIS_FALLBACK=fail" in openai.json()["error"]["message"]
        assert anthropic.json()["type"] == "error" and "Redis" in anthropic.json()["error"]["message"]
        assert gemini.json()["error"]["status"] == "UNAVAILABLE" and "Redis" in gemini.json()["error"]["message"]
        # the default (local) replica on the same Redis goes on serving
        assert (await client.post(served.url + "/v1/chat/completions", json=CHAT, headers=AUTH)).status_code == 200
        redis_process.start()
        deadline = time.monotonic() + 5
        while (await client.post(url + "/v1/chat/completions", json=CHAT, headers=AUTH)).status_code != 200:
            assert time.monotonic() < deadline, "fail mode did not come back with Redis"
            await asyncio.sleep(0.2)
    assert served_fail.log().count("answering 503") == 1
