"""A Redis outage under the shared store: local state (the default) or 503s, and back."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from keywheel.errors import KeyInvalid, RateLimited
from keywheel.secrets import ApiKey
from keywheel.state.fallback import SharedStore, StateUnavailable
from keywheel.state.redis import RedisStore
from tests.redis_server import RedisServer


def _keys() -> list[ApiKey]:
    return [ApiKey(f"test-gemini-key-{i}", "gemini", str(i)) for i in range(1, 4)]


async def _until_shared(store: SharedStore, seconds: float) -> float:
    """Keep calling (as traffic would) until the store is back on Redis; how long it took."""
    started = time.monotonic()
    while not store.shared:
        assert time.monotonic() - started < seconds, "not back on Redis in time"
        got = await store.acquire()
        if isinstance(got, ApiKey):
            await store.release(got, None, 1.0)
        await asyncio.sleep(0.05)
    return time.monotonic() - started


async def test_local_mode_serves_through_an_outage_and_merges_back(
    redis_process: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "keywheel.state")
    keys = _keys()
    store = SharedStore(RedisStore("gemini", keys, url=redis_process.url))
    got = await store.acquire()
    assert isinstance(got, ApiKey)
    await store.release(got, RateLimited("slow", retry_after=60.0), 1.0)  # a rest the outage must keep
    await store._mirror()  # (it refreshes in the background at most every second)
    redis_process.kill()
    started = time.monotonic()
    served = []
    for _ in range(6):
        k = await store.acquire()
        assert isinstance(k, ApiKey)
        served.append(k)
        await store.release(k, None, 1.0)
    assert time.monotonic() - started < 2.0
    assert not store.shared and got not in served  # seeded from the last known state: the rest holds
    snap = await store.snapshot()
    assert snap["shared"] is False
    other = served[0]
    await store.release(other, KeyInvalid("bad key", status=401), 1.0)  # a decision taken alone
    await store.disable(served[1].fingerprint, "operator, during the outage")
    wait = await store.acquire()  # every key out: one rests, two are disabled
    assert isinstance(wait, float) and 55 < wait <= 60
    assert await store.lease("probe", 1.0)  # alone: it may probe

    redis_process.start()  # back, empty
    assert await _until_shared(store, 3.0) < 2.0
    fresh = RedisStore("gemini", keys, url=redis_process.url)  # another replica's view
    states = {k["key"]: k["state"] for k in (await fresh.snapshot())["keys"]}
    assert states == {got.fingerprint: "cooling", other.fingerprint: "disabled", served[1].fingerprint: "disabled"}
    lines = [r.getMessage() for r in caplog.records if r.name == "keywheel.state"]
    assert len([m for m in lines if "unavailable" in m]) == 1, lines
    assert len([m for m in lines if "is back" in m and "merged 3" in m]) == 1, lines
    await fresh.aclose()
    await store.aclose()


async def test_fail_mode_answers_unavailable_and_nothing_hangs(redis_process: RedisServer) -> None:
    keys = _keys()
    store = SharedStore(RedisStore("gemini", keys, url=redis_process.url), fallback="fail")
    got = await store.acquire()
    assert isinstance(got, ApiKey)
    redis_process.kill()
    started = time.monotonic()
    assert await store.release(got, None, 1.0) is None  # a request under way is not failed for it
    with pytest.raises(StateUnavailable, match="KEYWHEEL_REDIS_FALLBACK=fail"):
        await store.acquire()
    with pytest.raises(StateUnavailable):
        await store.snapshot()
    with pytest.raises(StateUnavailable):
        await store.disable(keys[0].fingerprint)
    assert await store.breaker_closed()
    assert not await store.lease("probe", 1.0)
    assert time.monotonic() - started < 3.0
    redis_process.start()
    await asyncio.sleep(0.6)
    with pytest.raises(StateUnavailable):
        await store.acquire()  # this call starts the retry in the background ...
    await asyncio.sleep(0.2)
    assert isinstance(await store.acquire(), ApiKey)  # ... and the next one is on Redis again
    await store.aclose()


def test_fallback_mode_is_checked() -> None:
    with pytest.raises(ValueError, match="'local' or 'fail'"):
        SharedStore(RedisStore("gemini", _keys(), url="redis://127.0.0.1:1/0"), fallback="maybe")


async def test_operator_actions_and_streams_during_an_outage(redis_process: RedisServer) -> None:
    keys = _keys()
    store = SharedStore(RedisStore("gemini", keys[:2], url=redis_process.url))
    assert isinstance(await store.acquire(), ApiKey)
    redis_process.kill()
    got = await store.acquire()
    assert isinstance(got, ApiKey) and not store.shared
    await store.answered(got)
    await store.abandon(got)
    await store.add(keys[2])
    await store.remove(keys[0].fingerprint)
    await store.disable(keys[1].fingerprint)
    await store.enable(keys[1].fingerprint)
    assert await store.breaker_closed()
    assert [k.fingerprint for k in await store.keys()] == [keys[1].fingerprint, keys[2].fingerprint]
    snap = await store.snapshot()
    assert [k["key"] for k in snap["keys"]] == [keys[1].fingerprint, keys[2].fingerprint]
    assert all(k["state"] == "active" and k["in_flight"] == 0 for k in snap["keys"])
    await store.aclose()
