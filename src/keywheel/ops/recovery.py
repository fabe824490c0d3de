"""The gateway's upkeep of its keys: background re-probes of disabled keys, credit readings,
and the operator's checks (``POST /admin/keys/check``, ``GET /admin/credits``).

A probe clears only what it can see (the key's ``cause``, :mod:`keywheel.state.rules`):

- ``invalid`` — back when the free probe accepts the key;
- ``quota`` — back only on an OpenRouter ``/key`` reading with credit left (at least
  ``KEYWHEEL_MIN_CREDIT``), or a 1-token probe where ``<P>_PROBE=generate``; a reading that names
  a reset time rests the key until then instead, and it comes back by itself when it passes;
- ``operator`` / ``removed`` — never probed; a resting key is never probed (its rest ends by itself).

A key that stays dead is probed again after ``KEYWHEEL_PROBE_INTERVAL`` × 2, × 4 … (at most × 32).
With replicas sharing a store, a probe is taken under the store's lease on that key, so one
replica probes it at a time.  Every probe emits :class:`keywheel.observe.ProbeFinished`.
Never holds a store call across a probe's network wait, never logs a key or a credit ``label``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from keywheel.config import Settings
from keywheel.observe import AttemptFinished, Event, Observer, ProbeFinished, watch_keys
from keywheel.ops.credits import ACCOUNT_CREDITS, judge
from keywheel.ops.probes import OK, Prober, ProbeResult, _preset
from keywheel.secrets import ApiKey
from keywheel.state.base import KeyStore, LocalStore
from keywheel.state.rules import DISABLED, PROBED_CAUSES, QUOTA
from keywheel.status import Credit
from keywheel.transport import HttpTransport

log = logging.getLogger("keywheel.keys")
BACKOFF_MAX = 32  # a dead key is probed at least once every 32 probe intervals


class Upkeep:
    """The key checks, re-probes and credit readings of one wheel's pools."""

    def __init__(
        self,
        settings: Settings,
        pools: Mapping[str, KeyStore],
        transport: HttpTransport,
        redact: Callable[[str], str],
        observer: Observer,
        credits: dict[str, Credit],
    ) -> None:
        self.settings = settings
        self.pools = pools
        self.observer = observer
        self.redact = redact
        self.credits = credits  # fingerprint -> latest reading (the wheel's: status shows it)
        self.prober = Prober(settings, transport, redact)
        self._next: dict[str, float] = {}  # fingerprint -> wall clock of its next re-probe
        self._factor: dict[str, int] = {}  # fingerprint -> its backoff factor (1, 2, 4, ...)
        self._due: set[str] = set()  # fingerprints whose credit is to be read now (after a 402)
        self._wake: asyncio.Event | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._unsubscribe: Callable[[], None] | None = None
        self._warned: set[str] = set()

    # ----------------------------------------------------------------- the loops

    def credit_providers(self) -> list[str]:
        return [
            name
            for name in self.pools
            if (preset := _preset(self.settings.providers[name])) is not None and preset.probe_reads_credit
        ]

    def start(self) -> None:
        """Start the background loops on the running loop (idempotent)."""
        if self._tasks:
            return
        ops = self.settings.ops
        self._wake = asyncio.Event()
        if ops.probe_interval > 0:
            self._tasks.append(asyncio.create_task(self._every(ops.probe_interval, self.recover_once, None)))
        if ops.credit_interval > 0 and self.credit_providers():
            self._unsubscribe = self.observer.subscribe(self._on_attempt, AttemptFinished, failures_only=True)
            self._tasks.append(asyncio.create_task(self._every(ops.credit_interval, self.read_credits, self._wake)))

    async def stop(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _every(self, interval: float, work: Callable[[], Any], wake: asyncio.Event | None) -> None:
        """``work()`` every ``interval`` seconds (sooner when ``wake`` is set); errors logged, never fatal."""
        while True:
            if wake is None:
                await asyncio.sleep(interval)
            else:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), interval)
                wake.clear()
            try:
                await work()
            except Exception:  # noqa: BLE001 — the loop must outlive one bad round
                log.exception("key upkeep round failed; the next one runs as planned")

    def _on_attempt(self, event: Event) -> None:
        """After any 402 on a credit-reading provider, read that key's credit at once."""
        if isinstance(event, AttemptFinished) and event.status == 402 and self._wake is not None:
            self._due.add(event.key)
            self._wake.set()

    # ------------------------------------------------------------- re-probing

    async def recover_once(self) -> list[ProbeResult]:
        """One round: probe each disabled key that is due and whose cause a probe can clear."""
        now = time.time()
        results = []
        for name, pool in self.pools.items():
            keys = {k.fingerprint: k for k in await pool.keys()}
            for view in (await pool.snapshot())["keys"]:
                fp = view["key"]
                cause = view.get("cause", "")
                if view["state"] != DISABLED or cause not in PROBED_CAUSES:
                    self._next.pop(fp, None)
                    self._factor.pop(fp, None)
                    continue
                key = keys.get(fp)
                if key is None or now < self._next.get(fp, 0.0) or not self._can_clear(name, cause):
                    continue
                factor = self._factor.get(fp, 1)
                if not await pool.lease(f"probe {fp}", self._lease_seconds(factor)):
                    continue  # another replica probes it (or did, this interval)
                result = await self._probe(name, key, background=True)
                results.append(result)
                if await self._apply(name, pool, view, result):
                    self._next.pop(fp, None)
                    self._factor.pop(fp, None)
                else:
                    self._next[fp] = time.time() + self.settings.ops.probe_interval * factor
                    self._factor[fp] = min(factor * 2, BACKOFF_MAX)
        return results

    def _lease_seconds(self, factor: int) -> float:
        """The lease of one re-probe: this replica's backoff (at least one interval) plus the probe's
        own timeout, so no other replica probes the key while this probe is in flight, nor again in
        the interval after it (the replicas' rounds tick at different phases)."""
        ops = self.settings.ops
        return ops.probe_interval * factor + ops.probe_timeout

    def _can_clear(self, provider: str, cause: str) -> bool:
        """A listing cannot tell credit: an out-of-credit key is probed only where a probe can."""
        if cause != QUOTA:
            return True
        return provider in self.settings.ops.generate or provider in self.credit_providers()

    async def _apply(self, provider: str, pool: KeyStore, view: Mapping[str, Any], result: ProbeResult) -> bool:
        """Act on a re-probe of a disabled key; whether it came back."""
        fp, cause, reason = view["key"], view.get("cause", ""), view.get("reason", "")
        if result.credit is not None:
            self.credits[fp] = result.credit
        if cause == QUOTA and result.credit is not None and not result.generated:
            return await self._judge(provider, pool, view, result.credit)
        if result.outcome == OK and (cause != QUOTA or result.generated or ACCOUNT_CREDITS not in reason):
            return await self._recover(provider, pool, fp, cause, result.detail)
        return False

    async def _recover(self, provider: str, pool: KeyStore, fp: str, cause: str, why: str) -> bool:
        if isinstance(pool, LocalStore) and hasattr(pool, "recover_nowait"):
            back: list[bool] = []
            watch_keys(
                self.observer, pool, lambda: back.append(pool.recover_nowait(fp, cause)), self.redact, time.time()
            )
            came = back[0]
        else:
            came = await pool.recover(fp, cause)
        if came:
            log.info("key %s of %s recovered (%s): %s", fp, provider, cause, self.redact(why))
            self._warned.discard(fp)
        return came

    async def _take_out(self, provider: str, pool: KeyStore, fp: str, reason: str, until: float | None) -> None:
        if isinstance(pool, LocalStore) and hasattr(pool, "take_out_nowait"):
            watch_keys(
                self.observer, pool, lambda: pool.take_out_nowait(fp, reason, QUOTA, until), self.redact, time.time()
            )
        else:
            await pool.take_out(fp, reason, QUOTA, until)
        log.warning("key %s of %s leaves rotation: %s", fp, provider, reason)

    # ---------------------------------------------------------------- credit

    async def read_credits(self) -> list[ProbeResult]:
        """Read the credit of every key of the credit-reading providers (or only those due after a 402)."""
        due, self._due = self._due, set()
        results = []
        for name in self.credit_providers():
            pool = self.pools[name]
            keys = {k.fingerprint: k for k in await pool.keys()}
            for view in (await pool.snapshot())["keys"]:
                fp = view["key"]
                key = keys.get(fp)
                if key is None or (due and fp not in due) or view.get("cause") in ("operator", "removed"):
                    continue
                if not await pool.lease(f"credit {fp}", max(self.settings.ops.credit_interval / 2, 1.0)):
                    continue
                result = await self._probe(name, key, background=True, generate=False)
                results.append(result)
                if result.credit is not None:
                    self.credits[fp] = result.credit
                    await self._judge(name, pool, view, result.credit)
                self._warn_account(name, view)
        return results

    async def _judge(self, provider: str, pool: KeyStore, view: Mapping[str, Any], credit: Credit) -> bool:
        """Apply a credit reading to a key; whether it came back."""
        fp, state, cause, reason = view["key"], view["state"], view.get("cause", ""), view.get("reason", "")
        verdict = judge(credit, self.settings.ops.min_credit, reason)
        if verdict.action == "back":
            return cause == QUOTA and await self._recover(provider, pool, fp, QUOTA, verdict.reason or "credit left")
        if verdict.action == "out" and (state == "active" or (cause == QUOTA and verdict.reason != reason)):
            await self._take_out(provider, pool, fp, verdict.reason, verdict.until)
        return False

    def _warn_account(self, provider: str, view: Mapping[str, Any]) -> None:
        fp = view["key"]
        if ACCOUNT_CREDITS in view.get("reason", "") and fp not in self._warned:
            self._warned.add(fp)
            log.warning(
                "key %s of %s is out: the OpenRouter account is out of credits (402 openrouter_credits); "
                "add credits, then enable the key",
                fp,
                provider,
            )

    # ---------------------------------------------------------- operator's

    async def check(self, provider: str | None = None, key: str | None = None) -> list[ProbeResult]:
        """Probe every key (or ``provider``'s, or only the key of fingerprint ``key``) now:
        ``keywheel keys check``, ``POST /admin/keys/check``.  Reads credit where the probe does;
        changes no key's state.  ``KeyError`` for an unknown provider or key."""
        chosen = [(n, k) for n, k in self.prober.keys(provider) if key is None or k.fingerprint == key]
        if key is not None and not chosen:
            # Not echoed: a client may send a key's text where its fingerprint belongs.
            raise KeyError("no such key (name it by its fingerprint, as /status shows it)")
        results = []
        for name, one in chosen:
            results.append(self._probe(name, one, background=False))
        done = list(await asyncio.gather(*results))
        for result in done:
            if result.credit is not None:
                self.credits[result.fingerprint] = result.credit
        return done

    async def _probe(
        self, provider: str, key: ApiKey, *, background: bool, generate: bool | None = None
    ) -> ProbeResult:
        result = await self.prober.probe(provider, key, generate=generate)
        if self.observer.probes:
            event = ProbeFinished(
                provider, key.fingerprint, result.outcome, result.latency_ms, result.detail, background
            )
            self.observer.emit(event)
        return result

    async def credit_rows(self) -> list[dict[str, Any]]:
        """``GET /admin/credits``: each key of the credit-reading providers with its latest reading."""
        rows = []
        for name in self.credit_providers():
            for key in await self.pools[name].keys():
                credit = self.credits.get(key.fingerprint)
                rows.append(
                    {
                        "fingerprint": key.fingerprint,
                        "provider": name,
                        "credit": credit.to_json() if credit is not None else None,
                    }
                )
        return rows
