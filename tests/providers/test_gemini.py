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
from keywheel.providers.base import Endpoint
from keywheel.providers.gemini import GeminiAdapter, gemini_schema
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

ADAPTER = GeminiAdapter()
KEY = ApiKey("test-gemini-key-1", "gemini", "1")
ENDPOINT = Endpoint("gemini", "https://generativelanguage.googleapis.com", "gemini-2.5-flash")
BASE = "https://generativelanguage.googleapis.com/v1beta"
CALC = Tool("calc", "math", {"type": "object", "properties": {"expr": {"type": "string"}}, "required": ["expr"]})
CASE = AdapterCase(ADAPTER, KEY, ENDPOINT, "gemini-2.5-flash", step=7)
body_of, run_stream = CASE.body_of, CASE.run_stream


def crlf_sse(*chunks: object) -> bytes:
    return b"".join(b"data: " + orjson.dumps(chunk) + b"\r\n\r\n" for chunk in chunks)


# ------------------------------------------------------------------ requests


def test_build_request_matches_the_documented_example() -> None:
    request = ChatRequest(
        [user("What is 2+2?")], system="Be brief.", max_tokens=256, temperature=0.2, stop=["END"], top_p=0.5
    )
    http = ADAPTER.build_request(ENDPOINT, KEY, request, "gemini-2.5-flash", stream=False)
    assert http.method == "POST"
    assert http.url == f"{BASE}/models/gemini-2.5-flash:generateContent"
    assert http.headers == {"content-type": "application/json", "x-goog-api-key": "test-gemini-key-1"}
    assert http.body is not None
    assert orjson.loads(http.body) == {
        "systemInstruction": {"parts": [{"text": "Be brief."}]},
        "contents": [{"role": "user", "parts": [{"text": "What is 2+2?"}]}],
        "generationConfig": {"maxOutputTokens": 256, "temperature": 0.2, "stopSequences": ["END"], "topP": 0.5},
    }


def test_key_never_in_the_url_or_body() -> None:
    for stream in (False, True):
        http = ADAPTER.build_request(ENDPOINT, KEY, ChatRequest([user("hi")]), "gemini-2.5-flash", stream=stream)
        assert "test-gemini-key-1" not in http.url
        assert http.body is not None and b"test-gemini-key-1" not in http.body
        assert "key=" not in http.url
    probe = ADAPTER.probe_request(ENDPOINT, KEY)
    assert "test-gemini-key-1" not in probe.url
    raw = ADAPTER.build_raw_request(ENDPOINT, KEY, {"contents": []}, "gemini-2.5-flash", stream=True)
    assert "test-gemini-key-1" not in raw.url


def test_stream_url_and_no_version_header() -> None:
    http = ADAPTER.build_request(ENDPOINT, KEY, ChatRequest([user("hi")]), "gemini-2.5-flash", stream=True)
    assert http.url == f"{BASE}/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
    assert not any("version" in name.lower() for name in http.headers)
    assert "generationConfig" not in orjson.loads(http.body or b"{}")


def test_versioned_base_and_prefixed_model() -> None:
    endpoint = Endpoint("gemini", "https://proxy.example/v1beta/", "m")
    http = ADAPTER.build_request(endpoint, KEY, ChatRequest([user("hi")]), "models/gemini-2.5-pro", stream=False)
    assert http.url == "https://proxy.example/v1beta/models/gemini-2.5-pro:generateContent"


def test_bearer_token_goes_in_authorization() -> None:
    token = ApiKey("test-gemini-token-1", "gemini", "token", auth="bearer")
    headers = ADAPTER.build_request(ENDPOINT, token, ChatRequest([user("hi")]), "m", stream=False).headers
    assert headers["authorization"] == "Bearer test-gemini-token-1"
    assert "x-goog-api-key" not in headers


def test_tools_round_trip_with_thought_signature() -> None:
    request = ChatRequest(
        [
            user("What is 2+2?"),
            Message(
                "assistant",
                [
                    TextPart("Checking."),
                    ToolCall("call_0", "calc", {"expr": "2+2"}, extra={"thoughtSignature": "c2ln"}),
                    ToolCall("call_1", "calc", {"expr": "3+3"}),
                ],
            ),
            Message("user", [ToolResultPart("call_0", "4")]),  # name looked up from the call
            Message("user", [ToolResultPart("call_1", "division by zero", name="calc", is_error=True)]),
        ],
        tools=[CALC],
    )
    body = body_of(request)
    assert body["tools"] == [
        {"functionDeclarations": [{"name": "calc", "description": "math", "parameters": CALC.parameters}]}
    ]
    assert body["contents"] == [
        {"role": "user", "parts": [{"text": "What is 2+2?"}]},
        {
            "role": "model",
            "parts": [
                {"text": "Checking."},
                {"functionCall": {"name": "calc", "args": {"expr": "2+2"}}, "thoughtSignature": "c2ln"},
                {"functionCall": {"name": "calc", "args": {"expr": "3+3"}}},
            ],
        },
        {
            "role": "user",
            "parts": [
                {"functionResponse": {"name": "calc", "response": {"content": "4"}}},
                {"functionResponse": {"name": "calc", "response": {"error": "division by zero"}}},
            ],
        },
    ]


@pytest.mark.parametrize(
    ("choice", "config"),
    [
        ("auto", {"mode": "AUTO"}),
        ("required", {"mode": "ANY"}),
        ("none", {"mode": "NONE"}),
        ("calc", {"mode": "ANY", "allowedFunctionNames": ["calc"]}),
    ],
)
def test_tool_config(choice: str, config: dict[str, object]) -> None:
    body = body_of(ChatRequest([user("hi")], tools=[CALC], tool_choice=choice))
    assert body["toolConfig"] == {"functionCallingConfig": config}


def test_schema_is_cut_to_gemini_subset() -> None:
    schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "unit": {"type": ["string", "null"], "enum": ["c", "f"]},
            "mode": {"const": "fast"},
            "point": {"$ref": "#/$defs/Point"},
            "note": {"anyOf": [{"type": "string"}, {"type": "null"}], "default": None},
            "either": {"oneOf": [{"type": "string"}, {"type": "integer"}]},
        },
        "required": ["point"],
        "$defs": {
            "Point": {
                "type": "object",
                "additionalProperties": False,
                "properties": {"x": {"type": "number", "exclusiveMinimum": 0}},
            }
        },
    }
    assert gemini_schema(schema) == {
        "type": "object",
        "properties": {
            "unit": {"type": "string", "nullable": True, "enum": ["c", "f"]},
            "mode": {"enum": ["fast"]},
            "point": {"type": "object", "properties": {"x": {"type": "number"}}},
            "note": {"nullable": True, "type": "string", "default": None},
            "either": {"anyOf": [{"type": "string"}, {"type": "integer"}]},
        },
        "required": ["point"],
    }


def test_recursive_ref_terminates() -> None:
    schema = {
        "$ref": "#/$defs/Node",
        "$defs": {"Node": {"type": "object", "properties": {"next": {"$ref": "#/$defs/Node"}}}},
    }
    assert gemini_schema(schema)["type"] == "object"


def test_tool_without_arguments_sends_no_parameters() -> None:
    body = body_of(ChatRequest([user("hi")], tools=[Tool("now", None, {"type": "object", "properties": {}})]))
    assert body["tools"] == [{"functionDeclarations": [{"name": "now"}]}]


def test_images() -> None:
    message = Message(
        "user",
        [
            ImagePart(media_type="image/jpeg", data="/9j/4A"),
            ImagePart(url="data:image/png;base64,iVBOR"),
            ImagePart(url="https://example.com/cat.png"),
        ],
    )
    assert body_of(ChatRequest([message]))["contents"] == [
        {
            "role": "user",
            "parts": [
                {"inlineData": {"mimeType": "image/jpeg", "data": "/9j/4A"}},
                {"inlineData": {"mimeType": "image/png", "data": "iVBOR"}},
                {"fileData": {"fileUri": "https://example.com/cat.png", "mimeType": "image/png"}},
            ],
        }
    ]


def test_extra_is_merged_into_nested_config() -> None:
    extra = {
        "generationConfig": {"thinkingConfig": {"thinkingBudget": 0}},
        "safetySettings": [{"category": "HARM_CATEGORY_HARASSMENT", "threshold": "BLOCK_NONE"}],
    }
    body = body_of(ChatRequest([user("hi")], max_tokens=50, extra=extra))
    assert body["generationConfig"] == {"maxOutputTokens": 50, "thinkingConfig": {"thinkingBudget": 0}}
    assert body["safetySettings"] == extra["safetySettings"]


def test_build_raw_request_moves_model_to_the_url() -> None:
    raw = {"model": "gemini-x", "contents": [{"role": "user", "parts": [{"text": "hi"}]}], "cachedContent": "c/1"}
    http = ADAPTER.build_raw_request(ENDPOINT, KEY, raw, "gemini-2.5-flash", stream=True)
    assert http.url == f"{BASE}/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
    assert http.body is not None
    assert orjson.loads(http.body) == {"contents": raw["contents"], "cachedContent": "c/1"}
    assert http.headers["x-goog-api-key"] == "test-gemini-key-1"
    assert raw["model"] == "gemini-x"


def test_probe_request() -> None:
    http = ADAPTER.probe_request(ENDPOINT, KEY)
    assert (http.method, http.url, http.body) == ("GET", f"{BASE}/models?pageSize=1", None)
    assert http.headers == {"x-goog-api-key": "test-gemini-key-1"}


# ------------------------------------------------------------------ responses


def test_parse_response_example() -> None:
    body = (
        b'{"candidates":[{"content":{"role":"model","parts":[{"text":"4"}]},"finishReason":"STOP","index":0}],'
        b'"usageMetadata":{"promptTokenCount":12,"candidatesTokenCount":1,"totalTokenCount":13},'
        b'"modelVersion":"gemini-2.5-flash","responseId":"r1"}'
    )
    completion = ADAPTER.parse_response(body)
    assert completion.text == "4"
    assert completion.finish_reason == "stop"
    assert completion.usage == Usage(12, 1)
    assert (completion.model, completion.id) == ("gemini-2.5-flash", "r1")


def test_parse_function_calls_and_thoughts() -> None:
    body = orjson.dumps(
        {
            "candidates": [
                {
                    "content": {
                        "role": "model",
                        "parts": [
                            {"text": "thinking about it", "thought": True},
                            {"text": "Sure."},
                            {"functionCall": {"name": "calc", "args": {"expr": "2+2"}}, "thoughtSignature": "c2ln"},
                            {"functionCall": {"id": "fc-9", "name": "calc", "args": {"expr": "3+3"}}},
                        ],
                    },
                    "finishReason": "STOP",
                }
            ],
            "usageMetadata": {"promptTokenCount": 20, "candidatesTokenCount": 10, "thoughtsTokenCount": 30},
        }
    )
    completion = ADAPTER.parse_response(body)
    assert completion.text == "Sure."
    assert completion.tool_calls == [
        ToolCall("call_0", "calc", {"expr": "2+2"}, extra={"thoughtSignature": "c2ln"}),
        ToolCall("fc-9", "calc", {"expr": "3+3"}),
    ]
    assert completion.finish_reason == "tool_calls"  # a function call ends with STOP
    assert completion.usage == Usage(20, 40)


@pytest.mark.parametrize(
    ("reason", "finish"),
    [
        ("STOP", "stop"),
        ("MAX_TOKENS", "length"),
        ("SAFETY", "content_filter"),
        ("RECITATION", "content_filter"),
        ("BLOCKLIST", "content_filter"),
        ("PROHIBITED_CONTENT", "content_filter"),
        ("SPII", "content_filter"),
        ("IMAGE_SAFETY", "content_filter"),
        ("MALFORMED_FUNCTION_CALL", "other"),
        ("OTHER", "other"),
    ],
)
def test_finish_reasons(reason: str, finish: str) -> None:
    body = orjson.dumps({"candidates": [{"content": {"role": "model", "parts": []}, "finishReason": reason}]})
    assert ADAPTER.parse_response(body).finish_reason == finish


def test_blocked_prompt_is_a_filtered_completion_not_an_error() -> None:
    body = b'{"promptFeedback":{"blockReason":"SAFETY"},"usageMetadata":{"promptTokenCount":8,"totalTokenCount":8}}'
    completion = ADAPTER.parse_response(body)
    assert (completion.text, completion.tool_calls, completion.finish_reason) == ("", [], "content_filter")
    assert completion.usage == Usage(8, 0)


def test_error_in_a_200_body_is_raised() -> None:
    with pytest.raises(Overloaded):
        ADAPTER.parse_response(b'{"error":{"code":503,"message":"The model is overloaded.","status":"UNAVAILABLE"}}')


# ------------------------------------------------------------------ streams

TEXT_STREAM = (
    b'data: {"candidates":[{"content":{"role":"model","parts":[{"text":"Two plus"}]},"index":0}],'
    b'"usageMetadata":{"promptTokenCount":12,"totalTokenCount":12},"modelVersion":"gemini-2.5-flash","responseId":"r1"}'
    b"\r\n\r\n"
    b'data: {"candidates":[{"content":{"role":"model","parts":[{"text":" two is 4."}]},'
    b'"finishReason":"STOP","index":0}],'
    b'"usageMetadata":{"promptTokenCount":12,"candidatesTokenCount":6,"totalTokenCount":18},'
    b'"modelVersion":"gemini-2.5-flash","responseId":"r1"}'
    b"\r\n\r\n"
)


def test_stream_text_example_with_crlf() -> None:
    assert run_stream(TEXT_STREAM) == [
        TextDelta("Two plus"),
        TextDelta(" two is 4."),
        StreamEnd("stop", Usage(12, 6), model="gemini-2.5-flash", id="r1"),
    ]


def test_stream_function_call_arrives_whole() -> None:
    part = {"functionCall": {"name": "calc", "args": {"expr": "2+2"}}, "thoughtSignature": "c2ln"}
    raw = crlf_sse(
        {"candidates": [{"content": {"role": "model", "parts": [part]}}]},
        {"candidates": [{"content": {"role": "model", "parts": [{"text": ""}]}, "finishReason": "STOP"}]},
    )
    assert run_stream(raw) == [
        ToolCallDelta(0, id="call_0", name="calc", arguments='{"expr":"2+2"}', extra={"thoughtSignature": "c2ln"}),
        StreamEnd("tool_calls", Usage()),
    ]


def test_stream_blocked_prompt() -> None:
    events = run_stream(crlf_sse({"promptFeedback": {"blockReason": "PROHIBITED_CONTENT"}}))
    assert events == [StreamEnd("content_filter", Usage())]


@pytest.mark.parametrize(
    ("chunk", "cls"),
    [
        ({"error": {"code": 503, "message": "The model is overloaded.", "status": "UNAVAILABLE"}}, Overloaded),
        ({"error": {"code": 429, "message": "Resource exhausted", "status": "RESOURCE_EXHAUSTED"}}, RateLimited),
        ({"error": {"message": "Internal error", "status": "INTERNAL"}}, ServerError),
        ([{"error": {"code": 504, "message": "Deadline expired", "status": "DEADLINE_EXCEEDED"}}], Timeout),
    ],
)
def test_stream_error_chunk(chunk: object, cls: type[UpstreamError]) -> None:
    raw = crlf_sse({"candidates": [{"content": {"role": "model", "parts": [{"text": "Hi"}]}}]}, chunk)
    with pytest.raises(cls) as caught:
        run_stream(raw)
    assert type(caught.value) is cls


def test_stream_cut_short_is_a_network_error() -> None:
    raw = crlf_sse({"candidates": [{"content": {"role": "model", "parts": [{"text": "Two plus"}]}}]})
    with pytest.raises(NetworkError):
        run_stream(raw)


# ------------------------------------------------------------------ errors


def gemini_error(code: int, status: str, message: str, *details: dict[str, object]) -> bytes:
    return orjson.dumps({"error": {"code": code, "message": message, "status": status, "details": list(details)}})


BAD_KEY = gemini_error(
    400,
    "INVALID_ARGUMENT",
    "API key not valid. Please pass a valid API key.",
    {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID", "domain": "googleapis.com"},
)
RETRY_59S: dict[str, object] = {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "59s"}


def quota(quota_id: str) -> dict[str, object]:
    return {"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": [{"quotaId": quota_id}]}


@pytest.mark.parametrize(
    ("status", "body", "cls"),
    [
        (400, BAD_KEY, KeyInvalid),
        (
            400,
            gemini_error(
                400,
                "INVALID_ARGUMENT",
                "The input token count (1200000) exceeds the maximum number of tokens allowed (1048576).",
            ),
            ContextTooLong,
        ),
        (
            400,
            gemini_error(400, "FAILED_PRECONDITION", "User location is not supported for the API use."),
            QuotaExhausted,
        ),
        (400, gemini_error(400, "INVALID_ARGUMENT", "Invalid JSON payload received."), BadRequest),
        (401, gemini_error(401, "UNAUTHENTICATED", "Request had invalid authentication credentials."), KeyInvalid),
        (
            403,
            gemini_error(403, "PERMISSION_DENIED", "Method doesn't allow unregistered callers (callers without key)."),
            KeyInvalid,
        ),
        (404, gemini_error(404, "NOT_FOUND", "models/gemini-9 is not found for API version v1beta"), ModelNotFound),
        (500, gemini_error(500, "INTERNAL", "An internal error has occurred."), ServerError),
        (503, gemini_error(503, "UNAVAILABLE", "The model is overloaded. Please try again later."), Overloaded),
        (504, gemini_error(504, "DEADLINE_EXCEEDED", "Deadline expired before operation could complete."), Timeout),
    ],
)
def test_error_table(status: int, body: bytes, cls: type[UpstreamError]) -> None:
    error = ADAPTER.classify_error(status, {}, body)
    assert type(error) is cls
    assert error.status == status
    assert error.message == orjson.loads(body)["error"]["message"]
    assert error.body == body


def test_429_per_minute_example_is_a_rate_limit_with_retry_delay() -> None:
    body = (
        b'{"error":{"code":429,'
        b'"message":"You exceeded your current quota, please check your plan and billing details.",'
        b'"status":"RESOURCE_EXHAUSTED","details":[{"@type":"type.googleapis.com/google.rpc.QuotaFailure",'
        b'"violations":[{"quotaId":"GenerateRequestsPerMinutePerProjectPerModel-FreeTier"}]},'
        b'{"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"59s"}]}}'
    )
    error = ADAPTER.classify_error(429, {}, body)
    assert type(error) is RateLimited
    assert error.retry_after == 59.0


def test_429_per_day_is_quota_until_pacific_midnight() -> None:
    body = gemini_error(
        429,
        "RESOURCE_EXHAUSTED",
        "You exceeded your current quota",
        quota("GenerateRequestsPerDayPerProjectPerModel-FreeTier"),
        RETRY_59S,
    )
    error = ADAPTER.classify_error(429, {}, body)
    assert type(error) is QuotaExhausted
    assert error.retry_after is not None and 0 < error.retry_after <= 25 * 3600
    assert isinstance(error, QuotaExhausted) and error.daily  # the project's: its whole key group rests


def test_billing_precondition_is_a_quota_but_not_a_daily_one() -> None:
    body = gemini_error(400, "FAILED_PRECONDITION", "User location is not supported for the API use.")
    error = ADAPTER.classify_error(400, {}, body)
    assert isinstance(error, QuotaExhausted) and not error.daily


def test_429_per_day_quota_metric() -> None:
    violation = {"quotaMetric": "generativelanguage.googleapis.com/generate_requests_per_model_per_day"}
    body = gemini_error(
        429,
        "RESOURCE_EXHAUSTED",
        "quota",
        {"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": [violation]},
    )
    assert type(ADAPTER.classify_error(429, {}, body)) is QuotaExhausted


def test_429_falls_back_to_retry_after_header_then_none() -> None:
    body = gemini_error(429, "RESOURCE_EXHAUSTED", "Resource has been exhausted (e.g. check quota).")
    error = ADAPTER.classify_error(429, {"Retry-After": "7"}, body)
    assert (type(error), error.retry_after) == (RateLimited, 7.0)
    error = ADAPTER.classify_error(429, {}, body)
    assert (type(error), error.retry_after) == (RateLimited, None)


def test_array_error_body() -> None:
    body = b"[" + BAD_KEY + b"]"
    error = ADAPTER.classify_error(400, {}, body)
    assert type(error) is KeyInvalid
    assert error.message == "API key not valid. Please pass a valid API key."


def test_stream_keeps_the_last_usage_and_skips_thoughts() -> None:
    raw = crlf_sse(
        {
            "candidates": [{"content": {"role": "model", "parts": [{"text": "hmm", "thought": True}]}}],
            "usageMetadata": {"promptTokenCount": 5, "thoughtsTokenCount": 3},
        },
        {
            "candidates": [{"content": {"role": "model", "parts": [{"text": "Hi"}]}, "finishReason": "MAX_TOKENS"}],
            "usageMetadata": {"promptTokenCount": 5, "candidatesTokenCount": 2, "thoughtsTokenCount": 3},
        },
    )
    assert run_stream(raw) == [TextDelta("Hi"), StreamEnd("length", Usage(5, 5))]
