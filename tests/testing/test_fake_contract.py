"""The fake upstream, driven by the official SDKs: if a fake wire shape drifts from
what openai / anthropic / google-genai parse, these tests fail.

Every client points at the loopback fake with made-up keys and no retries.
"""

from __future__ import annotations

import json
from typing import Any

import anthropic
import openai
import pytest
from openai.types.chat import ChatCompletionFunctionToolParam

from keywheel.testing import FakeUpstream

OPENAI_KEY = "test-openai-key-1"
ANTHROPIC_KEY = "test-anthropic-key-1"
GEMINI_KEY = "test-gemini-key-1"
CLAUDE = "claude-sonnet-4-6"
GEMINI = "gemini-2.5-flash"

FOX = "the quick brown fox jumps over the lazy dog."


# -- OpenAI / OpenRouter ---------------------------------------------------------------------------------------------

FLAVOURS = ["openai", "openrouter"]


def openai_client(fake: FakeUpstream, flavour: str) -> openai.OpenAI:
    base = fake.openai_base_url if flavour == "openai" else fake.openrouter_base_url
    return openai.OpenAI(base_url=base, api_key=OPENAI_KEY, max_retries=0)


CALC_OPENAI: ChatCompletionFunctionToolParam = {
    "type": "function",
    "function": {
        "name": "calc",
        "description": "evaluate arithmetic",
        "parameters": {
            "type": "object",
            "properties": {
                "expr": {"type": "string"},
                "precise": {"type": "boolean"},
                "digits": {"type": "integer"},
                "extra": {"type": "object"},
            },
        },
    },
}
OTHER_OPENAI: ChatCompletionFunctionToolParam = {
    "type": "function",
    "function": {"name": "other", "parameters": {"type": "object"}},
}
CALC_ARGS = {"expr": "test", "precise": True, "digits": 1, "extra": None}


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_openai_chat(fake: FakeUpstream, flavour: str) -> None:
    client = openai_client(fake, flavour)
    completion = client.chat.completions.create(
        model="gpt-4.1-mini", messages=[{"role": "user", "content": "What is two plus two?"}]
    )
    assert isinstance(completion, openai.types.chat.ChatCompletion)
    text = completion.choices[0].message.content
    assert text is not None and text.startswith("Reply ") and text.endswith(f"from fake openai: {FOX}")
    assert completion.choices[0].finish_reason == "stop"
    assert completion.id.startswith("chatcmpl-" if flavour == "openai" else "gen-")
    assert completion.usage is not None
    assert completion.usage.prompt_tokens == 5
    assert completion.usage.completion_tokens == len(text.split())
    assert completion.usage.total_tokens == 5 + len(text.split())
    [request] = fake.requests
    assert (request.dialect, request.key, request.stream) == ("openai", OPENAI_KEY, False)
    assert request.path == ("/v1/chat/completions" if flavour == "openai" else "/api/v1/chat/completions")
    assert request.body["messages"][0]["content"] == "What is two plus two?"


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_openai_stream_with_usage(fake: FakeUpstream, flavour: str) -> None:
    client = openai_client(fake, flavour)
    stream = client.chat.completions.create(
        model="gpt-4.1-mini",
        messages=[{"role": "user", "content": "hello"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    pieces: list[str] = []
    finishes: list[str] = []
    usage = None
    for chunk in stream:
        for choice in chunk.choices:
            if choice.delta.content:
                pieces.append(choice.delta.content)
            if choice.finish_reason:
                finishes.append(choice.finish_reason)
        if chunk.usage is not None:
            usage = chunk.usage
    text = "".join(pieces)
    assert len(pieces) > 5
    assert text.endswith(f"from fake openai: {FOX}")
    assert usage is not None and usage.completion_tokens == len(text.split()) and usage.prompt_tokens == 1
    # OpenRouter's current docs repeat finish_reason on the usage chunk; OpenAI sends choices: [] there.
    assert finishes == (["stop"] if flavour == "openai" else ["stop", "stop"])
    assert fake.requests[0].stream is True


def test_openrouter_streams_usage_without_asking(fake: FakeUpstream) -> None:
    stream = openai_client(fake, "openrouter").chat.completions.create(
        model="openai/gpt-4o", messages=[{"role": "user", "content": "hi"}], stream=True
    )
    usages = [chunk.usage for chunk in stream if chunk.usage is not None]
    assert len(usages) == 1 and usages[0].total_tokens > 0


def test_openai_stream_without_include_usage_has_no_usage(fake: FakeUpstream) -> None:
    stream = openai_client(fake, "openai").chat.completions.create(
        model="gpt-4.1-mini", messages=[{"role": "user", "content": "hi"}], stream=True
    )
    assert all(chunk.usage is None for chunk in stream)


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_openai_tool_round_trip(fake: FakeUpstream, flavour: str) -> None:
    client = openai_client(fake, flavour)
    messages: list[Any] = [{"role": "user", "content": "compute 2+2"}]
    first = client.chat.completions.create(model="gpt-4.1-mini", messages=messages, tools=[CALC_OPENAI, OTHER_OPENAI])
    assert first.choices[0].finish_reason == "tool_calls"
    message = first.choices[0].message
    assert message.tool_calls is not None and len(message.tool_calls) == 1
    call = message.tool_calls[0]
    assert call.type == "function" and call.function.name == "calc"
    assert json.loads(call.function.arguments) == CALC_ARGS
    messages.append(message.model_dump(exclude_none=True))
    messages.append({"role": "tool", "tool_call_id": call.id, "content": "4"})
    second = client.chat.completions.create(model="gpt-4.1-mini", messages=messages, tools=[CALC_OPENAI])
    assert second.choices[0].finish_reason == "stop"
    assert second.choices[0].message.content is not None
    assert second.choices[0].message.content.endswith("from fake openai: the tool said 4")


def test_openai_tool_choice_is_honoured(fake: FakeUpstream) -> None:
    client = openai_client(fake, "openai")
    messages: list[Any] = [{"role": "user", "content": "hi"}]
    named = client.chat.completions.create(
        model="m",
        messages=messages,
        tools=[CALC_OPENAI, OTHER_OPENAI],
        tool_choice={"type": "function", "function": {"name": "other"}},
    )
    assert named.choices[0].message.tool_calls is not None
    call = named.choices[0].message.tool_calls[0]
    assert call.type == "function" and call.function.name == "other"
    none = client.chat.completions.create(model="m", messages=messages, tools=[CALC_OPENAI], tool_choice="none")
    assert none.choices[0].message.tool_calls is None and none.choices[0].finish_reason == "stop"


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_openai_streamed_tool_call(fake: FakeUpstream, flavour: str) -> None:
    stream = openai_client(fake, flavour).chat.completions.create(
        model="gpt-4.1-mini", messages=[{"role": "user", "content": "compute"}], tools=[CALC_OPENAI], stream=True
    )
    name, arguments, finish, fragments = "", "", None, 0
    for chunk in stream:
        for choice in chunk.choices:
            for tool_call in choice.delta.tool_calls or []:
                assert tool_call.index == 0
                name += tool_call.function.name or "" if tool_call.function else ""
                if tool_call.function and tool_call.function.arguments:
                    arguments += tool_call.function.arguments
                    fragments += 1
            finish = choice.finish_reason or finish
    assert (name, finish) == ("calc", "tool_calls")
    assert fragments > 1 and json.loads(arguments) == CALC_ARGS


OPENAI_ERRORS = [
    ("rate_limit", openai.RateLimitError, 429),
    ("invalid", openai.AuthenticationError, 401),
    ("forbidden", openai.PermissionDeniedError, 403),
    ("not_found", openai.NotFoundError, 404),
    ("bad_request", openai.BadRequestError, 400),
    ("context_too_long", openai.BadRequestError, 400),
    ("server_error", openai.InternalServerError, 500),
    ("overloaded", openai.InternalServerError, 503),
]


@pytest.mark.parametrize("flavour", FLAVOURS)
@pytest.mark.parametrize(("kind", "error", "status"), OPENAI_ERRORS)
def test_openai_errors(fake: FakeUpstream, flavour: str, kind: str, error: type[Exception], status: int) -> None:
    fake.set(OPENAI_KEY, kind)
    with pytest.raises(error) as caught:
        openai_client(fake, flavour).chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
    assert isinstance(caught.value, openai.APIStatusError) and caught.value.status_code == status
    assert OPENAI_KEY not in str(caught.value)


def test_openai_error_codes(fake: FakeUpstream) -> None:
    client = openai_client(fake, "openai")
    for kind, code in [("context_too_long", "context_length_exceeded"), ("quota", "insufficient_quota")]:
        fake.set(OPENAI_KEY, kind)
        with pytest.raises(openai.APIStatusError) as caught:
            client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
        assert caught.value.code == code
    assert isinstance(caught.value, openai.RateLimitError)  # OpenAI's quota-gone is a 429


def test_openrouter_credits_gone_is_402(fake: FakeUpstream) -> None:
    fake.set(OPENAI_KEY, "quota")
    with pytest.raises(openai.APIStatusError) as caught:
        openai_client(fake, "openrouter").chat.completions.create(
            model="m", messages=[{"role": "user", "content": "x"}]
        )
    assert caught.value.status_code == 402
    assert isinstance(caught.value.body, dict)
    assert caught.value.body["metadata"]["limit_source"] == "openrouter_credits"


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_openai_in_band_stream_error(fake: FakeUpstream, flavour: str) -> None:
    fake.set(OPENAI_KEY, "stream_error", after=3)
    stream = openai_client(fake, flavour).chat.completions.create(
        model="m", messages=[{"role": "user", "content": "x"}], stream=True
    )
    pieces: list[str] = []
    with pytest.raises(openai.APIError) as caught:
        for chunk in stream:
            pieces += [c.delta.content for c in chunk.choices if c.delta.content]
    assert len(pieces) == 3
    assert not isinstance(caught.value, openai.APIStatusError)


def test_openrouter_failed_choice_without_streaming(fake: FakeUpstream) -> None:
    fake.set(OPENAI_KEY, "stream_error")
    completion = openai_client(fake, "openrouter").chat.completions.create(
        model="m", messages=[{"role": "user", "content": "x"}]
    )
    # OpenRouter's "error" is not among the SDK's Literal finish reasons (pydantic keeps it as sent)
    assert completion.choices[0].finish_reason == "error"  # type: ignore[comparison-overlap]
    assert (completion.choices[0].model_extra or {})["error"]["code"] == 503


def test_openai_broken_stream_is_a_connection_error(fake: FakeUpstream) -> None:
    fake.set(OPENAI_KEY, "break_stream", after=4)
    stream = openai_client(fake, "openai").chat.completions.create(
        model="m", messages=[{"role": "user", "content": "x"}], stream=True
    )
    pieces: list[str] = []
    with pytest.raises(openai.APIConnectionError):
        for chunk in stream:
            pieces += [c.delta.content for c in chunk.choices if c.delta.content]
    assert len(pieces) == 4


def test_openai_models_list(fake: FakeUpstream) -> None:
    for flavour in FLAVOURS:
        models = list(openai_client(fake, flavour).models.list())
        assert models and all(m.object == "model" and m.owned_by for m in models)
    assert openai_client(fake, "openai").models.retrieve("gpt-4.1-mini").id == "gpt-4.1-mini"
    assert [r.dialect for r in fake.requests] == ["openai", "openai", "openai"]


async def test_async_openai_client(fake: FakeUpstream) -> None:
    client = openai.AsyncOpenAI(base_url=fake.openai_base_url, api_key=OPENAI_KEY, max_retries=0)
    async with client:
        completion = await client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
        stream = await client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "x"}], stream=True
        )
        pieces = [c.choices[0].delta.content async for c in stream if c.choices and c.choices[0].delta.content]
    assert completion.choices[0].message.content and len(pieces) > 5


# -- Anthropic -------------------------------------------------------------------------------------------------------


def anthropic_client(fake: FakeUpstream, **kwargs: Any) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=fake.anthropic_base_url, api_key=ANTHROPIC_KEY, max_retries=0, **kwargs)


CALC_ANTHROPIC: Any = {
    "name": "calc",
    "description": "arithmetic",
    "input_schema": CALC_OPENAI["function"]["parameters"],
}


def test_anthropic_messages(fake: FakeUpstream) -> None:
    message = anthropic_client(fake).messages.create(
        model=CLAUDE, max_tokens=100, system="Be brief.", messages=[{"role": "user", "content": "What is 2+2?"}]
    )
    assert message.id.startswith("msg_") and message.role == "assistant" and message.model == CLAUDE
    assert message.stop_reason == "end_turn"
    block = message.content[0]
    assert isinstance(block, anthropic.types.TextBlock)
    assert block.text.endswith(f"from fake anthropic: {FOX}")
    assert message.usage.input_tokens == 5 and message.usage.output_tokens == len(block.text.split())
    [request] = fake.requests
    # anthropic 2.14 sends the key as a Bearer token and the 2026-10-21 version by default
    assert request.headers["authorization"] == f"Bearer {ANTHROPIC_KEY}"
    assert request.headers["anthropic-version"] == "2026-10-21"
    assert (request.dialect, request.key, request.path) == ("anthropic", ANTHROPIC_KEY, "/v1/messages")


def test_anthropic_stream(fake: FakeUpstream) -> None:
    with anthropic_client(fake).messages.stream(
        model=CLAUDE, max_tokens=100, messages=[{"role": "user", "content": "hello"}]
    ) as stream:
        pieces = list(stream.text_stream)
        final = stream.get_final_message()
    assert len(pieces) > 5
    text = "".join(pieces)
    assert text.endswith(f"from fake anthropic: {FOX}")
    assert final.stop_reason == "end_turn"
    assert isinstance(final.content[0], anthropic.types.TextBlock) and final.content[0].text == text
    assert final.usage.input_tokens == 1 and final.usage.output_tokens == len(text.split())
    assert fake.requests[0].stream is True


def test_anthropic_tool_round_trip(fake: FakeUpstream) -> None:
    client = anthropic_client(fake)
    messages: list[Any] = [{"role": "user", "content": "compute 2+2"}]
    first = client.messages.create(model=CLAUDE, max_tokens=100, messages=messages, tools=[CALC_ANTHROPIC])
    assert first.stop_reason == "tool_use"
    call = first.content[0]
    assert isinstance(call, anthropic.types.ToolUseBlock)
    assert call.name == "calc" and call.input == CALC_ARGS and call.id.startswith("toolu_")
    messages.append({"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]})
    messages.append({"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "4"}]})
    second = client.messages.create(model=CLAUDE, max_tokens=100, messages=messages, tools=[CALC_ANTHROPIC])
    assert second.stop_reason == "end_turn"
    assert isinstance(second.content[0], anthropic.types.TextBlock)
    assert second.content[0].text.endswith("from fake anthropic: the tool said 4")


def test_anthropic_streamed_tool_use(fake: FakeUpstream) -> None:
    with anthropic_client(fake).messages.stream(
        model=CLAUDE, max_tokens=100, messages=[{"role": "user", "content": "compute"}], tools=[CALC_ANTHROPIC]
    ) as stream:
        final = stream.get_final_message()
    assert final.stop_reason == "tool_use"
    assert isinstance(final.content[0], anthropic.types.ToolUseBlock) and final.content[0].input == CALC_ARGS


ANTHROPIC_ERRORS: list[tuple[str, type[Exception], int]] = [
    ("rate_limit", anthropic.RateLimitError, 429),
    ("invalid", anthropic.AuthenticationError, 401),
    ("quota", anthropic.PaymentRequiredError, 402),
    ("forbidden", anthropic.PermissionDeniedError, 403),
    ("not_found", anthropic.NotFoundError, 404),
    ("bad_request", anthropic.BadRequestError, 400),
    ("context_too_long", anthropic.BadRequestError, 400),
    ("server_error", anthropic.InternalServerError, 500),
    ("overloaded", anthropic.OverloadedError, 529),
]


@pytest.mark.parametrize(("kind", "error", "status"), ANTHROPIC_ERRORS)
def test_anthropic_errors(fake: FakeUpstream, kind: str, error: type[Exception], status: int) -> None:
    fake.set(ANTHROPIC_KEY, kind)
    with pytest.raises(error) as caught:
        anthropic_client(fake).messages.create(model=CLAUDE, max_tokens=10, messages=[{"role": "user", "content": "x"}])
    assert isinstance(caught.value, anthropic.APIStatusError) and caught.value.status_code == status
    assert caught.value.request_id is not None and caught.value.request_id.startswith("req_")
    assert ANTHROPIC_KEY not in str(caught.value)


def test_anthropic_in_band_stream_error(fake: FakeUpstream) -> None:
    fake.set(ANTHROPIC_KEY, "stream_error", after=2)
    pieces: list[str] = []
    with pytest.raises(anthropic.APIStatusError) as caught:
        with anthropic_client(fake).messages.stream(
            model=CLAUDE, max_tokens=10, messages=[{"role": "user", "content": "x"}]
        ) as stream:
            for text in stream.text_stream:
                pieces.append(text)
    assert len(pieces) == 2
    assert caught.value.status_code == 200  # the error came after HTTP 200
    assert isinstance(caught.value.body, dict) and caught.value.body["error"]["type"] == "overloaded_error"


def test_anthropic_strict_version_rejects_temperature(fake: FakeUpstream) -> None:
    # anthropic 2.14's messages.create() has no temperature parameter any more: send it as an extra
    messages: Any = [{"role": "user", "content": "x"}]
    sampling: Any = {"temperature": 0.2}
    with pytest.raises(anthropic.BadRequestError, match="temperature"):
        anthropic_client(fake).messages.create(model=CLAUDE, max_tokens=10, messages=messages, extra_body=sampling)
    pinned = anthropic_client(fake, default_headers={"anthropic-version": "2023-06-01"})
    assert pinned.messages.create(model=CLAUDE, max_tokens=10, messages=messages, extra_body=sampling).content
    assert fake.requests[-1].body["temperature"] == 0.2


def test_anthropic_models_list(fake: FakeUpstream) -> None:
    models = list(anthropic_client(fake).models.list())
    assert models and all(m.type == "model" and m.display_name for m in models)
    assert anthropic_client(fake).models.retrieve(CLAUDE).id == CLAUDE
    assert [(r.dialect, r.path) for r in fake.requests] == [
        ("anthropic", "/v1/models"),
        ("anthropic", f"/v1/models/{CLAUDE}"),
    ]
