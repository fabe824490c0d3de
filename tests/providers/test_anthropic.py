import time
from datetime import UTC, datetime

import orjson
import pytest

from keywheel.errors import (
    BadRequest,
    ContextTooLong,
    KeyInvalid,
    ModelNotFound,
    NetworkError,
    Overloaded,
    QuotaExhausted,
    RateLimited,
    ServerError,
    Timeout,
    UpstreamError,
)
from keywheel.providers import ADAPTERS, get_adapter
from keywheel.providers.anthropic import AnthropicAdapter
from keywheel.providers.base import Endpoint
from keywheel.secrets import ApiKey
from keywheel.types import (
    ChatRequest,
    ImagePart,
    Message,
    StreamEnd,
    TextDelta,
    TextPart,
    Tool,
    ToolCall,
    ToolCallDelta,
    ToolResultPart,
    Usage,
)
from tests.providers.harness import AdapterCase, user

ADAPTER = AnthropicAdapter()
KEY = ApiKey("test-anthropic-key-1", "anthropic", "1")
TOKEN = ApiKey("test-anthropic-token-1", "glm", "token", auth="bearer")
ENDPOINT = Endpoint("anthropic", "https://api.anthropic.com", "claude-sonnet-4-5")
CALC = Tool("calc", "math", {"type": "object", "properties": {"expr": {"type": "string"}}})
CASE = AdapterCase(ADAPTER, KEY, ENDPOINT, "claude-sonnet-4-5", step=9)
body_of, run_stream = CASE.body_of, CASE.run_stream


# ------------------------------------------------------------------ registry


def test_registry() -> None:
    assert set(ADAPTERS) == {"anthropic", "gemini", "openai"}
    assert get_adapter("anthropic").dialect == "anthropic"
    assert isinstance(get_adapter("anthropic"), AnthropicAdapter)
    with pytest.raises(ValueError, match="anthropic, gemini, openai"):
        get_adapter("cohere")
    with pytest.raises(TypeError):
        ADAPTERS["x"] = ADAPTER  # type: ignore[index]  # the registry is read-only, which is what is tested


# ------------------------------------------------------------------ requests


def test_build_request_matches_the_documented_example() -> None:
    request = ChatRequest([user("What is 2+2?")], system="Be brief.", max_tokens=256, temperature=0.2)
    http = ADAPTER.build_request(ENDPOINT, KEY, request, "claude-sonnet-4-5", stream=False)
    assert http.method == "POST"
    assert http.url == "https://api.anthropic.com/v1/messages"
    assert http.headers == {
        "content-type": "application/json",
        "anthropic-version": "2023-06-01",
        "x-api-key": "test-anthropic-key-1",
    }
    assert http.body is not None
    assert orjson.loads(http.body) == {
        "model": "claude-sonnet-4-5",
        "max_tokens": 256,
        "system": "Be brief.",
        "messages": [{"role": "user", "content": "What is 2+2?"}],
        "temperature": 0.2,
    }


def test_bearer_key_and_compatible_host() -> None:
    endpoint = Endpoint("glm", "https://api.z.ai/api/anthropic/", "glm-4.6", {"anthropic-beta": "x"})
    http = ADAPTER.build_request(endpoint, TOKEN, ChatRequest([user("hi")]), "glm-4.6", stream=True)
    assert http.url == "https://api.z.ai/api/anthropic/v1/messages"
    assert http.headers["authorization"] == "Bearer test-anthropic-token-1"
    assert "x-api-key" not in http.headers
    assert http.headers["anthropic-beta"] == "x"
    assert http.headers["anthropic-version"] == "2023-06-01"


def test_endpoint_headers_override_case_insensitively() -> None:
    endpoint = Endpoint("anthropic", "https://api.anthropic.com", "m", {"Anthropic-Version": "2026-10-21"})
    headers = ADAPTER.build_request(endpoint, KEY, ChatRequest([user("hi")]), "m", stream=False).headers
    assert [k for k in headers if k.lower() == "anthropic-version"] == ["anthropic-version"]
    assert headers["anthropic-version"] == "2026-10-21"


def test_defaults_and_options() -> None:
    body = body_of(ChatRequest([user("hi")], top_p=0.9, stop=["END", "STOP"]), stream=True)
    assert body["max_tokens"] == 1024
    assert body["top_p"] == 0.9
    assert body["stop_sequences"] == ["END", "STOP"]
    assert body["stream"] is True
    assert "system" not in body and "temperature" not in body and "tools" not in body


def test_tools_and_tool_round_trip() -> None:
    request = ChatRequest(
        [
            user("What is 2+2?"),
            Message("assistant", [TextPart("Let me check."), ToolCall("toolu_01", "calc", {"expr": "2+2"})]),
            Message("user", [ToolResultPart("toolu_01", "4", name="calc")]),
            Message("user", [TextPart("and 3+3?")]),
            Message("assistant", [ToolCall("toolu_02", "calc", {"expr": "3+3"})]),
            Message("user", [TextPart("go on"), ToolResultPart("toolu_02", "boom", is_error=True)]),
        ],
        tools=[CALC, Tool("now", None, {"type": "object", "properties": {}})],
        tool_choice="auto",
    )
    body = body_of(request)
    assert body["tools"] == [
        {"name": "calc", "description": "math", "input_schema": CALC.parameters},
        {"name": "now", "input_schema": {"type": "object", "properties": {}}},
    ]
    assert body["tool_choice"] == {"type": "auto"}
    assert body["messages"] == [
        {"role": "user", "content": "What is 2+2?"},
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "Let me check."},
                {"type": "tool_use", "id": "toolu_01", "name": "calc", "input": {"expr": "2+2"}},
            ],
        },
        {
            "role": "user",  # consecutive user turns merged
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_01", "content": "4"},
                {"type": "text", "text": "and 3+3?"},
            ],
        },
        {
            "role": "assistant",
            "content": [{"type": "tool_use", "id": "toolu_02", "name": "calc", "input": {"expr": "3+3"}}],
        },
        {
            "role": "user",  # tool results first, as Anthropic requires
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_02", "content": "boom", "is_error": True},
                {"type": "text", "text": "go on"},
            ],
        },
    ]


@pytest.mark.parametrize(
    ("choice", "wire"),
    [
        ("auto", {"type": "auto"}),
        ("required", {"type": "any"}),
        ("none", {"type": "none"}),
        ("calc", {"type": "tool", "name": "calc"}),
    ],
)
def test_tool_choice(choice: str, wire: dict[str, str]) -> None:
    assert body_of(ChatRequest([user("hi")], tools=[CALC], tool_choice=choice))["tool_choice"] == wire


def test_images() -> None:
    message = Message(
        "user",
        [
            TextPart("Describe:"),
            ImagePart(media_type="image/webp", data="UklGR"),
            ImagePart(url="https://example.com/cat.png"),
            ImagePart(url="data:image/png;base64,iVBOR"),
        ],
    )
    assert body_of(ChatRequest([message]))["messages"] == [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Describe:"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/webp", "data": "UklGR"}},
                {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.png"}},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBOR"}},
            ],
        }
    ]


def test_extra_is_merged_last() -> None:
    request = ChatRequest([user("hi")], max_tokens=10, extra={"max_tokens": 99, "metadata": {"user_id": "u1"}})
    body = body_of(request)
    assert body["max_tokens"] == 99
    assert body["metadata"] == {"user_id": "u1"}


def test_build_raw_request_replaces_only_model_stream_and_auth() -> None:
    raw = {"model": "claude-x", "max_tokens": 5, "messages": [], "thinking": {"type": "enabled"}, "stream": False}
    http = ADAPTER.build_raw_request(ENDPOINT, TOKEN, raw, "claude-sonnet-4-5", stream=True)
    assert http.body is not None
    assert orjson.loads(http.body) == {**raw, "model": "claude-sonnet-4-5", "stream": True}
    assert raw["model"] == "claude-x"  # the caller's dict is not changed
    assert http.headers["authorization"] == "Bearer test-anthropic-token-1"
    assert http.url == "https://api.anthropic.com/v1/messages"


def test_probe_request() -> None:
    http = ADAPTER.probe_request(ENDPOINT, KEY)
    assert (http.method, http.url, http.body) == ("GET", "https://api.anthropic.com/v1/models?limit=1", None)
    assert http.headers["x-api-key"] == "test-anthropic-key-1"
    assert http.headers["anthropic-version"] == "2023-06-01"


# ------------------------------------------------------------------ responses


def test_parse_response_example() -> None:
    body = (
        b'{"id":"msg_01A","type":"message","role":"assistant","model":"claude-sonnet-4-5",'
        b'"content":[{"type":"text","text":"4"}],"stop_reason":"end_turn","stop_sequence":null,'
        b'"usage":{"input_tokens":31,"output_tokens":2}}'
    )
    completion = ADAPTER.parse_response(body)
    assert completion.text == "4"
    assert completion.tool_calls == []
    assert completion.finish_reason == "stop"
    assert completion.usage == Usage(31, 2)
    assert (completion.model, completion.id) == ("claude-sonnet-4-5", "msg_01A")


def test_parse_response_tool_use_and_cache_usage() -> None:
    body = orjson.dumps(
        {
            "id": "msg_02",
            "type": "message",
            "role": "assistant",
            "model": "claude-sonnet-4-5",
            "content": [
                {"type": "thinking", "thinking": "hmm", "signature": "sig"},
                {"type": "text", "text": "Let me "},
                {"type": "text", "text": "check."},
                {"type": "tool_use", "id": "toolu_01", "name": "calc", "input": {"expr": "2+2"}},
            ],
            "stop_reason": "tool_use",
            "usage": {
                "input_tokens": 10,
                "cache_creation_input_tokens": 5,
                "cache_read_input_tokens": 100,
                "output_tokens": 40,
            },
        }
    )
    completion = ADAPTER.parse_response(body)
    assert completion.text == "Let me check."
    assert completion.tool_calls == [ToolCall("toolu_01", "calc", {"expr": "2+2"})]
    assert completion.finish_reason == "tool_calls"
    assert completion.usage == Usage(115, 40)


@pytest.mark.parametrize(
    ("stop_reason", "finish"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("tool_use", "tool_calls"),
        ("refusal", "content_filter"),  # content filtering is a 200 with stop_reason refusal
        ("model_context_window_exceeded", "length"),
        ("pause_turn", "other"),
        (None, "other"),
    ],
)
def test_stop_reasons(stop_reason: str | None, finish: str) -> None:
    body = orjson.dumps({"content": [], "stop_reason": stop_reason, "usage": {}})
    assert ADAPTER.parse_response(body).finish_reason == finish


def test_error_inside_a_200_is_raised() -> None:
    with pytest.raises(Overloaded):
        ADAPTER.parse_response(b'{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}')
    with pytest.raises(ServerError):
        ADAPTER.parse_response(b"<html>bad gateway</html>")


# ------------------------------------------------------------------ streams

# The PROVIDERS.md example, byte for byte.
TOOL_STREAM = b"".join(
    b"event: " + kind + b"\ndata: " + data + b"\n\n"
    for kind, data in [
        (
            b"message_start",
            b'{"type":"message_start","message":{"id":"msg_01A","type":"message","role":"assistant",'
            b'"model":"claude-sonnet-4-5","content":[],"stop_reason":null,"stop_sequence":null,'
            b'"usage":{"input_tokens":31,"output_tokens":1}}}',
        ),
        (
            b"content_block_start",
            b'{"type":"content_block_start","index":0,'
            b'"content_block":{"type":"tool_use","id":"toolu_01","name":"calc","input":{}}}',
        ),
        (
            b"content_block_delta",
            b'{"type":"content_block_delta","index":0,'
            b'"delta":{"type":"input_json_delta","partial_json":"{\\"expr\\": \\"2+2\\"}"}}',
        ),
        (b"content_block_stop", b'{"type":"content_block_stop","index":0}'),
        (
            b"message_delta",
            b'{"type":"message_delta","delta":{"stop_reason":"tool_use","stop_sequence":null},'
            b'"usage":{"output_tokens":40}}',
        ),
        (b"message_stop", b'{"type":"message_stop"}'),
    ]
)


def test_stream_tool_call_example() -> None:
    assert run_stream(TOOL_STREAM) == [
        ToolCallDelta(0, id="toolu_01", name="calc"),
        ToolCallDelta(0, arguments='{"expr": "2+2"}'),
        StreamEnd("tool_calls", Usage(31, 40), model="claude-sonnet-4-5", id="msg_01A"),
    ]


def sse(kind: str, data: dict[str, object]) -> bytes:
    return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps({"type": kind, **data}) + b"\n\n"


START = sse("message_start", {"message": {"id": "msg_9", "model": "m", "content": [], "usage": {"input_tokens": 7}}})


def test_stream_text_and_tool_calls_are_counted_among_tool_calls() -> None:
    raw = b"".join(
        [
            START,
            b'event: ping\ndata: {"type": "ping"}\n\n',
            sse("content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}}),
            sse("content_block_delta", {"index": 0, "delta": {"type": "text_delta", "text": "Hel"}}),
            sse("content_block_delta", {"index": 0, "delta": {"type": "text_delta", "text": "lo"}}),
            sse("content_block_stop", {"index": 0}),
            sse("content_block_start", {"index": 1, "content_block": {"type": "tool_use", "id": "t1", "name": "a"}}),
            sse("content_block_delta", {"index": 1, "delta": {"type": "input_json_delta", "partial_json": ""}}),
            sse("content_block_delta", {"index": 1, "delta": {"type": "input_json_delta", "partial_json": "{}"}}),
            sse("content_block_start", {"index": 2, "content_block": {"type": "tool_use", "id": "t2", "name": "b"}}),
            sse("content_block_delta", {"index": 2, "delta": {"type": "input_json_delta", "partial_json": '{"x":'}}),
            sse("content_block_delta", {"index": 2, "delta": {"type": "input_json_delta", "partial_json": "1}"}}),
            sse("brand_new_event", {"whatever": True}),
            sse("message_delta", {"delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 3}}),
            sse("message_delta", {"delta": {}, "usage": {"output_tokens": 9}}),  # cumulative: the last one counts
            sse("message_stop", {}),
        ]
    )
    assert run_stream(raw) == [
        TextDelta("Hel"),
        TextDelta("lo"),
        ToolCallDelta(0, id="t1", name="a"),
        ToolCallDelta(0, arguments="{}"),
        ToolCallDelta(1, id="t2", name="b"),
        ToolCallDelta(1, arguments='{"x":'),
        ToolCallDelta(1, arguments="1}"),
        StreamEnd("tool_calls", Usage(7, 9), model="m", id="msg_9"),
    ]


@pytest.mark.parametrize(
    ("error_type", "cls"),
    [
        ("overloaded_error", Overloaded),
        ("rate_limit_error", RateLimited),
        ("api_error", ServerError),
        ("authentication_error", KeyInvalid),
        ("invalid_request_error", BadRequest),
        ("something_new", ServerError),
    ],
)
def test_stream_error_event(error_type: str, cls: type[UpstreamError]) -> None:
    error = (
        b'event: error\ndata: {"type":"error","error":{"type":"'
        + error_type.encode()
        + b'","message":"Overloaded"}}\n\n'
    )
    with pytest.raises(cls) as caught:
        run_stream(START + error)
    assert type(caught.value) is cls
    assert caught.value.message == "Overloaded"
    assert caught.value.body is not None


def test_stream_cut_short_is_a_network_error() -> None:
    raw = START + sse("content_block_delta", {"index": 0, "delta": {"type": "text_delta", "text": "Hi"}})
    with pytest.raises(NetworkError, match="message_stop"):
        run_stream(raw)


def test_stream_with_no_events_is_a_network_error() -> None:
    with pytest.raises(NetworkError):
        run_stream(b"")


# ------------------------------------------------------------------ errors


def error_body(kind: str, message: str) -> bytes:
    return orjson.dumps({"type": "error", "error": {"type": kind, "message": message}, "request_id": "req_011CSL"})


@pytest.mark.parametrize(
    ("status", "kind", "message", "cls"),
    [
        (400, "invalid_request_error", "messages: roles must alternate", BadRequest),
        (400, "invalid_request_error", "prompt is too long: 208451 tokens > 200000 maximum", ContextTooLong),
        (
            400,
            "invalid_request_error",
            "You have reached your specified workspace API usage limits. You will regain access on 2026-12-01.",
            QuotaExhausted,
        ),
        (400, "invalid_request_error", "Your credit balance is too low to access the Anthropic API.", QuotaExhausted),
        (401, "authentication_error", "invalid x-api-key", KeyInvalid),
        (402, "billing_error", "Payment required", QuotaExhausted),
        (403, "permission_error", "Your API key does not have permission", KeyInvalid),
        (404, "not_found_error", "model: claude-nope", ModelNotFound),
        (409, "conflict_error", "Conflict", ServerError),
        (413, "request_too_large", "Request exceeds the maximum allowed number of bytes", BadRequest),
        (500, "api_error", "Internal server error", ServerError),
        (503, "api_error", "Service unavailable", Overloaded),
        (504, "timeout_error", "Request timed out", Timeout),
        (529, "overloaded_error", "Overloaded", Overloaded),
    ],
)
def test_error_table(status: int, kind: str, message: str, cls: type[UpstreamError]) -> None:
    body = error_body(kind, message)
    error = ADAPTER.classify_error(status, {}, body)
    assert type(error) is cls
    assert error.message == message
    assert error.status == status
    assert error.request_id == "req_011CSL"
    assert error.body == body
    assert (error.provider, error.key) == ("", "")


def test_overloaded_example() -> None:
    body = b'{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"},"request_id":"req_011CSL"}'
    error = ADAPTER.classify_error(529, {"request-id": "req_header"}, body)
    assert isinstance(error, Overloaded)
    assert error.request_id == "req_header"  # the header is preferred


def test_429_with_retry_after_is_a_rate_limit() -> None:
    error = ADAPTER.classify_error(429, {"retry-after": "30"}, error_body("rate_limit_error", "Number of requests"))
    assert type(error) is RateLimited
    assert error.retry_after == 30.0


def test_429_with_retry_after_ms() -> None:
    error = ADAPTER.classify_error(429, {"retry-after-ms": "2500"}, error_body("rate_limit_error", "slow down"))
    assert type(error) is RateLimited
    assert error.retry_after == 2.5


def test_429_with_only_reset_headers() -> None:
    reset = datetime.fromtimestamp(time.time() + 20, UTC).isoformat().replace("+00:00", "Z")
    headers = {"anthropic-ratelimit-requests-remaining": "0", "anthropic-ratelimit-requests-reset": reset}
    error = ADAPTER.classify_error(429, headers, error_body("rate_limit_error", "Number of requests"))
    assert type(error) is RateLimited
    assert error.retry_after == pytest.approx(20.0, abs=2.0)


def test_plain_429_without_timing_is_a_rate_limit_of_unknown_length() -> None:
    error = ADAPTER.classify_error(429, {}, error_body("rate_limit_error", "Rate limited"))
    assert type(error) is RateLimited
    assert error.retry_after is None


def test_429_spend_cap_without_retry_after_is_quota() -> None:
    # PROVIDERS.md: the tier's monthly spend cap is a 429 without retry-after (message text illustrative)
    body = error_body("rate_limit_error", "You have reached your monthly spend limit for your usage tier.")
    error = ADAPTER.classify_error(429, {}, body)
    assert type(error) is QuotaExhausted
    assert error.retry_after is None


def test_zai_numeric_type_out_of_balance_is_quota() -> None:
    body = (
        b'{"type":"error","error":{"type":"1113",'
        b'"message":"Insufficient balance or no resource package. Please recharge."}}'
    )
    error = ADAPTER.classify_error(429, {}, body)
    assert type(error) is QuotaExhausted
    assert error.message == "Insufficient balance or no resource package. Please recharge."
    assert error.request_id is None


def test_error_without_json_body() -> None:
    error = ADAPTER.classify_error(502, {}, b"<html>502 Bad Gateway</html>")
    assert type(error) is ServerError
    assert error.message == "<html>502 Bad Gateway</html>"
    empty = ADAPTER.classify_error(500, {}, b"")
    assert "500" in empty.message


def test_long_messages_are_truncated() -> None:
    error = ADAPTER.classify_error(400, {}, error_body("invalid_request_error", "x" * 5000))
    assert len(error.message) <= 500


def test_stream_tool_use_whose_input_comes_whole() -> None:
    # a compatible host that sends the input in content_block_start instead of input_json_delta
    block = {"type": "tool_use", "id": "t1", "name": "calc", "input": {"expr": "2+2"}}
    raw = b"".join(
        [
            START,
            sse("content_block_start", {"index": 0, "content_block": block}),
            sse("message_delta", {"delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 5}}),
            sse("message_stop", {}),
        ]
    )
    assert run_stream(raw) == [
        ToolCallDelta(0, id="t1", name="calc", arguments='{"expr":"2+2"}'),
        StreamEnd("tool_calls", Usage(7, 5), model="m", id="msg_9"),
    ]


def test_stream_without_event_names() -> None:
    # some compatible hosts leave out the event: lines; the JSON "type" still names each event
    raw = b"".join([START, sse("message_stop", {})])
    raw = b"\n".join(line for line in raw.split(b"\n") if not line.startswith(b"event:"))
    assert run_stream(raw) == [StreamEnd("other", Usage(7, 0), model="m", id="msg_9")]
