"""The gateway's upkeep of its keys, on a real ``keywheel serve`` over the fake upstream:
background re-probes (recovery with backoff), credit readings, 402s by ``limit_source``,
``POST /admin/keys/check`` and ``GET /admin/credits`` — and OpenRouter's ``label`` never leaves."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from keywheel.testing import FakeUpstream
from keywheel.testing._openai import echo_label
from tests.gateway.conftest import ADMIN_KEY, GATEWAY_KEY, GatewayFactory, Served
from tests.ops.test_keys_check import secret

ADMIN = {"authorization": f"Bearer {ADMIN_KEY}"}
HELLO = [{"role": "user", "content": "hello"}]


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=30) as client:
        yield client


def keys_of(http: httpx.Client, served: Served) -> dict[str, dict[str, Any]]:
    status = http.get(served.url + "/status", headers=ADMIN).json()
    return {k["key"]: k for p in status["providers"] for k in p["keys"]}


def wait_for(check: Callable[[], bool], seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("not reached in time")
        time.sleep(0.05)


def chat(http: httpx.Client, served: Served) -> httpx.Response:
    body = {"model": "auto", "messages": HELLO}
    return http.post(served.url + "/v1/chat/completions", json=body, headers={"authorization": f"Bearer {GATEWAY_KEY}"})


def probe_times(fake: FakeUpstream, key: str, path: str) -> list[float]:
    return [r.at for r in fake.requests if r.key == key and r.method == "GET" and r.path == path]


def fp(http: httpx.Client, served: Served, label: str) -> str:
    return next(k for k in keys_of(http, served) if k.startswith(label + " "))


def test_recovery_brings_back_a_transient_fault_backs_off_a_dead_key_and_leaves_the_operator_s(
    gateway: GatewayFactory, fake: FakeUpstream, http: httpx.Client
) -> None:
    interval = 0.25
    served = gateway(gemini=3, openrouter=0, anthropic=0, KEYWHEEL_PROBE_INTERVAL=str(interval))
    transient, dead, held = "test-gemini-key-1", "test-gemini-key-2", "test-gemini-key-3"
    fake.set(transient, "invalid")
    fake.set(dead, "invalid")
    # One request: key 1 is invalid (disabled), key 2 too, key 3 serves.
    answer = chat(http, served)
    assert answer.status_code == 200 and answer.headers["x-keywheel-key"].startswith("gemini#3")
    http.post(served.url + "/admin/keys/disable", json={"key": fp(http, served, "gemini#3")}, headers=ADMIN)
    states = keys_of(http, served)
    assert [(k["state"], k["cause"]) for k in states.values()] == [
        ("disabled", "invalid"),
        ("disabled", "invalid"),
        ("disabled", "operator"),
    ]
    fake.set(transient, "ok")
    healed_at = len(fake.requests)  # every request from here on finds the key good
    wait_for(lambda: keys_of(http, served)[fp(http, served, "gemini#1")]["state"] == "active")
    # It came back after one good background probe: a free model listing, no generation.
    after = [r for r in fake.requests[healed_at:] if r.key == transient]
    assert [(r.method, r.path) for r in after] == [("GET", "/v1beta/models")]
    assert keys_of(http, served)[fp(http, served, "gemini#1")]["cause"] == ""
    time.sleep(interval * 13)  # long enough for a dead key's probes at +1, +2, +4 intervals (and more without backoff)
    dead_probes = probe_times(fake, dead, "/v1beta/models")
    assert 2 <= len(dead_probes) <= 5, dead_probes  # without backoff: about 13
    gaps = [b - a for a, b in zip(dead_probes, dead_probes[1:], strict=False)]
    for i, gap in enumerate(gaps):
        assert gap >= interval * 2**i * 0.9, gaps  # no more often than its backoff allows
    assert probe_times(fake, held, "/v1beta/models") == []  # an operator's disable is never probed
    assert keys_of(http, served)[fp(http, served, "gemini#2")]["state"] == "disabled"


def test_credit_unlimited_plenty_and_nearly_exhausted(
    gateway: GatewayFactory, fake: FakeUpstream, http: httpx.Client
) -> None:
    unlimited, plenty, low = secret("test-or-unl-"), secret("test-or-plenty-"), secret("test-or-low-")
    fake.set_credit(unlimited, limit=None, usage=12.5, is_free_tier=False)
    fake.set_credit(plenty, limit=100.0, usage=10.0, limit_reset="monthly", usage_daily=1.0, free_used=7)
    fake.set_credit(low, limit=10.0, usage=9.8, is_free_tier=True)
    served = gateway(
        gemini=0,
        openrouter=0,
        anthropic=0,
        OPENROUTER_API_KEY_1=unlimited,
        OPENROUTER_API_KEY_2=plenty,
        OPENROUTER_API_KEY_3=low,
        KEYWHEEL_CREDIT_INTERVAL="0.3",
        KEYWHEEL_MIN_CREDIT="0.5",
    )
    low_fp = fp(http, served, "openrouter#3")
    wait_for(lambda: keys_of(http, served)[low_fp]["state"] == "disabled")
    keys = keys_of(http, served)
    one, two, three = (keys[fp(http, served, f"openrouter#{i}")] for i in (1, 2, 3))
    assert one["credit"]["unlimited"] is True and one["credit"]["limit"] is None and one["credit"]["usage"] == 12.5
    assert two["credit"]["limit"] == 100.0 and two["credit"]["limit_remaining"] == 90.0
    assert two["credit"]["limit_reset"] == "monthly" and two["credit"]["resets_at"] > time.time()
    assert two["credit"]["free_model_daily_requests"] == {"used": 7, "limit": 1000, "remaining": 993}
    assert three["credit"]["limit_remaining"] == pytest.approx(0.2) and three["credit"]["is_free_tier"] is True
    assert three["cause"] == "quota" and three["reason"].startswith("low credit: 0.2 left of 10")
    assert (one["state"], two["state"]) == ("active", "active")
    # Out of rotation: requests go to the other two.
    for _ in range(4):
        assert chat(http, served).headers["x-keywheel-key"].split(" ")[0] in ("openrouter#1", "openrouter#2")
    credits = http.get(served.url + "/admin/credits", headers=ADMIN).json()["keys"]
    assert [c["fingerprint"] for c in credits] == [one["key"], two["key"], three["key"]]
    assert credits[0]["credit"]["unlimited"] and credits[2]["credit"]["limit_remaining"] == pytest.approx(0.2)
    for body, code in ((b"{nope", 400), (b'{"provider": 5}', 400), (b"[]", 400), (b'{"provider": "nosuch"}', 404)):
        refused = http.post(served.url + "/admin/keys/check", content=body, headers=ADMIN)
        assert refused.status_code == code, refused.text
    assert http.get(served.url + "/admin/keys/check", headers=ADMIN).status_code == 405
    assert http.post(served.url + "/admin/credits", headers=ADMIN).status_code == 405
    assert http.get(served.url + "/admin/credits").status_code == 401
    everyone = http.post(served.url + "/admin/keys/check", headers=ADMIN).json()["results"]
    assert len(everyone) == 3
    check = http.post(served.url + "/admin/keys/check", json={"provider": "openrouter"}, headers=ADMIN).json()
    assert [r["outcome"] for r in check["results"]] == ["ok", "ok", "ok"]
    assert all(r["detail"].startswith("credit: ") for r in check["results"])
    # One key by its fingerprint (the status page's "check" button sends {key, provider}): only it is
    # checked (the fake's log shows it in the status-page test: here credit readings run alongside).
    for one in ({"key": two["key"]}, {"key": two["key"], "provider": "openrouter"}):
        one_key = http.post(served.url + "/admin/keys/check", json=one, headers=ADMIN).json()["results"]
        assert [(r["fingerprint"], r["outcome"]) for r in one_key] == [(two["key"], "ok")]
    wrong: tuple[tuple[dict[str, object], int], ...] = (
        ({"key": 5}, 400),
        ({"key": "openrouter#9 …beef"}, 404),
        ({"key": plenty}, 404),
    )
    for bad, code in wrong:
        refused = http.post(served.url + "/admin/keys/check", json=bad, headers=ADMIN)
        assert refused.status_code == code and plenty not in refused.text, refused.text
    assert "no such key" in refused.text
    # Credit returns: the key comes back.
    fake.set_credit(low, limit=10.0, usage=1.0, is_free_tier=True)
    wait_for(lambda: keys_of(http, served)[low_fp]["state"] == "active")
    # The label (it echoes part of the key) is nowhere.
    status_text = http.get(served.url + "/status", headers=ADMIN).text
    credits_text = http.get(served.url + "/admin/credits", headers=ADMIN).text
    for key in (unlimited, plenty, low):
        for text in (status_text, credits_text, str(check), served.log()):
            assert echo_label(key) not in text and key[-16:] not in text and key[:-3] not in text
    assert "low credit" in served.log()


def test_each_402_limit_source(gateway: GatewayFactory, fake: FakeUpstream, http: httpx.Client) -> None:
    budget, cap, broke = "test-openrouter-key-1", "test-openrouter-key-2", "test-openrouter-key-3"
    fake.set(budget, "quota", times=1, limit_source="openrouter_in_flight_budget", retry_after=30)
    fake.set(cap, "quota", times=1, limit_source="openrouter_key_limit")
    fake.set(broke, "quota", times=1, limit_source="openrouter_credits")
    fake.set_credit(cap, limit=5.0, usage=5.0, limit_reset="daily")
    fake.set_credit(broke, limit=None)
    # A long interval: the readings below come from the 402s, not from the schedule.
    served = gateway(gemini=0, openrouter=3, anthropic=0, KEYWHEEL_CREDIT_INTERVAL="600", KEYWHEEL_PROBE_INTERVAL="600")
    answer = chat(http, served)
    assert answer.status_code != 200
    cap_fp, broke_fp, budget_fp = (fp(http, served, f"openrouter#{i}") for i in (2, 3, 1))
    wait_for(lambda: keys_of(http, served)[cap_fp]["state"] == "cooling")
    keys = keys_of(http, served)
    # in-flight budget: a rest for its retry time
    assert keys[budget_fp]["state"] == "cooling" and keys[budget_fp]["cause"] == "rate_limited"
    assert 20 < keys[budget_fp]["cooldown_remaining"] <= 30
    # key limit: out until limit_reset (the next 00:00 UTC), read from /key right after the 402
    tomorrow = (int(time.time()) // 86400 + 1) * 86400
    assert keys[cap_fp]["cause"] == "quota" and "resets daily" in keys[cap_fp]["reason"]
    assert abs(time.time() + keys[cap_fp]["cooldown_remaining"] - tomorrow) < 5
    # account credits: out (an unlimited /key reading does not bring it back), with a warning
    assert keys[broke_fp]["state"] == "disabled" and "[openrouter_credits]" in keys[broke_fp]["reason"]
    wait_for(lambda: "OpenRouter account is out of credits" in served.log())
    assert "WARNING" in next(line for line in served.log().splitlines() if "account is out of credits" in line)
    assert keys_of(http, served)[broke_fp]["state"] == "disabled"
