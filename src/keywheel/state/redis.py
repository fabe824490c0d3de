"""The Redis key store: one pool of a provider's keys shared by every worker and replica.

Every state change runs the rule book (:mod:`keywheel.state.rules`) ported to Lua
(:mod:`keywheel.state.redis_lua`), atomically and in one round trip: a selection (a global
round-robin over the keys this replica holds, skipping resting and disabled keys, the provider's
throttling and its breaker) and a release (counters and the rules' result).  Deadlines come from
Redis ``TIME``, so replicas whose clocks disagree decide alike; a rest or disable set by one
replica is seen by every other at its next selection.

Redis holds no key material: a key lives under :func:`keywheel.state.base.key_id`, a keyed hash
with the deployment's salt (``{prefix}:salt``, created once with ``SET NX``).  Each provider's
keys carry one Cluster hash tag (``{prefix}:{gemini}:…``).

The asyncio client is per event loop (a connection belongs to the loop that opened it), so the
sync library API (the wheel's own loop) and the gateway's loop can both use one store.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from keywheel.errors import UpstreamError
from keywheel.secrets import ApiKey
from keywheel.state import redis_lua, rules
from keywheel.state import redis_view as records
from keywheel.state.base import Acquired, KeyChange, Open, key_id
from keywheel.state.redis_wire import Script, Wire
from keywheel.state.rules import (
    NEVER,
    Breaker,
    BreakerPolicy,
    KeyState,
    ProviderState,
    Rules,
    breaker_view,
)
from keywheel.state.stats import fault_name, log_breaker
from keywheel.state.windows import GUARD, TOKENS, Quota, WindowSpec
from keywheel.types import Usage

log = logging.getLogger("keywheel.keys")

DEFAULT_PREFIX = "keywheel"
#: A replica not seen for this long (no selection, no release) is presumed dead: its in-flight slots go.
IN_FLIGHT_LEASE = 120.0


def client_for(url: str, timeout: float) -> aredis.Redis:
    """An asyncio client with bounded socket timeouts (an outage is noticed, nothing hangs) and one
    immediate retry (a connection the server closed while idle is simply reopened)."""
    return aredis.Redis.from_url(
        url,
        decode_responses=True,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), 1),
        health_check_interval=0,
    )


ACQUIRE, RELEASE, ADMIN = Script(redis_lua.ACQUIRE), Script(redis_lua.RELEASE), Script(redis_lua.ADMIN)
SNAPSHOT, MERGE = Script(redis_lua.SNAPSHOT), Script(redis_lua.MERGE)


@dataclass(slots=True)
class _Conn:
    client: aredis.Redis
    wire: Wire


class RedisStore:
    """One provider's keys in Redis (the async :class:`keywheel.state.base.KeyStore` seam)."""

    def __init__(
        self,
        provider: str,
        keys: Iterable[ApiKey],
        *,
        url: str,
        prefix: str = DEFAULT_PREFIX,
        timeout: float = 0.5,
        clock: Callable[[], float] | None = None,
        throttle_window: float = rules.THROTTLE_WINDOW,
        breaker: BreakerPolicy | None = None,
        replica: str | None = None,
        lease: float = IN_FLIGHT_LEASE,
        quota: Quota | None = None,
    ) -> None:
        self.provider = provider
        self.url, self.prefix, self.timeout = url, prefix, timeout
        self._clock = clock  # None: Redis TIME (a test passes a fixed clock)
        self._rules = Rules(throttle_window=throttle_window, breaker=breaker or BreakerPolicy())
        r, policy = self._rules, self._rules.breaker
        self._numbers: tuple[float, ...] = (r.backoff_start, r.backoff_cap, r.throttle_window, policy.failures)
        self._numbers += (policy.cooloff, policy.cooloff_max)
        self.replica = replica or secrets.token_hex(6)
        self._lease = lease
        self._base = f"{prefix}:{{{provider}}}"
        self._keys: dict[str, ApiKey] = {k.fingerprint: k for k in keys}
        self._salt: bytes | None = None
        self._ids: dict[str, str] = {}  # fingerprint -> id
        self._by_id: dict[str, ApiKey] = {}
        self._order: list[str] = []  # ids, sorted: every replica walks the same ring
        self._names: list[str] = []
        self._conns: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Conn] = weakref.WeakKeyDictionary()
        self._clean = False  # the breaker was closed with no fault at the last look: `answered` has nothing to do
        self.quota = quota or Quota()
        # Quota windows (keywheel.state.windows): per key its group and the Redis keys of the group's
        # windows; the token charges of requests in flight, settled at release.
        self._win_args: list[str | int | float] = []  # ACQUIRE's arguments after the key ids
        self._win_names: list[str] = []
        self._windows_of: dict[str, list[tuple[str, WindowSpec]]] = {}  # fingerprint -> its group's windows
        self._daily = False  # some window is daily: its midnight candidates move on with the days
        self._reserved: dict[str, deque[list[tuple[str, str]]]] = {}  # fingerprint -> [(window key, member)]

    # ------------------------------------------------------------------ plumbing

    def _conn(self) -> _Conn:
        loop = asyncio.get_running_loop()
        conn = self._conns.get(loop)
        if conn is None:
            client = client_for(self.url, self.timeout)
            conn = _Conn(client, Wire(client))
            self._conns[loop] = conn
        return conn

    async def _ready(self) -> _Conn:
        conn = self._conn()
        if self._salt is None:
            self._salt = await deployment_salt(conn.client, self.prefix)
            for key in self._keys.values():
                self._index(key)
            self._reorder()
        return conn

    def _index(self, key: ApiKey) -> None:
        assert self._salt is not None
        kid = key_id(key, self._salt)
        self._ids[key.fingerprint] = kid
        self._by_id[kid] = key

    def _reorder(self) -> None:
        self._order = sorted(self._by_id)
        self._names = [self._name(i) for i in self._order]
        self._index_windows()

    def _group_of(self, key: ApiKey) -> tuple[str, tuple[WindowSpec, ...]]:
        """The key's group (an ungrouped key's is named by its id: the same in every replica)."""
        group, specs = self.quota.of(key.fingerprint)
        if group == key.fingerprint:
            group = "k:" + self._ids[key.fingerprint]
        return group, specs

    def _index_windows(self) -> None:
        """The window part of ACQUIRE's arguments: per key its windows, then each window's spec."""
        names: list[str] = []
        specs: list[WindowSpec] = []
        per_key: list[str | int | float] = []
        self._windows_of = {}
        for kid in self._order:
            key = self._by_id[kid]
            group, group_specs = self._group_of(key)
            mine = [(f"{self._base}:w:{group}:{spec.name}", spec) for spec in group_specs]
            for name, spec in mine:
                if name not in names:
                    names.append(name)
                    specs.append(spec)
            per_key.append(",".join(str(names.index(name) + 1) for name, _ in mine))
            self._windows_of[key.fingerprint] = mine
        args = per_key
        for spec in specs:
            resets = ",".join(repr(t) for t in records.midnights(spec.tz, self._wall())) if spec.daily else ""
            args += [spec.limit, repr(spec.seconds), "t" if spec.unit == TOKENS else "r", "1" if spec.daily else "0"]
            args.append(resets)
        self._win_names, self._win_args = names, args
        self._daily = any(spec.daily for spec in specs)

    def _name(self, kid: str) -> str:
        return f"{self._base}:k:{kid}"

    def _now(self) -> str:
        return "" if self._clock is None else repr(float(self._clock()))

    def _wall(self) -> float:
        """This process's idea of the time (the test's clock when one is given), for midnight candidates."""
        return time.time() if self._clock is None else float(self._clock())

    def _id_of(self, fingerprint: str) -> str:
        kid = self._ids.get(fingerprint)
        if kid is None:
            raise KeyError(f"no key {fingerprint!r} in {self.provider}")
        return kid

    async def resync(self) -> None:
        """After an outage (Redis may have come back empty): re-assert the deployment's salt, or
        take the one another replica put there first (the ids follow)."""
        conn = self._conn()
        if self._salt is None:
            await self._ready()
            return
        salt = await deployment_salt(conn.client, self.prefix, self._salt)
        if salt != self._salt:
            self._salt, self._ids, self._by_id = salt, {}, {}
            for key in self._keys.values():
                self._index(key)
            self._reorder()

    async def replicas(self) -> int:
        """How many replicas used this provider's pool within the in-flight lease."""
        conn = await self._ready()
        return int(await conn.client.zcard(f"{self._base}:rep"))

    async def aclose(self) -> None:
        """Close this loop's connections."""
        conn = self._conns.pop(asyncio.get_running_loop(), None)
        if conn is not None:
            await conn.wire.aclose()

    # ------------------------------------------------------------------ hot path

    async def acquire(self, *, force: bool = False, tokens: int = 0) -> Acquired:
        conn = await self._ready()
        b = self._base
        if self._daily:
            self._index_windows()  # the midnight candidates move on with the days
        keys = [f"{b}:p", f"{b}:rr", f"{b}:fl", f"{b}:rep", *self._names, *self._win_names]
        args = [self._now(), "1" if force else "0", self._rules.breaker.trial_timeout, self.replica, self._lease]
        args += [len(self._order), tokens, GUARD, len(self._win_names)]
        got = await conn.wire.run(ACQUIRE, keys, [*args, *self._order, *self._win_args])
        tag = got[0]
        if tag == "k":
            if got[4] and got[1] in self._by_id:
                charges = [pair.split("=", 1) for pair in got[4].split(";") if pair]
                reserved = [(self._win_names[int(j) - 1], member) for j, member in charges]
                self._reserved.setdefault(self._by_id[got[1]].fingerprint, deque()).append(reserved)
            before, after = got[2], got[3]
            self._clean = after == rules.CLOSED
            if before != after:
                log_breaker(self.provider, Breaker(before), Breaker(after), "")
            key = self._by_id.get(got[1])
            if key is None:  # removed while the script ran: give the slot back, pick again
                await self._release(conn, got[1], None, "abandoned", 0.0, None, known=True)
                return await self.acquire(force=force, tokens=tokens)
            return key
        if tag == "w":
            return float(got[1])
        if tag == "o":
            return Open(float(got[1]))
        return None

    async def release(
        self, key: ApiKey, error: UpstreamError | None, latency_ms: float, usage: Usage | None = None
    ) -> KeyChange | None:
        conn = await self._ready()
        kid = self._ids.get(key.fingerprint)
        known = kid is not None and self._by_id[kid] == key
        outcome = rules.OK if error is None else rules.outcome_of(error)
        settle = usage.total_tokens if usage is not None else 0 if error is not None else None
        return await self._release(
            conn,
            kid or key_id(key, self._salt or b""),
            error,
            outcome.kind,
            latency_ms,
            usage,
            known=known,
            settle=(key, settle),
            daily=known and outcome.daily,
        )

    async def _release(
        self,
        conn: _Conn,
        kid: str,
        error: UpstreamError | None,
        kind: str,
        latency_ms: float,
        usage: Usage | None,
        *,
        known: bool,
        settle: tuple[ApiKey, int | None] | None = None,
        daily: bool = False,
    ) -> KeyChange | None:
        b = self._base
        fellows = self._fellows(kid, kind, daily)
        charges, amount = self._charges(settle)
        keys = [f"{b}:p", f"{b}:fl", f"{b}:rep", self._name(kid), *fellows, *(name for name, _ in charges)]
        args = self._release_args(kid, error, kind, latency_ms, usage, known)
        daily_resets = ",".join(repr(t) for t in records.midnights(self.quota.day_tz, self._wall())) if daily else ""
        capped = rules.outcome_of(error) if kind == "rate_limited" else rules.OK
        cap = rules.spend_cap_reason(capped.message) if capped.spend_cap and capped.retry_after is None else ""
        args += [
            len(fellows),
            amount,
            daily_resets,
            records.group_reason(error),
            cap,
            *(member for _, member in charges),
        ]
        got = await conn.wire.run(RELEASE, keys, args)
        before, after = got[5], got[6]
        self._clean = after == rules.CLOSED and got[7] == "0"
        if before != after:
            cause = fault_name(error) if kind == "provider_fault" and error is not None else "inconclusive"
            new = Breaker(after, int(got[7]), float(got[8]), float(got[9]))
            log_breaker(self.provider, Breaker(before), new, cause)
        if got[0] != "1":
            return None
        fingerprint = self._by_id[kid].fingerprint if kid in self._by_id else kid
        new_state = got[2]
        until = float(got[4]) if new_state == rules.COOLING else None
        return KeyChange(fingerprint, got[1], new_state, got[3], until)

    def _fellows(self, kid: str, kind: str, daily: bool) -> list[str]:
        """The release's fellow keys: a daily quota's are the key's group; a rate limit's, every other key."""
        own = self._name(kid)
        if daily:
            group = self._group_of(self._by_id[kid])[0]
            return [self._name(i) for i in self._order if i != kid and self._group_of(self._by_id[i])[0] == group]
        return [n for n in self._names if n != own] if kind == "rate_limited" else []

    def _charges(self, settle: tuple[ApiKey, int | None] | None) -> tuple[list[tuple[str, str]], str]:
        """The token charges of the key's oldest request in flight, and what they settle to ('' = keep)."""
        if settle is None:
            return [], ""
        pending = self._reserved.get(settle[0].fingerprint)
        if not pending:
            return [], ""
        return pending.popleft(), "" if settle[1] is None else str(settle[1])

    def _release_args(
        self, kid: str, error: UpstreamError | None, kind: str, latency_ms: float, usage: Usage | None, known: bool
    ) -> list[str | int | float]:
        """ARGV of the release script (see :data:`keywheel.state.redis_lua.RELEASE`)."""
        retry = "" if error is None or error.retry_after is None else repr(float(error.retry_after))
        counted = kind not in ("abandoned", "answered")
        return [
            self._now(),
            kid,
            kind,
            retry,
            records.reason(kind, error),
            "1" if counted else "0",
            repr(float(latency_ms)),
            usage.input_tokens if usage else 0,
            usage.output_tokens if usage else 0,
            "" if error is None else type(error).__name__,
            "" if error is None else f"{type(error).__name__}: {error.message}"[:300],
            *self._numbers,
            "0" if kind == "answered" else "-1",
            self.replica,
            "1" if known else "0",
        ]

    async def abandon(self, key: ApiKey) -> None:
        conn = await self._ready()
        kid = self._ids.get(key.fingerprint)
        await self._release(
            conn,
            kid or key_id(key, self._salt or b""),
            None,
            "abandoned",
            0.0,
            None,
            known=kid is not None,
            settle=(key, 0),  # cancelled: its tokens were not spent
        )

    async def answered(self, key: ApiKey) -> None:
        if self._clean:
            return  # a success for a closed breaker with no fault counted changes nothing
        conn = await self._ready()
        kid = self._ids.get(key.fingerprint)
        await self._release(conn, kid or key_id(key, self._salt or b""), None, "answered", 0.0, None, known=False)

    async def breaker_closed(self) -> bool:
        conn = await self._ready()
        state = await conn.client.hget(f"{self._base}:p", "bs")
        return state in (None, rules.CLOSED)

    # --------------------------------------------------------------- admin actions

    async def keys(self) -> list[ApiKey]:
        return self.held()

    def held(self) -> list[ApiKey]:
        """The keys this replica holds (no I/O)."""
        return list(self._keys.values())

    @property
    def rules(self) -> Rules:
        """The rule book's numbers this store applies."""
        return self._rules

    async def disable(self, fingerprint: str, reason: str = "disabled by operator") -> None:
        conn = await self._ready()
        await conn.wire.run(ADMIN, [self._name(self._id_of(fingerprint))], ["disable", reason])

    async def enable(self, fingerprint: str) -> None:
        conn = await self._ready()
        await conn.wire.run(ADMIN, [self._name(self._id_of(fingerprint))], ["enable", ""])

    async def recover(self, fingerprint: str, cause: str) -> bool:
        """Back in rotation if still out for ``cause`` (:func:`keywheel.state.rules.recover`, in Lua)."""
        conn = await self._ready()
        got = await conn.wire.run(ADMIN, [self._name(self._id_of(fingerprint))], ["recover", "", cause])
        return bool(got == "recovered")

    async def take_out(self, fingerprint: str, reason: str, cause: str, until: float | None = None) -> None:
        """Out of rotation for ``cause`` (:func:`keywheel.state.rules.take_out`, in Lua)."""
        conn = await self._ready()
        args = ["take_out", reason, cause, "" if until is None else repr(until)]
        await conn.wire.run(ADMIN, [self._name(self._id_of(fingerprint))], args)

    async def add(self, key: ApiKey) -> None:
        """Serve ``key`` from this replica too (its shared state, if another replica has it, stays)."""
        await self._ready()
        if key.fingerprint in self._keys:
            raise ValueError(f"{key.fingerprint} is already in {self.provider}")
        self._keys[key.fingerprint] = key
        self._index(key)
        self._reorder()

    async def remove(self, fingerprint: str) -> None:
        """Stop serving the key from this replica (replicas that hold it go on)."""
        await self._ready()
        kid = self._id_of(fingerprint)
        del self._keys[fingerprint], self._ids[fingerprint], self._by_id[kid]
        self._reorder()

    async def lease(self, name: str, seconds: float) -> bool:
        """Whether this replica got the lease ``name`` for ``seconds`` (none else holds it then)."""
        conn = await self._ready()
        ms = max(int(seconds * 1000), 1)
        got = await conn.client.set(f"{self._base}:lease:{name}", self.replica, nx=True, px=ms)
        return bool(got)

    # --------------------------------------------------------------------- state

    async def snapshot(self) -> dict[str, Any]:
        conn = await self._ready()
        b = self._base
        held = [self._ids[fp] for fp in self._keys]  # as configured (the ring's order is the ids')
        keys = [f"{b}:p", f"{b}:fl", f"{b}:rep", *map(self._name, held)]
        got = await conn.wire.run(SNAPSHOT, keys, [self._now(), self._lease, *held])
        now = float(got[0])
        provider = records.pairs(got[1])
        views = [
            records.key_view(self._by_id[kid].fingerprint, records.pairs(fields), int(flight), now)
            for kid, fields, flight in zip(held, got[3], got[4], strict=True)
        ]
        throttled = max(float(provider.get("tu", 0)) - now, 0.0)
        breaker = breaker_view(records.breaker(provider, self._by_id), now)
        for view, kid in zip(views, held, strict=True):
            group = self._group_of(self._by_id[kid])[0]
            view["group"] = None if group.startswith("k:") else group
        return {
            "provider": self.provider,
            "throttled_for": round(throttled, 3),
            "breaker": breaker,
            "keys": views,
            "replicas": int(got[2]),
            "groups": await self._groups_view(conn, held, now),
            "co_throttled": [],  # counted by the memory store only, for now
        }

    async def _groups_view(self, conn: _Conn, held: list[str], now: float) -> list[dict[str, Any]]:
        """Each group with windows or a name: its keys and every window's use (read, not atomic: for status)."""
        groups: dict[str, list[str]] = {}
        for kid in held:
            groups.setdefault(self._group_of(self._by_id[kid])[0], []).append(self._by_id[kid].fingerprint)
        shown = [(g, fps) for g, fps in groups.items() if self._windows_of[fps[0]] or not g.startswith("k:")]
        pipe = conn.client.pipeline(transaction=False)
        for _, fps in shown:
            for name, spec in self._windows_of[fps[0]]:
                if spec.daily:
                    pipe.hgetall(name)
                else:
                    pipe.zrange(name, 0, -1, withscores=True)
        got = iter(await pipe.execute())
        out = []
        for group, fps in shown:
            windows = [records.window_view(spec, next(got), now) for _, spec in self._windows_of[fps[0]]]
            out.append({"group": None if group.startswith("k:") else group, "keys": fps, "windows": windows})
        return out

    async def dump(self) -> tuple[ProviderState, dict[str, KeyState]]:
        """The provider's state and every key's (by fingerprint), as the rules see them."""
        conn = await self._ready()
        pipe = conn.client.pipeline(transaction=False)
        pipe.hgetall(f"{self._base}:p")
        for name in self._names:
            pipe.hgetall(name)
        got = await pipe.execute()
        provider = got[0]
        tu = float(provider.get("tu", 0))
        keys = {
            self._by_id[kid].fingerprint: records.key_state(self._by_id[kid].fingerprint, fields)
            for kid, fields in zip(self._order, got[1:], strict=True)
        }
        return ProviderState(tu, records.breaker(provider, self._by_id)), keys

    async def load(self, provider: ProviderState, keys: Mapping[str, KeyState]) -> None:
        """Set the provider's state and some keys' states as they are (a rule-book test seeds a case)."""
        conn = await self._ready()
        b = provider.breaker
        trial = self._ids.get(b.trial, b.trial)
        pipe = conn.client.pipeline(transaction=True)
        fields: dict[Any, Any] = {"tu": repr(provider.throttled_until), "bs": b.state, "bf": b.failures}
        fields.update(bu=repr(b.until), bc=repr(b.cooloff), bt=trial)
        pipe.hset(f"{self._base}:p", mapping=fields)
        for fingerprint, k in keys.items():
            name = self._name(self._id_of(fingerprint))
            mapping: dict[Any, Any] = {
                "s": k.state,
                "u": repr(k.until),
                "r": k.reason,
                "c": k.cause,
                "b": repr(k.backoff),
            }
            pipe.hset(name, mapping=mapping)
            if k.last_rate_limited == NEVER:
                pipe.hdel(name, "l")
            else:
                pipe.hset(name, "l", repr(k.last_rate_limited))
        await pipe.execute()

    async def merge(self, provider: ProviderState, keys: Mapping[str, KeyState]) -> int:
        """Merge decisions taken alone (during an outage): disables win, rests only grow.  How many keys changed."""
        conn = await self._ready()
        names, args = [], [self._now(), repr(provider.throttled_until)]
        for fingerprint, k in keys.items():
            kid = self._ids.get(fingerprint)
            if kid is not None and k.state != rules.ACTIVE:
                names.append(self._name(kid))
                args += [k.state, repr(k.until), k.reason, k.cause]
        return int(await conn.wire.run(MERGE, [f"{self._base}:p", *names], args))


async def deployment_salt(client: aredis.Redis, prefix: str, mine: bytes | None = None) -> bytes:
    """The deployment's salt for key ids: created once (``SET NX``), the same for every replica after."""
    name = f"{prefix}:salt"
    await client.set(name, (mine or secrets.token_bytes(32)).hex(), nx=True)
    salt = await client.get(name)
    return bytes.fromhex(str(salt))
