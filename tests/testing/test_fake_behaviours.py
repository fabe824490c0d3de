"""The fake upstream's behaviours, checked on the raw wire with httpx: statuses,
headers, bodies, stream cuts, hangs, disconnects and the request record."""

from __future__ import annotations

import re
import threading
import time
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
import orjson
import pytest

from keywheel.testing import FakeUpstream

KEY = "test-key-1"
OTHER = "test-key-2"
ROUTES = ["anthropic", "gemini", "openai", "openrouter"]


def chat(
    fake: FakeUpstream, route: str, key: str | None = KEY, *, stream: bool = False, sse: bool = True
) -> tuple[str, dict[str, str], dict[str, Any]]:
    """URL, headers and body of a small chat request in ``route``'s dialect."""
    text = "what is two plus two"
    headers: dict[str, str] = {}
    if route == "anthropic":
        if key:
            headers["x-api-key"] = key
        headers["anthropic-version"] = "2023-06-01"
        body: dict[str, Any] = {
            "model": "claude-sonnet-4-6",
            "max_tokens": 50,
            "messages": [{"role": "user", "content": text}],
        }
        return fake.url + "/v1/messages", headers, {**body, "stream": stream}
    if route == "gemini":
        if key:
            headers["x-goog-api-key"] = key
        action = "streamGenerateContent" + ("?alt=sse" if sse else "") if stream else "generateContent"
        body = {"contents": [{"role": "user", "parts": [{"text": text}]}]}
        return f"{fake.url}/v1beta/models/gemini-2.5-flash:{action}", headers, body
    if key:
        headers["authorization"] = f"Bearer {key}"
    base = fake.openai_base_url if route == "openai" else fake.openrouter_base_url
    body = {"model": "gpt-4.1-mini", "messages": [{"role": "user", "content": text}], "stream": stream}
    return base + "/chat/completions", headers, body


def post(fake: FakeUpstream, route: str, key: str | None = KEY, **kwargs: Any) -> httpx.Response:
    url, headers, body = chat(fake, route, key)
    return httpx.post(url, headers=headers, json=body, **kwargs)


def content_events(route: str, text: str) -> int:
    """How many content events (one word / one argument fragment each) ``text`` holds."""
    if route == "anthropic":
        return text.count("event: content_block_delta")
    if route == "gemini":
        return text.count('"text":')
    return len(re.findall(r'"delta":\{"content":"[^"]', text))


def read_stream(fake: FakeUpstream, route: str, key: str = KEY, *, sse: bool = True) -> tuple[str, Exception | None]:
    """Everything a streaming request received, and the error that ended it (None: clean end)."""
    url, headers, body = chat(fake, route, key, stream=True, sse=sse)
    received = b""
    try:
        with httpx.stream("POST", url, headers=headers, json=body, timeout=5) as response:
            assert response.status_code == 200
            for piece in response.iter_raw():
                received += piece
    except (httpx.RemoteProtocolError, httpx.ReadError) as exc:
        return received.decode(), exc
    return received.decode(), None


def wait_for(condition: Any, timeout: float = 2.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


# -- scripting ---------------------------------------------------------------------------------------------------------


def test_times_plays_then_falls_back(fake: FakeUpstream) -> None:
    fake.set(KEY, "rate_limit", times=2)
    assert [post(fake, "openai").status_code for _ in range(3)] == [429, 429, 200]


def test_temporary_behaviours_queue_in_order_over_the_permanent_one(fake: FakeUpstream) -> None:
    fake.set(KEY, "invalid")
    fake.set(KEY, "overloaded", times=1)
    fake.set(KEY, "forbidden", times=2)
    statuses = [post(fake, "openai").status_code for _ in range(5)]
    assert statuses == [503, 403, 403, 401, 401]
    fake.set(KEY, "server_error", times=3)
    fake.set(KEY, "ok")  # a permanent set drops what was queued
    assert post(fake, "openai").status_code == 200


def test_behaviour_is_per_key(fake: FakeUpstream) -> None:
    fake.set(KEY, "invalid")
    assert post(fake, "anthropic", KEY).status_code == 401
    assert post(fake, "anthropic", OTHER).status_code == 200


@pytest.mark.parametrize(
    ("kind", "params"),
    [("nope", {}), ("rate_limit", {"seconds": 1}), ("hang", {"seconds": "1"}), ("rate_limit", {"style": "x"})],
)
def test_set_rejects_unknown_kinds_and_parameters(fake: FakeUpstream, kind: str, params: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        fake.set(KEY, kind, **params)


def test_set_rejects_bad_times(fake: FakeUpstream) -> None:
    with pytest.raises(ValueError):
        fake.set(KEY, "ok", times=-1)


def test_reset_forgets_everything(fake: FakeUpstream) -> None:
    fake.set(KEY, "invalid")
    fake.set_credit(KEY, limit=1, usage=1)
    post(fake, "openai")
    fake.reset()
    assert fake.requests == [] and fake.count(KEY) == 0 and fake.disconnects == []
    assert post(fake, "openai").status_code == 200
    assert (
        httpx.get(fake.url + "/api/v1/key", headers={"authorization": f"Bearer {KEY}"}).json()["data"]["limit"] is None
    )


# -- the request record ------------------------------------------------------------------------------------------------


def test_recorded_request(fake: FakeUpstream) -> None:
    before = time.monotonic()
    post(fake, "openrouter")
    url, headers, body = chat(fake, "gemini", OTHER, stream=True)
    httpx.post(url, headers=headers, json=body)
    after = time.monotonic()
    first, second = fake.requests
    assert (first.dialect, first.method, first.path, first.key, first.stream) == (
        "openai",
        "POST",
        "/api/v1/chat/completions",
        KEY,
        False,
    )
    assert first.body["messages"][0]["content"] == "what is two plus two"
    assert first.headers["authorization"] == f"Bearer {KEY}"
    assert (second.dialect, second.key, second.stream, second.query) == ("gemini", OTHER, True, {"alt": "sse"})
    assert before <= first.at <= second.at <= after
    assert second.seq == first.seq + 1
    assert fake.count(KEY) == 1 and fake.count(OTHER) == 1 and fake.count("nobody") == 0
    assert fake.times(KEY) == [first.at]


def test_gemini_key_sources(fake: FakeUpstream) -> None:
    url, _, body = chat(fake, "gemini")
    assert httpx.post(url, headers={"x-goog-api-key": KEY}, json=body).status_code == 200
    assert httpx.post(url, params={"key": OTHER}, json=body).status_code == 200
    assert [(r.key, r.dialect) for r in fake.requests] == [(KEY, "gemini"), (OTHER, "gemini")]


def test_anthropic_accepts_x_api_key_and_bearer(fake: FakeUpstream) -> None:
    url, headers, body = chat(fake, "anthropic")
    del headers["x-api-key"]
    assert httpx.post(url, headers={**headers, "authorization": f"Bearer {OTHER}"}, json=body).status_code == 200
    assert post(fake, "anthropic").status_code == 200
    assert [r.key for r in fake.requests] == [OTHER, KEY]


def test_anthropic_requires_a_version_header(fake: FakeUpstream) -> None:
    url, headers, body = chat(fake, "anthropic")
    del headers["anthropic-version"]
    response = httpx.post(url, headers=headers, json=body)
    assert response.status_code == 400
    assert response.json()["error"] == {
        "type": "invalid_request_error",
        "message": "anthropic-version: header is required",
    }


@pytest.mark.parametrize(
    ("route", "status", "marker"),
    [
        ("anthropic", 401, "authentication_error"),
        ("gemini", 403, "PERMISSION_DENIED"),
        ("openai", 401, None),
        ("openrouter", 401, None),
    ],
)
def test_missing_key(fake: FakeUpstream, route: str, status: int, marker: str | None) -> None:
    response = post(fake, route, key=None)
    assert response.status_code == status
    assert marker is None or marker in response.text
    assert fake.requests[0].key is None


# -- error answers -----------------------------------------------------------------------------------------------------

ERROR_SHAPES: list[tuple[str, str, int, dict[str, Any]]] = [
    ("anthropic", "rate_limit", 429, {"type": "rate_limit_error"}),
    ("anthropic", "quota", 402, {"type": "billing_error"}),
    ("anthropic", "invalid", 401, {"type": "authentication_error"}),
    ("anthropic", "forbidden", 403, {"type": "permission_error"}),
    ("anthropic", "server_error", 500, {"type": "api_error"}),
    ("anthropic", "overloaded", 529, {"type": "overloaded_error"}),
    ("anthropic", "bad_request", 400, {"type": "invalid_request_error"}),
    ("anthropic", "context_too_long", 400, {"message": "prompt is too long: 208451 tokens > 200000 maximum"}),
    ("gemini", "rate_limit", 429, {"status": "RESOURCE_EXHAUSTED", "code": 429}),
    ("gemini", "quota", 429, {"status": "RESOURCE_EXHAUSTED"}),
    (
        "gemini",
        "invalid",
        400,
        {"status": "INVALID_ARGUMENT", "message": "API key not valid. Please pass a valid API key."},
    ),
    ("gemini", "forbidden", 403, {"status": "PERMISSION_DENIED"}),
    ("gemini", "server_error", 500, {"status": "INTERNAL"}),
    ("gemini", "overloaded", 503, {"status": "UNAVAILABLE"}),
    ("gemini", "bad_request", 400, {"status": "INVALID_ARGUMENT"}),
    ("gemini", "context_too_long", 400, {"status": "INVALID_ARGUMENT"}),
    ("openai", "rate_limit", 429, {"code": "rate_limit_exceeded"}),
    ("openai", "quota", 429, {"code": "insufficient_quota", "type": "insufficient_quota"}),
    ("openai", "invalid", 401, {"code": "invalid_api_key"}),
    ("openai", "server_error", 500, {"type": "server_error"}),
    ("openai", "overloaded", 503, {}),
    ("openai", "bad_request", 400, {"type": "invalid_request_error", "param": "max_completion_tokens"}),
    ("openai", "context_too_long", 400, {"code": "context_length_exceeded"}),
    ("openrouter", "rate_limit", 429, {"code": 429, "metadata": {"error_type": "rate_limit_exceeded"}}),
    ("openrouter", "quota", 402, {"code": 402}),
    ("openrouter", "invalid", 401, {"code": 401}),
    ("openrouter", "forbidden", 403, {"code": 403}),
    ("openrouter", "server_error", 500, {"code": 500}),
    ("openrouter", "overloaded", 503, {"code": 503, "metadata": {"error_type": "provider_overloaded"}}),
    ("openrouter", "context_too_long", 400, {"metadata": {"error_type": "context_length_exceeded"}}),
]


@pytest.mark.parametrize(("route", "kind", "status", "expected"), ERROR_SHAPES)
def test_error_shapes(fake: FakeUpstream, route: str, kind: str, status: int, expected: dict[str, Any]) -> None:
    fake.set(KEY, kind)
    response = post(fake, route)
    assert response.status_code == status
    body = response.json()
    error = body["error"]
    assert {name: error[name] for name in expected} == expected
    assert isinstance(error["message"], str) and error["message"]
    assert KEY not in response.text
    if route == "anthropic":
        assert body["type"] == "error" and response.headers["request-id"] == body["request_id"]


def test_gemini_details(fake: FakeUpstream) -> None:
    fake.set(KEY, "invalid", times=1)
    fake.set(KEY, "quota", times=1)
    fake.set(KEY, "bad_request", field="contents", times=1)
    invalid, quota, bad = (post(fake, "gemini").json()["error"]["details"] for _ in range(3))
    assert invalid[0]["@type"] == "type.googleapis.com/google.rpc.ErrorInfo"
    assert invalid[0]["reason"] == "API_KEY_INVALID"
    assert quota[0]["violations"][0]["quotaId"] == "GenerateRequestsPerDayPerProjectPerModel-FreeTier"
    assert bad[0]["fieldViolations"][0]["field"] == "contents"


def test_openrouter_quota_names_its_source(fake: FakeUpstream) -> None:
    fake.set(KEY, "quota", times=1)
    fake.set(KEY, "quota", limit_source="openrouter_in_flight_budget", retry_after=2, times=1)
    credits, budget = post(fake, "openrouter"), post(fake, "openrouter")
    assert credits.json()["error"]["metadata"]["limit_source"] == "openrouter_credits"
    assert "retry-after" not in credits.headers
    assert budget.json()["error"]["metadata"]["limit_source"] == "openrouter_in_flight_budget"
    assert budget.headers["retry-after"] == "2"


TIMING_HEADERS = ("retry-after", "retry-after-ms", "anthropic-ratelimit-requests-reset", "x-ratelimit-reset-requests")


def timing_signals(response: httpx.Response) -> dict[str, str]:
    """Every retry-timing signal in a 429: headers, and Gemini's RetryInfo."""
    found = {name: response.headers[name] for name in TIMING_HEADERS if name in response.headers}
    for detail in response.json()["error"].get("details", []):
        if detail["@type"].endswith("RetryInfo"):
            found["RetryInfo"] = detail["retryDelay"]
    return found


@pytest.mark.parametrize(
    ("route", "style", "retry_after", "expected"),
    [
        ("anthropic", None, 2, {"retry-after": "2"}),
        ("openai", None, 1.5, {"retry-after": "1.5"}),
        ("openrouter", None, 3, {"retry-after": "3"}),
        ("gemini", None, 1.5, {"RetryInfo": "1.5s"}),
        ("gemini", "retry-info", 59, {"RetryInfo": "59s"}),
        ("gemini", "retry-after", 2, {"retry-after": "2"}),
        ("anthropic", "retry-after-ms", 1.5, {"retry-after-ms": "1500"}),
        ("openai", "openai-reset", 1.5, {"x-ratelimit-reset-requests": "1.5s"}),
        ("anthropic", "none", 2, {}),
        ("openai", "retry-after", None, {}),
        ("gemini", "retry-info", None, {}),
        ("anthropic", "retry-info", 2, {}),  # a Gemini body field: other dialects have nowhere to put it
    ],
)
def test_rate_limit_styles(
    fake: FakeUpstream, route: str, style: str | None, retry_after: float | None, expected: dict[str, str]
) -> None:
    params: dict[str, Any] = {"retry_after": retry_after} | ({"style": style} if style else {})
    fake.set(KEY, "rate_limit", **params)
    response = post(fake, route)
    assert response.status_code == 429
    assert timing_signals(response) == expected


def test_rate_limit_default_retry_after_is_one_second(fake: FakeUpstream) -> None:
    fake.set(KEY, "rate_limit")
    assert post(fake, "anthropic").headers["retry-after"] == "1"


@pytest.mark.parametrize("route", ["openai", "anthropic"])
def test_rate_limit_http_date(fake: FakeUpstream, route: str) -> None:
    fake.set(KEY, "rate_limit", retry_after=2, style="http-date")
    now = time.time()
    signals = timing_signals(post(fake, route))
    assert list(signals) == ["retry-after"]
    at = parsedate_to_datetime(signals["retry-after"]).timestamp()
    assert now + 2 <= at <= now + 3.5


def test_rate_limit_anthropic_reset(fake: FakeUpstream) -> None:
    fake.set(KEY, "rate_limit", retry_after=2, style="anthropic-reset")
    now = time.time()
    signals = timing_signals(post(fake, "anthropic"))
    assert list(signals) == ["anthropic-ratelimit-requests-reset"]
    reset = signals["anthropic-ratelimit-requests-reset"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", reset)
    assert now + 2 <= datetime.fromisoformat(reset).timestamp() <= now + 3.5


# -- hang, break, in-band errors, slow streams -------------------------------------------------------------------------


def test_hang_delays_the_answer_without_blocking_others(fake: FakeUpstream) -> None:
    fake.set(KEY, "hang", seconds=0.6)
    hung: dict[str, Any] = {}

    def hang() -> None:
        started = time.monotonic()
        hung["status"] = post(fake, "anthropic").status_code
        hung["took"] = time.monotonic() - started

    thread = threading.Thread(target=hang)
    thread.start()
    wait_for(lambda: fake.count(KEY) == 1)
    started = time.monotonic()
    assert post(fake, "gemini", OTHER).status_code == 200
    assert time.monotonic() - started < 0.3
    thread.join(5)
    assert hung["status"] == 200 and hung["took"] >= 0.6
    assert fake.disconnects == []


def test_hang_records_a_client_that_gives_up(fake: FakeUpstream) -> None:
    fake.set(KEY, "hang", seconds=10)
    with pytest.raises(httpx.ReadTimeout):
        post(fake, "openai", timeout=0.2)
    gave_up = time.monotonic()
    wait_for(lambda: fake.disconnects, timeout=1.0)
    [(key, at)] = fake.disconnects
    assert key == KEY and at - gave_up < 1.0


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("after", [0, 3])
def test_break_stream_cuts_after_n_content_events(fake: FakeUpstream, route: str, after: int) -> None:
    fake.set(KEY, "break_stream", after=after)
    text, error = read_stream(fake, route)
    assert error is not None, "the stream must end broken, not cleanly"
    assert content_events(route, text) == after
    assert "message_stop" not in text and "[DONE]" not in text and "STOP" not in text


def test_break_stream_in_a_gemini_json_array(fake: FakeUpstream) -> None:
    fake.set(KEY, "break_stream", after=2)
    text, error = read_stream(fake, "gemini", sse=False)
    assert error is not None and text.startswith("[") and text.count('"text":') == 2


def test_break_stream_after_everything_still_breaks(fake: FakeUpstream) -> None:
    fake.set(KEY, "break_stream", after=1000)
    text, error = read_stream(fake, "anthropic")
    assert error is not None and content_events("anthropic", text) > 5 and "message_stop" not in text


def test_break_stream_without_streaming_drops_the_connection(fake: FakeUpstream) -> None:
    fake.set(KEY, "break_stream", times=1)
    with pytest.raises(httpx.RemoteProtocolError):
        post(fake, "openai")
    assert post(fake, "openai").status_code == 200
    assert fake.disconnects == []  # the fake hung up, not the client


def _sse_data(text: str) -> list[Any]:
    return [orjson.loads(line[6:]) for line in text.splitlines() if line.startswith("data: {")]


@pytest.mark.parametrize("route", ROUTES)
def test_stream_error_is_in_band(fake: FakeUpstream, route: str) -> None:
    fake.set(KEY, "stream_error", after=3)
    text, error = read_stream(fake, route)
    assert error is None, "an in-band error ends the stream cleanly"
    assert content_events(route, text) == 3
    last = _sse_data(text)[-1]
    if route == "anthropic":
        assert "event: error" in text and "message_stop" not in text
        assert last["error"]["type"] == "overloaded_error"
    elif route == "gemini":
        assert last == {"error": {"code": 503, "message": last["error"]["message"], "status": "UNAVAILABLE"}}
    elif route == "openrouter":
        assert last["error"]["code"] == 503 and last["choices"][0]["finish_reason"] == "error"
    else:
        assert last["error"]["type"] == "server_error"


def test_stream_error_in_a_gemini_json_array(fake: FakeUpstream) -> None:
    fake.set(KEY, "stream_error", after=2)
    text, error = read_stream(fake, "gemini", sse=False)
    elements = orjson.loads(text)
    assert error is None and len(elements) == 3 and elements[-1]["error"]["status"] == "UNAVAILABLE"


def test_stream_error_without_streaming(fake: FakeUpstream) -> None:
    fake.set(KEY, "stream_error")
    assert post(fake, "anthropic").status_code == 529
    assert post(fake, "gemini").status_code == 503
    assert post(fake, "openai").status_code == 503
    assert post(fake, "openrouter").json()["choices"][0]["finish_reason"] == "error"  # OpenRouter: 200, failed choice


def test_slow_stream_paces_events(fake: FakeUpstream) -> None:
    fake.set(KEY, "slow_stream", interval=0.04)
    started = time.monotonic()
    text, error = read_stream(fake, "gemini")
    events = content_events("gemini", text)
    assert error is None and events > 5
    assert time.monotonic() - started >= (events - 1) * 0.04


@pytest.mark.parametrize("route", ["anthropic", "gemini"])
def test_slow_stream_records_a_client_that_leaves(fake: FakeUpstream, route: str) -> None:
    fake.set(KEY, "slow_stream", interval=0.2)
    url, headers, body = chat(fake, route, stream=True)
    with httpx.stream("POST", url, headers=headers, json=body) as response:
        pieces = response.iter_raw()
        next(pieces)
    left = time.monotonic()
    wait_for(lambda: fake.disconnects, timeout=1.0)
    [(key, at)] = fake.disconnects
    assert key == KEY and 0 <= at - left < 1.0


# -- wire details ------------------------------------------------------------------------------------------------------


def test_anthropic_event_sequence(fake: FakeUpstream) -> None:
    text, _ = read_stream(fake, "anthropic")
    names = re.findall(r"^event: (\w+)$", text, flags=re.MULTILINE)
    deltas = names.count("content_block_delta")
    assert deltas > 5
    assert names == [
        "message_start",
        "content_block_start",
        "ping",
        *["content_block_delta"] * deltas,
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    data = _sse_data(text)
    assert data[0]["message"]["usage"]["input_tokens"] == 5
    assert data[-2]["usage"]["output_tokens"] == deltas  # cumulative
    assert "[DONE]" not in text


def test_gemini_sse_uses_crlf(fake: FakeUpstream) -> None:
    text, _ = read_stream(fake, "gemini")
    assert text.endswith("\r\n\r\n") and "\n\n" not in text.replace("\r\n\r\n", "")
    chunks = _sse_data(text)
    assert all("finishReason" not in c["candidates"][0] for c in chunks[:-1])
    assert chunks[-1]["candidates"][0]["finishReason"] == "STOP"
    assert chunks[-1]["usageMetadata"]["candidatesTokenCount"] == len(chunks)


def test_gemini_stream_without_sse_is_one_json_array(fake: FakeUpstream) -> None:
    text, error = read_stream(fake, "gemini", sse=False)
    chunks = orjson.loads(text)
    assert error is None and len(chunks) > 5 and chunks[-1]["candidates"][0]["finishReason"] == "STOP"


def test_openai_stream_framing(fake: FakeUpstream) -> None:
    openai_text, _ = read_stream(fake, "openai")
    openrouter_text, _ = read_stream(fake, "openrouter")
    assert openai_text.endswith("data: [DONE]\n\n") and openrouter_text.endswith("data: [DONE]\n\n")
    assert openrouter_text.startswith(": OPENROUTER PROCESSING\n\n")
    assert not openai_text.startswith(":")
    assert all("usage" not in chunk for chunk in _sse_data(openai_text))  # no include_usage asked
    assert "usage" in _sse_data(openrouter_text)[-1]


def test_tool_result_text(fake: FakeUpstream) -> None:
    url, headers, body = chat(fake, "anthropic")
    body["messages"] = [
        {"role": "user", "content": "compute"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "calc", "input": {}}]},
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": [{"type": "text", "text": "4"}]}],
        },
    ]
    body["tools"] = [{"name": "calc", "input_schema": {"type": "object"}}]
    reply = httpx.post(url, headers=headers, json=body).json()
    assert reply["content"][0]["text"].endswith("the tool said 4")


# -- other endpoints ---------------------------------------------------------------------------------------------------


def test_model_lists(fake: FakeUpstream) -> None:
    bearer = {"authorization": f"Bearer {KEY}"}
    openai_list = httpx.get(fake.url + "/v1/models", headers=bearer).json()
    assert openai_list["object"] == "list"
    assert set(openai_list["data"][0]) == {"id", "object", "created", "owned_by"}
    openrouter_list = httpx.get(fake.url + "/api/v1/models", headers=bearer).json()
    assert openrouter_list["object"] == "list" and openrouter_list["data"][0]["object"] == "model"
    anthropic_list = httpx.get(fake.url + "/v1/models", headers={**bearer, "anthropic-version": "2023-06-01"}).json()
    assert anthropic_list["data"][0]["type"] == "model" and anthropic_list["has_more"] is False
    gemini_list = httpx.get(fake.url + "/v1beta/models", headers={"x-goog-api-key": KEY}).json()
    assert gemini_list["models"][0]["name"].startswith("models/") and "nextPageToken" not in gemini_list
    assert [r.dialect for r in fake.requests] == ["openai", "openai", "anthropic", "gemini"]


def test_probes_obey_behaviours(fake: FakeUpstream) -> None:
    fake.set(KEY, "invalid")
    assert httpx.get(fake.url + "/v1beta/models", headers={"x-goog-api-key": KEY}).status_code == 400
    assert httpx.get(fake.url + "/api/v1/key", headers={"authorization": f"Bearer {KEY}"}).status_code == 401


def test_openrouter_key_info(fake: FakeUpstream) -> None:
    def info(path: str = "/api/v1/key") -> dict[str, Any]:
        response = httpx.get(fake.url + path, headers={"authorization": f"Bearer {KEY}"})
        assert response.status_code == 200
        data: dict[str, Any] = response.json()["data"]
        return data

    unlimited = info()
    assert (unlimited["limit"], unlimited["limit_remaining"], unlimited["usage"]) == (None, None, 0.0)
    assert KEY not in str(unlimited)
    fake.set_credit(KEY, limit=10.0, usage=2.5, usage_daily=0.5, is_free_tier=True, label="ci")
    capped = info("/api/v1/auth/key")
    assert (capped["limit"], capped["limit_remaining"], capped["usage"], capped["usage_daily"]) == (10.0, 7.5, 2.5, 0.5)
    assert capped["is_free_tier"] is True and capped["label"] == "ci"
    assert httpx.get(fake.url + "/api/v1/key").status_code == 401
