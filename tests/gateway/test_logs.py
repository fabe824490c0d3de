"""The gateway's logs, from a real ``keywheel serve``: JSON lines (``KEYWHEEL_LOG_FORMAT=json``)
for every record at DEBUG while every fault kind of the fake upstream plays, one access line per
request, each key-state change once with its reason, no piece of any key; and ``x-request-id``
honoured, echoed, generated, and bounded when hostile."""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from keywheel.testing import FakeUpstream
from keywheel.testing.behaviours import KINDS
from tests.gateway.conftest import GATEWAY_KEY, GatewayFactory, Served
from tests.helpers import pieces, random_secret

AUTH = {"authorization": f"Bearer {GATEWAY_KEY}"}
AUTH_BYTES = [(b"authorization", f"Bearer {GATEWAY_KEY}".encode())]
#: Fault parameters that keep the run short (a hang or a stall outlives the attempt's timeouts).
PARAMS: dict[str, dict[str, Any]] = {
    "hang": {"seconds": 3.0},
    "stall_stream": {"seconds": 3.0},
    "rate_limit": {"retry_after": 60.0},
    "oversized": {"size": 4096},
    "echo_key": {"part": "chopped"},
}


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=30) as client:
        yield client


def records(served: Served) -> list[dict[str, Any]]:
    """Every line of the gateway's output, each parsed as one JSON object."""
    out = []
    for line in served.log().splitlines():
        record = json.loads(line)  # a line that is not JSON fails here, naming itself
        assert isinstance(record, dict) and {"ts", "level", "logger", "msg"} <= set(record), line
        out.append(record)
    return out


def test_json_logs_at_debug_under_every_fault_kind(
    gateway: GatewayFactory, fake: FakeUpstream, http: httpx.Client
) -> None:
    kinds = sorted(KINDS)
    faulty = {kind: random_secret() for kind in kinds}  # one Gemini key per fault kind, for good
    good = [random_secret(), random_secret()]  # OpenRouter: the fallback that serves
    env = {f"GEMINI_API_KEY_{i}": key for i, key in enumerate(faulty.values(), start=1)}
    env.update({f"OPENROUTER_API_KEY_{i}": key for i, key in enumerate(good, start=1)})
    for kind, key in faulty.items():
        fake.set(key, kind, **PARAMS.get(kind, {}))
    served = gateway(
        "--log-level",
        "DEBUG",
        gemini=0,
        openrouter=0,
        anthropic=0,
        AI_PROVIDER="gemini",
        FALLBACK_ORDER="openrouter",
        KEYWHEEL_PROVIDER_ATTEMPTS="1",
        KEYWHEEL_BREAKER_FAILURES="0",
        KEYWHEEL_ATTEMPT_TIMEOUT="0.5",
        KEYWHEEL_STREAM_IDLE_TIMEOUT="0.5",
        KEYWHEEL_LOG_FORMAT="json",
        **env,
    )
    sent: list[str] = []
    statuses: dict[str, int] = {}
    for i in range(len(kinds) + 4):  # the ring moves on by one key at least per request: every key plays
        rid = f"log-test-{i}"
        body = {"model": "auto", "stream": i % 2 == 1, "messages": [{"role": "user", "content": "hi"}]}
        answer = http.post(served.url + "/v1/chat/completions", json=body, headers={**AUTH, "x-request-id": rid})
        assert answer.headers["x-request-id"] == rid
        sent.append(rid)
        statuses[rid] = answer.status_code
    untouched = [kind for kind, key in faulty.items() if fake.count(key) == 0]
    assert not untouched, f"fault kinds never played: {untouched}"
    served.stop()  # the shutdown's own lines are JSON too

    lines = records(served)
    text = served.log()
    access = [r for r in lines if r["logger"] == "keywheel.access" and r["path"] != "/health"]
    assert Counter(r["request_id"] for r in access) == Counter(sent)  # exactly one line per request
    for record in access:
        assert record["status"] == statuses[record["request_id"]]
        assert record["dialect"] == "openai" and record["method"] == "POST" and record["latency_ms"] >= 0
        assert isinstance(record["attempts"], int) and record["attempts"] >= 1
        if record["status"] == 200:
            assert record["provider"] in ("gemini", "openrouter") and record["key"].startswith(record["provider"])
    served_ok = [r for r in access if r["status"] == 200 and not r["path"].endswith("stream")]
    assert any(r["tokens_in"] is not None and r["tokens_out"] is not None for r in served_ok)
    assert {r["level"] for r in lines} >= {"INFO", "WARNING"}
    assert any(r["logger"].startswith("uvicorn") for r in lines)  # not only keywheel's records

    # Each key-state change once, with its reason: the invalid key is disabled once and stays so.
    changes = [r for r in lines if r["logger"] == "keywheel.keys" and "new" in r]
    per_key = Counter((r["key"], r["new"]) for r in changes)
    assert per_key and max(per_key.values()) == 1, per_key
    disabled = [r for r in changes if r["new"] == "disabled"]
    assert disabled and all(r["reason"] and r["level"] == "WARNING" for r in disabled)
    rested = [r for r in changes if r["new"] == "cooling"]
    assert rested, "the 429 key rested"
    for r in rested:
        assert r["until"] > time.time() and r["until_iso"].endswith("Z") and r["until_iso"] in r["msg"]

    for secret in [*faulty.values(), *good]:
        leaked = [p for p in pieces(secret) if p in text]
        assert not leaked, f"a key piece is in the log: {leaked[:1]}"


def test_request_ids_are_honoured_echoed_generated_and_bounded(gateway: GatewayFactory, http: httpx.Client) -> None:
    served = gateway(AI_PROVIDER="gemini")
    body = {"model": "auto", "messages": [{"role": "user", "content": "hi"}]}
    url = served.url + "/v1/chat/completions"
    mine = http.post(url, json=body, headers={**AUTH, "x-request-id": "trace:abc-123/7"})
    assert mine.status_code == 200 and mine.headers["x-request-id"] == "trace:abc-123/7"
    fresh = [http.post(url, json=body, headers=AUTH).headers["x-request-id"] for _ in range(2)]
    assert all(r.startswith("kw-") for r in fresh) and fresh[0] != fresh[1]
    hostile = ["x" * 129, "id with spaces", "<script>alert(1)</script>", "a\tb", "ünïcode", "%0d%0aforged: 1"]
    answers = [http.post(url, json=body, headers=[*AUTH_BYTES, (b"x-request-id", h.encode())]) for h in hostile]
    for bad, answer in zip(hostile, answers, strict=True):
        rid = answer.headers["x-request-id"]
        assert rid != bad and rid.startswith("kw-") and len(rid) <= 128
    refused = http.post(url, json=body, headers={"x-request-id": "client-7"})  # errors carry it too
    assert refused.status_code == 401 and refused.headers["x-request-id"] == "client-7"
    served.stop()
    log = served.log()
    access = [line for line in log.splitlines() if " keywheel.access: " in line]
    assert sum("id=trace:abc-123/7 " in line for line in access) == 1
    assert all(f"id={r} " in log for r in fresh)
    assert not any(h in log for h in hostile[1:])
