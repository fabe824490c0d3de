"""The fake upstream's wire faults (``behaviours.WIRE_FAULTS``), checked on the raw wire
with httpx: resets before the first byte and midway, trickled bodies, and 200s that are
garbage, HTML, an error object, or a stream without its end."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx
import orjson
import pytest
from tests.testing.test_fake_behaviours import KEY, ROUTES, chat, content_events, post, read_stream

from keywheel.testing import FakeUpstream

RESET = (httpx.ReadError, httpx.RemoteProtocolError)


@pytest.mark.parametrize("route", ROUTES)
def test_reset_before_the_first_byte(fake: FakeUpstream, route: str) -> None:
    fake.set(KEY, "reset", times=1)
    with pytest.raises(RESET) as info:
        post(fake, route)
    assert "reset" in repr(info.value.__cause__ or info.value).lower() or isinstance(info.value, httpx.ReadError)
    assert post(fake, route).status_code == 200  # once only


@pytest.mark.parametrize("route", ROUTES)
def test_reset_mid_stream_after_n_content_events(fake: FakeUpstream, route: str) -> None:
    fake.set(KEY, "reset", after=2)
    text, error = read_stream(fake, route)
    assert isinstance(error, RESET)
    assert content_events(route, text) == 2
    assert "message_stop" not in text and "[DONE]" not in text and "STOP" not in text


def test_reset_midway_through_a_non_streamed_body(fake: FakeUpstream) -> None:
    fake.set(KEY, "reset", after=1)
    url, headers, body = chat(fake, "anthropic")
    received = b""
    with pytest.raises(RESET), httpx.stream("POST", url, headers=headers, json=body, timeout=5) as response:
        assert response.status_code == 200
        length = int(response.headers["content-length"])
        for piece in response.iter_raw():
            received += piece
    assert 0 < len(received) < length


@pytest.mark.parametrize("route", ROUTES)
def test_trickle_delivers_the_whole_answer_slowly(fake: FakeUpstream, route: str) -> None:
    fake.set(KEY, "trickle", interval=0.005, size=40)
    url, headers, body = chat(fake, route)
    pieces = 0
    started = time.monotonic()
    with httpx.stream("POST", url, headers=headers, json=body, timeout=5) as response:
        data = b""
        for piece in response.iter_raw():
            data += piece
            pieces += 1
    assert time.monotonic() - started >= 0.005 * (len(data) // 40 - 1)
    assert pieces > 3 and "from fake" in str(orjson.loads(data))
    fake.set(KEY, "trickle", interval=0.002, size=61)  # pieces that split events and lines
    text, error = read_stream(fake, route)
    assert error is None and content_events(route, text) > 5


@pytest.mark.parametrize("route", ROUTES)
def test_garbage_json_and_sse_with_200(fake: FakeUpstream, route: str) -> None:
    fake.set(KEY, "garbage")
    response = post(fake, route)
    assert response.status_code == 200 and response.headers["content-type"].startswith("application/json")
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(response.content)
    url, headers, body = chat(fake, route, stream=True)
    streamed = httpx.post(url, headers=headers, json=body, timeout=5)
    assert streamed.status_code == 200 and streamed.headers["content-type"].startswith("text/event-stream")
    assert streamed.content.startswith(b"data: {") and b"\xff" in streamed.content  # not even UTF-8


@pytest.mark.parametrize("route", ROUTES)
def test_html_200(fake: FakeUpstream, route: str) -> None:
    fake.set(KEY, "html")
    response = post(fake, route)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    assert response.text.startswith("<!DOCTYPE html>")


@pytest.mark.parametrize(
    ("route", "error_of"),
    [
        ("anthropic", lambda b: b["type"] == "error" and b["error"]["type"] == "overloaded_error"),
        ("gemini", lambda b: b["error"]["status"] == "UNAVAILABLE" and b["error"]["code"] == 503),
        ("openai", lambda b: b["error"]["type"] == "server_error"),
        ("openrouter", lambda b: b["choices"][0]["finish_reason"] == "error" and b["choices"][0]["error"]["code"]),
    ],
)
def test_error_object_in_a_200(fake: FakeUpstream, route: str, error_of: Callable[[Any], object]) -> None:
    fake.set(KEY, "error_200")
    response = post(fake, route)
    assert response.status_code == 200
    assert error_of(response.json())
    text, error = read_stream(fake, route)
    assert error is None and content_events(route, text) == 0
    first = [line for line in text.splitlines() if line.startswith("data: {")]
    assert '"error"' in first[-1]


@pytest.mark.parametrize("route", ROUTES)
def test_stream_without_a_terminator_ends_cleanly_after_the_content(fake: FakeUpstream, route: str) -> None:
    fake.set(KEY, "no_terminator")
    text, error = read_stream(fake, route)
    assert error is None and content_events(route, text) > 5
    for end in ("message_stop", "message_delta", "[DONE]", 'finish_reason":"stop', "finishReason"):
        assert end not in text
    assert post(fake, route).status_code == 200  # a non-streamed answer is whole


def test_gemini_json_array_without_a_terminator_has_no_closing_bracket(fake: FakeUpstream) -> None:
    fake.set(KEY, "no_terminator")
    text, error = read_stream(fake, "gemini", sse=False)
    assert error is None and text.startswith("[") and not text.rstrip().endswith("]")
    assert "finishReason" not in text
