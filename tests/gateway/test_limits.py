"""Bounds on what goes in and out: values the encoder cannot write, the catch-all for the
unforeseen, and the size bound on upstream answers (whole bodies and single stream events)."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import httpx
import httpx2
import pytest

from keywheel import Wheel
from keywheel.config import settings_from_env
from keywheel.gateway import Gateway
from keywheel.providers.base import HttpRequest
from keywheel.testing import FakeUpstream
from keywheel.transport import HttpResponse, Transport
from tests.gateway.conftest import GATEWAY_KEY, Served, start_gateway
from tests.helpers import fake_env

OPENAI = {"authorization": f"Bearer {GATEWAY_KEY}"}
ANTHROPIC = {"x-api-key": GATEWAY_KEY, "anthropic-version": "2023-06-01"}
USER = [{"role": "user", "content": "hello"}]
MAX_RESPONSE = 1_000_000
MAX_EVENT = 200_000


@pytest.fixture(scope="module")
def bounded(tmp_path_factory: pytest.TempPathFactory, fake_server: FakeUpstream) -> Iterator[Served]:
    env = fake_env(
        fake_server,
        AI_PROVIDER="gemini",
        FALLBACK_ORDER="openrouter,anthropic",
        KEYWHEEL_GATEWAY_KEYS=GATEWAY_KEY,
        KEYWHEEL_MAX_RESPONSE_BYTES=str(MAX_RESPONSE),
        KEYWHEEL_MAX_EVENT_BYTES=str(MAX_EVENT),
    )
    served = start_gateway(env, tmp_path_factory.mktemp("bounded") / "gateway.log")
    yield served
    served.stop()


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=30) as client:
        yield client


# ------------------------------------------------------------------ defect 4: no input gives a 500


@pytest.mark.parametrize(
    ("path", "headers", "body"),
    [
        # Translated requests (fallback off, so no same-dialect provider can pass the value on as it is:
        # pass-through forwards the caller's value untouched and leaves judging it to the upstream).
        ("/v1/chat/completions", OPENAI, {"model": "gemini/gemini-2.5-flash", "messages": USER, "max_tokens": 1e30}),
        ("/v1/messages", ANTHROPIC, {"model": "gemini/gemini-2.5-flash", "messages": USER, "max_tokens": 1e30}),
        (
            "/v1/chat/completions",
            OPENAI,
            {"model": "anthropic/claude-x", "messages": USER, "max_completion_tokens": 2e19},
        ),
    ],
)
def test_an_integer_beyond_64_bits_is_a_400_naming_the_field(
    bounded: Served, fake: FakeUpstream, http: httpx.Client, path: str, headers: dict[str, str], body: dict[str, object]
) -> None:
    resp = http.post(bounded.url + path, json=body, headers={**headers, "x-keywheel-fallback": "off"})
    assert resp.status_code == 400, resp.text
    assert resp.headers["content-type"] == "application/json"
    field = next(k for k in ("max_completion_tokens", "max_tokens") if k in body)
    message = resp.json()["error"]["message"]
    assert message.startswith(f"{field}:"), message
    assert not fake.requests  # refused before any upstream request
    assert "Traceback" not in bounded.log()


def test_a_gemini_path_without_a_model_is_a_404_not_a_500(bounded: Served, http: httpx.Client) -> None:
    resp = http.post(bounded.url + "/v1beta/models:generateContent", json={}, headers={"x-goog-api-key": GATEWAY_KEY})
    assert resp.status_code == 404 and resp.json()["error"]["status"] == "NOT_FOUND", resp.text
    assert "Traceback" not in bounded.log()


class ExplodingTransport(Transport):
    """The transport seam failing in a way keywheel does not foresee (a bug's stand-in)."""

    async def send(self, request: HttpRequest, timeout: float, max_bytes: int | None = None) -> HttpResponse:
        raise RuntimeError(f"unforeseen failure while sending {request.body!r}")


@pytest.mark.parametrize(
    ("path", "headers", "model"),
    [
        ("/v1/chat/completions", OPENAI, "auto"),
        ("/v1/messages", ANTHROPIC, "auto"),
        ("/v1beta/models/auto:generateContent", {"x-goog-api-key": GATEWAY_KEY}, None),
    ],
)
async def test_an_unforeseen_exception_is_answered_in_dialect_and_logged_once_without_the_body(
    fake: FakeUpstream,
    caplog: pytest.LogCaptureFixture,
    path: str,
    headers: dict[str, str],
    model: str | None,
) -> None:
    settings = settings_from_env(fake_env(fake, AI_PROVIDER="gemini", KEYWHEEL_GATEWAY_KEYS=GATEWAY_KEY))
    wheel = Wheel(settings, transport=ExplodingTransport())
    secret_text = "private-prompt-text-0123"
    if model is None:
        body: dict[str, object] = {"contents": [{"role": "user", "parts": [{"text": secret_text}]}]}
    else:
        body = {"model": model, "max_tokens": 5, "messages": [{"role": "user", "content": secret_text}]}
    transport = httpx2.ASGITransport(app=Gateway(wheel))
    caplog.set_level(logging.INFO)
    async with httpx2.AsyncClient(transport=transport, base_url="http://gateway") as client:
        resp = await client.post(path, json=body, headers=headers)
    assert resp.status_code == 500 and resp.headers["content-type"] == "application/json"
    error = resp.json()["error"]
    assert "internal gateway error" in error["message"] and "unforeseen" not in resp.text
    if path == "/v1/messages":
        assert resp.json()["type"] == "error"
    internal = [r for r in caplog.records if "internal error" in r.getMessage()]
    assert len(internal) == 1, [r.getMessage() for r in caplog.records]
    assert "RuntimeError" in internal[0].getMessage()
    assert all(secret_text not in r.getMessage() and r.exc_info is None for r in caplog.records)


# ------------------------------------------------------------------ defect 6: upstream size bounds


def test_an_oversized_answer_is_a_502_in_dialect_and_fails_over(
    bounded: Served, fake: FakeUpstream, http: httpx.Client
) -> None:
    for key in ("test-openrouter-key-1", "test-openrouter-key-2"):
        fake.set(key, "oversized", size=3 * MAX_RESPONSE)
    pinned = {"model": "openrouter/x", "messages": USER}
    resp = http.post(
        bounded.url + "/v1/chat/completions", json=pinned, headers={**OPENAI, "x-keywheel-fallback": "off"}
    )
    assert resp.status_code == 502, resp.status_code
    assert resp.headers["content-type"] == "application/json"
    assert "ResponseTooLarge" in resp.json()["error"]["message"], resp.text
    assert len(resp.content) < 10_000
    assert len(fake.requests) == 1  # not retried on the provider: the next answer would be as large

    # Translated (Anthropic caller, OpenAI-dialect upstream): the same bound, the caller's shape.
    resp = http.post(
        bounded.url + "/v1/messages",
        json={**pinned, "max_tokens": 5},
        headers={**ANTHROPIC, "x-keywheel-fallback": "off"},
    )
    assert resp.status_code == 502 and resp.json()["type"] == "error", resp.text[:300]
    assert "ResponseTooLarge" in resp.json()["error"]["message"]

    # With fallback on, the next provider answers.
    resp = http.post(bounded.url + "/v1/chat/completions", json=pinned, headers=OPENAI)
    assert resp.status_code == 200 and resp.headers["x-keywheel-provider"] != "openrouter"
    assert "ResponseTooLarge" in resp.headers["x-keywheel-attempts"]


@pytest.mark.parametrize(
    ("model", "pass_through"),
    [("openrouter/x", True), ("anthropic/claude-x", False)],
)
def test_an_oversized_stream_event_ends_the_stream_in_band(
    bounded: Served, fake: FakeUpstream, http: httpx.Client, model: str, pass_through: bool
) -> None:
    for key in ("test-openrouter-key-1", "test-openrouter-key-2", "test-anthropic-key-1", "test-anthropic-key-2"):
        fake.set(key, "oversized", size=5 * MAX_EVENT)
    body = {"model": model, "messages": USER, "stream": True}
    resp = http.post(bounded.url + "/v1/chat/completions", json=body, headers={**OPENAI, "x-keywheel-fallback": "off"})
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/event-stream")
    assert len(resp.content) < MAX_EVENT, len(resp.content)  # the big event was not passed on
    assert '"code":"upstream_response_too_large"' in resp.text, resp.text[-500:]
    assert resp.text.endswith("data: [DONE]\n\n")
    assert resp.text.count("chat.completion.chunk") >= 2  # the stream had started before the bound


def test_a_body_within_the_bounds_passes(bounded: Served, fake: FakeUpstream, http: httpx.Client) -> None:
    fake.set("test-openrouter-key-1", "oversized", size=MAX_EVENT // 2)
    fake.set("test-openrouter-key-2", "oversized", size=MAX_EVENT // 2)
    body = {"model": "openrouter/x", "messages": USER}
    resp = http.post(bounded.url + "/v1/chat/completions", json=body, headers={**OPENAI, "x-keywheel-fallback": "off"})
    assert resp.status_code == 200 and len(resp.content) > MAX_EVENT // 2  # pass-through: the body as it came
    resp = http.post(
        bounded.url + "/v1/chat/completions",
        json={**body, "stream": True},
        headers={**OPENAI, "x-keywheel-fallback": "off"},
    )
    assert resp.status_code == 200 and "upstream_response_too_large" not in resp.text
    assert len(resp.content) > MAX_EVENT // 2
