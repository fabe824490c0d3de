"""The chaos matrix: every fault the fake upstream can play × each inbound dialect ×
stream and non-stream, against one real ``keywheel serve`` with the official SDKs.

The expected outcomes are the table in :mod:`tests.chaos.spec`.  Each case checks
what the caller got (the answer of the right upstream request, or an error in its
dialect) and, from the fake's request log, how many upstream requests were made, to
which keys in which order, and that no key was asked again while it rested.
"""

from __future__ import annotations

import pytest

from keywheel.testing import KINDS, RecordedRequest
from tests.chaos.callers import INBOUND, Inbound
from tests.chaos.conftest import Chaos
from tests.chaos.spec import FAULTS, Cut, Failed, Fault, Outcome, Served

CASES = [
    pytest.param(fault, inbound, stream, id=f"{fault.name}-{inbound.name}-{'stream' if stream else 'whole'}")
    for fault in FAULTS
    for inbound in INBOUND
    for stream in (False, True)
]


def provider_of(record: RecordedRequest) -> str:
    assert record.key is not None
    return record.key.split("-")[1]  # test-<provider>-key-<n>


def reply_of(record: RecordedRequest) -> str:
    """The text the fake answered ``record`` with (the openai dialect serves OpenRouter)."""
    return f"Reply {record.seq} from fake {record.dialect}: the quick brown fox jumps over the lazy dog."


def expected_keys(outcome: Outcome, first: str, other: str, fallback: str) -> list[str]:
    """The keys the upstream requests carry, in order (the fallback provider's: any of its keys)."""
    if isinstance(outcome, Served):
        if outcome.by == "first key":
            return [first]
        if outcome.by == "other key":
            return [first, other]
        return [first, other][: outcome.tries] + [fallback]
    if isinstance(outcome, Failed):
        return [first, other][: outcome.tries]
    return [first]


def test_every_fault_the_fake_can_play_has_a_row() -> None:
    missing = set(KINDS) - {fault.kind for fault in FAULTS}
    assert not missing, f"add a row to tests/chaos/spec.py FAULTS for {sorted(missing)}"


@pytest.mark.parametrize(("fault", "inbound", "stream"), CASES)
def test_chaos(chaos: Chaos, fault: Fault, inbound: Inbound, stream: bool) -> None:
    first, other = chaos.fresh(inbound.upstream)
    for key in (first, other) if fault.scope == "provider" else (first,):
        chaos.fake.set(key, fault.kind, times=None if fault.scope == "provider" else 1, **fault.params)
    outcome = fault.outcome(inbound.upstream, stream)

    result = inbound.call(chaos.client(inbound), stream)

    # The gateway reads an OpenRouter key's credit (GET /api/v1/key) after a 402: not a try of the call.
    log = [r for r in chaos.fake.requests if not (r.method == "GET" and r.path.endswith("/key"))]
    keys = [r.key for r in log]
    want = expected_keys(outcome, first, other, f"test-{inbound.fallback}-key-")
    assert len(keys) == len(want), f"{outcome}: upstream requests {keys}, expected {want}"
    for got, expected in zip(keys, want, strict=True):
        assert got is not None and got.startswith(expected), f"{outcome}: upstream requests {keys}, expected {want}"
    if fault.rests:  # no key asked again while it rests (or is disabled)
        assert keys.count(first) == 1, keys
    attempts = result.headers.get("x-keywheel-attempts")
    if attempts is not None:
        assert len(attempts.split(", ")) == len(log), attempts

    last = log[-1]
    if isinstance(outcome, Served):
        assert result.error is None, f"{outcome}, but the caller got {result.error!r}"
        assert result.text == reply_of(last), f"{outcome}: got {result.text!r}"
        if "x-keywheel-provider" in result.headers:
            assert result.headers["x-keywheel-provider"] == provider_of(last)
    elif isinstance(outcome, Failed):
        assert result.error is not None, f"{outcome}, but the caller got {result.text!r}"
        inbound.check_error(result, outcome.status)
    else:
        assert isinstance(outcome, Cut)
        assert result.error is not None, f"{outcome}, but the stream ended cleanly: {result.text!r}"
        inbound.check_error(result, None)
        # what came is the start of that one answer: nothing of a second one
        assert result.pieces >= 1 and result.text and reply_of(last).startswith(result.text), result.text
