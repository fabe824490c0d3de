"""Reload: ``POST /admin/reload`` and SIGHUP read the configuration again and swap it in.

The gateway's ``source`` reads it (``keywheel serve`` passes the environment as it was at start,
over the env file read anew).  A configuration that fails to load is refused whole: its problems
are logged (and answered, on the route) and the running one stays.  Otherwise the wheel takes it
(:meth:`keywheel.Wheel.reload`: kept keys keep their state, removed ones leave rotation at once,
added ones join it) and then the gateway its own settings (gateway keys, admin key, limits).
Requests in flight finish on the old configuration; the next request uses the new one.  On
in-process state (memory, SQLite) none of it waits, so no request sees half of each; on Redis
the keys are changed one by one and the router is swapped at the end.

A worker of ``keywheel serve --workers N`` validates the configuration and then asks its parent
for a rolling restart of every worker instead (:mod:`keywheel.gateway.supervisor`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading
from collections.abc import Callable
from typing import Any, Protocol

from keywheel.config import Settings
from keywheel.errors import ConfigError
from keywheel.gateway.admin import Summary
from keywheel.gateway.http import HttpError
from keywheel.gateway.supervisor import ask_supervisor_to_restart, supervised


class _Wheel(Protocol):
    async def areload(self, settings: Settings) -> Summary: ...


class Gateway(Protocol):
    """What a reload needs of :class:`keywheel.gateway.app.Gateway`."""

    source: Callable[[], Settings] | None
    settings: Settings

    @property
    def wheel(self) -> _Wheel: ...

    def configure(self, settings: Settings) -> None: ...


log = logging.getLogger("keywheel.gateway")


async def reload(gateway: Gateway) -> dict[str, Any]:
    """Read the configuration again and swap it in; what changed.  :class:`ConfigError` when it
    fails to load (nothing changes).  The listening address, the worker count and KEYWHEEL_STATE
    need a restart."""
    if gateway.source is None:
        raise HttpError(409, "this gateway has no configuration to read again (not started by keywheel serve)")
    try:
        settings = gateway.source()
    except ConfigError as err:
        for name, why in err.problems.items():
            log.error("reload refused, the running configuration stays: %s: %s", name, why)
        raise
    if settings.state != gateway.settings.state:
        log.warning("reload: KEYWHEEL_STATE changed; that takes effect only on a restart")
    if supervised():  # a worker of `keywheel serve --workers N`: the parent restarts every worker
        ask_supervisor_to_restart()
        log.info("configuration valid: asked the parent to restart the workers one at a time")
        return {**planned(gateway.settings, settings), "workers": "restarting one at a time"}
    summary = (await gateway.wheel.areload(settings)).to_json()
    gateway.configure(settings)
    log.info(
        "configuration reloaded: %d key(s) added, %d removed, %d kept; chain %s",
        len(summary["added"]),
        len(summary["removed"]),
        summary["kept"],
        " → ".join(settings.chain),
    )
    return summary


def planned(old: Settings, new: Settings) -> dict[str, Any]:
    """What a reload from ``old`` to ``new`` changes in the configured keys (by fingerprint), without
    applying it (the workers of ``--workers N`` apply it by restarting)."""
    added: list[str] = []
    removed: list[str] = []
    kept = 0
    for name in dict.fromkeys([*old.providers, *new.providers]):
        before = old.providers.get(name)
        after = new.providers.get(name)
        was = set(before.keys) if before is not None and before.enabled else set()
        now = set(after.keys) if after is not None and after.enabled else set()
        added += [k.fingerprint for k in after.keys if k not in was] if after is not None and now else []
        removed += [k.fingerprint for k in before.keys if k not in now] if before is not None and was else []
        kept += len(was & now)
    return {"reloaded": True, "added": added, "removed": removed, "kept": kept, "chain": list(new.chain)}


_SIGHUPS: set[asyncio.Task[None]] = set()  # reloads running for a SIGHUP (a task needs a reference)


def on_sighup(gateway: Gateway) -> None:
    log.info("SIGHUP: reading the configuration again")
    task = asyncio.get_running_loop().create_task(_reload_quietly(gateway))
    _SIGHUPS.add(task)
    task.add_done_callback(_SIGHUPS.discard)


async def _reload_quietly(gateway: Gateway) -> None:
    with contextlib.suppress(ConfigError):  # logged by reload(); the running configuration stays
        await reload(gateway)


def listen_for_sighup(gateway: Gateway) -> None:
    """SIGHUP reloads, when ``gateway`` can reload and runs on the main thread's loop."""
    if gateway.source is None or threading.current_thread() is not threading.main_thread():
        return
    with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):  # no signals on this loop
        asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, on_sighup, gateway)
