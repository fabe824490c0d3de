"""The hot path's short cuts give exactly what the long way gives.

- ``Wheel.achat``'s pass-through (OpenAI-shaped messages to an OpenAI-dialect upstream, no
  canonical types): the same upstream body, key for key, as the translation, and translation
  still for any other upstream;
- auth headers cached per endpoint and key: each request gets its own copy;
- the request body's timer (``read_body``): 408 when the body does not come, no trace left on
  the task when it does, a cancellation that is not its own passes through;
- the redacting log filter: a record it cleaned is not scanned again, one changed since is; the
  access log redacts what a client sent in it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import orjson
import pytest

from keywheel import Wheel
from keywheel.gateway.http import HttpError, Message, read_body
from keywheel.messages import openai_wire
from keywheel.observe import RequestFinished, access_log
from keywheel.providers.base import Endpoint
from keywheel.providers.openai_compat import OpenAICompatAdapter, build_body, plain_body
from keywheel.secrets import ApiKey, RedactingFilter, Redactor, register
from keywheel.testing import FakeUpstream
from tests.helpers import WheelFactory

S, U, A = "system", "user", "assistant"


def msg(role: str, content: Any) -> dict[str, Any]:
    return {"role": role, "content": content}


# Messages the pass-through takes (translation gives them back as they are) ...
PASSED: list[list[dict[str, Any]]] = [
    [msg(U, "hi")],
    [msg(S, "Be brief."), msg(U, "What is 2+2?")],
    [msg(U, "a"), msg(A, "b"), msg(U, "c")],
    [msg(S, "s"), msg(A, "an assistant first"), msg(U, 'ü ✓ \n"quoted"')],
]
# ... and those it leaves to the translation, which would change them.
TRANSLATED: list[Any] = [
    [msg(U, "a"), msg(U, "b")],  # consecutive turns of one role merge
    [msg(U, "a"), msg(S, "late system")],  # a system message moves to the front
    [msg(S, "one"), msg(S, "two"), msg(U, "u")],  # two system messages join
    [msg(U, "")],  # an empty text part is dropped
    [msg(A, "a"), msg(A, "")],
    [msg(U, [{"type": "text", "text": "parts"}])],
    [{"role": U, "content": "x", "name": "alice"}],  # a field the translation drops
    [msg("developer", "d"), msg(U, "u")],  # developer becomes system
    [msg(S, "only a system prompt")],  # no turn: the translation's 400
    [{"role": "tool", "tool_call_id": "c1", "content": "r"}],
    ({"role": U, "content": "a tuple"},),
    [],
]


@pytest.mark.parametrize("messages", PASSED)
@pytest.mark.parametrize(
    ("max_tokens", "temperature", "extra", "stream"),
    [
        (None, None, {}, False),
        (64, 0.2, {}, False),
        (8, None, {"top_k": 3, "response_format": {"type": "json_object"}}, True),
    ],
)
def test_passed_messages_give_the_translations_body(
    messages: list[dict[str, Any]],
    max_tokens: int | None,
    temperature: float | None,
    extra: dict[str, Any],
    stream: bool,
) -> None:
    wire = openai_wire(messages)
    assert wire == messages and wire is not messages  # equal, and the caller's list is not sent on
    request = Wheel.request(messages, max_tokens=max_tokens, temperature=temperature, **extra)
    expected = build_body(request, "m", stream=stream)
    got = plain_body(wire, "m", max_tokens, temperature, extra, stream=stream)
    assert orjson.dumps(got) == orjson.dumps(expected)  # the same keys in the same order


@pytest.mark.parametrize("messages", TRANSLATED)
def test_other_messages_are_translated(messages: Sequence[Mapping[str, Any]]) -> None:
    assert openai_wire(messages) is None


def test_achat_passes_through_to_openrouter_and_translates_for_gemini(
    make_wheel: WheelFactory, fake: FakeUpstream
) -> None:
    messages = [msg(S, "Be brief."), msg(U, "What is 2+2?")]
    wheel = make_wheel(AI_PROVIDER="openrouter", FALLBACK_ORDER="gemini", openrouter=1)
    response = wheel.chat(messages, max_tokens=64, top_k=3)
    assert response.provider == "openrouter" and "from fake openai" in response.text
    assert [a.outcome for a in response.attempts] == ["ok"] and response.usage.output_tokens > 0
    (sent,) = fake.requests
    expected = build_body(Wheel.request(messages, max_tokens=64, top_k=3), sent.body["model"], stream=False)
    assert list(sent.body.items()) == list(expected.items())
    assert sent.headers["authorization"] == "Bearer test-openrouter-key-1"
    # The same call when OpenRouter fails: Gemini gets the translated request.
    fake.set("test-openrouter-key-1", "server_error")
    response = wheel.chat(messages, max_tokens=64)
    assert response.provider == "gemini"
    gemini = fake.requests[-1]
    assert gemini.dialect == "gemini" and gemini.body["systemInstruction"]["parts"][0]["text"] == "Be brief."
    assert gemini.body["generationConfig"]["maxOutputTokens"] == 64


def test_auth_headers_are_cached_per_key_and_copied_per_request() -> None:
    adapter = OpenAICompatAdapter()
    endpoint = Endpoint("openrouter", "https://openrouter.ai/api/v1", "m", {"X-Title": "app"})
    one = ApiKey("test-openrouter-key-1", "openrouter", "1", auth="bearer")
    two = ApiKey("test-openrouter-key-2", "openrouter", "2", auth="bearer")
    first = adapter.build_raw_request(endpoint, one, {"messages": []}, "m", stream=False)
    first.headers["anthropic-beta"] = "added by a caller"  # the gateway adds forwarded headers
    again = adapter.build_raw_request(endpoint, one, {"messages": []}, "m", stream=False)
    other = adapter.build_raw_request(endpoint, two, {"messages": []}, "m", stream=False)
    assert again.headers == {
        "content-type": "application/json",
        "x-title": "app",
        "authorization": "Bearer test-openrouter-key-1",
    }
    assert other.headers["authorization"] == "Bearer test-openrouter-key-2"
    assert len(endpoint.cache) == 2


# ------------------------------------------------------------------ the body's timer


async def test_body_timer_answers_408_and_leaves_the_task_clean() -> None:
    async def never() -> Message:
        await asyncio.sleep(3600)
        raise AssertionError("unreachable")

    task = asyncio.current_task()
    assert task is not None
    with pytest.raises(HttpError) as caught:
        await read_body({}, never, 1000, 0.05)
    assert caught.value.status == 408 and task.cancelling() == 0

    async def whole() -> Message:
        return {"type": "http.request", "body": b"{}", "more_body": False}

    assert await read_body({}, whole, 1000, 0.05) == b"{}"
    await asyncio.sleep(0.1)  # the timer was cancelled: nothing cancels this task now
    assert task.cancelling() == 0


async def test_a_cancellation_not_of_the_body_timer_passes_through() -> None:
    async def never() -> Message:
        await asyncio.sleep(3600)
        raise AssertionError("unreachable")

    reading = asyncio.create_task(read_body({}, never, 1000, 30))
    await asyncio.sleep(0.01)
    reading.cancel()
    with pytest.raises(asyncio.CancelledError):
        await reading


# ------------------------------------------------------------------ logs


SECRET = "k7Qz9XwP2mRt4LbN"  # random letters and digits, as the leak scans use


@pytest.fixture
def redactor() -> Redactor:
    return register(Redactor([SECRET]))


def record(text: str) -> logging.LogRecord:
    return logging.LogRecord("keywheel.test", logging.INFO, __file__, 1, "%s", (text,), None)


def test_filter_cleans_a_record_once_and_again_when_it_changed(redactor: Redactor) -> None:
    assert redactor.hits(SECRET)
    log_filter = RedactingFilter()
    rec = record(f"key {SECRET} here")
    assert log_filter.filter(rec) and rec.getMessage() == "key [redacted] here"
    cleaned = rec.msg
    assert log_filter.filter(rec) and rec.msg is cleaned  # a handler's filter: left as it is
    rec.msg, rec.args = f"changed since: {SECRET}", ()
    assert log_filter.filter(rec) and rec.getMessage() == "changed since: [redacted]"


def test_access_log_redacts_what_the_client_sent(redactor: Redactor, caplog: pytest.LogCaptureFixture) -> None:
    assert redactor.hits(SECRET)
    event = RequestFinished(
        "kw-1", "POST", f"/v1/models/{SECRET}", "openai", "m", "openrouter", "openrouter#1 …ab12", 1, 200, 1.25, 10, 20
    )
    with caplog.at_level(logging.INFO, logger="keywheel.access"):
        access_log(event)
    (line,) = [r for r in caplog.records if r.name == "keywheel.access"]
    assert line.getMessage() == (
        "POST /v1/models/[redacted] 200 openrouter openrouter#1 ...ab12 dialect=openai model=m attempts=1 id=kw-1 1.2ms"
    )
    assert line.funcName == "access_log" and line.pathname.endswith("observe.py")


def test_access_log_redacts_a_key_in_the_request_id_and_model(
    redactor: Redactor, caplog: pytest.LogCaptureFixture
) -> None:
    event = RequestFinished(
        f"id-{SECRET}", "POST", "/v1/chat/completions", "openai", f"m-{SECRET}", "openrouter", None, 1, 200, 1.0, 1, 1
    )
    with caplog.at_level(logging.INFO, logger="keywheel.access"):
        access_log(event)
    (line,) = [r for r in caplog.records if r.name == "keywheel.access"]
    text = line.getMessage() + repr(line.__dict__)
    assert SECRET not in text and "id-[redacted]" in text and "model=m-[redacted]" in text
