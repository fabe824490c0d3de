"""The Wheel against the fake upstream over real loopback HTTP: rotation, cooldowns, failover, streams."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter

import pytest

from keywheel import (
    AllProvidersFailed,
    BadRequest,
    ContextTooLong,
    KeywheelError,
    NetworkError,
    NoKeyAvailable,
    StreamEnd,
    TextDelta,
    Timeout,
    ToolCallDelta,
)
from keywheel.testing import FakeUpstream
from tests.helpers import WheelFactory

HELLO = [{"role": "user", "content": "hello"}]
GEMINI_KEYS = [f"test-gemini-key-{i}" for i in range(1, 5)]


def test_chat_returns_text_usage_and_who_served(make_wheel: WheelFactory, fake: FakeUpstream) -> None:
    wheel = make_wheel(AI_PROVIDER="gemini")
    response = wheel.chat(HELLO, system="Be brief.", max_tokens=50, temperature=0.2)
    assert "from fake gemini" in response.text
    assert response.provider == "gemini" and response.key.startswith("gemini#1 ")
    assert response.finish_reason == "stop"
    assert response.usage.input_tokens > 0 and response.usage.output_tokens > 0
    assert [a.outcome for a in response.attempts] == ["ok"]
    (req,) = fake.requests
    assert req.headers.get("x-goog-api-key") == "test-gemini-key-1"
    assert "key=" not in req.path and "key" not in req.query
    assert req.body["systemInstruction"]["parts"][0]["text"] == "Be brief."


@pytest.mark.parametrize("provider", ["gemini", "openrouter", "anthropic"])
def test_tool_call_round_trip_in_each_dialect(make_wheel: WheelFactory, provider: str) -> None:
    wheel = make_wheel(AI_PROVIDER=provider)
    tools = [
        {
            "type": "function",
            "function": {
                "name": "calc",
                "parameters": {"type": "object", "properties": {"expr": {"type": "string"}}, "required": ["expr"]},
            },
        }
    ]
    first = wheel.chat([{"role": "user", "content": "what is 2+2?"}], tools=tools)
    assert first.finish_reason == "tool_calls"
    (call,) = first.tool_calls
    assert call.name == "calc" and call.arguments == {"expr": "test"}
    messages: list[dict[str, object]] = [
        {"role": "user", "content": "what is 2+2?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": call.id,
                    "type": "function",
                    "function": {"name": "calc", "arguments": '{"expr": "test"}'},
                    "extra": call.extra,
                }
            ],
        },
        {"role": "tool", "tool_call_id": call.id, "content": "4"},
    ]
    second = wheel.chat(messages, tools=tools)
    assert "the tool said 4" in second.text


def test_4000_calls_from_16_threads_rotate_exactly(make_wheel: WheelFactory, fake: FakeUpstream) -> None:
    wheel = make_wheel(AI_PROVIDER="gemini")
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            for _ in range(250):
                wheel.chat(HELLO)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    counts = [fake.count(k) for k in GEMINI_KEYS]
    assert sum(counts) == 4000
    assert all(abs(c - 1000) <= 1 for c in counts), counts
    served = [k["successes"] for k in wheel.status()["providers"][0]["keys"]]
    assert served == counts


async def test_4000_calls_from_64_tasks_rotate_exactly(make_wheel: WheelFactory, fake: FakeUpstream) -> None:
    wheel = make_wheel(AI_PROVIDER="gemini")

    async def worker() -> None:
        for _ in range(62 if worker_ids.pop() < 32 else 63):
            await wheel.achat(HELLO)

    worker_ids = list(range(64))  # 32 × 62 + 32 × 63 = 4000
    await asyncio.gather(*(worker() for _ in range(64)))
    await wheel.aclose()
    counts = [fake.count(k) for k in GEMINI_KEYS]
    assert sum(counts) == 4000
    assert all(abs(c - 1000) <= 1 for c in counts), counts


@pytest.mark.parametrize(
    ("provider", "style"),
    [
        ("openrouter", "retry-after"),
        ("gemini", "retry-info"),
        ("anthropic", "retry-after-ms"),
        ("anthropic", "http-date"),
    ],
)
def test_rate_limited_key_rests_exactly_as_asked(
    make_wheel: WheelFactory, fake: FakeUpstream, provider: str, style: str
) -> None:
    wheel = make_wheel(AI_PROVIDER=provider, gemini=4, openrouter=4, anthropic=4)
    limited = f"test-{provider}-key-1"
    # http-date has one-second resolution: ask for 3 s so at least 2 s remain.
    retry = 3.0 if style == "http-date" else 2.0
    fake.set(limited, "rate_limit", retry_after=retry, style=style, times=1)
    started = time.monotonic()
    # http-date rounds the rest up to a whole second: allow for up to one more.
    while time.monotonic() - started < retry + (2.0 if style == "http-date" else 1.0):
        wheel.chat(HELLO)
        time.sleep(0.02)
    times = fake.times(limited)
    assert len(times) >= 2, "the key never came back"
    floor = 2.0 if style == "http-date" else retry
    assert times[1] - times[0] >= floor - 0.01, "the key was used before its rest was over"
    others = [fake.count(f"test-{provider}-key-{i}") for i in (2, 3, 4)]
    assert min(others) > fake.count(limited)  # the others absorbed its share
    (status,) = [p for p in wheel.status()["providers"] if p["provider"] == provider]
    assert status["keys"][0]["failures"] == {"RateLimited": 1}


def test_invalid_key_gets_one_request_then_none(make_wheel: WheelFactory, fake: FakeUpstream) -> None:
    wheel = make_wheel(AI_PROVIDER="gemini")
    fake.set("test-gemini-key-2", "invalid")
    for _ in range(40):
        response = wheel.chat(HELLO)
        assert response.provider == "gemini"
    assert fake.count("test-gemini-key-2") == 1
    key = wheel.status()["providers"][0]["keys"][1]
    assert key["state"] == "disabled"
    assert "invalid key" in key["reason"] and "API key not valid" in key["reason"]
    wheel.enable_key(key["key"])
    fake.set("test-gemini-key-2", "ok")
    for _ in range(4):
        wheel.chat(HELLO)
    assert fake.count("test-gemini-key-2") == 2


def test_primary_down_fails_over_and_attempts_show_the_path(make_wheel: WheelFactory, fake: FakeUpstream) -> None:
    wheel = make_wheel(AI_PROVIDER="gemini", FALLBACK_ORDER="openrouter")
    for key in GEMINI_KEYS:
        fake.set(key, "server_error")
    response = wheel.chat(HELLO)
    assert response.provider == "openrouter"
    path = [(a.provider, a.outcome) for a in response.attempts]
    assert path == [("gemini", "ServerError"), ("gemini", "ServerError"), ("openrouter", "ok")]
    assert response.attempts[0].key != response.attempts[1].key  # the retry went to the next key
    # 5xx is the provider's fault: no key was rested or disabled.
    assert all(k["state"] == "active" for k in wheel.status()["providers"][0]["keys"])


def test_bad_request_is_not_retried(make_wheel: WheelFactory, fake: FakeUpstream) -> None:
    wheel = make_wheel(AI_PROVIDER="gemini")
    for key in GEMINI_KEYS:
        fake.set(key, "bad_request")
    with pytest.raises(BadRequest) as info:
        wheel.chat(HELLO)
    assert len(fake.requests) == 1
    assert len(info.value.attempts) == 1 and info.value.status == 400
    assert info.value.provider == "gemini"


def test_context_too_long_fails_over_only_to_a_larger_window(make_wheel: WheelFactory, fake: FakeUpstream) -> None:
    wheel = make_wheel(AI_PROVIDER="openrouter", FALLBACK_ORDER="anthropic,gemini")  # 128k, 200k, 1M
    for i in (1, 2):
        fake.set(f"test-openrouter-key-{i}", "context_too_long")
    response = wheel.chat(HELLO)
    assert response.provider == "anthropic"
    small = make_wheel(AI_PROVIDER="gemini", FALLBACK_ORDER="openrouter")
    fake.set("test-gemini-key-1", "context_too_long")
    with pytest.raises(ContextTooLong):
        small.chat(HELLO)  # nothing larger than gemini's window to go to


def test_all_providers_failing_lists_every_attempt(make_wheel: WheelFactory, fake: FakeUpstream) -> None:
    wheel = make_wheel(AI_PROVIDER="gemini", gemini=2, openrouter=1, anthropic=1)
    for key in ("test-gemini-key-1", "test-gemini-key-2", "test-openrouter-key-1", "test-anthropic-key-1"):
        fake.set(key, "overloaded")
    with pytest.raises(AllProvidersFailed) as info:
        wheel.chat(HELLO)
    assert [a.provider for a in info.value.attempts] == [
        "gemini",
        "gemini",
        "anthropic",
        "anthropic",
        "openrouter",
        "openrouter",
    ]
    assert "Overloaded" in str(info.value)


def test_every_key_resting_waits_when_close_else_no_key_available(make_wheel: WheelFactory, fake: FakeUpstream) -> None:
    wheel = make_wheel(AI_PROVIDER="gemini", gemini=1, openrouter=0, anthropic=0, KEYWHEEL_MAX_WAIT="3")
    fake.set("test-gemini-key-1", "rate_limit", retry_after=1.0, times=1)
    started = time.monotonic()
    response = wheel.chat(HELLO)  # 429, rest 1 s, wait, succeed
    assert time.monotonic() - started >= 1.0
    assert [a.outcome for a in response.attempts] == ["RateLimited", "ok"]
    fake.set("test-gemini-key-1", "rate_limit", retry_after=30.0, times=1)
    with pytest.raises(NoKeyAvailable) as info:
        wheel.chat(HELLO)
    assert info.value.retry_after is not None and 25 < info.value.retry_after <= 30
    with pytest.raises(NoKeyAvailable):
        wheel.chat(HELLO)  # and no request reached the resting key
    assert fake.count("test-gemini-key-1") == 3


def test_total_deadline_bounds_a_hanging_upstream(make_wheel: WheelFactory, fake: FakeUpstream) -> None:
    wheel = make_wheel(AI_PROVIDER="gemini", gemini=1, openrouter=0, anthropic=0, KEYWHEEL_TIMEOUT="1")
    fake.set("test-gemini-key-1", "hang", seconds=10)
    started = time.monotonic()
    with pytest.raises((Timeout, AllProvidersFailed)):
        wheel.chat(HELLO)
    assert time.monotonic() - started < 5


# ------------------------------------------------------------------ streams


def collect(wheel: object, **kwargs: object) -> tuple[str, list[object]]:
    events = list(wheel.stream(HELLO, **kwargs))  # type: ignore[attr-defined]
    return "".join(e.text for e in events if isinstance(e, TextDelta)), events


@pytest.mark.parametrize("provider", ["gemini", "openrouter", "anthropic"])
def test_stream_in_each_dialect(make_wheel: WheelFactory, provider: str) -> None:
    wheel = make_wheel(AI_PROVIDER=provider)
    text, events = collect(wheel)
    assert f"from fake {provider if provider != 'openrouter' else 'openai'}" in text
    assert text.endswith("lazy dog.")
    assert sum(isinstance(e, TextDelta) for e in events) > 5
    end = events[-1]
    assert isinstance(end, StreamEnd) and end.finish_reason == "stop" and end.usage.output_tokens > 0


@pytest.mark.parametrize("provider", ["gemini", "openrouter", "anthropic"])
def test_stream_tool_call(make_wheel: WheelFactory, provider: str) -> None:
    wheel = make_wheel(AI_PROVIDER=provider)
    tools = [{"name": "calc", "parameters": {"type": "object", "properties": {"expr": {"type": "string"}}}}]
    events = list(wheel.stream([{"role": "user", "content": "2+2?"}], tools=tools))
    deltas = [e for e in events if isinstance(e, ToolCallDelta)]
    assert deltas[0].name == "calc" and deltas[0].id
    assert "".join(d.arguments for d in deltas).replace(" ", "") == '{"expr":"test"}'
    assert isinstance(events[-1], StreamEnd) and events[-1].finish_reason == "tool_calls"


def test_stream_breaking_before_first_event_fails_over(make_wheel: WheelFactory, fake: FakeUpstream) -> None:
    wheel = make_wheel(AI_PROVIDER="gemini", FALLBACK_ORDER="openrouter")
    for key in GEMINI_KEYS:
        fake.set(key, "break_stream", after=0)
    text, events = collect(wheel)
    assert "from fake openai" in text and isinstance(events[-1], StreamEnd)
    assert {r.dialect for r in fake.requests} == {"gemini", "openai"}


@pytest.mark.parametrize("provider", ["gemini", "openrouter", "anthropic"])
def test_stream_breaking_after_third_event_ends_with_an_error(
    make_wheel: WheelFactory, fake: FakeUpstream, provider: str
) -> None:
    wheel = make_wheel(AI_PROVIDER=provider)
    fake.set(f"test-{provider}-key-1", "break_stream", after=3)
    received: list[object] = []
    with pytest.raises(NetworkError):
        for event in wheel.stream(HELLO):
            received.append(event)
    texts = [e.text for e in received if isinstance(e, TextDelta)]
    assert len(texts) == 3
    assert not any(isinstance(e, StreamEnd) for e in received)
    assert len(fake.requests) == 1  # no second attempt, so no second answer mixed in
    reply_ids = {w for w in "".join(texts).split() if w.isdigit()}
    assert len(reply_ids) <= 1


def test_stream_in_band_error_after_start(make_wheel: WheelFactory, fake: FakeUpstream) -> None:
    wheel = make_wheel(AI_PROVIDER="anthropic")
    fake.set("test-anthropic-key-1", "stream_error", after=3)
    with pytest.raises(KeywheelError):
        collect(wheel)
    assert len(fake.requests) == 1


async def test_async_stream_closed_early_closes_upstream(make_wheel: WheelFactory, fake: FakeUpstream) -> None:
    wheel = make_wheel(AI_PROVIDER="gemini")
    fake.set("test-gemini-key-1", "slow_stream", interval=0.2)
    agen = wheel.astream(HELLO)
    async for event in agen:
        assert isinstance(event, TextDelta)
        break
    await agen.aclose()
    deadline = time.monotonic() + 2
    while not fake.disconnects and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert fake.disconnects and fake.disconnects[0][0] == "test-gemini-key-1"
    assert wheel.status()["providers"][0]["keys"][0]["in_flight"] == 0
    await wheel.aclose()


def test_key_admin_actions(make_wheel: WheelFactory, fake: FakeUpstream) -> None:
    wheel = make_wheel(AI_PROVIDER="gemini", gemini=2)
    fp = wheel.status()["providers"][0]["keys"][0]["key"]
    wheel.disable_key(fp, "maintenance")
    for _ in range(4):
        wheel.chat(HELLO)
    assert fake.count("test-gemini-key-1") == 0
    added = wheel.add_key("gemini", "test-gemini-key-9")
    assert added.startswith("gemini#")
    wheel.remove_key(fp)
    for _ in range(4):
        wheel.chat(HELLO)
    assert fake.count("test-gemini-key-9") == 2
    assert Counter(k["state"] for k in wheel.status()["providers"][0]["keys"]) == {"active": 2}
