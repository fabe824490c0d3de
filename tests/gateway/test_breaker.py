"""The per-provider circuit breaker, end to end: the library (``Wheel``) and a real
``keywheel serve``, over real sockets, with the fake upstream's request log as judge.

The numbers are small so the suite stays fast: the breaker opens after 3
consecutive provider faults and cools off 0.5 s, then 1 s (the cap).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Generator

import httpx
import pytest

from keywheel.errors import AllProvidersFailed
from keywheel.testing import FakeUpstream
from keywheel.types import StreamEnd
from tests.gateway.conftest import ADMIN_KEY, GATEWAY_KEY, GatewayFactory, Served
from tests.helpers import WheelFactory

HELLO = [{"role": "user", "content": "hello"}]
GEMINI_KEYS = ("test-gemini-key-1", "test-gemini-key-2")
BREAKER = {"KEYWHEEL_BREAKER_FAILURES": "3", "KEYWHEEL_BREAKER_COOLOFF": "0.5", "KEYWHEEL_BREAKER_COOLOFF_MAX": "1"}


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def primary_requests(fake: FakeUpstream) -> list[float]:
    return sorted(t for key in GEMINI_KEYS for t in fake.times(key))


# ------------------------------------------------------------------ library


def test_wheel_skips_an_open_provider_and_lets_one_trial_through_per_cooloff(
    make_wheel: WheelFactory, fake: FakeUpstream
) -> None:
    wheel = make_wheel(
        AI_PROVIDER="gemini", FALLBACK_ORDER="openrouter", gemini=2, openrouter=1, anthropic=0, **BREAKER
    )

    def breaker() -> dict[str, object]:
        view = wheel.status()["providers"][0]["breaker"]
        assert isinstance(view, dict)
        return view

    for key in GEMINI_KEYS:
        fake.set(key, "server_error")
    first = wheel.chat(HELLO)
    assert [(a.provider, a.outcome) for a in first.attempts] == [
        ("gemini", "ServerError"),
        ("gemini", "ServerError"),
        ("openrouter", "ok"),
    ]
    second = wheel.chat(HELLO)  # the 3rd fault opens the breaker: no retry, straight to the fallback
    assert [(a.provider, a.outcome) for a in second.attempts] == [("gemini", "ServerError"), ("openrouter", "ok")]
    assert breaker()["state"] == "open" and breaker()["failures"] == 3
    assert len(primary_requests(fake)) == 3

    for _ in range(5):
        served = wheel.chat(HELLO)
        assert [(a.provider, a.outcome) for a in served.attempts] == [("openrouter", "ok")]
    assert len(primary_requests(fake)) == 3  # no request reached the open provider

    wait_for(lambda: breaker()["state"] == "half-open", "the cool-off to end")
    trial = wheel.chat(HELLO)  # the one trial fails: reopened for twice as long
    assert [(a.provider, a.outcome) for a in trial.attempts] == [("gemini", "ServerError"), ("openrouter", "ok")]
    assert breaker()["state"] == "open" and breaker()["cooloff"] == 1.0
    assert [a.provider for a in wheel.chat(HELLO).attempts] == ["openrouter"]

    for key in GEMINI_KEYS:
        fake.set(key, "ok")  # the primary recovers
    wait_for(lambda: breaker()["state"] == "half-open", "the second cool-off to end")
    back = wheel.chat(HELLO)
    assert back.provider == "gemini" and [a.outcome for a in back.attempts] == ["ok"]
    assert breaker() == {"state": "closed", "failures": 0, "open_until": None, "open_for": 0.0, "cooloff": 0.0}
    assert wheel.chat(HELLO).provider == "gemini"


def test_a_trial_stream_closes_the_breaker_at_its_first_event(make_wheel: WheelFactory, fake: FakeUpstream) -> None:
    chain = {"AI_PROVIDER": "gemini", "FALLBACK_ORDER": "openrouter"}
    wheel = make_wheel(gemini=2, openrouter=1, anthropic=0, **chain, **BREAKER)
    for key in GEMINI_KEYS:
        fake.set(key, "overloaded", times=2)  # 4 faults: the breaker opens on the 3rd
    for _ in range(2):
        assert wheel.chat(HELLO).provider == "openrouter"
    assert wheel.status()["providers"][0]["breaker"]["state"] == "open"
    wait_for(lambda: wheel.status()["providers"][0]["breaker"]["state"] == "half-open", "the cool-off to end")
    fake.set("test-gemini-key-1", "slow_stream", interval=0.1)
    fake.set("test-gemini-key-2", "slow_stream", interval=0.1)
    stream = wheel.stream(HELLO)
    assert isinstance(stream, Generator)  # annotated as an Iterator; closing it early stops the call
    try:
        next(stream)  # the trial's first event: gemini is back, though its answer is still coming
        assert wheel.status()["providers"][0]["breaker"]["state"] == "closed"
        events = list(stream)
        assert isinstance(events[-1], StreamEnd) and events[-1].provider == "gemini"
    finally:
        stream.close()


def test_every_provider_open_tries_the_one_whose_cooloff_ends_first_once(
    make_wheel: WheelFactory, fake: FakeUpstream
) -> None:
    """Decided: a call never fails with its providers untried.  When every provider of the
    chain is open, the one whose cool-off ends first gets one try past its breaker (Envoy's
    panic routing); its success closes the breaker."""
    wheel = make_wheel(
        AI_PROVIDER="gemini",
        FALLBACK_ORDER="openrouter",
        gemini=1,
        openrouter=1,
        anthropic=0,
        KEYWHEEL_BREAKER_FAILURES="2",
        KEYWHEEL_BREAKER_COOLOFF="30",
    )
    fake.set("test-gemini-key-1", "server_error")
    fake.set("test-openrouter-key-1", "overloaded")
    with pytest.raises(AllProvidersFailed) as info:
        wheel.chat(HELLO)  # both breakers open on this call (gemini first)
    assert [a.provider for a in info.value.attempts] == ["gemini", "gemini", "openrouter", "openrouter"]
    assert [p["breaker"]["state"] for p in wheel.status()["providers"]] == ["open", "open"]
    before = len(fake.requests)
    with pytest.raises(AllProvidersFailed) as info:
        wheel.chat(HELLO)
    assert [(a.provider, a.outcome) for a in info.value.attempts] == [("gemini", "ServerError")]
    assert len(fake.requests) == before + 1  # one try, no retry, not the other provider
    fake.set("test-gemini-key-1", "ok")
    response = wheel.chat(HELLO)
    assert response.provider == "gemini"
    assert [p["breaker"]["state"] for p in wheel.status()["providers"]] == ["closed", "open"]
    assert [a.provider for a in wheel.chat(HELLO).attempts] == ["gemini"]


# ------------------------------------------------------------------ gateway


def chat(http: httpx.Client, served: Served, *, stream: bool) -> tuple[str, list[tuple[str, str]]]:
    """One OpenAI-dialect call: who served it, and its attempts as (provider, outcome)."""
    body = {"model": "auto", "messages": HELLO, "stream": stream}
    with http.stream("POST", served.url + "/v1/chat/completions", json=body) as resp:
        text = resp.read().decode()
        assert resp.status_code == 200, text
        assert "dog." in text  # the whole answer came
        attempts = [tuple(a.split(" ")[::3]) for a in resp.headers["x-keywheel-attempts"].split(", ")]
        return resp.headers["x-keywheel-provider"], attempts  # type: ignore[return-value]


def test_gateway_primary_all_5xx_is_skipped_after_the_breaker_opens(
    gateway: GatewayFactory, fake: FakeUpstream, request: pytest.FixtureRequest
) -> None:
    served = gateway(AI_PROVIDER="gemini", FALLBACK_ORDER="openrouter", gemini=2, openrouter=2, anthropic=0, **BREAKER)
    http = httpx.Client(headers={"authorization": f"Bearer {GATEWAY_KEY}"}, timeout=30)
    request.addfinalizer(http.close)
    admin = {"authorization": f"Bearer {ADMIN_KEY}"}

    def breaker() -> dict[str, object]:
        view = http.get(served.url + "/status", headers=admin).json()["providers"][0]["breaker"]
        assert isinstance(view, dict)
        return view

    for key in GEMINI_KEYS:
        fake.set(key, "server_error")
    # Opening: 2 tries, then 1 try (the 3rd fault opens it and stops the retries).
    assert chat(http, served, stream=False) == (
        "openrouter",
        [("gemini", "ServerError"), ("gemini", "ServerError"), ("openrouter", "ok")],
    )
    assert chat(http, served, stream=True) == ("openrouter", [("gemini", "ServerError"), ("openrouter", "ok")])
    view = breaker()
    assert view["state"] == "open" and view["failures"] == 3
    assert isinstance(view["open_until"], float) and view["open_until"] > time.time() - 1
    opened = primary_requests(fake)
    assert len(opened) == 3

    # Open: 4 clients for ~2.6 s (cool-offs of 0.5 s, 1 s, 1 s): every call is served by the
    # fallback; only the one trial per cool-off reaches the primary, and it says so.
    results: list[tuple[str, list[tuple[str, str]]]] = []
    lock = threading.Lock()
    stop = time.monotonic() + 2.6

    def client(stream: bool) -> None:
        with httpx.Client(headers={"authorization": f"Bearer {GATEWAY_KEY}"}, timeout=30) as own:
            while time.monotonic() < stop:
                got = chat(own, served, stream=stream)
                with lock:
                    results.append(got)

    threads = [threading.Thread(target=client, args=(i % 2 == 0,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    trials = [r for r in results if r[1] != [("openrouter", "ok")]]
    assert len(results) > 20
    assert all(r == ("openrouter", [("gemini", "ServerError"), ("openrouter", "ok")]) for r in trials)
    assert all(r[0] == "openrouter" for r in results)
    hits = primary_requests(fake)[3:]
    assert len(hits) == len(trials) and 2 <= len(hits) <= 3
    gaps = [b - a for a, b in zip([opened[-1], *hits], hits, strict=False)]
    assert gaps[0] >= 0.5 - 0.02 and all(gap >= 1.0 - 0.02 for gap in gaps[1:]), gaps  # one trial per cool-off
    assert breaker()["cooloff"] == 1.0

    # Recovery: the next trial succeeds, closes the breaker, and the primary serves again.
    for key in GEMINI_KEYS:
        fake.set(key, "ok")
    wait_for(lambda: breaker()["state"] == "half-open", "the cool-off to end")
    assert chat(http, served, stream=True) == ("gemini", [("gemini", "ok")])
    assert breaker()["state"] == "closed"
    assert chat(http, served, stream=False) == ("gemini", [("gemini", "ok")])

    log = served.log()
    assert log.count("breaker of gemini opened after 3 consecutive provider faults") == 1
    assert log.count("breaker of gemini closed") == 1
    assert log.count("breaker of gemini reopened") == len(hits)
    assert "Traceback" not in log
