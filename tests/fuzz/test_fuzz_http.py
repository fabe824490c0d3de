"""Fuzz the gateway with hostile HTTP over a raw socket: malformed heads, odd methods, absurd and
duplicate headers, bad content-length, chunked oddities, odd paths and query strings.

Whose answer is whose (a deliberate part of the invariant):

- A request the server's HTTP parser (httptools, under uvicorn) cannot parse is answered before
  any dialect is known, by the HTTP layer: uvicorn's ``400 text/plain "Invalid HTTP request
  received."`` or a closed connection.  That is accepted as *not keywheel's answer*: there is no
  caller dialect to answer in, and no request reached keywheel.  Anything else from that layer
  (a 5xx, a hang) is not accepted.  ``raw_http.classify`` uses the same parser to decide which
  inputs those are, so if the server library changes, that classifier changes with it.
- A request whose head parses is keywheel's: its answer must meet the same invariant as the
  dialect bodies' (2xx, or a dialect-shaped 4xx/429/502/503 in the dialect its path selects).
- A head that never completes gets no answer (the server waits for the rest of it): the fuzz
  waits briefly and accepts silence; that the server closes it in time is the known-open
  ``header-timeout`` defect's strict xfail below.
"""

from __future__ import annotations

from collections import Counter
from urllib.parse import unquote

import httptools
import pytest
from hypothesis import given

from tests.fuzz.conftest import GEMINI_MODEL, FuzzTarget
from tests.fuzz.harness import (
    ERROR_SHAPES,
    TIMEOUT,
    Answer,
    allowed_models,
    dialect_of,
    dialect_path,
    exchange,
    fuzz_settings,
    http_request,
    upstream_violations,
    violations,
)
from tests.fuzz.known_open import FIXED, KNOWN_OPEN, known_open
from tests.fuzz.raw_http import Parsed, RawCase, classify, raw_http_cases
from tests.fuzz.test_fuzz_bodies import SERVER_TRACEBACK
from tests.gateway.conftest import GATEWAY_KEY

FUZZ = fuzz_settings(150)
# README: "/v1/messages/count_tokens answers 501" (in the dialect's shape): a documented answer, not a fault.
NOT_IMPLEMENTED = frozenset({501})
NOT_IMPLEMENTED_PATHS = frozenset({"/v1/messages/count_tokens"})


def _http_layer(answer: Answer) -> bool:
    """uvicorn's own refusal: a text/plain 4xx ("Invalid HTTP request received.", or its WebSocket
    layer's "Failed to open a WebSocket connection: …")."""
    kind = (answer.header("content-type") or "").split(";")[0]
    return 400 <= answer.status < 500 and kind == "text/plain"


def _model_in_path(url: str) -> str | None:
    path = unquote(url.partition("?")[0])
    if "/models/" not in path:
        return None
    return path.split("/models/", 1)[1].rpartition(":")[0] or None


# A body that never completes is answered 408 after KEYWHEEL_BODY_TIMEOUT (1 s here): wait 4 s.
PATIENCE = 4.0


def _wait(parsed: Parsed, patient: bool) -> float:
    if parsed.state == "incomplete-head":
        return 0.3  # silence is the right answer until the head timeout closes it
    if parsed.state == "upgrade":
        return 0.3  # uvicorn stops reading at an upgrade it does not support: silence is the HTTP layer's
    if parsed.state == "incomplete-body" and not parsed.body_bytes and not patient:
        return 0.3  # the 408 comes at the body timeout (test_formerly_open_http_defects waits for it)
    return PATIENCE


def run_raw(
    target: FuzzTarget, case: RawCase, statuses: Counter[str] | None = None, *, patient: bool = False
) -> list[str]:
    parsed = classify(case.raw)
    target.relay.take()
    target.new_log()
    sent = exchange(target.port, case.raw, wait=_wait(parsed, patient), head=parsed.method == "HEAD")
    answers = [a for a in sent.answers if a.status >= 200]  # "100 Continue" is an interim answer
    if statuses is not None:
        statuses[f"{parsed.state}:{answers[0].status if answers else 'none'}"] += 1
    problems: list[str] = []
    if parsed.state in ("complete", "incomplete-body") and not parsed.trailing_error:
        withheld = parsed.state == "incomplete-body" and not parsed.body_bytes and not patient
        if sent.timed_out and not answers and not withheld:
            announced = "" if parsed.body_bytes else " (a body was announced and no byte of it sent)"
            problems.append(f"no answer within {_wait(parsed, patient):g} s{announced}")
        elif not answers and not withheld:
            problems.append(f"connection closed without an answer ({sent.partial[:200]!r})")
    for i, answer in enumerate(answers):
        server_may_answer = parsed.state in ("malformed", "upgrade") or parsed.trailing_error or i > 0
        if _http_layer(answer) and server_may_answer:
            continue
        if i == 0 and parsed.state not in ("malformed", "upgrade"):
            documented = NOT_IMPLEMENTED if dialect_path(parsed.url) in NOT_IMPLEMENTED_PATHS else frozenset()
            head = parsed.method == "HEAD"
            problems += violations(answer, dialect_of(parsed.url, parsed.headers), documented, head=head)
        else:  # the dialect of a pipelined leftover is anyone's guess: any dialect's shape will do
            found = [violations(answer, d) for d in ERROR_SHAPES]
            if all(found):
                problems += found[0]
    log = target.new_log()
    if any(mark in log for mark in SERVER_TRACEBACK):
        problems.append(f"traceback in the server log: {log[-1500:]}")
    problems += upstream_violations(target.relay.take(), allowed_models(_model_in_path(parsed.url), {GEMINI_MODEL}))
    return problems


@pytest.mark.timeout(TIMEOUT)
def test_hostile_http_gets_a_dialect_answer_or_the_http_layers_400(target: FuzzTarget) -> None:
    seen: Counter[str] = Counter()
    statuses: Counter[str] = Counter()
    ran: list[RawCase] = []

    @FUZZ
    @given(case=raw_http_cases())
    def property_(case: RawCase) -> None:
        ran.append(case)
        problems = run_raw(target, case, statuses)
        if not problems:
            return
        defect = known_open(case, problems)
        if defect is None:
            raise AssertionError(f"{case!r} ({classify(case.raw).state})\n" + "\n".join(problems))
        seen[defect] += 1

    property_()
    print(f"raw HTTP: {len(ran)} examples, parse state:status {dict(statuses)}, known-open defects met {dict(seen)}")
    assert len(ran) >= FUZZ.max_examples // 2, f"only {len(ran)} examples ran"
    # The generator must reach keywheel as well as the HTTP layer: both kinds of answer occur.
    assert sum(n for key, n in statuses.items() if key.startswith("complete:2")) >= 1, statuses
    assert sum(n for key, n in statuses.items() if key.startswith("malformed:")) >= 1, statuses


def test_the_classifier_tells_the_layers_apart() -> None:
    ok = http_request("POST", "/v1/messages", b"{}", [("x-api-key", GATEWAY_KEY)])
    assert classify(ok).state == "complete"
    assert classify(ok[:-1]).state == "incomplete-body"
    assert classify(b"POST /v1/messages HTTP/1.1\r\nhost: x\r\n").state == "incomplete-head"
    assert classify(b"POST /v1/messages HTTP/1.1\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\n").state == (
        "malformed"
    )
    with pytest.raises(httptools.HttpParserError):
        httptools.HttpRequestParser(object()).feed_data(b"\x00\x01 garbage\r\n\r\n")


@pytest.mark.parametrize(
    "case",
    [pytest.param(entry.case, id=entry.name) for entry in FIXED if isinstance(entry.case, RawCase)],
)
def test_formerly_open_http_defects(target: FuzzTarget, case: RawCase) -> None:
    """The repro of a defect the fuzzer found, now fixed: it must keep passing."""
    problems = run_raw(target, case, patient=True)
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize(
    "case",
    [
        pytest.param(entry.case, id=entry.name, marks=pytest.mark.xfail(strict=True, reason=entry.why))
        for entry in KNOWN_OPEN
        if isinstance(entry.case, RawCase)
    ],
)
def test_known_open_http_defects(target: FuzzTarget, case: RawCase) -> None:
    """Each known-open HTTP-level defect's repro: fails today (strict xfail); passes once fixed."""
    problems = run_raw(target, case, patient=True)
    assert not problems, "\n".join(problems)


def test_zz_good_requests_still_served_after_all_the_fuzzing(target: FuzzTarget) -> None:
    """Last in the package (the server is shared by every fuzz module): alive and serving."""
    good = http_request(
        "POST",
        "/v1/messages",
        b'{"model":"auto","max_tokens":16,"messages":[{"role":"user","content":"hello"}]}',
        [("x-api-key", GATEWAY_KEY), ("content-type", "application/json")],
    )
    answer = exchange(target.port, good).answers[0]
    assert answer.status == 200, answer
    assert b'"type":"message"' in answer.body
    assert target.served.process.poll() is None
