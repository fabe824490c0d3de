"""The rule book's recovery moves: :func:`rules.recover` clears only the cause a probe saw,
:func:`rules.take_out` never overrides an operator; both through the memory store too."""

from __future__ import annotations

import pytest

from keywheel.secrets import ApiKey
from keywheel.state import rules
from keywheel.state.memory import MemoryStore
from keywheel.state.rules import ACTIVE, COOLING, DISABLED, INVALID, OPERATOR, QUOTA, REMOVED, KeyState

NOW = 1_800_000_000.0


@pytest.mark.parametrize(
    ("before", "cause", "back"),
    [
        (KeyState("k", DISABLED, reason="invalid key: x", cause=INVALID, backoff=8.0), INVALID, True),
        (KeyState("k", DISABLED, reason="out of credit", cause=QUOTA), QUOTA, True),
        (KeyState("k", COOLING, NOW + 60, "low credit", cause=QUOTA), QUOTA, True),
        (KeyState("k", DISABLED, reason="invalid key: x", cause=INVALID), QUOTA, False),  # not what was seen
        (KeyState("k", DISABLED, reason="disabled by operator", cause=OPERATOR), OPERATOR, False),  # never
        (KeyState("k", DISABLED, reason="removed", cause=REMOVED), REMOVED, False),
        (KeyState("k"), INVALID, False),  # already active
    ],
)
def test_recover_clears_only_what_was_seen(before: KeyState, cause: str, back: bool) -> None:
    after = rules.recover(before, cause)
    if not back:
        assert after is None
        return
    assert after is not None
    assert (after.state, after.cause, after.reason, after.backoff, after.until) == (ACTIVE, "", "", 0.0, 0.0)


def test_take_out_rests_until_a_known_reset_else_disables() -> None:
    rested = rules.take_out(KeyState("k"), "low credit: 0.4 left", QUOTA, NOW + 3600)
    assert (rested.state, rested.until, rested.cause) == (COOLING, NOW + 3600, QUOTA)
    out = rules.take_out(KeyState("k"), "out of credit", QUOTA)
    assert (out.state, out.cause, out.reason) == (DISABLED, QUOTA, "out of credit")
    operator = KeyState("k", DISABLED, reason="disabled by operator", cause=OPERATOR)
    assert rules.take_out(operator, "low credit", QUOTA) is operator


def test_the_memory_store_applies_them() -> None:
    clock = [NOW]
    key = ApiKey("test-openrouter-key-1", "openrouter", "1", auth="bearer")
    store = MemoryStore("openrouter", [key], clock=lambda: clock[0])
    fp = key.fingerprint
    store.take_out_nowait(fp, "low credit", QUOTA, NOW + 30)
    assert store.acquire_nowait() == pytest.approx(30.0)  # resting until the reset
    (view,) = store.snapshot_nowait()["keys"]
    assert (view["state"], view["cause"]) == ("cooling", QUOTA)
    assert not store.recover_nowait(fp, INVALID)
    assert store.recover_nowait(fp, QUOTA)
    assert store.acquire_nowait() is key
    store.take_out_nowait(fp, "out of credit", QUOTA)
    assert store.acquire_nowait() is None
    clock[0] += 3600
    assert store.acquire_nowait() is None  # disabled: no time brings it back
    assert store.recover_nowait(fp, QUOTA) and store.acquire_nowait() is key
    store.disable_nowait(fp)
    assert not store.recover_nowait(fp, QUOTA)
    with pytest.raises(KeyError):
        store.recover_nowait("openrouter#9 …0000", QUOTA)
