"""The official openai, anthropic and google-genai SDKs against a real ``keywheel serve``.

Each SDK talks over a real socket to a gateway process whose upstreams are the
fake upstream; in its own dialect (pass-through) and across dialects (translation).
"""

from __future__ import annotations

from typing import cast

import anthropic
import openai
import pytest
from google import genai
from google.genai import errors as genai_errors
from google.genai import types as gtypes
from openai.types.chat import (
    ChatCompletionMessageFunctionToolCall,
    ChatCompletionMessageParam,
    ChatCompletionToolParam,
)
from openai.types.chat import ChatCompletionMessageToolCallParam as ToolCallParam

from keywheel.testing import FakeUpstream
from tests.gateway.conftest import GATEWAY_KEY, GatewayFactory, Served

CALC: dict[str, object] = {"type": "object", "properties": {"expr": {"type": "string"}}, "required": ["expr"]}


def openai_client(served: Served, key: str = GATEWAY_KEY) -> openai.OpenAI:
    return openai.OpenAI(base_url=served.url + "/v1", api_key=key, max_retries=0, timeout=30)


def anthropic_client(served: Served, key: str = GATEWAY_KEY) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=served.url, api_key=key, max_retries=0, timeout=30)


def gemini_client(served: Served, key: str = GATEWAY_KEY, version: str | None = None) -> genai.Client:
    options = gtypes.HttpOptions(base_url=served.url, timeout=30_000)
    if version:
        options.api_version = version
    return genai.Client(api_key=key, http_options=options)


# ------------------------------------------------------------------ OpenAI SDK


@pytest.mark.parametrize(
    ("model", "upstream"), [("openrouter/openai/gpt-4o-mini", "openrouter"), ("gemini/gemini-2.5-flash", "gemini")]
)
def test_openai_sdk_chat_stream_and_tools(
    gateway: GatewayFactory, fake: FakeUpstream, model: str, upstream: str
) -> None:
    served = gateway(AI_PROVIDER="anthropic")
    client = openai_client(served)
    raw = client.chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": "hello"}], max_tokens=50
    )
    completion = raw.parse()
    assert raw.headers["x-keywheel-provider"] == upstream
    assert raw.headers["x-keywheel-key"].startswith(f"{upstream}#1 ")
    dialect = "openai" if upstream == "openrouter" else upstream
    assert f"from fake {dialect}" in (completion.choices[0].message.content or "")
    assert completion.usage is not None and completion.usage.completion_tokens > 0

    chunks = list(
        client.chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": "hello"}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.endswith("lazy dog.") and f"from fake {dialect}" in text
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0

    tools: list[ChatCompletionToolParam] = [{"type": "function", "function": {"name": "calc", "parameters": CALC}}]
    first = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "2+2?"}], tools=tools)
    assert first.choices[0].message.tool_calls
    call = first.choices[0].message.tool_calls[0]
    assert isinstance(call, ChatCompletionMessageFunctionToolCall), call
    assert first.choices[0].finish_reason == "tool_calls" and call.function.name == "calc"
    second = client.chat.completions.create(
        model=model,
        tools=tools,
        messages=[
            {"role": "user", "content": "2+2?"},
            {"role": "assistant", "content": None, "tool_calls": [cast(ToolCallParam, call.model_dump())]},
            {"role": "tool", "tool_call_id": call.id, "content": "4"},
        ],
    )
    assert "the tool said 4" in (second.choices[0].message.content or "")
    sent = [r for r in fake.requests if r.dialect == dialect]
    assert sent and all((r.key or "").startswith(f"test-{upstream}-key-") for r in sent)


# --------------------------------------------------------------- Anthropic SDK


@pytest.mark.parametrize(
    ("model", "upstream"),
    [("anthropic/claude-sonnet-4-6", "anthropic"), ("openrouter/anthropic/claude-sonnet-4", "openrouter")],
)
def test_anthropic_sdk_chat_stream_and_tools(gateway: GatewayFactory, model: str, upstream: str) -> None:
    served = gateway(AI_PROVIDER="gemini")
    client = anthropic_client(served)
    message = client.messages.create(
        model=model, max_tokens=64, system="Be brief.", messages=[{"role": "user", "content": "hello"}]
    )
    dialect = "openai" if upstream == "openrouter" else upstream
    assert isinstance(message.content[0], anthropic.types.TextBlock)
    assert f"from fake {dialect}" in message.content[0].text
    assert message.usage.output_tokens > 0 and message.stop_reason == "end_turn"

    with client.messages.stream(model=model, max_tokens=64, messages=[{"role": "user", "content": "hi"}]) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text.endswith("lazy dog.") and final.usage.output_tokens > 0

    tools: list[anthropic.types.ToolParam] = [{"name": "calc", "description": "math", "input_schema": CALC}]
    first = client.messages.create(
        model=model,
        max_tokens=64,
        tools=tools,
        messages=[{"role": "user", "content": "2+2?"}],
    )
    (use,) = [b for b in first.content if isinstance(b, anthropic.types.ToolUseBlock)]
    assert first.stop_reason == "tool_use" and use.name == "calc" and use.input == {"expr": "test"}
    second = client.messages.create(
        model=model,
        max_tokens=64,
        tools=tools,
        messages=[
            {"role": "user", "content": "2+2?"},
            {"role": "assistant", "content": [cast(anthropic.types.ToolUseBlockParam, use.model_dump())]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "4"}]},
        ],
    )
    assert isinstance(second.content[0], anthropic.types.TextBlock)
    assert "the tool said 4" in second.content[0].text


def test_anthropic_beta_header_travels_with_a_pass_through_body(gateway: GatewayFactory, fake: FakeUpstream) -> None:
    served = gateway(AI_PROVIDER="anthropic")
    client = anthropic_client(served)
    client.messages.create(
        model="auto",
        max_tokens=16,
        messages=[{"role": "user", "content": "hi"}],
        extra_headers={"anthropic-beta": "fine-grained-tool-streaming-2025-05-14"},
        extra_body={"metadata": {"user_id": "u-1"}},
    )
    (sent,) = fake.requests
    assert sent.headers["anthropic-beta"] == "fine-grained-tool-streaming-2025-05-14"
    assert sent.body["metadata"] == {"user_id": "u-1"}  # untouched by the pass-through
    assert sent.headers["anthropic-version"] == "2023-06-01"
    assert sent.key == "test-anthropic-key-1"


# ------------------------------------------------------------------ Gemini SDK


@pytest.mark.parametrize(
    ("model", "upstream", "version"),
    [
        ("gemini-2.5-flash", "gemini", None),  # the SDK's default API version (v1)
        ("gemini-2.5-flash", "gemini", "v1beta"),
        ("anthropic/claude-sonnet-4-6", "anthropic", None),
    ],
)
def test_gemini_sdk_chat_stream_and_tools(
    gateway: GatewayFactory, model: str, upstream: str, version: str | None
) -> None:
    served = gateway(AI_PROVIDER="openrouter")
    client = gemini_client(served, version=version)
    response = client.models.generate_content(model=model, contents="hello")
    assert f"from fake {upstream}" in (response.text or "")
    assert response.usage_metadata is not None and response.usage_metadata.candidates_token_count

    text = "".join(c.text or "" for c in client.models.generate_content_stream(model=model, contents="hello"))
    assert text.endswith("lazy dog.")

    tool = gtypes.Tool(function_declarations=[gtypes.FunctionDeclaration(name="calc", parameters_json_schema=CALC)])
    config = gtypes.GenerateContentConfig(
        tools=[tool], automatic_function_calling=gtypes.AutomaticFunctionCallingConfig(disable=True)
    )
    first = client.models.generate_content(model=model, contents="2+2?", config=config)
    (call,) = first.function_calls or []
    assert call.name == "calc" and call.args == {"expr": "test"}
    assert first.candidates and first.candidates[0].content
    contents: gtypes.ContentListUnion = [
        gtypes.Content(role="user", parts=[gtypes.Part(text="2+2?")]),
        first.candidates[0].content,
        gtypes.Content(role="user", parts=[gtypes.Part.from_function_response(name="calc", response={"content": "4"})]),
    ]
    second = client.models.generate_content(model=model, contents=contents, config=config)
    assert "the tool said" in (second.text or "") and "4" in (second.text or "")


# ----------------------------------------------------------------- exceptions


def test_each_sdk_raises_the_right_exception(gateway: GatewayFactory, fake: FakeUpstream) -> None:
    served = gateway(AI_PROVIDER="gemini", FALLBACK_ORDER="", gemini="2", openrouter="0", anthropic="0")
    oa, an, ge = openai_client(served), anthropic_client(served), gemini_client(served)
    msgs: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hello"}]
    amsgs: list[anthropic.types.MessageParam] = [{"role": "user", "content": "hello"}]  # the same, as the SDK types it

    # wrong gateway key → 401
    with pytest.raises(openai.AuthenticationError):
        openai_client(served, "wrong-key").chat.completions.create(model="auto", messages=msgs)
    with pytest.raises(anthropic.AuthenticationError):
        anthropic_client(served, "wrong-key").messages.create(model="auto", max_tokens=5, messages=amsgs)
    wrong = gemini_client(served, "wrong-key")  # keep a reference: a collected genai client closes its connection
    with pytest.raises(genai_errors.ClientError) as gerr:
        wrong.models.generate_content(model="auto", contents="x")
    assert gerr.value.code in (401, 403)

    # upstream 400 → 400, not retried
    fake.set("test-gemini-key-1", "bad_request")
    fake.set("test-gemini-key-2", "bad_request")
    with pytest.raises(openai.BadRequestError):
        oa.chat.completions.create(model="auto", messages=msgs)
    with pytest.raises(anthropic.BadRequestError):
        an.messages.create(model="auto", max_tokens=5, messages=amsgs)
    with pytest.raises(genai_errors.ClientError) as gerr:
        ge.models.generate_content(model="auto", contents="x")
    assert gerr.value.code == 400

    # every provider failing → 502
    fake.set("test-gemini-key-1", "server_error")
    fake.set("test-gemini-key-2", "server_error")
    with pytest.raises(openai.InternalServerError) as oerr:
        oa.chat.completions.create(model="auto", messages=msgs)
    assert oerr.value.status_code in (502, 503)
    assert "gemini#1" in str(oerr.value) and "test-gemini-key" not in str(oerr.value)
    with pytest.raises(anthropic.InternalServerError):
        an.messages.create(model="auto", max_tokens=5, messages=amsgs)
    with pytest.raises(genai_errors.ServerError):
        ge.models.generate_content(model="auto", contents="x")

    # every key resting → 429 with retry-after
    fake.set("test-gemini-key-1", "rate_limit", retry_after=60.0)
    fake.set("test-gemini-key-2", "rate_limit", retry_after=60.0)
    with pytest.raises(openai.RateLimitError) as rerr:
        oa.chat.completions.create(model="auto", messages=msgs)
    assert 50 <= int(rerr.value.response.headers["retry-after"]) <= 60
    with pytest.raises(anthropic.RateLimitError):
        an.messages.create(model="auto", max_tokens=5, messages=amsgs)
    with pytest.raises(genai_errors.ClientError) as gerr:
        ge.models.generate_content(model="auto", contents="x")
    assert gerr.value.code == 429
    # 3 bad requests (not retried) + 2 + 2 + 1 server errors (the 5th in a row opens gemini's breaker:
    # no retry) + 2 rate limits (every provider open: tried anyway), then nothing while the keys rest
    assert fake.count("test-gemini-key-1") + fake.count("test-gemini-key-2") == 3 + 5 + 2


def test_unknown_provider_prefix_is_404_in_the_callers_dialect(gateway: GatewayFactory) -> None:
    served = gateway(AI_PROVIDER="gemini")
    with pytest.raises(openai.NotFoundError):
        openai_client(served).chat.completions.create(
            model="mistral/large", messages=[{"role": "user", "content": "x"}]
        )
    with pytest.raises(anthropic.NotFoundError):
        anthropic_client(served).messages.create(
            model="mistral/large", max_tokens=5, messages=[{"role": "user", "content": "x"}]
        )


def test_models_lists(gateway: GatewayFactory) -> None:
    served = gateway(AI_PROVIDER="gemini")
    ids = [m.id for m in openai_client(served).models.list()]
    assert "auto" in ids and "gemini/gemini-2.5-flash" in ids
    client = gemini_client(served, version="v1beta")
    names = [m.name for m in client.models.list()]
    assert any("gemini" in (n or "") for n in names)
