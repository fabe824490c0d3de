"""Inbound dialects, answers: rendered responses and streams, checked with the official SDKs' types
and clients (through ``httpx2.MockTransport``, so their accumulators run on the bytes)."""

from __future__ import annotations

from typing import Any

import anthropic
import httpx2
import openai
import orjson
import pydantic
import pytest
from anthropic.lib.streaming._messages import accumulate_event
from anthropic.types import RawMessageStreamEvent
from google.genai import errors as genai_errors
from google.genai import models as genai_models
from google.genai import types as gtypes
from openai.lib.streaming.chat import ChatCompletionStreamState
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from keywheel.errors import (
    Overloaded,
)
from keywheel.gateway.dialects.base import Dialect
from keywheel.types import (
    ChatResponse,
    StreamEnd,
    StreamEvent,
    TextDelta,
    ToolCallDelta,
    Usage,
)
from tests.gateway.dialect_helpers import (
    ANTHROPIC,
    EVENTS,
    GEMINI,
    OPENAI,
    RESPONSE,
    anthropic_client,
    genai_client,
    openai_client,
    serve,
    sse,
    stream_bytes,
)

# ====================================================================== responses


def test_openai_response_validates_and_reads_back() -> None:
    body = OPENAI.render_response(RESPONSE, "auto")
    completion = ChatCompletion.model_validate(body)
    assert completion.id == "chatcmpl-r1" and completion.model == "auto"
    choice = completion.choices[0]
    assert (choice.message.content, choice.finish_reason) == ("Two plus two is 4.", "tool_calls")
    call = choice.message.tool_calls[0] if choice.message.tool_calls else None
    assert call is not None and call.type == "function"
    assert (call.id, call.function.name, orjson.loads(call.function.arguments)) == ("call_1", "calc", {"expr": "2+2"})
    assert completion.usage is not None and (completion.usage.prompt_tokens, completion.usage.total_tokens) == (12, 19)
    only_calls = ChatResponse("", RESPONSE.tool_calls, "tool_calls", Usage(), "p", "m", "k", [])
    assert OPENAI.render_response(only_calls, "m")["choices"][0]["message"]["content"] is None
    empty = ChatResponse("", [], "length", Usage(), "p", "m", "k", [])
    message = OPENAI.render_response(empty, "m")["choices"][0]
    assert (message["message"]["content"], message["finish_reason"]) == ("", "length")


def test_anthropic_response_validates() -> None:
    message = anthropic.types.Message.model_validate(ANTHROPIC.render_response(RESPONSE, "auto"))
    assert message.id == "msg_r1" and message.stop_reason == "tool_use"
    text, call = message.content
    assert text.type == "text" and text.text == "Two plus two is 4."
    assert call.type == "tool_use" and (call.id, call.name, call.input) == ("call_1", "calc", {"expr": "2+2"})
    assert (message.usage.input_tokens, message.usage.output_tokens) == (12, 7)
    filtered = ChatResponse("", [], "content_filter", Usage(), "p", "m", "k", [], id="")
    rendered = ANTHROPIC.render_response(filtered, "m")
    assert rendered["stop_reason"] == "refusal" and rendered["content"] == [] and rendered["id"].startswith("msg_")


def test_gemini_response_validates() -> None:
    body = GEMINI.render_response(RESPONSE, "auto")
    strict = gtypes.GenerateContentResponse.model_validate(body)  # extra="forbid": no unknown field slips by
    sdk = gtypes.GenerateContentResponse._from_response(
        response=genai_models._GenerateContentResponse_from_mldev(body), kwargs={}
    )
    for response in (strict, sdk):
        candidate = response.candidates[0] if response.candidates else None
        assert candidate is not None and candidate.content is not None and candidate.content.parts
        text, call = candidate.content.parts
        assert text.text == "Two plus two is 4."
        assert call.function_call is not None and call.function_call.args == {"expr": "2+2"}
        assert call.thought_signature == b"sig"  # base64 "c2ln", echoed from ToolCall.extra
        assert candidate.finish_reason == gtypes.FinishReason.STOP
        assert response.usage_metadata is not None and response.usage_metadata.total_token_count == 19
        assert (response.model_version, response.response_id) == ("auto", "r1")
    empty = GEMINI.render_response(ChatResponse("", [], "length", Usage(), "p", "m", "k", []), "m")
    assert empty["candidates"][0]["content"]["parts"] == [{"text": ""}]
    assert empty["candidates"][0]["finishReason"] == "MAX_TOKENS"


def test_sdk_clients_read_rendered_responses() -> None:
    served = openai_client(serve(200, orjson.dumps(OPENAI.render_response(RESPONSE, "auto"))))
    completion = served.chat.completions.create(model="auto", messages=[{"role": "user", "content": "2+2?"}])
    assert completion.choices[0].message.content == "Two plus two is 4."
    client = anthropic_client(serve(200, orjson.dumps(ANTHROPIC.render_response(RESPONSE, "auto"))))
    message = client.messages.create(model="auto", max_tokens=10, messages=[{"role": "user", "content": "2+2?"}])
    assert message.stop_reason == "tool_use"
    gclient = genai_client(serve(200, orjson.dumps(GEMINI.render_response(RESPONSE, "auto"))))
    response = gclient.models.generate_content(model="gemini/gemini-2.5-flash", contents="2+2?")
    assert response.text == "Two plus two is 4." and response.function_calls
    assert response.function_calls[0].args == {"expr": "2+2"}


# ======================================================================== streams


def test_openai_stream_chunks_validate_and_accumulate() -> None:
    raw = stream_bytes(OPENAI, EVENTS)
    events = sse(raw)
    assert events[-1].data == "[DONE]"
    state = ChatCompletionStreamState()
    chunks = [ChatCompletionChunk.model_validate_json(e.data) for e in events[:-1]]
    for chunk in chunks:
        state.handle_chunk(chunk)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].choices == [] and chunks[-1].usage is not None and chunks[-1].usage.total_tokens == 19
    assert all(c.usage is None for c in chunks[:-1]) and len({c.id for c in chunks}) == 1
    final = state.get_final_completion()
    message = final.choices[0].message
    assert message.content == "Two plus two is ✓ 4."
    assert final.choices[0].finish_reason == "tool_calls"
    assert message.tool_calls is not None
    assert [(c.id, c.function.name, c.function.arguments) for c in message.tool_calls] == [
        ("toolu_1", "calc", '{"expr": "2+2"}'),
        ("toolu_2", "clock", ""),
    ]
    without_usage = sse(stream_bytes(OPENAI, EVENTS, include_usage=False))
    assert [orjson.loads(e.data).get("usage", "absent") for e in without_usage[:-1]] == ["absent"] * (
        len(without_usage) - 1
    )


def test_anthropic_stream_events_validate_and_accumulate() -> None:
    events = sse(stream_bytes(ANTHROPIC, EVENTS))
    adapter: pydantic.TypeAdapter[Any] = pydantic.TypeAdapter(RawMessageStreamEvent)
    parsed = [adapter.validate_json(e.data) for e in events]
    assert [e.event for e in events] == [p.type for p in parsed]
    assert [p.type for p in parsed] == [
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "content_block_start",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    starts = [p.index for p in parsed if p.type == "content_block_start"]
    stops = [p.index for p in parsed if p.type == "content_block_stop"]
    assert starts == stops == [0, 1, 2]
    snapshot = None
    buffers: dict[int, bytes] = {}
    for event in parsed:
        snapshot = accumulate_event(event=event, current_snapshot=snapshot, json_bufs=buffers)
    assert snapshot is not None
    final = anthropic.types.Message.model_validate(snapshot.model_dump())
    assert final.stop_reason == "tool_use" and (final.usage.input_tokens, final.usage.output_tokens) == (12, 7)
    assert [b.type for b in final.content] == ["text", "tool_use", "tool_use"]
    text, *uses = final.content
    assert isinstance(text, anthropic.types.TextBlock) and text.text == "Two plus two is ✓ 4."
    assert all(isinstance(b, anthropic.types.ToolUseBlock) for b in uses)
    assert [(b.id, b.name, b.input) for b in uses if isinstance(b, anthropic.types.ToolUseBlock)] == [
        ("toolu_1", "calc", {"expr": "2+2"}),
        ("toolu_2", "clock", {}),
    ]


def test_anthropic_text_after_a_tool_opens_a_new_block() -> None:
    events: list[StreamEvent] = [
        ToolCallDelta(0, id="t1", name="calc", arguments="{}"),
        TextDelta("done"),
        StreamEnd("stop", Usage()),
    ]
    parsed = [orjson.loads(e.data) for e in sse(stream_bytes(ANTHROPIC, events))]
    assert [(p["type"], p.get("index")) for p in parsed[1:-2]] == [
        ("content_block_start", 0),
        ("content_block_delta", 0),
        ("content_block_stop", 0),
        ("content_block_start", 1),
        ("content_block_delta", 1),
        ("content_block_stop", 1),
    ]


def test_gemini_stream_chunks_validate() -> None:
    raw = stream_bytes(GEMINI, EVENTS)
    assert raw.count(b"\r\n\r\n") == 3 and b"\n\n" not in raw.replace(b"\r\n\r\n", b"")
    chunks = [gtypes.GenerateContentResponse.model_validate_json(e.data) for e in sse(raw)]
    text = "".join(c.text or "" for c in chunks[:-1])
    assert text == "Two plus two is ✓ 4."
    last = chunks[-1]
    assert last.candidates and last.candidates[0].finish_reason == gtypes.FinishReason.STOP
    assert last.function_calls is not None
    assert [(c.id, c.name, c.args) for c in last.function_calls] == [
        ("toolu_1", "calc", {"expr": "2+2"}),
        ("toolu_2", "clock", {}),
    ]
    assert last.usage_metadata is not None and last.usage_metadata.candidates_token_count == 7
    assert len({c.response_id for c in chunks}) == 1
    ended = sse(stream_bytes(GEMINI, [TextDelta("hi"), StreamEnd("length", Usage(1, 1))]))
    assert orjson.loads(ended[-1].data)["candidates"][0]["content"]["parts"] == [{"text": ""}]


def _sse_response(raw: bytes) -> httpx2.Client:
    return serve(200, raw, {"content-type": "text/event-stream"})


def test_sdk_clients_read_rendered_streams() -> None:
    client = openai_client(_sse_response(stream_bytes(OPENAI, EVENTS)))
    chunks = list(
        client.chat.completions.create(model="auto", messages=[{"role": "user", "content": "x"}], stream=True)
    )
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Two plus two is ✓ 4."
    aclient = anthropic_client(_sse_response(stream_bytes(ANTHROPIC, EVENTS)))
    with aclient.messages.stream(model="auto", max_tokens=10, messages=[{"role": "user", "content": "x"}]) as stream:
        final = stream.get_final_message()
    assert final.content[1].type == "tool_use" and final.content[1].input == {"expr": "2+2"}
    gclient = genai_client(_sse_response(stream_bytes(GEMINI, EVENTS)))
    parts = [c for c in gclient.models.generate_content_stream(model="auto", contents="x")]
    assert parts[-1].function_calls is not None and parts[-1].function_calls[0].name == "calc"


def test_in_band_stream_errors_raise_in_each_sdk() -> None:
    exc = Overloaded("upstream overloaded", provider="gemini")

    def broken(dialect: Dialect) -> bytes:
        renderer = dialect.stream_renderer("auto", True)
        return renderer.start() + renderer.event(TextDelta("par")) + renderer.error(exc)

    raw = broken(OPENAI)
    assert raw.endswith(b"data: [DONE]\n\n")
    assert orjson.loads(sse(raw)[-2].data)["error"]["message"] == "upstream overloaded"
    client = openai_client(_sse_response(raw))
    with pytest.raises(openai.APIError, match="upstream overloaded"):
        list(client.chat.completions.create(model="auto", messages=[{"role": "user", "content": "x"}], stream=True))

    raw = broken(ANTHROPIC)
    last = sse(raw)[-1]
    assert last.event == "error"
    assert orjson.loads(last.data) == {
        "type": "error",
        "error": {"type": "overloaded_error", "message": "upstream overloaded"},
    }
    aclient = anthropic_client(_sse_response(raw))
    with pytest.raises(anthropic.APIStatusError, match="overloaded_error"):
        with aclient.messages.stream(model="auto", max_tokens=10, messages=[{"role": "user", "content": "x"}]) as s:
            s.get_final_message()

    raw = broken(GEMINI)
    assert raw.startswith(b"data: {") and raw.endswith(b"\r\n\r\n")
    assert orjson.loads(sse(raw)[-1].data) == {
        "error": {"code": 503, "message": "upstream overloaded", "status": "UNAVAILABLE"}
    }
    gclient = genai_client(_sse_response(raw))
    with pytest.raises(genai_errors.ServerError) as caught:
        list(gclient.models.generate_content_stream(model="auto", contents="x"))
    assert (caught.value.code, caught.value.status) == (503, "UNAVAILABLE")
