"""Inbound dialects, requests: client bodies parsed and validated, every error naming its field."""

from __future__ import annotations

from typing import Any

import httpx2
import orjson
import pytest
from google.genai import types as gtypes

from keywheel.errors import (
    BadRequest,
)
from keywheel.gateway.dialects import DIALECTS, AnthropicDialect, GeminiDialect, OpenAIDialect, ResponsesDialect
from keywheel.gateway.dialects.base import Dialect
from keywheel.types import (
    ImagePart,
    TextPart,
    ToolCall,
    ToolResultPart,
)
from tests.gateway.dialect_helpers import (
    ANTHROPIC,
    CALC_SCHEMA,
    GEMINI,
    OPENAI,
    RESPONSE,
    genai_client,
    transport,
)

# ======================================================================= requests


def test_registry_names_match_the_adapters_dialects() -> None:
    assert {name: type(d) for name, d in DIALECTS.items()} == {
        "openai": OpenAIDialect,
        "anthropic": AnthropicDialect,
        "gemini": GeminiDialect,
        "responses": ResponsesDialect,  # inbound only: no adapter speaks it
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
    body: dict[str, Any] = {
        "model": "m",
        "messages": [{"role": "user", "content": [file_part, {"type": "text", "text": "sum up"}]}],
    }
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


def test_anthropic_system_turns_join_the_system_prompt_and_unknown_blocks_drop() -> None:
    """Claude Code 2.1's shapes, translated: system turns in ``messages`` (text, or empty with a control field)."""
    future = {"type": "future_block_v9", "payload": {"n": 1}}
    body = {
        "model": "m",
        "max_tokens": 10,
        "system": "First.",
        "output_config": {"effort": "medium"},
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "hi"}, future]},
            {"role": "system", "content": [{"type": "text", "text": "Second."}, future]},
            {"role": "system", "content": [], "output_config": {"effort": "low"}},
            {"role": "assistant", "content": "ok"},
            {"role": "system", "content": "Third."},
            {"role": "user", "content": [{"type": "search_result", "title": "T", "source": "s", "content": []}]},
        ],
    }
    inbound = ANTHROPIC.parse_request(body)
    request = inbound.request
    assert request.system == "First.\n\nSecond.\n\nThird."
    assert [m.role for m in request.messages] == ["user", "assistant", "user"]
    assert request.messages[0].content == [TextPart("hi")]
    assert request.messages[2].content == [TextPart("T\ns")]  # a search result is text
    assert inbound.untranslatable == []
    inbound.check_translatable()


def test_unknown_parts_of_openai_and_gemini_drop_or_become_text() -> None:
    refusal = {"role": "assistant", "content": [{"type": "refusal", "refusal": "No."}]}
    body = _openai(
        messages=[{"role": "user", "content": [{"type": "hologram"}, {"type": "text", "text": "x"}]}, refusal]
    )
    inbound = OPENAI.parse_request(body)
    assert inbound.untranslatable == []
    assert [p for m in inbound.request.messages for p in m.content if p != TextPart("")] == [
        TextPart("x"),
        TextPart("No."),
    ]
    call = {"role": "model", "parts": [{"functionCall": {"name": "f", "args": {}}}]}
    answer = {"role": "function", "parts": [{"functionResponse": {"name": "f", "response": {"result": "1"}}}]}
    body = _gemini(contents=[{"parts": [{"text": "a"}, {"hologram": {"n": 1}}]}, call, answer])
    inbound = GEMINI.parse_request(body, "m")
    assert inbound.request.messages[0].content == [TextPart("a")]
    assert inbound.request.messages[2].role == "user" and inbound.untranslatable == []


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
        type=gtypes.Type.OBJECT,
        properties={
            "expr": gtypes.Schema(type=gtypes.Type.STRING, nullable=True),
            "xs": gtypes.Schema(type=gtypes.Type.ARRAY, items=gtypes.Schema(type=gtypes.Type.INTEGER), max_items=3),
            "u": gtypes.Schema(any_of=[gtypes.Schema(type=gtypes.Type.STRING), gtypes.Schema(type=gtypes.Type.NUMBER)]),
        },
        property_ordering=["expr"],
        required=["expr"],
    )
    tools: gtypes.ToolListUnion = [
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
            function_calling_config=gtypes.FunctionCallingConfig(
                mode=gtypes.FunctionCallingConfigMode.ANY, allowed_function_names=["calc"]
            )
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
    (ANTHROPIC, _anthropic(messages=[{"role": "robot", "content": "x"}]), "messages[0].role"),
    (ANTHROPIC, _anthropic(messages=[{"role": "system", "content": "x"}]), "messages"),  # no user turn
    (
        ANTHROPIC,
        _anthropic(messages=[{"role": "system", "content": 5}, {"role": "user", "content": "x"}]),
        "messages[0].content",
    ),
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
    (GEMINI, _gemini(contents=[{"parts": [{"text": "a"}, {}]}]), "contents[0].parts[1]"),
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
