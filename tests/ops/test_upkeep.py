"""The upkeep in-process (a wheel's pools over the fake upstream): probe events, what each
re-probe may clear, the generate probe, and the lease."""

from __future__ import annotations

import asyncio
import time

import pytest

from keywheel import Wheel
from keywheel.config import settings_from_env
from keywheel.observe import Event, ProbeFinished
from keywheel.ops.recovery import Upkeep
from keywheel.state.base import KeyStore
from keywheel.state.memory import MemoryStore
from keywheel.testing import FakeUpstream
from tests.helpers import fake_env


def local(wheel: Wheel, provider: str) -> MemoryStore:
    """The wheel's in-process store of ``provider`` (these tests run on memory state)."""
    pool = wheel.pools[provider]
    assert isinstance(pool, MemoryStore)
    return pool


def upkeep_of(wheel: Wheel) -> Upkeep:
    return Upkeep(wheel.settings, wheel.pools, wheel.transport, wheel.redactor.redact, wheel.observer, wheel.credits)


def state(wheel: Wheel, provider: str, i: int) -> tuple[str, str]:
    keys = wheel.status()["providers"]
    view = next(p for p in keys if p["provider"] == provider)["keys"][i - 1]
    return view["state"], view["cause"]


def test_check_emits_probe_events_and_reads_credit(fake: FakeUpstream) -> None:
    fake.set_credit("test-openrouter-key-2", limit=3.0, usage=1.0)
    events: list[Event] = []
    with Wheel(settings_from_env(fake_env(fake, gemini=1, openrouter=2, anthropic=1))) as wheel:
        wheel.subscribe(events.append, ProbeFinished)
        upkeep = upkeep_of(wheel)

        async def run() -> None:
            results = await upkeep.check()
            assert [r.outcome for r in results] == ["ok"] * 4
            with pytest.raises(KeyError):
                await upkeep.check("nosuch")
            rows = await upkeep.credit_rows()
            assert [r["credit"]["limit_remaining"] for r in rows] == [None, 2.0]
            await wheel.aclose()

        asyncio.run(run())
        seen = sorted((e.provider, e.outcome, e.background) for e in events if isinstance(e, ProbeFinished))
        assert seen == [("anthropic", "ok", False), ("gemini", "ok", False)] + [("openrouter", "ok", False)] * 2
        (openrouter,) = (p for p in wheel.snapshot().providers if p.name == "openrouter")
        assert [k.credit.remaining if k.credit else "-" for k in openrouter.keys] == [None, 2.0]


def test_a_re_probe_clears_only_what_it_can_see(fake: FakeUpstream) -> None:
    env = fake_env(
        fake,
        gemini=2,
        openrouter=2,
        anthropic=1,
        ANTHROPIC_PROBE="generate",
        KEYWHEEL_PROBE_INTERVAL="0.01",
    )
    events: list[Event] = []
    with Wheel(settings_from_env(env)) as wheel:
        wheel.subscribe(events.append, ProbeFinished)
        upkeep = upkeep_of(wheel)
        gemini, openrouter, anthropic = local(wheel, "gemini"), local(wheel, "openrouter"), local(wheel, "anthropic")
        g1, g2 = (k.fingerprint for k in gemini.keys_nowait())
        o1, o2 = (k.fingerprint for k in openrouter.keys_nowait())
        (a1,) = (k.fingerprint for k in anthropic.keys_nowait())
        gemini.take_out_nowait(g1, "out of credit or quota: daily", "quota")  # a listing cannot clear quota
        gemini.take_out_nowait(g2, "invalid key: x", "invalid")
        openrouter.take_out_nowait(o1, "out of credit or quota: x [openrouter_credits]", "quota")
        openrouter.take_out_nowait(o2, "out of credit or quota: x [openrouter_key_limit]", "quota")
        anthropic.take_out_nowait(a1, "out of credit or quota: spend", "quota")
        fake.set_credit("test-openrouter-key-2", limit=10.0, usage=2.0)

        async def run() -> None:
            results = await upkeep.recover_once()
            assert {(r.provider, r.outcome, r.generated) for r in results} == {
                ("gemini", "ok", False),
                ("openrouter", "ok", False),
                ("anthropic", "ok", True),
            }
            assert len(results) == 4  # not the gemini quota key: a listing proves no credit
            await wheel.aclose()

        asyncio.run(run())
        assert state(wheel, "gemini", 1) == ("disabled", "quota")
        assert state(wheel, "gemini", 2) == ("active", "")
        assert state(wheel, "openrouter", 1) == ("disabled", "quota")  # unlimited reading: the account may be empty
        assert state(wheel, "openrouter", 2) == ("active", "")  # credit seen
        assert state(wheel, "anthropic", 1) == ("active", "")  # a 1-token request was answered
        assert all(isinstance(e, ProbeFinished) and e.background for e in events)
        assert [r.path for r in fake.requests if r.key == "test-anthropic-key-1"] == ["/v1/messages"]


def test_a_store_that_refuses_the_lease_is_not_probed(fake: FakeUpstream) -> None:
    class Leased:
        """A pool whose lease is held by another replica (forwards everything else)."""

        def __init__(self, inner: KeyStore) -> None:
            self.inner = inner

        def __getattr__(self, name: str) -> object:
            return getattr(self.inner, name)

        async def lease(self, name: str, seconds: float) -> bool:
            assert name.startswith(("probe ", "credit ")) and seconds > 0
            return False

    with Wheel(settings_from_env(fake_env(fake, gemini=1, openrouter=1, anthropic=0))) as wheel:
        (g1,) = (k.fingerprint for k in local(wheel, "gemini").keys_nowait())
        local(wheel, "gemini").take_out_nowait(g1, "invalid key", "invalid")
        pools = {name: Leased(pool) for name, pool in wheel.pools.items()}
        upkeep = Upkeep(wheel.settings, pools, wheel.transport, wheel.redactor.redact, wheel.observer, wheel.credits)  # type: ignore[arg-type]

        async def run() -> None:
            assert await upkeep.recover_once() == []
            assert await upkeep.read_credits() == []
            await wheel.aclose()

        asyncio.run(run())
        assert fake.requests == []


def test_a_resting_key_is_never_probed_before_its_deadline(fake: FakeUpstream) -> None:
    env = fake_env(fake, gemini=1, openrouter=1, anthropic=0, GEMINI_PROBE="generate", KEYWHEEL_PROBE_INTERVAL="0.01")
    with Wheel(settings_from_env(env)) as wheel:
        upkeep = upkeep_of(wheel)
        (g1,) = (k.fingerprint for k in local(wheel, "gemini").keys_nowait())
        (o1,) = (k.fingerprint for k in local(wheel, "openrouter").keys_nowait())
        local(wheel, "gemini").take_out_nowait(g1, "quota exhausted: daily", "quota", time.time() + 3600)
        local(wheel, "openrouter").take_out_nowait(o1, "low credit: 0.1 left of 10", "quota", time.time() + 3600)

        async def run() -> None:
            for _ in range(3):
                assert await upkeep.recover_once() == []
            await wheel.aclose()

        asyncio.run(run())
        assert fake.requests == []
        assert state(wheel, "gemini", 1) == ("cooling", "quota")
