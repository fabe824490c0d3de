"""The Responses API (``POST /v1/responses``) through a real ``keywheel serve`` over the fake upstream.

The openai SDK (``client.responses.create`` / ``.stream``) and the OpenAI Agents
SDK are the clients; every upstream dialect serves by translation.  Raw answers
and every streamed event are validated with pydantic ``TypeAdapter``s, since
the SDK's own parsing does not validate.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import openai
import pytest
from openai.types.responses import ResponseInputItemParam, ResponseInputParam

from keywheel.testing import FakeUpstream
from tests.gateway.conftest import ADMIN_KEY, GATEWAY_KEY, GatewayFactory, Served, start_gateway
from tests.gateway.responses_events import RESPONSE, check_order, validate_events
from tests.helpers import fake_env

CALC = {"type": "object", "properties": {"expr": {"type": "string"}}, "required": ["expr"]}
TOOLS: Any = [{"type": "function", "name": "calc", "description": "math", "parameters": CALC, "strict": False}]
# (model as the client names it, the provider that serves it, the fake's dialect, the model the fake reports)
UPSTREAMS = [
    ("anthropic/claude-sonnet-4-6", "anthropic", "anthropic", "claude-sonnet-4-6"),
    ("gemini/gemini-2.5-flash", "gemini", "gemini", "gemini-2.5-flash"),
    ("openrouter/openai/gpt-4o-mini", "openrouter", "openai", "openai/gpt-4o-mini"),
]


@pytest.fixture(scope="module")
def served(fake_server: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """One gateway (all three upstreams, anthropic first) for the tests that need no set-up of their own."""
    env = {**fake_env(fake_server), "AI_PROVIDER": "anthropic"}
    env.update({"KEYWHEEL_GATEWAY_KEYS": GATEWAY_KEY, "KEYWHEEL_ADMIN_KEY": ADMIN_KEY})
    gateway = start_gateway(env, tmp_path_factory.mktemp("responses") / "gateway.log")
    yield gateway
    gateway.stop()


def client_for(served: Served) -> openai.OpenAI:
    return openai.OpenAI(base_url=served.url + "/v1", api_key=GATEWAY_KEY, max_retries=0, timeout=30)


def raw_stream(client: openai.OpenAI, **params: Any) -> bytes:
    with client.responses.with_streaming_response.create(stream=True, **params) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        return b"".join(response.iter_bytes())


@pytest.mark.parametrize(("model", "provider", "dialect", "served_model"), UPSTREAMS)
def test_text_created_and_streamed(
    served: Served, fake: FakeUpstream, model: str, provider: str, dialect: str, served_model: str
) -> None:
    client = client_for(served)

    raw = client.responses.with_raw_response.create(
        model=model, input="hello", instructions="Be brief.", max_output_tokens=64, temperature=0.5
    )
    assert raw.headers["x-keywheel-provider"] == provider
    response = RESPONSE.validate_python(raw.http_response.json())
    assert response.id.startswith("resp_") and response.object == "response" and response.status == "completed"
    assert response.model == served_model  # the model that served, not the one asked for
    assert f"from fake {dialect}" in response.output_text
    assert response.usage is not None and response.usage.output_tokens > 0
    assert response.usage.total_tokens == response.usage.input_tokens + response.usage.output_tokens
    (sent,) = fake.requests
    assert sent.dialect == dialect and "Be brief." in str(sent.body)  # instructions became the system prompt

    walk = check_order(validate_events(raw_stream(client, model=model, input="hello")))
    assert walk.final is not None and walk.final.status == "completed" and walk.final.model == served_model
    (item,) = walk.items
    assert item["type"] == "message" and item["content"][0]["text"].endswith("lazy dog.")
    assert walk.final.output_text == item["content"][0]["text"]
    assert walk.final.usage is not None and walk.final.usage.output_tokens > 0

    with client.responses.stream(model=model, input=[{"role": "user", "content": "hi"}]) as stream:
        deltas = "".join(e.delta for e in stream if e.type == "response.output_text.delta")
        final = stream.get_final_response()
    assert final.output_text == deltas and f"from fake {dialect}" in deltas and deltas.endswith("lazy dog.")


@pytest.mark.parametrize(("model", "provider", "dialect", "served_model"), UPSTREAMS)
def test_function_call_round_trip(
    served: Served, fake: FakeUpstream, model: str, provider: str, dialect: str, served_model: str
) -> None:
    client = client_for(served)
    question: ResponseInputParam = [{"role": "user", "content": [{"type": "input_text", "text": "2+2?"}]}]

    raw = client.responses.with_raw_response.create(model=model, input=question, tools=TOOLS, tool_choice="auto")
    first = RESPONSE.validate_python(raw.http_response.json())
    (call,) = [item for item in first.output if item.type == "function_call"]
    assert (call.name, call.arguments) == ("calc", '{"expr":"test"}') and call.call_id
    assert first.status == "completed"

    # The second request carries the call and its output, as the SDK's own types dump them.
    output: ResponseInputItemParam = {"type": "function_call_output", "call_id": call.call_id, "output": "4"}
    history: Any = [*question, call.model_dump(exclude_none=True), output]
    second = client.responses.create(model=model, input=history, tools=TOOLS)
    assert "the tool said 4" in second.output_text and second.status == "completed"

    # The same round trip streamed: the call arrives through the function-call event path.
    walk = check_order(validate_events(raw_stream(client, model=model, input=question, tools=TOOLS)))
    (streamed,) = walk.items
    assert streamed["type"] == "function_call" and streamed["arguments"] == '{"expr":"test"}'
    assert walk.final is not None and [o.type for o in walk.final.output] == ["function_call"]
    again: Any = [*question, streamed, output]  # the streamed item sent back as the stream dumped it
    with client.responses.stream(model=model, tools=TOOLS, input=again) as stream:
        answer = stream.get_final_response()
    assert "the tool said 4" in answer.output_text

    # "the tool said 4" is the fake reading the result out of its own dialect's tool-result shape.
    assert [r.dialect for r in fake.requests] == [dialect] * 4


BAD_REQUESTS: list[tuple[dict[str, Any], str]] = [
    ({"input": "hi", "previous_response_id": "resp_123"}, "previous_response_id"),
    ({"input": "hi", "store": True}, "store"),
    ({"input": "hi", "conversation": "conv_1"}, "conversation"),
    ({"input": [{"role": "robot", "content": "hi"}]}, "input[0].role"),
    ({"input": [{"type": "web_search_call", "id": "ws_1"}]}, "input[0].type"),
    ({"input": "hi", "tools": [{"type": "web_search"}]}, "tools[0].type"),
    ({"input": [{"type": "function_call_output", "output": "4"}]}, "input[0].call_id"),
    ({"input": "hi", "max_output_tokens": "many"}, "max_output_tokens"),
]


def test_bad_and_stateful_requests_get_a_400_naming_the_field(served: Served, fake: FakeUpstream) -> None:
    client = client_for(served)
    for params, field in BAD_REQUESTS:
        with pytest.raises(openai.BadRequestError) as caught:
            client.responses.create(model="auto", **params)
        assert isinstance(caught.value.body, dict), caught.value.body
        message = caught.value.body["message"]
        assert caught.value.status_code == 400 and message.startswith(f"{field}: "), (field, message)
        if field in ("previous_response_id", "store", "conversation"):
            assert "keywheel is stateless: send the full conversation in input" in message
    assert not fake.requests
    # store: false and settings keywheel does not honour are accepted.
    answer = client.responses.create(
        model="auto", input="hi", store=False, truncation="auto", include=[], reasoning={"effort": "low"}
    )
    assert answer.status == "completed" and len(fake.requests) == 1


def test_every_key_resting_is_a_429_and_every_failure_a_502(gateway: GatewayFactory, fake: FakeUpstream) -> None:
    served = gateway(AI_PROVIDER="gemini", FALLBACK_ORDER="", gemini="2", openrouter="0", anthropic="0")
    client = client_for(served)
    keys = ("test-gemini-key-1", "test-gemini-key-2")
    for key in keys:
        fake.set(key, "server_error")
    with pytest.raises(openai.InternalServerError) as failed:
        client.responses.create(model="auto", input="hi")
    assert failed.value.status_code == 502
    with pytest.raises(openai.InternalServerError):  # a stream that fails before it starts: the same 502
        client.responses.create(model="auto", input="hi", stream=True)

    for key in keys:
        fake.set(key, "rate_limit", retry_after=30.0, times=1)
    with pytest.raises(openai.RateLimitError) as limited:
        client.responses.create(model="auto", input="hi")
    assert limited.value.response.headers["retry-after"] == "30"
    assert isinstance(limited.value.body, dict) and limited.value.body["type"] == "rate_limit_error"


def test_a_stream_broken_after_its_start_ends_with_error_and_failed(
    gateway: GatewayFactory, fake: FakeUpstream
) -> None:
    served = gateway(AI_PROVIDER="gemini", FALLBACK_ORDER="", gemini="1", openrouter="0", anthropic="0")
    fake.set("test-gemini-key-1", "stream_error", after=3)
    walk = check_order(validate_events(raw_stream(client_for(served), model="auto", input="hello")))
    assert walk.open_item == "message" and walk.final is None  # the text so far, then the failure
    assert walk.error


async def test_openai_agents_sdk_runs_an_agent_with_a_tool(
    gateway: GatewayFactory, fake: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Without this the Agents SDK sends traces to OpenAI with the caller's key.
    monkeypatch.setenv("OPENAI_AGENTS_DISABLE_TRACING", "1")
    import agents

    served = gateway("--log-level", "debug", AI_PROVIDER="anthropic")
    calls: list[str] = []

    @agents.function_tool
    def calc(expr: str) -> str:
        """Evaluate an arithmetic expression."""
        calls.append(expr)
        return "4"

    client = openai.AsyncOpenAI(base_url=served.url + "/v1", api_key=GATEWAY_KEY, max_retries=0, timeout=30)
    agents.set_tracing_disabled(True)
    agents.set_default_openai_client(client, use_for_tracing=False)
    try:  # the SDK's default model, model settings and API (Responses)
        agent = agents.Agent(name="math", instructions="Use the calculator.", tools=[calc])
        result = await agents.Runner.run(agent, "What is 2+2?")
        streamed = agents.Runner.run_streamed(agent, "What is 2+2?")
        async for _ in streamed.stream_events():
            pass
    finally:
        await client.close()
    assert calls == ["test", "test"]  # the fake called the tool with arguments fitting its schema
    assert "the tool said 4" in str(result.final_output) and "the tool said 4" in str(streamed.final_output)
    assert [r.dialect for r in fake.requests] == ["anthropic"] * 4
    log = served.log()
    assert log.count("POST /v1/responses 200") == 4 and "/v1/chat/completions" not in log
    # The default model settings send reasoning and text (verbosity) settings: accepted, named in the debug log.
    assert "responses: ignoring include, reasoning, text" in log
