"""The SQLite key store: the in-memory store of one provider, whose state survives a restart.

Selection, release and status run exactly as in :class:`~keywheel.state.memory.MemoryStore` —
in memory, under its lock, with no I/O on the hot path.  Two things are added:

- every decision of the rules (a key disabled, resting, enabled, added or removed; the provider
  throttled, its breaker opened or closed) is committed to the :class:`StateFile` inside the
  store's lock, so the key cannot be selected again before the decision is on disk;
- every finished request's counters are queued for the file's flusher (no I/O here).

At start the store takes back what the file holds for its keys: a disabled key stays disabled
with its reason and cause, a rest keeps its wall-clock deadline, the backoff and the day's
counters go on.  Reasons are redacted before they reach the file; keys are rows under their key
id (:func:`keywheel.state.base.key_id`), never their text.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import replace

from keywheel.errors import UpstreamError
from keywheel.secrets import ApiKey
from keywheel.state import rules
from keywheel.state.base import KeyChange
from keywheel.state.memory import MemoryStore, _Key
from keywheel.state.rules import COOLING, DISABLED, REMOVED, BreakerPolicy, ProviderState
from keywheel.state.sqlite_file import StateFile
from keywheel.state.windows import Quota
from keywheel.types import Usage

log = logging.getLogger("keywheel.state")


def _same(text: str) -> str:
    return text


class SqliteStore(MemoryStore):
    """The keys of one provider, in memory, with their decisions and counters in ``file``."""

    def __init__(
        self,
        provider: str,
        keys: Iterable[ApiKey],
        *,
        file: StateFile,
        redact: Callable[[str], str] = _same,
        clock: Callable[[], float] = time.time,
        throttle_window: float = rules.THROTTLE_WINDOW,
        breaker: BreakerPolicy | None = None,
        quota: Quota | None = None,
    ) -> None:
        keys = list(keys)
        super().__init__(provider, keys, clock=clock, throttle_window=throttle_window, breaker=breaker, quota=quota)
        self._file = file
        self._count = file.count  # bound once: the hot path's one extra call
        self._redact = redact
        self._ids: dict[str, str] = {key.fingerprint: file.key_id(key) for key in keys}
        self._saved = self._provider_point()
        self._restore()

    def _provider_point(self) -> tuple[float, str, float, float]:
        """What of the provider's state is worth a write: a consecutive-fault count alone is not."""
        b = self._breaker
        return (self._throttled_until, b.state, b.until, b.cooloff)

    def _restore(self) -> None:
        restored = self._file.restore(self.provider, list(self._ids.values()))
        fingerprints = {kid: fp for fp, kid in self._ids.items()}
        states = {fingerprints[kid]: replace(s, fingerprint=fingerprints[kid]) for kid, s in restored.keys.items()}
        provider = restored.provider or ProviderState(self._throttled_until, self._breaker)
        self.load_nowait(provider, states)
        self._saved = self._provider_point()
        for kid, day in restored.today.items():
            stats = self._keys[fingerprints[kid]].stats
            stats.requests, stats.successes, stats.failures = day.requests, day.successes, dict(day.failures)
            stats.tokens_in, stats.tokens_out, stats.latency_ms_total = day.tokens_in, day.tokens_out, day.latency_ms
        disabled = sum(s.state == DISABLED for s in states.values())
        resting = sum(s.state == COOLING and s.until > self._clock() for s in states.values())
        if disabled or resting:
            log.info(
                "key state of %s restored from %s: %d key(s) disabled, %d resting",
                self.provider,
                self._file.path,
                disabled,
                resting,
            )

    def _decided(self, recs: list[_Key], provider: bool) -> None:
        """Commit the decision on ``recs`` (and the provider) before the lock is let go."""
        rows = []
        for rec in recs:
            fingerprint = rec.key.fingerprint
            current = self._keys.get(fingerprint)
            removed = current is None and rec.rule.cause == REMOVED
            if current is not rec and not removed:
                continue  # the outcome of a key removed meanwhile: its state is gone with it
            kid = self._ids.get(fingerprint)
            if kid is None:
                kid = self._ids[fingerprint] = self._file.key_id(rec.key)  # added
            rule = rec.rule
            if rule.reason:
                rule = replace(rule, reason=self._redact(rule.reason)[:300])
            rows.append((kid, rule, removed))
            if removed:
                del self._ids[fingerprint]
        state = None
        if provider:
            point = self._provider_point()
            if point != self._saved:
                self._saved = point
                state = ProviderState(self._throttled_until, self._breaker)
        if rows or state is not None:
            self._file.save(self.provider, rows, state)

    def release_nowait(
        self, key: ApiKey, error: UpstreamError | None, latency_ms: float, usage: Usage | None = None
    ) -> KeyChange | None:
        change = MemoryStore.release_nowait(self, key, error, latency_ms, usage)
        kid = self._ids.get(key.fingerprint)
        if kid is not None:  # not removed meanwhile
            kind = None if error is None else type(error).__name__
            if usage is None:
                self._count((kid, self._clock(), kind, latency_ms, 0, 0))
            else:
                self._count((kid, self._clock(), kind, latency_ms, usage.input_tokens, usage.output_tokens))
        return change
