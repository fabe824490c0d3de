"""The Redis store's wire: ``EVALSHA`` packed by hand over a few connections of its own.

redis-py's generic command path (argument encoding, the pool's bookkeeping, retries) costs
about 200 µs of CPU per script call with some forty arguments; this path costs about 50 µs,
which is most of what a request through Redis adds (``bench/redis_cpu.py``).  The connections
are redis-py's own (``Connection``: auth, TLS, database selection and socket timeouts come with
them), taken from and given back to a small free list; a script the server does not know
(after a restart: ``NOSCRIPT``) is loaded and the call repeated, and a broken connection is
dropped and the call tried once more on a fresh one before the error goes up.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aredis
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

Arg = str | bytes | int | float
#: Idle connections kept per event loop; more are closed when given back.
MAX_IDLE = 64


@dataclass(frozen=True)
class Script:
    text: str
    sha: bytes = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "sha", hashlib.sha1(self.text.encode()).hexdigest().encode())  # noqa: S324 — Redis's script id


def _bulk(arg: Arg) -> bytes:
    if isinstance(arg, str):
        raw = arg.encode()
    elif isinstance(arg, bytes):
        raw = arg
    elif isinstance(arg, float):
        raw = repr(arg).encode()
    else:
        raw = b"%d" % arg
    return b"$%d\r\n%s\r\n" % (len(raw), raw)


def pack(script: Script, keys: Sequence[Arg], args: Sequence[Arg]) -> bytes:
    """``EVALSHA sha numkeys keys... args...`` as RESP."""
    head = b"*%d\r\n$7\r\nEVALSHA\r\n$40\r\n%s\r\n" % (3 + len(keys) + len(args), script.sha)
    return b"".join([head, _bulk(len(keys)), *map(_bulk, keys), *map(_bulk, args)])


class Wire:
    """Script calls over connections of ``client``'s kind (one :class:`Wire` per event loop)."""

    def __init__(self, client: aredis.Redis) -> None:
        self.client = client
        self._idle: list[AbstractConnection] = []

    async def _take(self) -> AbstractConnection:
        if self._idle:
            return self._idle.pop()
        conn: AbstractConnection = self.client.connection_pool.make_connection()  # type: ignore[no-untyped-call]
        try:
            await conn.connect()  # type: ignore[no-untyped-call]
        except RuntimeError as exc:
            # uvloop's transport can say "not alive" while Redis is being killed: an outage too.
            raise RedisConnectionError(f"connecting to Redis failed: {exc}") from exc
        return conn

    async def _give(self, conn: AbstractConnection) -> None:
        if len(self._idle) < MAX_IDLE:
            self._idle.append(conn)
        else:
            await conn.disconnect()

    async def run(self, script: Script, keys: Sequence[Arg], args: Sequence[Arg]) -> Any:
        """The script's answer (decoded); a Redis error or an outage's error goes up."""
        payload = pack(script, keys, args)
        broken = 0
        while True:
            conn: AbstractConnection | None = None
            try:
                conn = await self._take()
                await conn.send_packed_command(payload, check_health=False)
                got = await conn.read_response()
            except NoScriptError:
                assert conn is not None
                await self._give(conn)
                await self.client.script_load(script.text)
                continue
            except ResponseError:
                assert conn is not None
                await self._give(conn)
                raise
            except (RedisConnectionError, RedisTimeoutError, OSError):
                if conn is not None:
                    await conn.disconnect()
                broken += 1
                if broken > 1:
                    raise
                continue
            except BaseException:  # cancelled mid-call: the connection's state is unknown
                if conn is not None:
                    await conn.disconnect()
                raise
            await self._give(conn)
            return got

    async def aclose(self) -> None:
        idle, self._idle = self._idle, []
        for conn in idle:
            await conn.disconnect()
        await self.client.aclose()
