import json

import orjson
import pytest

from keywheel.errors import (
    BadRequest,
    ContentFiltered,
    ContextTooLong,
    KeyInvalid,
    ModelNotFound,
    Overloaded,
    QuotaExhausted,
    RateLimited,
    ServerError,
    Timeout,
    UpstreamError,
)
from keywheel.providers.base import Endpoint
from keywheel.providers.openai_compat import OpenAICompatAdapter, _completion, _plain_completion
from keywheel.secrets import ApiKey
from keywheel.types import (
    ChatRequest,
    ImagePart,
    Message,
    TextPart,
    Tool,
    ToolCall,
    ToolResultPart,
    Usage,
)
from tests.providers.harness import AdapterCase, user

ADAPTER = OpenAICompatAdapter()
KEY = ApiKey("test-openrouter-key-1", "openrouter", "1")
OPENROUTER = Endpoint(
    "openrouter",
    "https://openrouter.ai/api/v1",
    "meta-llama/llama-3.3-70b-instruct:free",
    {"HTTP-Referer": "https://example.app", "X-OpenRouter-Title": "ExampleApp"},
)
OPENAI = Endpoint("openai", "https://api.openai.com/v1", "gpt-4.1-mini")
CALC = Tool("calc", "math", {"type": "object", "properties": {"expr": {"type": "string"}}})
CASE = AdapterCase(ADAPTER, KEY, OPENAI, "gpt-4.1-mini", step=11)
body_of, run_stream = CASE.body_of, CASE.run_stream


def sse(*chunks: object) -> bytes:
    return b"".join(b"data: " + (c if isinstance(c, bytes) else orjson.dumps(c)) + b"\n\n" for c in chunks)


# ------------------------------------------------------------------ requests


def test_openrouter_example_request() -> None:
    request = ChatRequest([user("What is 2+2?")], system="Be brief.", max_tokens=256)
    http = ADAPTER.build_request(OPENROUTER, KEY, request, "meta-llama/llama-3.3-70b-instruct:free", stream=True)
    assert (http.method, http.url) == ("POST", "https://openrouter.ai/api/v1/chat/completions")
    assert http.headers == {
        "content-type": "application/json",
        "http-referer": "https://example.app",
        "x-openrouter-title": "ExampleApp",
        "authorization": "Bearer test-openrouter-key-1",
    }
    assert http.body is not None
    assert orjson.loads(http.body) == {
        "model": "meta-llama/llama-3.3-70b-instruct:free",
        "max_tokens": 256,
        "stream": True,
        "stream_options": {"include_usage": True},
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 2+2?"}],
    }


def test_openai_example_request_with_image_and_tools() -> None:
    message = Message("user", [TextPart("Describe:"), ImagePart(media_type="image/png", data="iVBOR…")])
    request = ChatRequest([message], system="Be brief.", max_tokens=256, temperature=0.2, stop=["END"], tools=[CALC])
    assert body_of(request, stream=True) == {
        "model": "gpt-4.1-mini",
        "max_tokens": 256,
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
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBOR…"}},
                ],
            },
        ],
        "tools": [
            {
                "type": "function",
                "function": {
                    "name": "calc",
                    "description": "math",
                    "parameters": {"type": "object", "properties": {"expr": {"type": "string"}}},
                },
            }
        ],
    }


def test_bearer_whatever_the_key_auth() -> None:
    token = ApiKey("test-openai-key-1", "openai", "1", auth="bearer")
    for key in (KEY, token):
        headers = ADAPTER.build_request(OPENAI, key, ChatRequest([user("hi")]), "m", stream=False).headers
        assert headers["authorization"] == f"Bearer {key.reveal()}"


def test_non_streaming_body_has_no_stream_fields_and_url_image() -> None:
    body = body_of(ChatRequest([Message("user", [ImagePart(url="https://example.com/cat.png")])], top_p=0.3))
    assert "stream" not in body and "stream_options" not in body
    assert body["top_p"] == 0.3
    assert body["messages"] == [
        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}]}
    ]


def test_tool_round_trip() -> None:
    request = ChatRequest(
        [
            user("What is 2+2?"),
            Message("assistant", [ToolCall("call_1", "calc", {"expr": "2+2"}), ToolCall("call_2", "calc", {})]),
            Message("user", [TextPart("(both done)"), ToolResultPart("call_1", "4"), ToolResultPart("call_2", "0")]),
            Message("assistant", [TextPart("It is 4.")]),
        ]
    )
    assert body_of(request)["messages"] == [
        {"role": "user", "content": "What is 2+2?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "calc", "arguments": '{"expr":"2+2"}'}},
                {"id": "call_2", "type": "function", "function": {"name": "calc", "arguments": "{}"}},
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "4"},
        {"role": "tool", "tool_call_id": "call_2", "content": "0"},
        {"role": "user", "content": "(both done)"},
        {"role": "assistant", "content": "It is 4."},
    ]


@pytest.mark.parametrize(
    ("choice", "wire"),
    [
        ("auto", "auto"),
        ("none", "none"),
        ("required", "required"),
        ("calc", {"type": "function", "function": {"name": "calc"}}),
    ],
)
def test_tool_choice(choice: str, wire: object) -> None:
    assert body_of(ChatRequest([user("hi")], tools=[CALC], tool_choice=choice))["tool_choice"] == wire


def test_extra_is_merged_last() -> None:
    extra = {"max_completion_tokens": 100, "provider": {"order": ["openai"]}, "stream_options": {"x": 1}}
    body = body_of(ChatRequest([user("hi")], max_tokens=5, extra=extra), stream=True)
    assert body["max_completion_tokens"] == 100
    assert body["provider"] == {"order": ["openai"]}
    assert body["stream_options"] == {"include_usage": True, "x": 1}


def test_build_raw_request() -> None:
    raw = {"model": "x", "messages": [], "reasoning": {"effort": "low"}}
    http = ADAPTER.build_raw_request(OPENROUTER, KEY, raw, "openai/gpt-4o", stream=True)
    assert http.body is not None
    assert orjson.loads(http.body) == {
        **raw,
        "model": "openai/gpt-4o",
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    assert raw == {"model": "x", "messages": [], "reasoning": {"effort": "low"}}
    own = {**raw, "stream_options": {"include_usage": False}}
    http = ADAPTER.build_raw_request(OPENROUTER, KEY, own, "openai/gpt-4o", stream=True)
    assert orjson.loads(http.body or b"")["stream_options"] == {"include_usage": False}
    http = ADAPTER.build_raw_request(OPENROUTER, KEY, raw, "openai/gpt-4o", stream=False)
    assert orjson.loads(http.body or b"")["stream"] is False
    assert "stream_options" not in orjson.loads(http.body or b"")
    assert http.headers["authorization"] == "Bearer test-openrouter-key-1"


def test_probe_requests() -> None:
    http = ADAPTER.probe_request(OPENROUTER, KEY)
    assert (http.method, http.url, http.body) == ("GET", "https://openrouter.ai/api/v1/key", None)
    assert http.headers["authorization"] == "Bearer test-openrouter-key-1"
    assert ADAPTER.probe_request(OPENAI, KEY).url == "https://api.openai.com/v1/models"


# ------------------------------------------------------------------ responses


def test_parse_openrouter_example() -> None:
    body = (
        b'{"id":"gen-abc","object":"chat.completion","created":1764100000,"model":"openai/gpt-4o","provider":"OpenAI",'
        b'"choices":[{"index":0,"message":{"role":"assistant","content":"4"},"finish_reason":"stop",'
        b'"native_finish_reason":"stop"}],"usage":{"prompt_tokens":20,"completion_tokens":1,"total_tokens":21,'
        b'"cost":0.00006}}'
    )
    completion = ADAPTER.parse_response(body)
    assert completion.text == "4"
    assert completion.finish_reason == "stop"
    assert completion.usage == Usage(20, 1, cost=0.00006)
    assert (completion.model, completion.id) == ("openai/gpt-4o", "gen-abc")


def test_parse_openai_tool_call_example() -> None:
    body = (
        b'{"id":"chatcmpl-1","object":"chat.completion","created":1764100000,"model":"gpt-4.1-mini",'
        b'"choices":[{"index":0,"message":{"role":"assistant","content":null,"tool_calls":[{"id":"call_1",'
        b'"type":"function","function":{"name":"calc","arguments":"{\\"expr\\":\\"2+2\\"}"}}]},'
        b'"finish_reason":"tool_calls"}],"usage":{"prompt_tokens":60,"completion_tokens":15,"total_tokens":75}}'
    )
    completion = ADAPTER.parse_response(body)
    assert completion.text == ""
    assert completion.tool_calls == [ToolCall("call_1", "calc", {"expr": "2+2"})]
    assert completion.finish_reason == "tool_calls"
    assert completion.usage == Usage(60, 15)


DROP = object()


def _answer(**changes: object) -> dict[str, object]:
    """The common answer (one choice of text, usage), with top-level fields replaced or removed (DROP)."""
    base: dict[str, object] = {
        "id": "gen-1",
        "model": "m",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "4"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 20, "completion_tokens": 1, "total_tokens": 21, "cost": 0.5},
    }
    for name, value in changes.items():
        if value is DROP:
            base.pop(name)
        else:
            base[name] = value
    return base


def _choice(message: object = None, finish: object = "stop", **more: object) -> list[object]:
    choice = {"index": 0, "message": {"role": "assistant", "content": "4"} if message is None else message}
    return [{**choice, "finish_reason": finish, **more}]


def _usage_of(**fields: object) -> dict[str, object]:
    return {"prompt_tokens": 20, "completion_tokens": 1, **fields}


# Answers the fast path reads itself (True) or leaves to the general one (False): either way,
# what comes out must be what the general path gives.
PLAIN_SHAPES: list[tuple[str, object, bool]] = [
    ("common", _answer(), True),
    ("length", _answer(choices=_choice(finish="length")), True),
    ("no id, no model", _answer(id=DROP, model=DROP), True),
    ("error null", _answer(error=None), True),
    ("cost an int", _answer(usage=_usage_of(cost=1)), True),
    ("no cost", _answer(usage=_usage_of()), True),
    ("cost null", _answer(usage=_usage_of(cost=None)), True),
    ("negative tokens", _answer(usage={"prompt_tokens": -1, "completion_tokens": 0}), True),
    ("no tool_calls, no refusal", _answer(choices=_choice({"content": "4", "tool_calls": [], "refusal": None})), True),
    ("empty refusal", _answer(choices=_choice({"content": "4", "refusal": ""})), True),
    ("empty content", _answer(choices=_choice({"content": ""})), True),
    ("unicode and escapes", _answer(choices=_choice({"content": 'é ✓ "q" \\ \n 𝄞'})), True),
    ("id and model not strings", _answer(id=7, model=["m"]), False),
    ("id null", _answer(id=None), False),
    ("cost a string", _answer(usage=_usage_of(cost="0.1")), False),
    ("cost a bool", _answer(usage=_usage_of(cost=True)), False),
    ("error", {"error": {"message": "upstream", "code": 502}}, False),
    ("error with choices", _answer(error={"message": "upstream", "code": 502}), False),
    ("error a string", _answer(error="upstream failed"), False),
    ("no usage", _answer(usage=DROP), False),
    ("usage null", _answer(usage=None), False),
    ("usage a list", _answer(usage=[1]), False),
    ("tokens floats", _answer(usage={"prompt_tokens": 1.0, "completion_tokens": 1}), False),
    ("tokens bools", _answer(usage={"prompt_tokens": True, "completion_tokens": 1}), False),
    ("tokens missing", _answer(usage={"prompt_tokens": 1}), False),
    ("tokens beyond 64 bits", _answer(usage={"prompt_tokens": 2**64, "completion_tokens": 1}), False),
    ("no choices", _answer(choices=DROP), False),
    ("choices empty", _answer(choices=[]), False),
    ("two choices", _answer(choices=_choice() * 2), False),
    ("choices an object", _answer(choices={"message": {"content": "4"}}), False),
    ("choices a string", _answer(choices="x"), False),
    ("choice a string", _answer(choices=["x"]), False),
    ("choice a list", _answer(choices=[["message"]]), False),
    ("choice null", _answer(choices=[None]), False),
    ("message a string", _answer(choices=_choice("4")), False),
    ("message a list", _answer(choices=_choice(["content"])), False),
    ("no message", _answer(choices=[{"finish_reason": "stop"}]), False),
    ("content null", _answer(choices=_choice({"content": None})), False),
    ("content parts", _answer(choices=_choice({"content": [{"type": "text", "text": "4"}]})), False),
    ("no content", _answer(choices=_choice({"role": "assistant"})), False),
    ("tool calls", _answer(choices=_choice({"content": "", "tool_calls": [{"id": "c"}]}, "tool_calls")), False),
    ("tool calls with stop", _answer(choices=_choice({"content": "", "tool_calls": [{"id": "c"}]})), False),
    ("tool calls an object", _answer(choices=_choice({"content": "4", "tool_calls": {"id": "c"}})), False),
    ("refusal", _answer(choices=_choice({"content": None, "refusal": "no"})), False),
    ("refusal with content", _answer(choices=_choice({"content": "4", "refusal": "no"})), False),
    ("refusal not a string", _answer(choices=_choice({"content": "4", "refusal": 0})), False),
    ("finish error", _answer(choices=_choice(finish="error", error={"message": "upstream", "code": 502})), False),
    ("finish content_filter", _answer(choices=_choice(finish="content_filter")), False),
    ("finish null", _answer(choices=_choice(finish=None)), False),
    ("finish a list", _answer(choices=_choice(finish=["stop"])), False),
    ("no finish", _answer(choices=[{"message": {"content": "4"}}]), False),
    ("a list", [_answer()], False),
    ("a string", "4", False),
    ("null", None, False),
]


def _json(value: object) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()  # integers of any size


# Bodies that are not a serialised Python value: JSON edge cases, read as orjson reads them.
PLAIN_BODIES: list[tuple[str, bytes, bool]] = [
    (
        "duplicate content: the last wins",
        orjson.dumps(_answer())[:-1].replace(b'"4"}', b'"3","content":"4"}') + b"}",
        True,
    ),
    ("whitespace around", b"  \n" + orjson.dumps(_answer()) + b"\n ", True),
    ("not JSON", b"<html>502 Bad Gateway</html>", False),
    ("cut short", orjson.dumps(_answer())[:-5], False),
    ("invalid UTF-8 in content", orjson.dumps(_answer()).replace(b'"4"', b'"\xff"'), False),
    ("empty", b"", False),
]


@pytest.mark.parametrize(
    ("body", "plain"),
    [(_json(p), fast) for _, p, fast in PLAIN_SHAPES] + [(b, fast) for _, b, fast in PLAIN_BODIES],
    ids=[name for name, _, _ in PLAIN_SHAPES] + [name for name, _, _ in PLAIN_BODIES],
)
def test_the_plain_answer_path_reads_as_the_general_one(body: bytes, plain: bool) -> None:
    """``parse_response``'s fast path gives what the defensive walk gives, or leaves the answer to it."""
    fast = _plain_completion(body)
    assert (fast is not None) == plain
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError:
        payload = None
    try:
        general = _completion(payload, body)
    except UpstreamError as exc:
        assert fast is None
        with pytest.raises(type(exc)):
            ADAPTER.parse_response(body)
        return
    if fast is not None:
        assert fast == general
        assert type(fast.usage.cost) is type(general.usage.cost)  # 1 and 1.0 are equal; the types too
    assert ADAPTER.parse_response(body) == general


def test_invalid_tool_arguments_are_kept_raw() -> None:
    call = {"id": "c", "type": "function", "function": {"name": "calc", "arguments": '{"expr": "2+'}}
    body = orjson.dumps({"choices": [{"message": {"tool_calls": [call]}, "finish_reason": "tool_calls"}]})
    assert ADAPTER.parse_response(body).tool_calls == [ToolCall("c", "calc", {"_raw": '{"expr": "2+'})]


@pytest.mark.parametrize(
    ("reason", "finish"),
    [
        ("stop", "stop"),
        ("length", "length"),
        ("tool_calls", "tool_calls"),
        ("content_filter", "content_filter"),
        ("function_call", "tool_calls"),
        ("something_else", "other"),
    ],
)
def test_finish_reasons(reason: str, finish: str) -> None:
    body = orjson.dumps({"choices": [{"message": {"role": "assistant", "content": "x"}, "finish_reason": reason}]})
    assert ADAPTER.parse_response(body).finish_reason == finish


def test_refusal_is_content_filter() -> None:
    message = {"role": "assistant", "content": None, "refusal": "I can't help with that."}
    completion = ADAPTER.parse_response(orjson.dumps({"choices": [{"message": message, "finish_reason": "stop"}]}))
    assert completion.finish_reason == "content_filter"
    assert completion.text == "I can't help with that."


def test_openrouter_error_in_a_200_choice() -> None:
    body = orjson.dumps(
        {
            "id": "gen-x",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": ""},
                    "finish_reason": "error",
                    "error": {"code": 502, "message": "Provider returned error", "metadata": {"provider_name": "X"}},
                }
            ],
        }
    )
    with pytest.raises(ServerError) as caught:
        ADAPTER.parse_response(body)
    assert caught.value.status == 502
    assert caught.value.message == "Provider returned error"


def test_top_level_error_in_a_200() -> None:
    body = b'{"error":{"code":429,"message":"Rate limit exceeded","metadata":{"error_type":"rate_limit_exceeded"}}}'
    with pytest.raises(RateLimited):
        ADAPTER.parse_response(body)


# ------------------------------------------------------------------ errors


def or_error(code: int, message: str, **metadata: object) -> bytes:
    return orjson.dumps({"error": {"code": code, "message": message, "metadata": metadata}})


def oa_error(message: str, kind: str, code: str | None) -> bytes:
    return orjson.dumps({"error": {"message": message, "type": kind, "param": None, "code": code}})


@pytest.mark.parametrize(
    ("status", "body", "cls"),
    [
        (400, oa_error("Invalid value for 'temperature'", "invalid_request_error", None), BadRequest),
        (
            400,
            oa_error(
                "This model's maximum context length is 128000 tokens. However, you requested 130000 tokens.",
                "invalid_request_error",
                "context_length_exceeded",
            ),
            ContextTooLong,
        ),
        (
            400,
            or_error(400, "Input too long for the selected model", error_type="context_length_exceeded"),
            ContextTooLong,
        ),
        (400, or_error(400, "This endpoint's maximum context length is 8192 tokens."), ContextTooLong),
        (400, or_error(400, "Blocked by policy", error_type="content_policy_violation"), ContentFiltered),
        (400, or_error(400, "The model refused", error_type="refusal"), ContentFiltered),
        (401, oa_error("Incorrect API key provided", "invalid_request_error", "invalid_api_key"), KeyInvalid),
        (401, or_error(401, "User not found.", error_type="authentication"), KeyInvalid),
        (402, or_error(402, "Insufficient credits", limit_source="openrouter_credits"), QuotaExhausted),
        (402, or_error(402, "Key limit exceeded", limit_source="openrouter_key_limit"), QuotaExhausted),
        (
            403,
            or_error(403, "Input was flagged", reasons=["violence"], flagged_input="...", provider_name="OpenAI"),
            ContentFiltered,
        ),
        (403, oa_error("Country, region, or territory not supported", "request_forbidden", None), KeyInvalid),
        (404, oa_error("The model `gpt-9` does not exist", "invalid_request_error", "model_not_found"), ModelNotFound),
        (408, or_error(408, "Request timed out"), Timeout),
        (
            429,
            oa_error(
                "You exceeded your current quota, please check your plan and billing details.",
                "insufficient_quota",
                "insufficient_quota",
            ),
            QuotaExhausted,
        ),
        (429, oa_error("Rate limit reached for gpt-4.1-mini", "requests", "rate_limit_exceeded"), RateLimited),
        (500, oa_error("The server had an error", "server_error", None), ServerError),
        (502, or_error(502, "Provider returned error", error_type="provider_unavailable"), ServerError),
        (503, or_error(503, "No provider meets the routing rules", error_type="provider_overloaded"), Overloaded),
        (504, or_error(504, "Gateway timeout", error_type="timeout"), Timeout),
    ],
)
def test_error_table(status: int, body: bytes, cls: type[UpstreamError]) -> None:
    error = ADAPTER.classify_error(status, {}, body)
    assert type(error) is cls
    assert error.status == status
    assert error.message == orjson.loads(body)["error"]["message"]
    assert error.body == body


def test_openai_quota_example_is_not_retried() -> None:
    body = (
        b'{"error":{"message":"You exceeded your current quota, please check your plan and billing details.",'
        b'"type":"insufficient_quota","param":null,"code":"insufficient_quota"}}'
    )
    error = ADAPTER.classify_error(429, {"retry-after": "20"}, body)
    assert type(error) is QuotaExhausted
    assert error.retry_after is None


def test_openrouter_402_example() -> None:
    body = b'{"error":{"code":402,"message":"Insufficient credits","metadata":{"limit_source":"openrouter_credits"}}}'
    assert type(ADAPTER.classify_error(402, {}, body)) is QuotaExhausted


def test_in_flight_budget_402_is_transient() -> None:
    body = or_error(402, "In-flight budget exceeded", limit_source="openrouter_in_flight_budget")
    error = ADAPTER.classify_error(402, {"Retry-After": "3"}, body)
    assert type(error) is RateLimited
    assert error.retry_after == 3.0


@pytest.mark.parametrize(
    ("headers", "retry_after"),
    [
        ({"Retry-After": "12"}, 12.0),
        ({"retry-after-ms": "750"}, 0.75),
        (
            {
                "x-ratelimit-reset-requests": "1s",
                "x-ratelimit-reset-tokens": "6m0s",
                "x-ratelimit-remaining-requests": "0",
            },
            1.0,
        ),
        ({"x-ratelimit-reset-tokens": "1m30.5s"}, 90.5),
        ({}, None),
    ],
)
def test_429_retry_timing(headers: dict[str, str], retry_after: float | None) -> None:
    error = ADAPTER.classify_error(429, headers, or_error(429, "Rate limit exceeded", error_type="rate_limit_exceeded"))
    assert type(error) is RateLimited
    assert error.retry_after == retry_after


def test_gemini_compat_array_error_with_bad_key() -> None:
    body = (
        b'[{"error":{"code":400,"message":"API key not valid. Please pass a valid API key.",'
        b'"status":"INVALID_ARGUMENT"}}]'
    )
    error = ADAPTER.classify_error(400, {}, body)
    assert type(error) is KeyInvalid
    assert error.message == "API key not valid. Please pass a valid API key."


def test_request_ids() -> None:
    body = oa_error("boom", "server_error", None)
    assert ADAPTER.classify_error(500, {"x-request-id": "req_1"}, body).request_id == "req_1"
    assert ADAPTER.classify_error(500, {"X-Generation-Id": "gen-2"}, body).request_id == "gen-2"
    with_id = orjson.dumps({"id": "gen-3", "error": {"code": 500, "message": "boom"}})
    assert ADAPTER.classify_error(500, {}, with_id).request_id == "gen-3"
    assert ADAPTER.classify_error(500, {}, body).request_id is None
