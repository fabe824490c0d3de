"""The rule book's test: one table (``rule_cases.CASES``) run against every implementation.

A runner takes a case and returns the states after it.  ``pure`` applies
:func:`keywheel.state.rules.apply` directly; ``memory`` seeds a
:class:`~keywheel.state.memory.MemoryStore`, feeds it the outcome as the router would (on its
clock at ``NOW``) and reads the states back; ``sqlite`` does the same with a
:class:`~keywheel.state.sqlite.SqliteStore` and reads the keys back from its file.
A new store adds a runner to ``RUNNERS``.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from keywheel.secrets import ApiKey
from keywheel.state import rules
from keywheel.state.memory import MemoryStore
from keywheel.state.redis import RedisStore
from keywheel.state.rules import ABANDONED, ANSWERED, DISABLED, Group, KeyState, ProviderState
from keywheel.state.sqlite import SqliteStore
from keywheel.state.sqlite_file import StateFile
from keywheel.state.windows import Quota
from tests.redis_server import RedisServer
from tests.state.rule_cases import CASES, DAY_TZ, NOW, RULES, Case

After = tuple[KeyState, ProviderState, tuple[KeyState, ...]]
Runner = Callable[[Case], After]


def run_pure(case: Case) -> After:
    others = case.others
    group = Group(
        sum(o.state != DISABLED for o in others),
        sum(rules.limited_recently(o, NOW, RULES) for o in others),
        sum(rules.limited_untimed(o, NOW, RULES) for o in others),
    )
    if case.outcome == "abandoned":
        outcome = ABANDONED
    elif case.outcome == "answered":
        outcome = ANSWERED
    else:
        outcome = rules.outcome_of(case.outcome)
    changes = rules.apply(case.before, group, case.provider, outcome, NOW, RULES)
    if changes.reset_group:
        others = tuple(o if o.state == DISABLED else rules.fresh(o.fingerprint) for o in others)
    if changes.capped:
        others = tuple(rules.capped(o, changes) for o in others)
    if changes.group_until:
        mine = _group_of(case, 0)
        others = tuple(
            rules.group_rest(o, changes) if _group_of(case, i + 1) == mine else o for i, o in enumerate(others)
        )
    return changes.key, changes.provider, others


def _group_of(case: Case, index: int) -> str:
    """The quota group of the key (index 0) or a fellow; ungrouped keys are each their own."""
    name = case.groups[index] if index < len(case.groups) else ""
    return name or f"own:{index}"


@dataclass(frozen=True)
class Seeded:
    """A case's keys as a store holds them: their fingerprints there, and back to the table's names."""

    states: tuple[KeyState, ...]
    keys: list[ApiKey]
    real: dict[str, str]  # the table's name -> the store's fingerprint
    named: dict[str, str]  # ... and back
    quota: Quota


def seeded(case: Case) -> Seeded:
    states = (case.before, *case.others)
    keys = [ApiKey(f"test-gemini-key-{s.fingerprint}", "gemini", s.fingerprint) for s in states]
    real = {s.fingerprint: k.fingerprint for s, k in zip(states, keys, strict=True)}
    grouped = {k.fingerprint: case.groups[i] for i, k in enumerate(keys) if i < len(case.groups) and case.groups[i]}
    return Seeded(states, keys, real, {v: k for k, v in real.items()}, Quota(key_group=grouped, day_tz=DAY_TZ))


def play(store: MemoryStore, case: Case, seed: Seeded) -> ProviderState:
    """Seed ``store`` with the case's states, play its outcome on the key; the provider's state after."""
    provider = case.provider
    if provider.breaker.trial:
        provider = replace(provider, breaker=replace(provider.breaker, trial=seed.real[provider.breaker.trial]))
    real = seed.real
    store.load_nowait(provider, {real[s.fingerprint]: replace(s, fingerprint=real[s.fingerprint]) for s in seed.states})
    if case.outcome == "abandoned":
        store.abandon_nowait(seed.keys[0])
    elif case.outcome == "answered":
        store.answered_nowait(seed.keys[0])
    else:
        store.release_nowait(seed.keys[0], case.outcome, 1.0)
    return store.dump_nowait()[0]


def named_after(case: Case, seed: Seeded, provider: ProviderState, dumped: dict[str, KeyState]) -> After:
    after = {seed.named[fp]: replace(s, fingerprint=seed.named[fp]) for fp, s in dumped.items()}
    if provider.breaker.trial:
        provider = replace(provider, breaker=replace(provider.breaker, trial=seed.named[provider.breaker.trial]))
    return after[case.before.fingerprint], provider, tuple(after[o.fingerprint] for o in case.others)


def run_memory(case: Case) -> After:
    seed = seeded(case)
    store = MemoryStore(
        "gemini",
        seed.keys,
        clock=lambda: NOW,
        throttle_window=RULES.throttle_window,
        breaker=RULES.breaker,
        quota=seed.quota,
    )
    provider = play(store, case, seed)
    return named_after(case, seed, provider, store.dump_nowait()[1])


def run_sqlite(case: Case) -> After:
    """As ``memory`` on a :class:`SqliteStore`, whose seeded states are in its file; the keys'
    states after are read back from the file by a store opened anew (the provider's from the
    live store: a bare count of consecutive faults is not worth a write)."""
    seed = seeded(case)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "state.db"
        file = StateFile(path, clock=lambda: NOW)
        file.save("gemini", [(file.key_id(k), s, False) for k, s in zip(seed.keys, seed.states, strict=True)])
        store = SqliteStore(
            "gemini",
            seed.keys,
            file=file,
            clock=lambda: NOW,
            throttle_window=RULES.throttle_window,
            breaker=RULES.breaker,
            quota=seed.quota,
        )
        provider = play(store, case, seed)
        file.close()
        reopened = StateFile(path, clock=lambda: NOW)
        try:
            dumped = SqliteStore("gemini", seed.keys, file=reopened, clock=lambda: NOW).dump_nowait()[1]
        finally:
            reopened.close()
    return named_after(case, seed, provider, dumped)


RUNNERS: dict[str, Runner] = {"pure": run_pure, "memory": run_memory, "sqlite": run_sqlite}


@pytest.mark.parametrize("runner", RUNNERS.values(), ids=RUNNERS.keys())
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_rule_book(case: Case, runner: Runner) -> None:
    key, provider, others = runner(case)
    assert key == case.after
    assert provider == (case.provider_after or case.provider)
    assert others == (case.others if case.others_after is None else case.others_after)


# ------------------------------------------------------------------ the Lua side, on a real redis-server


async def run_redis(case: Case, url: str, prefix: str) -> After:
    """As :func:`run_memory`, on a :class:`RedisStore` (the rules in Lua) whose clock is fixed at ``NOW``."""
    states = (case.before, *case.others)
    keys = [ApiKey(f"test-gemini-key-{s.fingerprint}", "gemini", s.fingerprint) for s in states]
    real = {s.fingerprint: k.fingerprint for s, k in zip(states, keys, strict=True)}
    named = {v: k for k, v in real.items()}
    grouped = {k.fingerprint: case.groups[i] for i, k in enumerate(keys) if i < len(case.groups) and case.groups[i]}
    store = RedisStore(
        "gemini",
        keys,
        url=url,
        prefix=prefix,
        clock=lambda: NOW,
        throttle_window=RULES.throttle_window,
        breaker=RULES.breaker,
        quota=Quota(key_group=grouped, day_tz=DAY_TZ),
    )
    try:
        provider = case.provider
        if provider.breaker.trial:
            provider = replace(provider, breaker=replace(provider.breaker, trial=real[provider.breaker.trial]))
        await store.load(provider, {real[s.fingerprint]: replace(s, fingerprint=real[s.fingerprint]) for s in states})
        if case.outcome == "abandoned":
            await store.abandon(keys[0])
        elif case.outcome == "answered":
            await store.answered(keys[0])
        else:
            await store.release(keys[0], case.outcome, 1.0)
        provider, dumped = await store.dump()
    finally:
        await store.aclose()
    after = {named[fp]: replace(s, fingerprint=named[fp]) for fp, s in dumped.items()}
    if provider.breaker.trial:
        provider = replace(provider, breaker=replace(provider.breaker, trial=named[provider.breaker.trial]))
    return after[case.before.fingerprint], provider, tuple(after[o.fingerprint] for o in case.others)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
async def test_rule_book_in_lua(case: Case, redis_session: RedisServer) -> None:
    prefix = f"rules{CASES.index(case)}"
    key, provider, others = await run_redis(case, redis_session.url, prefix)
    assert key == case.after
    assert provider == (case.provider_after or case.provider)
    assert others == (case.others if case.others_after is None else case.others_after)
