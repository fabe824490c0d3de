"""Quota windows and key groups in the Redis store's Lua, on a real redis-server (one per session,
a fresh prefix per test): what ``test_windows.py`` checks of the memory store, across replicas.

Each store's clock is fixed (the scripts take ``now`` from it instead of Redis ``TIME``), so time
is stepped, never slept.
"""

from __future__ import annotations

import itertools
from datetime import UTC, datetime

import pytest

from keywheel.errors import QuotaExhausted, RateLimited
from keywheel.secrets import ApiKey
from keywheel.state.redis import RedisStore
from keywheel.state.windows import GUARD, TOKENS, Quota, WindowSpec
from keywheel.types import Usage
from tests.redis_server import RedisServer

PACIFIC = "America/Los_Angeles"
_prefixes = itertools.count()


def utc(year: int, month: int, day: int, hour: int, minute: int) -> float:
    return datetime(year, month, day, hour, minute, tzinfo=UTC).timestamp()


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def keys(n: int) -> list[ApiKey]:
    return [ApiKey(f"test-gemini-key-{i}", "gemini", str(i)) for i in range(1, n + 1)]


def replicas(server: RedisServer, ks: list[ApiKey], quota: Quota, clock: Clock, n: int = 2) -> list[RedisStore]:
    prefix = f"windows{next(_prefixes)}"
    return [RedisStore("gemini", ks, url=server.url, prefix=prefix, clock=clock, quota=quota) for _ in range(n)]


async def close(stores: list[RedisStore]) -> None:
    for store in stores:
        await store.aclose()


async def test_replicas_share_each_group_window_and_refuse_with_the_earliest_slot(redis_session: RedisServer) -> None:
    clock = Clock(1000.0)
    ks = keys(2)
    a, b = stores = replicas(redis_session, ks, Quota(default=(WindowSpec("2/5s", 2, 5.0),)), clock)
    got = []
    for i in range(4):
        clock.now = 1000.0 + i
        got.append(await (a if i % 2 else b).acquire())
    assert sorted(k.fingerprint for k in got if isinstance(k, ApiKey)) == sorted(k.fingerprint for k in ks * 2)
    clock.now = 1003.5
    assert await a.acquire() == pytest.approx(1000.0 + 5.0 + GUARD - 1003.5)
    assert await b.acquire() == pytest.approx(1000.0 + 5.0 + GUARD - 1003.5)
    clock.now = 1005.0 + GUARD
    assert isinstance(await b.acquire(), ApiKey)
    assert await a.acquire() == pytest.approx(1.0)
    snap = await a.snapshot()
    assert sorted(g["windows"][0]["used"] for g in snap["groups"]) == [2, 2]
    assert all(k["group"] is None for k in snap["keys"])
    await close(stores)


async def test_tokens_are_reserved_then_settled_to_usage_and_abandon_releases(redis_session: RedisServer) -> None:
    clock = Clock(1000.0)
    ks = keys(1)
    a, b = stores = replicas(redis_session, ks, Quota(default=(WindowSpec("tpm", 1000, 60.0, TOKENS),)), clock)

    async def used() -> int:
        return int((await b.snapshot())["groups"][0]["windows"][0]["used"])

    assert await a.acquire(tokens=700) == ks[0]
    assert await used() == 700
    assert isinstance(await b.acquire(tokens=700), float)  # the other replica sees the reservation
    await a.release(ks[0], None, 5.0, Usage(input_tokens=120, output_tokens=80))
    assert await used() == 200
    assert await b.acquire(tokens=700) == ks[0]
    assert await used() == 900
    await b.abandon(ks[0])
    assert await used() == 200
    assert await a.acquire(tokens=300) == ks[0]
    await a.release(ks[0], RateLimited("no", retry_after=0.001), 5.0)
    assert await used() == 200
    clock.now += 61
    assert await used() == 0  # the window slid past them: no reservation outlives its window
    await close(stores)


@pytest.mark.parametrize(
    "midnight",
    [utc(2026, 3, 9, 7, 0), utc(2026, 11, 2, 8, 0)],
    ids=["spring-forward day", "fall-back day"],
)
async def test_rpd_resets_at_pacific_midnight(redis_session: RedisServer, midnight: float) -> None:
    clock = Clock(midnight - 10.0)
    ks = keys(1)
    spec = WindowSpec("rpd", 2, 86400.0, daily=True, tz=PACIFIC)
    a, b = stores = replicas(redis_session, ks, Quota(default=(spec,)), clock)
    assert await a.acquire() == ks[0]
    assert await b.acquire() == ks[0]
    assert await a.acquire() == pytest.approx(10.0)
    assert (await a.snapshot())["groups"][0]["windows"][0]["resets_at"] == midnight
    clock.now = midnight
    assert await b.acquire() == ks[0]
    assert await a.acquire() == ks[0]
    wait = await b.acquire()
    assert isinstance(wait, float) and 23 * 3600 <= wait <= 25 * 3600
    await close(stores)


async def test_a_per_day_quota_rests_the_group_on_every_replica_until_pacific_midnight(
    redis_session: RedisServer,
) -> None:
    midnight = utc(2026, 11, 2, 8, 0)
    clock = Clock(midnight - 3 * 3600)
    ks = keys(4)
    quota = Quota(
        key_group={ks[0].fingerprint: "proj-a", ks[1].fingerprint: "proj-a", ks[2].fingerprint: "proj-b"},
        day_tz=PACIFIC,
    )
    a, b = stores = replicas(redis_session, ks, quota, clock)
    error = QuotaExhausted("GenerateRequestsPerDayPerProjectPerModel", status=429, retry_after=5.0)
    error.daily = True
    change = await a.release(ks[0], error, 1.0)
    assert change is not None and change.until == midnight
    snap = {k["key"]: k for k in (await b.snapshot())["keys"]}
    assert snap[ks[1].fingerprint]["state"] == "cooling" and snap[ks[1].fingerprint]["group"] == "proj-a"
    assert snap[ks[1].fingerprint]["cooldown_remaining"] == pytest.approx(3 * 3600)
    assert "daily quota of its group" in snap[ks[1].fingerprint]["reason"]
    served = set()
    for _ in range(6):
        got = await b.acquire()
        assert isinstance(got, ApiKey)
        served.add(got)
        await b.release(got, None, 1.0)
    assert served == {ks[2], ks[3]}
    await close(stores)
