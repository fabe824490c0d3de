"""The Redis store on a real redis-server: one pool shared by several stores (replicas)."""

from __future__ import annotations

import asyncio
import random
import string
from collections import Counter
from typing import Any

import redis.asyncio as aredis

from keywheel.errors import KeyInvalid, RateLimited, ServerError
from keywheel.secrets import ApiKey
from keywheel.state.base import Open
from keywheel.state.memory import MemoryStore
from keywheel.state.redis import RedisStore
from keywheel.state.rules import BreakerPolicy
from keywheel.types import Usage


def _keys(n: int, provider: str = "gemini") -> list[ApiKey]:
    return [ApiKey(f"test-{provider}-key-{i}", provider, str(i)) for i in range(1, n + 1)]


def _store(url: str, keys: list[ApiKey], **kwargs: object) -> RedisStore:
    return RedisStore("gemini", keys, url=url, **kwargs)  # type: ignore[arg-type]


async def test_replicas_share_one_round_robin(redis_server: str) -> None:
    keys = _keys(4)
    replicas = [_store(redis_server, keys) for _ in range(3)]
    picked: Counter[str] = Counter()
    for i in range(120):
        got = await replicas[i % 3].acquire()
        assert isinstance(got, ApiKey)
        picked[got.fingerprint] += 1
        await replicas[i % 3].release(got, None, 5.0, Usage(3, 4))
    assert sorted(picked.values()) == [30, 30, 30, 30]
    snap = await replicas[0].snapshot()
    assert [k["requests"] for k in snap["keys"]] == [30, 30, 30, 30]
    assert sum(k["tokens_out"] for k in snap["keys"]) == 480
    assert all(k["in_flight"] == 0 and k["avg_latency_ms"] == 5.0 for k in snap["keys"])
    for r in replicas:
        await r.aclose()


async def test_a_rest_or_disable_by_one_replica_holds_for_all(redis_server: str) -> None:
    keys = _keys(2)
    a, b = _store(redis_server, keys), _store(redis_server, keys)
    first = await a.acquire()
    assert isinstance(first, ApiKey)
    change = await a.release(first, RateLimited("slow down", retry_after=30.0), 1.0)
    assert change is not None and change.new == "cooling" and change.until is not None
    assert change.fingerprint == first.fingerprint
    for _ in range(4):
        got = await b.acquire()
        assert isinstance(got, ApiKey) and got != first
        await b.release(got, None, 1.0)
    other = keys[1] if first == keys[0] else keys[0]
    await b.disable(other.fingerprint, "switched off")
    wait = await a.acquire()
    assert isinstance(wait, float) and 29 < wait <= 30  # both out: the rest ends first
    snap = await a.snapshot()
    states = {k["key"]: (k["state"], k["reason"]) for k in snap["keys"]}
    assert states[other.fingerprint] == ("disabled", "switched off")
    assert states[first.fingerprint] == ("cooling", "rate limited")
    await a.enable(first.fingerprint)
    assert await b.acquire() == first
    await b.disable(first.fingerprint)
    assert await b.acquire() is None  # every key disabled
    for s in (a, b):
        await s.aclose()


async def test_invalid_key_is_disabled_and_the_breaker_opens(redis_server: str) -> None:
    keys = _keys(2)
    store = _store(redis_server, keys, breaker=BreakerPolicy(failures=2, cooloff=0.3, cooloff_max=1.0))
    got = await store.acquire()
    assert isinstance(got, ApiKey)
    change = await store.release(got, KeyInvalid("API key not valid", status=401), 1.0)
    assert change is not None and (change.old, change.new) == ("active", "disabled")
    for _ in range(2):
        k = await store.acquire()
        assert isinstance(k, ApiKey) and k != got
        await store.release(k, ServerError("boom", status=500), 1.0)
    assert not await store.breaker_closed()
    opened = await store.acquire()
    assert isinstance(opened, Open) and 0 < opened.retry_in <= 0.3
    assert isinstance(await store.acquire(force=True), ApiKey)  # past an open breaker
    await asyncio.sleep(0.35)
    trial = await store.acquire()
    assert isinstance(trial, ApiKey)
    assert (await store.snapshot())["breaker"]["state"] == "half-open"
    assert isinstance(await store.acquire(), Open)  # one trial at a time
    await store.answered(trial)  # the stream's first event: the provider is up
    assert await store.breaker_closed()
    snap = await store.snapshot()
    assert snap["breaker"]["state"] == "closed"
    failures = {k["key"]: k["failures"] for k in snap["keys"]}
    assert failures[got.fingerprint] == {"KeyInvalid": 1}
    assert failures[trial.fingerprint] == {"ServerError": 2}
    await store.aclose()


async def test_in_flight_of_a_dead_replica_expires(redis_server: str) -> None:
    keys = _keys(1)
    dead = _store(redis_server, keys, lease=0.3)
    live = _store(redis_server, keys, lease=0.3)
    held = await dead.acquire()
    assert isinstance(held, ApiKey)
    assert (await live.snapshot())["keys"][0]["in_flight"] == 1
    assert (await live.snapshot())["replicas"] == 1
    await asyncio.sleep(0.4)  # the replica holding it never comes back
    got = await live.acquire()
    assert isinstance(got, ApiKey)
    snap = await live.snapshot()
    assert snap["keys"][0]["in_flight"] == 1 and snap["replicas"] == 1  # only the live one's own
    await live.abandon(got)
    assert (await live.snapshot())["keys"][0]["in_flight"] == 0
    for s in (dead, live):
        await s.aclose()


async def test_admin_add_and_remove_change_only_this_replica(redis_server: str) -> None:
    keys = _keys(2)
    a, b = _store(redis_server, keys), _store(redis_server, keys)
    await a.remove(keys[0].fingerprint)
    assert await a.keys() == [keys[1]]
    for _ in range(3):
        assert await a.acquire() == keys[1]
    picked = {await b.acquire() for _ in range(4)}
    assert picked == set(keys)  # b still serves both
    await a.add(keys[0])
    try:
        await a.add(keys[0])
    except ValueError as err:
        assert "already" in str(err)
    else:
        raise AssertionError("adding a key twice must fail")
    try:
        await a.disable("gemini#9 …0000")
    except KeyError as err:
        assert "no key" in str(err)
    else:
        raise AssertionError("an unknown key must be a KeyError")
    for s in (a, b):
        await s.aclose()


async def test_leases_are_exclusive_until_they_end(redis_server: str) -> None:
    a, b = _store(redis_server, _keys(1)), _store(redis_server, _keys(1))
    assert await a.lease("probe:k1", 0.3)
    assert not await b.lease("probe:k1", 0.3)
    assert await b.lease("probe:k2", 0.3)
    await asyncio.sleep(0.35)
    assert await b.lease("probe:k1", 0.3)
    assert await MemoryStore("gemini", _keys(1)).lease("probe:k1", 1.0)
    for s in (a, b):
        await s.aclose()


async def test_prefixes_keep_deployments_apart(redis_server: str) -> None:
    keys = _keys(1)
    a, b = _store(redis_server, keys, prefix="one"), _store(redis_server, keys, prefix="two")
    got = await a.acquire()
    assert isinstance(got, ApiKey)
    await a.release(got, KeyInvalid("bad", status=401), 1.0)
    assert await a.acquire() is None
    assert await b.acquire() == keys[0]
    client = aredis.Redis.from_url(redis_server, decode_responses=True)
    names = [n async for n in client.scan_iter()]
    assert {n.split(":", 1)[0] for n in names} == {"one", "two"}
    assert all(n.endswith(":salt") or ":{gemini}:" in n for n in names)  # one Cluster hash tag per provider
    await client.aclose()
    for s in (a, b):
        await s.aclose()


def _random_key() -> str:
    return "".join(random.choices(string.ascii_letters + string.digits, k=16))


async def test_no_key_material_in_redis(redis_server: str) -> None:
    """Every name and value in Redis (and its DUMP) holds no 8-character piece of any key."""
    secrets_ = [_random_key() for _ in range(3)]
    keys = [ApiKey(s, "gemini", str(i)) for i, s in enumerate(secrets_, 1)]
    a, b = _store(redis_server, keys), _store(redis_server, keys)
    for i, outcome in enumerate([None, RateLimited("slow", retry_after=9.0), KeyInvalid("bad key", status=401)]):
        got = await (a, b)[i % 2].acquire()
        assert isinstance(got, ApiKey)
        await a.release(got, outcome, 2.0, Usage(1, 1))
    await a.disable(keys[2].fingerprint, "operator says no")
    await a.lease("probe", 5.0)
    assert await b.lease("probe", 5.0) is False
    client: Any = aredis.Redis.from_url(redis_server)
    blobs: list[bytes] = []
    names = [n async for n in client.scan_iter()]
    assert len(names) >= 8
    for name in names:
        blobs.append(name)
        blobs.append(await client.dump(name) or b"")
        kind = (await client.type(name)).decode()
        if kind == "string":
            blobs.append(await client.get(name) or b"")
        elif kind == "hash":
            for f, v in (await client.hgetall(name)).items():
                blobs += [f, v]
        elif kind == "zset":
            blobs += [m for m, _ in await client.zrange(name, 0, -1, withscores=True)]
        else:
            raise AssertionError(f"unexpected type {kind} of {name!r}")
    await client.aclose()
    text = b"\n".join(blobs)
    pieces = {s[i : i + 8].encode() for s in secrets_ for i in range(len(s) - 7)}
    assert not [p for p in pieces if p in text]
    assert b"operator says no" in text  # the scan reads the values
    for s in (a, b):
        await s.aclose()


async def test_a_key_removed_while_it_was_being_picked_is_given_back(redis_server: str) -> None:
    keys = _keys(1)
    store = _store(redis_server, keys)
    await store.acquire()  # connected, salt known
    picked, _ = await asyncio.gather(store.acquire(), store.remove(keys[0].fingerprint))
    assert picked is None  # its pick was undone: no key is left to this replica
    other = _store(redis_server, keys)
    assert (await other.snapshot())["keys"][0]["in_flight"] == 1  # only the first pick, never released
    for s in (store, other):
        await s.aclose()


async def test_after_a_restart_the_salt_of_the_first_replica_back_wins(redis_server: str) -> None:
    keys = _keys(2)
    a, b = _store(redis_server, keys), _store(redis_server, keys)
    await a.acquire()
    await b.acquire()
    client = aredis.Redis.from_url(redis_server)
    await client.flushall()  # as a restart without persistence leaves it
    await b.resync()  # b is back first: its salt stands
    await a.resync()
    await client.flushall()
    await client.set("keywheel:salt", "00" * 32)  # a salt put there by a replica a never met
    await a.resync()
    await a.disable(keys[0].fingerprint, "under the new salt")
    fresh = _store(redis_server, keys)
    states = {k["key"]: k["state"] for k in (await fresh.snapshot())["keys"]}
    assert states[keys[0].fingerprint] == "disabled"  # a follows the salt in place
    assert await a.replicas() == 0  # nobody picked since the flush
    await client.aclose()
    for s in (a, b, fresh):
        await s.aclose()


async def test_a_provider_level_throttle_rests_the_provider(redis_server: str) -> None:
    keys = _keys(2)
    store = _store(redis_server, keys)
    for _ in range(2):
        got = await store.acquire()
        assert isinstance(got, ApiKey)
        await store.release(got, RateLimited("account limit", retry_after=5.0), 1.0)
    wait = await store.acquire()
    assert isinstance(wait, float) and 4 < wait <= 5
    snap = await store.snapshot()
    assert 4 < snap["throttled_for"] <= 5
    assert [k["state"] for k in snap["keys"]] == ["active", "active"]  # the keys are not punished
    await store.aclose()
