"""The inbound dialects: parse client bodies, render answers, streams and errors.

Pure calls, no mocks of keywheel.  What we render is checked against the
official SDKs twice: with their pydantic types (every chunk, every event), and
end to end, by serving the bytes to a real SDK client through
``httpx2.MockTransport`` (the SDKs' own HTTP client), so their stream
accumulators and status-to-exception mapping run on it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anthropic
import httpx2
import openai
import orjson
import pydantic
import pytest
from anthropic.lib.streaming._messages import accumulate_event
from anthropic.types import RawMessageStreamEvent
from google import genai
from google.genai import errors as genai_errors
from google.genai import models as genai_models
from google.genai import types as gtypes
from openai.lib.streaming.chat import ChatCompletionStreamState
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from keywheel.errors import (
    AllProvidersFailed,
    BadRequest,
    ConfigError,
    ContentFiltered,
    ContextTooLong,
    KeyInvalid,
    KeywheelError,
    ModelNotFound,
    NetworkError,
    NoKeyAvailable,
    Overloaded,
    QuotaExhausted,
    RateLimited,
    ServerError,
    Timeout,
)
from keywheel.gateway.dialects import DIALECTS, AnthropicDialect, GeminiDialect, OpenAIDialect
from keywheel.gateway.dialects.base import Dialect
from keywheel.sse import SSEDecoder, SSEEvent
from keywheel.types import (
    Attempt,
    ChatResponse,
    ImagePart,
    StreamEnd,
    StreamEvent,
    TextDelta,
    TextPart,
    ToolCall,
    ToolCallDelta,
    ToolResultPart,
    Usage,
)

OPENAI = OpenAIDialect()
ANTHROPIC = AnthropicDialect()
GEMINI = GeminiDialect()
CALC_SCHEMA = {"type": "object", "properties": {"expr": {"type": "string"}}}
BASE = "http://gateway.test"

RESPONSE = ChatResponse(
    text="Two plus two is 4.",
    tool_calls=[ToolCall("call_1", "calc", {"expr": "2+2"}, {"thoughtSignature": "c2ln"})],
    finish_reason="tool_calls",
    usage=Usage(12, 7),
    provider="gemini",
    model="gemini-2.5-flash",
    key="gemini#1 …abcd",
    attempts=[],
    id="r1",
)
# Text, then a call in two fragments, then a call with no arguments, then the end.
EVENTS: list[StreamEvent] = [
    TextDelta("Two plus"),
    TextDelta(" two is ✓ 4."),
    ToolCallDelta(0, id="toolu_1", name="calc", arguments='{"expr": '),
    ToolCallDelta(0, arguments='"2+2"}'),
    ToolCallDelta(1, id="toolu_2", name="clock"),
    StreamEnd("tool_calls", Usage(12, 7)),
]


def stream_bytes(dialect: Dialect, events: list[StreamEvent], *, include_usage: bool = True) -> bytes:
    renderer = dialect.stream_renderer("auto", include_usage)
    return renderer.start() + b"".join(renderer.event(ev) for ev in events)


def sse(raw: bytes) -> list[SSEEvent]:
    decoder = SSEDecoder()
    return decoder.feed(raw) + decoder.close()


def transport(handler: Callable[[httpx2.Request], httpx2.Response]) -> httpx2.Client:
    return httpx2.Client(transport=httpx2.MockTransport(handler))


def serve(status: int, body: bytes, headers: dict[str, str] | None = None) -> httpx2.Client:
    return transport(lambda _req: httpx2.Response(status, content=body, headers=headers))


def openai_client(http: httpx2.Client) -> openai.OpenAI:
    return openai.OpenAI(api_key="gw-key", base_url=f"{BASE}/v1", http_client=http, max_retries=0)


def anthropic_client(http: httpx2.Client) -> anthropic.Anthropic:
    return anthropic.Anthropic(api_key="gw-key", base_url=BASE, http_client=http, max_retries=0)


def genai_client(http: httpx2.Client) -> genai.Client:
    options = gtypes.HttpOptions(base_url=BASE, api_version="v1beta", httpx_client=http)
    return genai.Client(api_key="gw-key", http_options=options)


# ======================================================================= requests


def test_registry_names_match_the_adapters_dialects() -> None:
    assert {name: type(d) for name, d in DIALECTS.items()} == {
        "openai": OpenAIDialect,
        "anthropic": AnthropicDialect,
        "gemini": GeminiDialect,
    }


def test_openai_documented_request() -> None:
    body = {
        "model": "gpt-4.1-mini",
        "max_completion_tokens": 256,
        "temperature": 0.2,
        "stop": ["END"],
        "stream": True,
        "stream_options": {"include_usage": True},
        "messages": [
            {"role": "system", "content": "Be brief."},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Describe:"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBOR"}},
                ],
            },
        ],
        "tools": [{"type": "function", "function": {"name": "calc", "description": "math", "parameters": CALC_SCHEMA}}],
        "tool_choice": {"type": "function", "function": {"name": "calc"}},
        "n": 1,
        "seed": 7,
        "logprobs": False,
    }
    inbound = OPENAI.parse_request(body)
    req = inbound.request
    assert (inbound.model, inbound.stream, inbound.include_usage) == ("gpt-4.1-mini", True, True)
    assert req.system == "Be brief."
    assert req.messages[0].content == [TextPart("Describe:"), ImagePart(media_type="image/png", data="iVBOR")]
    assert (req.max_tokens, req.temperature, req.stop, req.tool_choice) == (256, 0.2, ["END"], "calc")
    assert req.tools is not None and req.tools[0].parameters == CALC_SCHEMA
    assert req.extra == {} and inbound.untranslatable == []
    assert OPENAI.peek(body) == ("gpt-4.1-mini", True)


def test_openai_tool_round_trip_and_defaults() -> None:
    body = {
        "model": "auto",
        "max_tokens": 50,
        "stop": "END",
        "messages": [
            {"role": "user", "content": "2+2?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"id": "call_1", "type": "function", "function": {"name": "calc", "arguments": '{"expr":"2+2"}'}}
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "4"},
        ],
        "tool_choice": "auto",  # without tools: dropped
    }
    inbound = OPENAI.parse_request(body)
    req = inbound.request
    assert (inbound.stream, inbound.include_usage, req.max_tokens, req.stop, req.tool_choice) == (
        False,
        False,
        50,
        ["END"],
        None,
    )
    assert req.messages[1].content == [ToolCall("call_1", "calc", {"expr": "2+2"})]
    assert req.messages[2].content == [ToolResultPart("call_1", "4")]


def test_openai_untranslatable_parts_are_noted_not_lost_silently() -> None:
    file_part = {"type": "file", "file": {"file_id": "file-1"}}
    body = {"model": "m", "messages": [{"role": "user", "content": [file_part, {"type": "text", "text": "sum up"}]}]}
    inbound = OPENAI.parse_request(body)
    assert inbound.request.messages[0].content[1] == TextPart("sum up")
    assert inbound.untranslatable == [
        "messages[0].content[0]: a part of type 'file' cannot be translated for a provider of another API dialect"
    ]
    assert body["messages"][0]["content"][0] is file_part  # the client's body is untouched, for pass-through
    with pytest.raises(BadRequest) as caught:
        inbound.check_translatable()
    assert caught.value.message.startswith("messages[0].content[0]: a part of type 'file'")
    # a malformed part after a blanked one is still named by its own index
    body["messages"][0]["content"][1] = {"type": "text", "text": 5}
    with pytest.raises(BadRequest) as caught:
        OPENAI.parse_request(body)
    assert caught.value.message.startswith("messages[0].content[1].text: ")


def test_anthropic_documented_request() -> None:
    body = {
        "model": "claude-sonnet-4-5",
        "max_tokens": 256,
        "system": "Be brief.",
        "temperature": 0.2,
        "messages": [{"role": "user", "content": "What is 2+2?"}],
    }
    inbound = ANTHROPIC.parse_request(body)
    assert (inbound.model, inbound.stream, inbound.request.max_tokens) == ("claude-sonnet-4-5", False, 256)
    assert (inbound.request.system, inbound.request.temperature) == ("Be brief.", 0.2)
    assert inbound.request.messages[0].content == [TextPart("What is 2+2?")]


def test_anthropic_blocks_tools_and_choices() -> None:
    body = {
        "model": "auto",
        "max_tokens": 100,
        "stream": True,
        "system": [
            {"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}},
            {"type": "text", "text": "Be kind."},
        ],
        "stop_sequences": ["END"],
        "metadata": {"user_id": "u1"},
        "thinking": {"type": "enabled", "budget_tokens": 1024},
        "tools": [
            {"name": "calc", "description": "math", "input_schema": CALC_SCHEMA},
            {"type": "web_search_20250305", "name": "web_search", "max_uses": 3},
        ],
        "tool_choice": {"type": "any"},
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Look:"},
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBOR"}},
                    {"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}},
                ],
            },
            {
                "role": "assistant",
                "content": [
                    {"type": "thinking", "thinking": "hmm", "signature": "sig"},
                    {"type": "tool_use", "id": "toolu_1", "name": "calc", "input": {"expr": "2+2"}},
                ],
            },
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_1", "content": [{"type": "text", "text": "4"}]},
                    {"type": "tool_result", "tool_use_id": "toolu_1", "content": "boom", "is_error": True},
                ],
            },
        ],
    }
    inbound = ANTHROPIC.parse_request(body)
    req = inbound.request
    assert inbound.stream and inbound.untranslatable == []
    assert req.system == "Be brief.\n\nBe kind."
    assert (req.stop, req.tool_choice, req.extra) == (["END"], "required", {})
    assert req.tools is not None and [t.name for t in req.tools] == ["calc"]  # the server tool is dropped
    assert req.messages[0].content[1:] == [
        ImagePart(media_type="image/png", data="iVBOR"),
        ImagePart(url="https://example.com/a.png"),
    ]
    assert req.messages[1].content == [ToolCall("toolu_1", "calc", {"expr": "2+2"})]  # thinking dropped
    assert req.messages[2].content == [
        ToolResultPart("toolu_1", "4", "calc"),
        ToolResultPart("toolu_1", "boom", "calc", is_error=True),
    ]
    body["tool_choice"] = {"type": "tool", "name": "calc"}
    assert ANTHROPIC.parse_request(body).request.tool_choice == "calc"


def test_anthropic_untranslatable_blocks() -> None:
    document = {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBER"}}
    body = {"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": [document]}]}
    inbound = ANTHROPIC.parse_request(body)
    assert inbound.request.messages[0].content == []
    assert inbound.untranslatable[0].startswith("messages[0].content[0]: a block of type 'document' cannot be")
    with pytest.raises(BadRequest):
        inbound.check_translatable()


def test_gemini_documented_request() -> None:
    body = {
        "systemInstruction": {"parts": [{"text": "Be brief."}]},
        "contents": [{"role": "user", "parts": [{"text": "What is 2+2?"}]}],
        "generationConfig": {"maxOutputTokens": 256, "temperature": 0.2, "stopSequences": ["END"], "topK": 3},
        "safetySettings": [{"category": "HARM_CATEGORY_HARASSMENT", "threshold": "BLOCK_NONE"}],
    }
    inbound = GEMINI.parse_request(body, "gemini-2.5-flash")
    req = inbound.request
    assert (inbound.model, inbound.stream) == ("gemini-2.5-flash", False)
    assert (req.system, req.max_tokens, req.temperature, req.stop, req.extra) == ("Be brief.", 256, 0.2, ["END"], {})
    assert req.messages[0].content == [TextPart("What is 2+2?")]
    assert GEMINI.parse_request(body, "models/gemini/gemini-2.5-flash:streamGenerateContent").stream
    assert GEMINI.parse_request(body, "gemini-2.5-flash", stream=True).stream
    assert GEMINI.peek(body, "openrouter/meta-llama/llama-3.3-70b-instruct:free:generateContent") == (
        "openrouter/meta-llama/llama-3.3-70b-instruct:free",
        False,
    )


def test_gemini_function_calls_get_ids_and_responses_match_by_name() -> None:
    body = {
        "contents": [
            {
                "role": "user",
                "parts": [
                    {"text": "Two sums and the time?"},
                    {"inlineData": {"mimeType": "image/png", "data": "iVBOR"}},
                ],
            },
            {
                "role": "model",
                "parts": [
                    {"functionCall": {"name": "calc", "args": {"expr": "1+1"}}, "thoughtSignature": "c2ln"},
                    {"functionCall": {"name": "clock"}},
                    {"functionCall": {"name": "calc", "args": {"expr": "2+2"}}},
                ],
            },
            {
                "role": "user",
                "parts": [
                    {"functionResponse": {"name": "calc", "response": {"content": "2"}}},
                    {"functionResponse": {"name": "clock", "response": {"time": "noon"}}},
                    {"functionResponse": {"name": "calc", "response": {"error": "overflow"}}},
                ],
            },
        ],
        "tools": [
            {
                "functionDeclarations": [
                    {
                        "name": "calc",
                        "parameters": {
                            "type": "OBJECT",
                            "properties": {"expr": {"type": "STRING", "nullable": True}},
                            "propertyOrdering": ["expr"],
                        },
                    },
                    {"name": "clock", "parametersJsonSchema": {"type": "object", "additionalProperties": False}},
                ]
            },
            {"googleSearch": {}},
        ],
        "toolConfig": {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["calc"]}},
    }
    req = GEMINI.parse_request(body, "gemini-2.5-flash").request
    assert req.messages[0].content[1] == ImagePart(media_type="image/png", data="iVBOR")
    assert req.messages[1].content == [
        ToolCall("call_0", "calc", {"expr": "1+1"}, {"thoughtSignature": "c2ln"}),
        ToolCall("call_1", "clock", {}),
        ToolCall("call_2", "calc", {"expr": "2+2"}),
    ]
    assert req.messages[2].content == [
        ToolResultPart("call_0", "2", "calc"),
        ToolResultPart("call_1", '{"time":"noon"}', "clock"),
        ToolResultPart("call_2", "overflow", "calc", is_error=True),
    ]
    assert req.tools is not None
    assert req.tools[0].parameters == {"type": "object", "properties": {"expr": {"type": ["string", "null"]}}}
    assert req.tools[1].parameters == {"type": "object", "additionalProperties": False}
    assert req.tool_choice == "calc"
    body["toolConfig"] = {"functionCallingConfig": {"mode": "NONE"}}
    assert GEMINI.parse_request(body, "m").request.tool_choice == "none"


def captured_genai_body(contents: Any, config: gtypes.GenerateContentConfig) -> dict[str, Any]:
    """The body google-genai sends for a call: it mixes JSON and proto (snake_case) field names."""
    bodies: list[dict[str, Any]] = []

    def capture(request: httpx2.Request) -> httpx2.Response:
        bodies.append(orjson.loads(request.content))
        return httpx2.Response(200, content=orjson.dumps(GEMINI.render_response(RESPONSE, "m")))

    client = genai_client(transport(capture))  # held while in use: genai.Client.__del__ closes its HTTP client
    client.models.generate_content(model="m", contents=contents, config=config)
    return bodies[0]


def test_gemini_parses_what_the_genai_sdk_sends() -> None:
    schema = gtypes.Schema(
        type="OBJECT",
        properties={
            "expr": gtypes.Schema(type="STRING", nullable=True),
            "xs": gtypes.Schema(type="ARRAY", items=gtypes.Schema(type="INTEGER"), max_items=3),
            "u": gtypes.Schema(any_of=[gtypes.Schema(type="STRING"), gtypes.Schema(type="NUMBER")]),
        },
        property_ordering=["expr"],
        required=["expr"],
    )
    tools = [
        gtypes.Tool(
            function_declarations=[
                gtypes.FunctionDeclaration(name="calc", description="math", parameters=schema),
                gtypes.FunctionDeclaration(name="clock", parameters_json_schema={"type": "object"}),
            ]
        )
    ]
    config = gtypes.GenerateContentConfig(
        system_instruction="Be brief.",
        max_output_tokens=10,
        stop_sequences=["END"],
        top_p=0.5,
        tools=tools,
        tool_config=gtypes.ToolConfig(
            function_calling_config=gtypes.FunctionCallingConfig(mode="ANY", allowed_function_names=["calc"])
        ),
        automatic_function_calling=gtypes.AutomaticFunctionCallingConfig(disable=True),
    )
    contents = [
        gtypes.Content(
            role="user",
            parts=[
                gtypes.Part(text="hi"),
                gtypes.Part.from_bytes(data=b"png", mime_type="image/png"),
                gtypes.Part.from_uri(file_uri="https://example.com/a.png", mime_type="image/png"),
            ],
        ),
        gtypes.Content(
            role="model",
            parts=[
                gtypes.Part(
                    function_call=gtypes.FunctionCall(name="calc", args={"expr": "1"}), thought_signature=b"sig"
                )
            ],
        ),
        gtypes.Content(role="user", parts=[gtypes.Part.from_function_response(name="calc", response={"content": "2"})]),
    ]
    body = captured_genai_body(contents, config)
    assert "mime_type" in body["contents"][0]["parts"][1]["inlineData"]  # the SDK's mixed spelling, as observed
    req = GEMINI.parse_request(body, "m").request
    assert (req.system, req.max_tokens, req.top_p, req.stop, req.tool_choice) == ("Be brief.", 10, 0.5, ["END"], "calc")
    assert req.messages[0].content[1:] == [
        ImagePart(media_type="image/png", data="cG5n"),
        ImagePart(media_type="image/png", url="https://example.com/a.png"),
    ]
    assert req.messages[1].content == [ToolCall("call_0", "calc", {"expr": "1"}, {"thoughtSignature": "c2ln"})]
    assert req.messages[2].content == [ToolResultPart("call_0", "2", "calc")]
    assert req.tools is not None
    assert req.tools[0].parameters == {
        "type": "object",
        "properties": {
            "expr": {"type": ["string", "null"]},
            "xs": {"type": "array", "items": {"type": "integer"}, "maxItems": 3},
            "u": {"anyOf": [{"type": "string"}, {"type": "number"}]},
        },
        "required": ["expr"],
    }
    assert req.tools[1].parameters == {"type": "object"}


def test_gemini_untranslatable_parts() -> None:
    audio = {"inlineData": {"mimeType": "audio/wav", "data": "UklG"}}
    code = {"executableCode": {"language": "PYTHON", "code": "print(1)"}}
    body = {"contents": [{"parts": [audio, {"text": "transcribe"}]}, {"role": "model", "parts": [code]}]}
    inbound = GEMINI.parse_request(body, "m")
    assert inbound.request.messages[0].content == [TextPart("transcribe")]
    assert inbound.request.messages[1].content == []
    assert inbound.untranslatable[0].startswith("contents[0].parts[0].inlineData: 'audio/wav' media cannot be")
    assert inbound.untranslatable[1].startswith("contents[1].parts[0]: a part of kind 'executableCode' cannot be")


def _openai(**body: Any) -> dict[str, Any]:
    return {"model": "m", "messages": [{"role": "user", "content": "hi"}], **body}


def _anthropic(**body: Any) -> dict[str, Any]:
    return {"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}], **body}


def _gemini(**body: Any) -> dict[str, Any]:
    return {"contents": [{"role": "user", "parts": [{"text": "hi"}]}], **body}


BAD_REQUESTS: list[tuple[Dialect, Any, str]] = [
    (OPENAI, [], "body"),
    (OPENAI, {"messages": []}, "model"),
    (OPENAI, {"model": "m"}, "messages"),
    (OPENAI, _openai(messages=[]), "messages"),
    (OPENAI, _openai(messages=[{"role": "user", "content": "a"}, {"role": "bot", "content": "b"}]), "messages[1].role"),
    (OPENAI, _openai(max_tokens="10"), "max_tokens"),
    (OPENAI, _openai(max_completion_tokens=0), "max_completion_tokens"),
    (OPENAI, _openai(temperature=True), "temperature"),
    (OPENAI, _openai(stop=[1]), "stop[0]"),
    (OPENAI, _openai(stream="yes"), "stream"),
    (OPENAI, _openai(stream_options={"include_usage": 1}), "stream_options.include_usage"),
    (OPENAI, _openai(tools={"name": "x"}), "tools"),
    (OPENAI, _openai(tools=[{"type": "function", "function": {}}]), "tools[0].function.name"),
    (OPENAI, _openai(tools=[{"function": {"name": "f"}}], tool_choice="f"), "tool_choice"),
    (ANTHROPIC, "hi", "body"),
    (ANTHROPIC, {"max_tokens": 1, "messages": []}, "model"),
    (ANTHROPIC, {"model": "m", "messages": [{"role": "user", "content": "hi"}]}, "max_tokens"),
    (ANTHROPIC, _anthropic(max_tokens=1.5), "max_tokens"),
    (ANTHROPIC, {"model": "m", "max_tokens": 1}, "messages"),
    (ANTHROPIC, _anthropic(messages=[{"role": "system", "content": "x"}]), "messages[0].role"),
    (ANTHROPIC, _anthropic(messages=[{"role": "user"}]), "messages[0].content"),
    (ANTHROPIC, _anthropic(messages=[{"role": "user", "content": [{"type": "text"}]}]), "messages[0].content[0].text"),
    (
        ANTHROPIC,
        _anthropic(
            messages=[{"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "f", "input": []}]}]
        ),
        "messages[0].content[0].input",
    ),
    (
        ANTHROPIC,
        _anthropic(messages=[{"role": "user", "content": [{"type": "image", "source": {"type": "base64"}}]}]),
        "messages[0].content[0].source.media_type",
    ),
    (ANTHROPIC, _anthropic(system=[{"type": "image"}]), "system[0].type"),
    (ANTHROPIC, _anthropic(stop_sequences=[None]), "stop_sequences[0]"),
    (ANTHROPIC, _anthropic(tools=[{"name": "f"}]), "tools[0].input_schema"),
    (
        ANTHROPIC,
        _anthropic(tools=[{"name": "f", "input_schema": {}}], tool_choice={"type": "some"}),
        "tool_choice.type",
    ),
    (GEMINI, None, "body"),
    (GEMINI, {}, "contents"),
    (GEMINI, _gemini(contents=[{"role": "system", "parts": [{"text": "x"}]}]), "contents[0].role"),
    (GEMINI, _gemini(contents=[{"role": "user"}]), "contents[0].parts"),
    (GEMINI, _gemini(contents=[{"parts": [{"text": "a"}, "b"]}]), "contents[0].parts[1]"),
    (GEMINI, _gemini(contents=[{"parts": [{"text": "a"}, {"bogus": 1}]}]), "contents[0].parts[1]"),
    (
        GEMINI,
        _gemini(contents=[{"parts": [{"inlineData": {"data": "x"}}]}]),
        "contents[0].parts[0].inlineData.mimeType",
    ),
    (
        GEMINI,
        _gemini(contents=[{"parts": [{"functionResponse": {"name": "f", "response": {}}}]}]),
        "contents[0].parts[0].functionResponse.name",
    ),
    (
        GEMINI,
        _gemini(contents=[{"parts": [{"functionCall": {"name": "f", "args": "x"}}]}]),
        "contents[0].parts[0].functionCall.args",
    ),
    (GEMINI, _gemini(generationConfig={"maxOutputTokens": -1}), "generationConfig.maxOutputTokens"),
    (GEMINI, _gemini(generationConfig={"topP": "0.9"}), "generationConfig.topP"),
    (GEMINI, _gemini(systemInstruction={"parts": [{"text": 1}]}), "systemInstruction.parts[0].text"),
    (
        GEMINI,
        _gemini(tools=[{"functionDeclarations": [{"name": "f", "parameters": {"type": "OBJECT", "properties": []}}]}]),
        "tools[0].functionDeclarations[0].parameters.properties",
    ),
    (
        GEMINI,
        _gemini(
            tools=[{"functionDeclarations": [{"name": "f"}]}], toolConfig={"functionCallingConfig": {"mode": "SOME"}}
        ),
        "toolConfig.functionCallingConfig.mode",
    ),
]


@pytest.mark.parametrize(("dialect", "body", "field"), BAD_REQUESTS)
def test_validation_errors_name_the_field(dialect: Dialect, body: Any, field: str) -> None:
    with pytest.raises(BadRequest) as caught:
        dialect.parse_request(body, "m" if dialect is GEMINI else None)
    assert caught.value.status == 400
    assert caught.value.message.startswith(f"{field}: "), caught.value.message


def test_gemini_model_comes_from_the_path() -> None:
    with pytest.raises(BadRequest) as caught:
        GEMINI.parse_request(_gemini())
    assert caught.value.message == "model: required"


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
    assert final.content[0].text == "Two plus two is ✓ 4."
    assert [(b.id, b.name, b.input) for b in final.content[1:]] == [
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


# ========================================================================= errors

ATTEMPT = Attempt("gemini", "gemini#1 …abcd", "RateLimited", 12.0, 429)

# exception -> status per dialect (openai, anthropic, gemini), OpenAI code, Anthropic type, Gemini status
ERRORS: list[tuple[KeywheelError, tuple[int, int, int], str | None, str, str]] = [
    (
        BadRequest("messages[0].role: bad", status=400),
        (400, 400, 400),
        None,
        "invalid_request_error",
        "INVALID_ARGUMENT",
    ),
    (
        ContextTooLong("prompt is too long"),
        (400, 400, 400),
        "context_length_exceeded",
        "invalid_request_error",
        "INVALID_ARGUMENT",
    ),
    (
        ContentFiltered("blocked"),
        (400, 400, 400),
        "content_policy_violation",
        "invalid_request_error",
        "INVALID_ARGUMENT",
    ),
    (ModelNotFound("no such model"), (404, 404, 404), "model_not_found", "not_found_error", "NOT_FOUND"),
    (
        RateLimited("slow down", retry_after=2.5),
        (429, 429, 429),
        "rate_limit_exceeded",
        "rate_limit_error",
        "RESOURCE_EXHAUSTED",
    ),
    (
        NoKeyAvailable("every key is resting", retry_after=0.2),
        (429, 429, 429),
        "rate_limit_exceeded",
        "rate_limit_error",
        "RESOURCE_EXHAUSTED",
    ),
    (NoKeyAvailable("every key is disabled"), (503, 503, 503), "no_key_available", "api_error", "UNAVAILABLE"),
    (KeyInvalid("API key not valid"), (502, 502, 502), "upstream_auth_failed", "api_error", "UNAVAILABLE"),
    (
        QuotaExhausted("daily quota", retry_after=30000.0),
        (503, 503, 503),
        "upstream_quota_exhausted",
        "api_error",
        "UNAVAILABLE",
    ),
    (Overloaded("overloaded"), (503, 529, 503), "overloaded", "overloaded_error", "UNAVAILABLE"),
    (ServerError("boom"), (502, 502, 502), "upstream_error", "api_error", "UNAVAILABLE"),
    (NetworkError("reset"), (502, 502, 502), "upstream_error", "api_error", "UNAVAILABLE"),
    (Timeout("deadline passed"), (504, 504, 504), "timeout", "timeout_error", "DEADLINE_EXCEEDED"),
    (AllProvidersFailed([ATTEMPT]), (502, 502, 502), "all_providers_failed", "api_error", "UNAVAILABLE"),
    (ConfigError({"GEMINI_API_KEY": "looks wrong"}), (500, 500, 500), "internal_error", "api_error", "INTERNAL"),
]


@pytest.mark.parametrize(("exc", "statuses", "code", "anthropic_type", "rpc"), ERRORS, ids=lambda v: type(v).__name__)
def test_error_bodies(
    exc: KeywheelError, statuses: tuple[int, int, int], code: str | None, anthropic_type: str, rpc: str
) -> None:
    message = (
        "internal gateway error (ConfigError)" if isinstance(exc, ConfigError) else getattr(exc, "message", str(exc))
    )
    status, headers, body = OPENAI.render_error(exc)
    assert (status, orjson.loads(body)) == (
        statuses[0],
        {"error": {"message": message, "type": orjson.loads(body)["error"]["type"], "param": None, "code": code}},
    )
    assert orjson.loads(body)["error"]["type"] == (
        "rate_limit_error" if status == 429 else "server_error" if status >= 500 else "invalid_request_error"
    )
    status, headers_a, body = ANTHROPIC.render_error(exc)
    assert (status, orjson.loads(body)) == (
        statuses[1],
        {"type": "error", "error": {"type": anthropic_type, "message": message}},
    )
    status, headers_g, body = GEMINI.render_error(exc)
    error = orjson.loads(body)["error"]
    assert (status, error["code"], error["status"], error["message"]) == (statuses[2], statuses[2], rpc, message)
    assert headers == headers_a == headers_g
    if "looks wrong" in str(exc):
        assert b"looks wrong" not in body and b"GEMINI_API_KEY" not in body


def test_retry_headers() -> None:
    _, headers, body = GEMINI.render_error(RateLimited("slow down", retry_after=2.5))
    assert headers == {"retry-after": "3", "retry-after-ms": "2500"}
    assert orjson.loads(body)["error"]["details"] == [
        {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "3s"}
    ]
    # a wait the anthropic SDK would sleep through: tell SDKs not to retry
    _, headers, _ = ANTHROPIC.render_error(RateLimited("slow down", retry_after=3600))
    assert headers == {"retry-after": "3600", "retry-after-ms": "3600000", "x-should-retry": "false"}
    assert OPENAI.render_error(NoKeyAvailable("resting", retry_after=0.2))[1] == {
        "retry-after": "1",
        "retry-after-ms": "200",
    }
    assert OPENAI.render_error(QuotaExhausted("gone"))[1] == {"x-should-retry": "false"}
    assert OPENAI.render_error(ServerError("boom"))[1] == {}


def test_upstream_error_body_is_never_rendered() -> None:
    exc = BadRequest("bad input", body=b'{"error":"upstream words with sk-secret"}')
    for dialect in (OPENAI, ANTHROPIC, GEMINI):
        assert b"sk-secret" not in dialect.render_error(exc)[2]


def test_auth_and_simple_errors() -> None:
    assert orjson.loads(OPENAI.render_auth_error("missing gateway key")[2]) == {
        "error": {
            "message": "missing gateway key",
            "type": "invalid_request_error",
            "param": None,
            "code": "invalid_api_key",
        }
    }
    status, _, body = ANTHROPIC.render_auth_error("bad key")
    assert (status, orjson.loads(body)["error"]["type"]) == (401, "authentication_error")
    status, _, body = GEMINI.render_auth_error("bad key")
    error = orjson.loads(body)["error"]
    assert (status, error["status"], error["details"][0]["reason"]) == (401, "UNAUTHENTICATED", "API_KEY_INVALID")
    for code, openai_type, anthropic_type, rpc in [
        (404, "invalid_request_error", "not_found_error", "NOT_FOUND"),
        (405, "invalid_request_error", "invalid_request_error", "UNIMPLEMENTED"),
        (413, "request_too_large", "request_too_large", "INVALID_ARGUMENT"),
        (501, "server_error", "api_error", "UNIMPLEMENTED"),
    ]:
        status, _, body = OPENAI.render_simple_error(code, "no route")
        assert (status, orjson.loads(body)["error"]["type"]) == (code, openai_type)
        assert orjson.loads(ANTHROPIC.render_simple_error(code, "x")[2])["error"]["type"] == anthropic_type
        assert orjson.loads(GEMINI.render_simple_error(code, "x")[2])["error"]["status"] == rpc


SDK_CLASSES = [
    (BadRequest("bad", status=400), openai.BadRequestError, anthropic.BadRequestError, genai_errors.ClientError),
    (ModelNotFound("nope"), openai.NotFoundError, anthropic.NotFoundError, genai_errors.ClientError),
    (RateLimited("slow", retry_after=1), openai.RateLimitError, anthropic.RateLimitError, genai_errors.ClientError),
    (Overloaded("busy"), openai.InternalServerError, anthropic.OverloadedError, genai_errors.ServerError),
    (QuotaExhausted("gone"), openai.InternalServerError, anthropic.ServiceUnavailableError, genai_errors.ServerError),
    (
        KeyInvalid("bad upstream key"),
        openai.InternalServerError,
        anthropic.InternalServerError,
        genai_errors.ServerError,
    ),
    (Timeout("slow"), openai.InternalServerError, anthropic.GatewayTimeoutError, genai_errors.ServerError),
]


@pytest.mark.parametrize(
    ("exc", "openai_cls", "anthropic_cls", "genai_cls"), SDK_CLASSES, ids=lambda v: type(v).__name__
)
def test_sdks_raise_the_right_exception(
    exc: KeywheelError, openai_cls: type, anthropic_cls: type, genai_cls: type
) -> None:
    def client_for(dialect: Dialect) -> httpx2.Client:
        status, headers, body = dialect.render_error(exc)
        return serve(status, body, {"content-type": "application/json", **headers})

    oclient, aclient, gclient = (
        openai_client(client_for(OPENAI)),
        anthropic_client(client_for(ANTHROPIC)),
        genai_client(client_for(GEMINI)),
    )
    with pytest.raises(openai_cls) as caught_openai:
        oclient.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
    assert caught_openai.value.message.endswith(exc.args[0])
    with pytest.raises(anthropic_cls):
        aclient.messages.create(model="m", max_tokens=1, messages=[{"role": "user", "content": "x"}])
    with pytest.raises(genai_cls) as caught_genai:
        gclient.models.generate_content(model="m", contents="x")
    assert caught_genai.value.message == exc.args[0]


def test_sdk_client_auth_error() -> None:
    status, headers, body = OPENAI.render_auth_error("missing or invalid gateway key")
    with pytest.raises(openai.AuthenticationError):
        openai_client(serve(status, body, headers)).models.list()
    status, headers, body = ANTHROPIC.render_auth_error("missing or invalid gateway key")
    with pytest.raises(anthropic.AuthenticationError):
        anthropic_client(serve(status, body, headers)).models.list()


# ========================================================================= models

MODELS = [("auto", "keywheel"), ("gemini/gemini-2.5-flash", "gemini")]


def test_model_lists() -> None:
    listed = openai_client(serve(200, orjson.dumps(OPENAI.render_models(MODELS)))).models.list()
    assert [(m.id, m.owned_by) for m in listed] == MODELS
    page = anthropic_client(serve(200, orjson.dumps(ANTHROPIC.render_models(MODELS)))).models.list()
    assert [m.id for m in page] == ["auto", "gemini/gemini-2.5-flash"]
    assert ANTHROPIC.render_models([]) == {"data": [], "has_more": False, "first_id": None, "last_id": None}
    body = GEMINI.render_models(MODELS)
    # genai's own list path (its _Model_from_mldev copies the whole wire object into tuned_model_info,
    # so strict model_validate of its converted dict fails for any model: go through the pager instead)
    gclient = genai_client(serve(200, orjson.dumps(body)))
    models = list(gclient.models.list())
    assert [m.name for m in models] == ["models/auto", "models/gemini/gemini-2.5-flash"]
    assert models[1].supported_actions == ["generateContent", "streamGenerateContent"]
    assert models[1].display_name == "gemini/gemini-2.5-flash"
