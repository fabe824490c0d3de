"""The Responses dialect on its own: requests translated, answers and streams rendered.

Rendered bytes are validated with the SDK's pydantic types and read back by the
openai SDK's own stream accumulator (through ``httpx2.MockTransport``).
"""

from __future__ import annotations

import logging
from typing import Any

import httpx2
import orjson
import pytest
from openai.types.responses import (
    ResponseCompletedEvent,
    ResponseFunctionToolCall,
    ResponseOutputMessage,
    ResponseOutputText,
)

from keywheel.errors import BadRequest, KeywheelError, Overloaded
from keywheel.gateway.dialects import DIALECTS, ResponsesDialect
from keywheel.types import (
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
from tests.gateway.dialect_helpers import EVENTS, RESPONSE, openai_client, serve
from tests.gateway.responses_events import RESPONSE as RESPONSE_TYPE
from tests.gateway.responses_events import check_order, validate_events

DIALECT = ResponsesDialect()
CALC_TOOL = {"type": "function", "name": "calc", "parameters": {"type": "object"}, "strict": True}


def rendered(events: list[StreamEvent], *, fail: KeywheelError | None = None) -> bytes:
    renderer = DIALECT.stream_renderer("auto", False)
    out = renderer.start() + b"".join(renderer.event(ev) for ev in events)
    if fail is not None:
        out += renderer.error(fail)
    return out


# ====================================================================== requests


def test_it_is_registered_and_never_passed_through() -> None:
    assert DIALECTS["responses"].name == "responses"
    assert {d.name for d in DIALECTS.values()} >= {"openai", "anthropic", "gemini", "responses"}


def test_items_translate_to_canonical_messages() -> None:
    body = {
        "model": "auto",
        "instructions": "Be brief.",
        "input": [
            {"role": "developer", "content": "Answer in French."},
            {
                "type": "message",
                "role": "user",
                "content": [
                    {"type": "input_text", "text": "What is on this?"},
                    {"type": "input_image", "image_url": "data:image/png;base64,iVBO", "detail": "auto"},
                    {"type": "input_image", "image_url": "https://example.test/cat.png"},
                ],
            },
            {"type": "reasoning", "id": "rs_1", "summary": []},
            {
                "type": "message",
                "role": "assistant",
                "id": "msg_1",
                "status": "completed",
                "content": [{"type": "output_text", "text": "Un chat.", "annotations": []}],
            },
            {"type": "function_call", "id": "fc_1", "call_id": "call_9", "name": "calc", "arguments": '{"expr":"1"}'},
            {"type": "function_call_output", "call_id": "call_9", "output": [{"type": "input_text", "text": "1"}]},
        ],
        "tools": [CALC_TOOL],
        "tool_choice": {"type": "function", "name": "calc"},
        "max_output_tokens": 99,
        "temperature": 0.2,
        "top_p": 0.9,
        "stream": True,
    }
    inbound = DIALECT.parse_request(body)
    request = inbound.request
    assert inbound.model == "auto" and inbound.stream and not inbound.untranslatable
    assert request.system == "Be brief.\n\nAnswer in French."
    assert (request.max_tokens, request.temperature, request.top_p, request.tool_choice) == (99, 0.2, 0.9, "calc")
    assert request.tools is not None
    assert [(t.name, t.parameters) for t in request.tools] == [("calc", {"type": "object"})]
    roles = [m.role for m in request.messages]
    assert roles == ["user", "assistant", "assistant", "user"]  # the reasoning item is dropped
    user, answer, call, result = (m.content for m in request.messages)
    assert user == [
        TextPart("What is on this?"),
        ImagePart(media_type="image/png", data="iVBO"),
        ImagePart(url="https://example.test/cat.png"),
    ]
    assert answer == [TextPart("Un chat.")]
    assert call == [ToolCall("call_9", "calc", {"expr": "1"})]
    assert result == [ToolResultPart("call_9", "1")]


def test_a_string_input_is_one_user_message_and_no_tools_means_no_tool_choice() -> None:
    request = DIALECT.parse_request({"model": "m", "input": "hi", "tool_choice": "required"}).request
    assert [(m.role, m.content) for m in request.messages] == [("user", [TextPart("hi")])]
    assert request.system is None and request.tools is None and request.tool_choice is None


def said(role: str, part: dict[str, Any]) -> dict[str, Any]:
    return {"input": [{"role": role, "content": [part]}]}


def call(**fields: str) -> dict[str, Any]:
    return {"input": [{"type": "function_call", "call_id": "c", **fields}]}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"input": "hi", "previous_response_id": "resp_1"}, "previous_response_id: keywheel keeps no earlier"),
        ({"input": "hi", "store": True}, "store: keywheel cannot store responses"),
        ({"input": "hi", "background": True}, "background: "),
        ({"input": "hi", "prompt": {"id": "pmpt_1"}}, "prompt: keywheel keeps no stored prompt"),
        ({"input": [{"type": "item_reference", "id": "msg_1"}]}, "input[0].type: an item_reference points"),
        ({"input": []}, "input: must not be empty"),
        ({"input": [{"role": "system", "content": "x"}]}, "input: at least one user or assistant item"),
        (said("user", {"type": "input_file", "file_id": "f"}), "input[0].content[0].type"),
        (said("user", {"type": "input_image", "file_id": "f"}), "input[0].content[0].file_id: keywheel keeps no files"),
        (said("assistant", {"type": "input_image", "image_url": "u"}), "input[0].content[0].type"),
        (call(name="f", arguments="{"), "input[0].arguments: is not valid JSON"),
        (call(arguments="{}"), "input[0].name: required"),
        (
            {"input": [{"type": "function_call_output", "call_id": "c", "output": {"n": 4}}]},
            "input[0].output: expected",
        ),
        ({"input": "hi", "tools": [CALC_TOOL], "tool_choice": {"type": "file_search"}}, "tool_choice: expected"),
        ({"input": "hi", "tools": [{"type": "function"}]}, "tools[0].name: required"),
        ({"input": "hi", "instructions": ["x"]}, "instructions: expected a string"),
        ({"input": "hi", "temperature": "hot"}, "temperature: expected a number"),
    ],
)
def test_bad_requests_name_the_field(body: dict[str, Any], message: str) -> None:
    with pytest.raises(BadRequest) as caught:
        DIALECT.parse_request({"model": "auto", **body})
    assert caught.value.status == 400 and caught.value.message.startswith(message), caught.value.message


def test_ignored_fields_are_named_in_a_debug_line(caplog: pytest.LogCaptureFixture) -> None:
    body = {"model": "m", "input": "hi", "store": False, "reasoning": {"effort": "low"}, "text": {"verbosity": "low"}}
    body["new\nfield"] = 1  # the client's words: escaped in the log
    with caplog.at_level(logging.DEBUG, "keywheel.gateway.responses"):
        DIALECT.parse_request(body)
    lines = [r.getMessage() for r in caplog.records]
    assert "responses: ignoring reasoning, text (not honoured by keywheel's translation)" in lines
    assert "responses: ignoring 1 unknown field(s): 'new\\nfield'" in lines


# ====================================================================== answers


def test_an_answer_is_a_valid_response_object() -> None:
    body = DIALECT.render_response(RESPONSE, "auto")
    response = RESPONSE_TYPE.validate_python(body)
    assert response.id == "resp_r1" and response.object == "response" and response.status == "completed"
    assert response.model == "gemini-2.5-flash" and response.error is None and response.incomplete_details is None
    message, call = response.output
    assert isinstance(message, ResponseOutputMessage) and isinstance(message.content[0], ResponseOutputText)
    assert message.type == "message" and message.content[0].text == "Two plus two is 4."
    assert call.type == "function_call" and (call.call_id, call.name) == ("call_1", "calc")
    assert orjson.loads(call.arguments) == {"expr": "2+2"}
    assert response.usage is not None
    assert (response.usage.input_tokens, response.usage.output_tokens, response.usage.total_tokens) == (12, 7, 19)
    assert response.output_text == "Two plus two is 4."


def test_an_answer_cut_by_max_tokens_is_incomplete() -> None:
    cut = ChatResponse("Two plus", [], "length", Usage(3, 2), "anthropic", "claude-x", "k", [], "")
    response = RESPONSE_TYPE.validate_python(DIALECT.render_response(cut, "auto"))
    assert response.status == "incomplete" and response.incomplete_details is not None
    assert response.incomplete_details.reason == "max_output_tokens"
    assert isinstance(response.output[0], ResponseOutputMessage)
    assert response.output[0].status == "incomplete" and response.id.startswith("resp_")


def test_an_empty_answer_still_has_a_message() -> None:
    empty = ChatResponse("", [], "stop", Usage(3, 0), "gemini", "", "k", [], "")
    response = RESPONSE_TYPE.validate_python(DIALECT.render_response(empty, "gemini/gemini-2.5-flash"))
    assert response.model == "gemini/gemini-2.5-flash" and response.output_text == ""
    assert [o.type for o in response.output] == ["message"]


# ====================================================================== streams


def test_a_stream_follows_the_event_grammar_and_the_sdk_accumulates_it() -> None:
    raw = rendered(EVENTS)
    walk = check_order(validate_events(raw))
    assert [(i["type"], i.get("name"), i.get("arguments")) for i in walk.items] == [
        ("message", None, None),
        ("function_call", "calc", '{"expr": "2+2"}'),
        ("function_call", "clock", "{}"),  # a call without arguments carries an empty object
    ]
    assert walk.items[0]["content"][0]["text"] == "Two plus two is ✓ 4."
    assert walk.final is not None and walk.final.status == "completed"
    assert [o.model_dump() for o in walk.final.output] == walk.items
    assert walk.final.usage is not None and walk.final.usage.total_tokens == 19

    client = openai_client(serve(200, raw, {"content-type": "text/event-stream"}))
    with client.responses.stream(model="auto", input="hi") as stream:
        deltas = [e.delta for e in stream if e.type == "response.function_call_arguments.delta"]
        final = stream.get_final_response()
    assert deltas == ['{"expr": ', '"2+2"}', "{}"]
    assert final.output_text == "Two plus two is ✓ 4." and [o.type for o in final.output][1:] == ["function_call"] * 2


def test_a_stream_cut_by_max_tokens_ends_incomplete() -> None:
    walk = check_order(validate_events(rendered([TextDelta("Two"), StreamEnd("length", Usage(3, 1), model="m-1")])))
    assert walk.final is not None and walk.final.status == "incomplete" and walk.final.model == "m-1"
    assert walk.final.incomplete_details is not None and walk.final.incomplete_details.reason == "max_output_tokens"
    assert walk.items[0]["status"] == "incomplete"


def test_text_after_a_call_opens_a_new_message_and_a_late_fragment_keeps_the_call_whole() -> None:
    events: list[StreamEvent] = [
        ToolCallDelta(0, id="c0", name="calc", arguments='{"expr": '),
        ToolCallDelta(1, id="c1", name="clock", arguments="{}"),
        ToolCallDelta(0, arguments='"1"}'),  # a fragment for the call already done
        TextDelta("done"),
        StreamEnd("tool_calls", Usage(1, 1)),
    ]
    events_out = validate_events(rendered(events))
    late = [e for e in events_out if e.type == "response.function_call_arguments.delta" and e.output_index == 0]
    assert [e.delta for e in late] == ['{"expr": ', '"1"}']
    last = events_out[-1]
    assert isinstance(last, ResponseCompletedEvent), last.type
    final = last.response
    assert [o.type for o in final.output] == ["function_call", "function_call", "message"]
    call, message = final.output[0], final.output[2]
    assert isinstance(call, ResponseFunctionToolCall) and isinstance(message, ResponseOutputMessage)
    assert isinstance(message.content[0], ResponseOutputText)
    assert call.arguments == '{"expr": "1"}' and message.content[0].text == "done"


def test_a_failure_after_the_start_ends_with_error_then_failed() -> None:
    raw = rendered([TextDelta("Two plus")], fail=Overloaded("upstream overloaded", provider="gemini"))
    events = validate_events(raw)
    walk = check_order(events)
    assert walk.open_item == "message" and walk.error is not None and "overloaded" in walk.error
    failed = events[-1]
    assert failed.type == "response.failed" and failed.response.error is not None
    assert failed.response.error.code == "server_error" and failed.response.status == "failed"
    (item,) = failed.response.output
    assert isinstance(item, ResponseOutputMessage) and isinstance(item.content[0], ResponseOutputText)
    assert item.status == "incomplete" and item.content[0].text == "Two plus"

    client = openai_client(transport_of(raw))
    with client.responses.stream(model="auto", input="hi") as stream:
        kinds = [e.type for e in stream]
        with pytest.raises(RuntimeError):
            stream.get_final_response()
    assert kinds[-2:] == ["error", "response.failed"]


def transport_of(raw: bytes) -> httpx2.Client:
    return serve(200, raw, {"content-type": "text/event-stream"})


def test_errors_are_in_the_openai_shape() -> None:
    status, headers, body = DIALECT.render_error(Overloaded("busy", provider="gemini", retry_after=2.0))
    assert status == 503 and headers["retry-after"] == "2"
    assert orjson.loads(body)["error"]["type"] == "server_error"
    status, _, body = DIALECT.render_auth_error("missing or invalid gateway key")
    assert status == 401 and orjson.loads(body)["error"]["code"] == "invalid_api_key"


def test_the_order_check_catches_a_broken_sequence() -> None:
    good = validate_events(rendered(EVENTS))
    check_order(good)

    def renumbered(events: list[Any]) -> list[Any]:
        return [e.model_copy(update={"sequence_number": i}) for i, e in enumerate(events)]

    kinds = [e.type for e in good]
    broken = [
        renumbered([e for e in good if e.type != "response.in_progress"]),
        renumbered([e for e in good if e.type != "response.content_part.added"]),
        renumbered([e for e in good if e.type != "response.output_text.done"]),
        renumbered([e for e in good if e.type != "response.function_call_arguments.done"]),
        renumbered(good[:-1]),  # no terminal event
        renumbered([*good[:3], good[4], good[3], *good[5:]]),  # a delta before its part
        good[:5] + good[6:],  # a gap in the sequence numbers
    ]
    assert kinds[3:5] == ["response.content_part.added", "response.output_text.delta"]
    for events in broken:
        with pytest.raises(AssertionError):
            check_order(events)
