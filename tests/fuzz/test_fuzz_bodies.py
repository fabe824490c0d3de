"""Fuzz each inbound dialect's request bodies against a live ``keywheel serve``.

Invariant, for every example: the answer is a 2xx, or a 4xx in the caller's dialect's error
shape, or a 429/502/503 in that shape with its headers; the server logs no traceback; and no
upstream request goes anywhere but the expected endpoints, with a Gemini model path segment that
is one the caller asked for (or the configured one).  After the run, a good request still works.

Deterministic: ``derandomize=True`` and no example database, so ``make test`` runs the same
examples every time.  ``make fuzz`` (``KEYWHEEL_FUZZ_EXAMPLES=5000``) runs more of them.

Defects owned by other work in progress are listed in ``known_open.KNOWN_OPEN``: an example whose
failure matches one is recorded instead of failing the property, and the entry's own repro runs
as a strict xfail, so the list must be emptied once the fix lands.
"""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given

from tests.fuzz.conftest import GEMINI_MODEL, FuzzTarget
from tests.fuzz.harness import (
    TIMEOUT,
    allowed_models,
    exchange,
    fuzz_settings,
    http_request,
    upstream_violations,
    violations,
)
from tests.fuzz.known_open import FIXED, KNOWN_OPEN, known_open
from tests.fuzz.strategies import BODY_STRATEGIES, Case
from tests.gateway.conftest import GATEWAY_KEY

FUZZ = fuzz_settings(120)
SERVER_TRACEBACK = ("Traceback (most recent call last)", "Exception in ASGI application")


def run_case(target: FuzzTarget, case: Case, statuses: Counter[int] | None = None) -> list[str]:
    """Send one case; the list of what broke the invariant."""
    target.relay.take()
    target.new_log()
    sent = exchange(target.port, http_request("POST", case.target, case.body, case.headers))
    problems: list[str] = []
    if sent.timed_out or not sent.answers:
        problems.append(f"no complete answer (timed out: {sent.timed_out}; got {sent.partial[:200]!r})")
    else:
        problems += violations(sent.answers[0], case.dialect)
        if statuses is not None:
            statuses[sent.answers[0].status] += 1
    log = target.new_log()
    if any(mark in log for mark in SERVER_TRACEBACK):
        problems.append(f"traceback in the server log: {log[-1500:]}")
    problems += upstream_violations(target.relay.take(), allowed_models(case.model, {GEMINI_MODEL}))
    return problems


def check(target: FuzzTarget, case: Case, seen: Counter[str], statuses: Counter[int]) -> None:
    problems = run_case(target, case, statuses)
    if not problems:
        return
    defect = known_open(case, problems)
    if defect is not None:
        seen[defect] += 1
        return
    raise AssertionError(f"{case!r}\n" + "\n".join(problems))


@pytest.mark.timeout(TIMEOUT)
@pytest.mark.parametrize("dialect", sorted(BODY_STRATEGIES))
def test_request_bodies_get_a_dialect_answer(target: FuzzTarget, dialect: str) -> None:
    seen: Counter[str] = Counter()
    statuses: Counter[int] = Counter()
    ran: list[Case] = []

    @FUZZ
    @given(case=BODY_STRATEGIES[dialect])
    def property_(case: Case) -> None:
        ran.append(case)
        check(target, case, seen, statuses)

    property_()
    print(f"{dialect}: {len(ran)} examples, statuses {dict(statuses)}, known-open defects met {dict(seen)}")
    # The generator must reach past validation: some examples are served, most are refused.
    assert len(ran) >= FUZZ.max_examples // 2, f"only {len(ran)} examples ran"
    assert sum(n for status, n in statuses.items() if status < 300) >= len(ran) // 20, statuses
    # 1/8, not 1/5: hypothesis' derandomized sequence is the same for the first ~75 examples only; after
    # that it depends on what else the session has imported (the gemini mix moves from 25 to 20 refusals
    # in 120 when tests/ops is collected too), so the bound leaves room for that drift.
    assert statuses[400] >= len(ran) // 8, statuses


def test_good_requests_still_served_after_the_fuzz(target: FuzzTarget) -> None:
    """Runs after the fuzz properties in this module: the server is alive and serving."""
    good = http_request(
        "POST",
        "/v1/chat/completions",
        b'{"model":"auto","messages":[{"role":"user","content":"hello"}]}',
        [("authorization", f"Bearer {GATEWAY_KEY}"), ("content-type", "application/json")],
    )
    answer = exchange(target.port, good).answers[0]
    assert answer.status == 200, answer
    assert b"chat.completion" in answer.body
    assert target.served.process.poll() is None


@pytest.mark.parametrize(
    "case",
    [pytest.param(entry.case, id=entry.name) for entry in FIXED if isinstance(entry.case, Case)],
)
def test_formerly_open_defects(target: FuzzTarget, case: Case) -> None:
    """The repro of a defect the fuzzer found, now fixed: it must keep passing."""
    problems = run_case(target, case)
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize(
    "case",
    [
        pytest.param(entry.case, id=entry.name, marks=pytest.mark.xfail(strict=True, reason=entry.why))
        for entry in KNOWN_OPEN
        if isinstance(entry.case, Case)
    ],
)
def test_known_open_defects(target: FuzzTarget, case: Case) -> None:
    """Each known-open defect's repro: fails today (strict xfail); passes once its fix is merged."""
    problems = run_case(target, case)
    assert not problems, "\n".join(problems)
