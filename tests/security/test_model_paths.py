"""Defect 1: a client must not steer the URL path of a keyed upstream request.

The model name is the only caller text that goes into an upstream URL (Gemini's
``models/{model}:generateContent``).  It is checked and encoded as one segment;
anything that cannot be a model id is a 400 naming ``model``, before any
upstream request — the fake's request log must stay empty.
"""

from __future__ import annotations

import asyncio
import http.client
import json
from typing import Any

import httpx
import pytest

from keywheel import BadRequest, KeywheelError, Wheel
from keywheel.config import settings_from_env
from keywheel.providers.base import HttpRequest
from keywheel.providers.paths import check_model, gemini_model_path
from keywheel.testing import FakeUpstream
from keywheel.transport import Transport
from tests.gateway.conftest import GatewayFactory
from tests.helpers import WheelFactory, fake_env
from tests.security.conftest import GATEWAY_KEY, Recorder

HELLO = [{"role": "user", "content": "hello"}]
AUTH = {"authorization": f"Bearer {GATEWAY_KEY}"}

HOSTILE = [
    "x/../../v1beta/models/EVIL",
    "../EVIL",
    "models/../../EVIL",
    "tunedModels/../x",
    "a/b",
    "models/a/b",
    "files/abc",
    "a%2F..%2Fb",
    "a%2e%2e",
    "gemini-2.5-flash?alt=json",
    "gemini-2.5-flash#frag",
    "gemini-2.5-flash:streamGenerateContent",
    "gemini 2.5",
    "gemini\r\nx-evil: 1",
    "gemini\x00",
    "gemini\\..\\x",
    "a" * 300,
    "models/" + "a" * 200,
    "/models/x",
    "models/",
    ".",
    "..",
]


@pytest.mark.parametrize("model", HOSTILE)
def test_a_model_that_cannot_be_a_gemini_model_is_refused(model: str) -> None:
    with pytest.raises(BadRequest) as caught:
        check_model(model, "gemini")
    assert caught.value.status == 400 and caught.value.message.startswith("model: ")


@pytest.mark.parametrize(
    ("model", "path"),
    [
        ("gemini-2.5-flash", "models/gemini-2.5-flash"),
        ("models/gemini-2.5-flash", "models/gemini-2.5-flash"),
        ("tunedModels/my-model-1", "tunedModels/my-model-1"),
        ("gemini-exp-1206", "models/gemini-exp-1206"),
        ("learnlm-1.5-pro_experimental", "models/learnlm-1.5-pro_experimental"),
    ],
)
def test_gemini_own_model_forms_stay_valid(model: str, path: str) -> None:
    assert check_model(model, "gemini") == model
    assert gemini_model_path(model) == path


@pytest.mark.parametrize("model", ["openai/gpt-4o-mini", "meta-llama/llama-3.1-8b-instruct:free", "@cf/meta/llama-3"])
def test_other_providers_model_ids_stay_valid(model: str) -> None:
    assert check_model(model) == model
    with pytest.raises(BadRequest):
        check_model(model + "/../x")


# ------------------------------------------------------------------ the library


@pytest.mark.parametrize("model", ["x/../../v1beta/models/EVIL", "a%2F..%2Fb", "gemini?x"])
def test_wheel_refuses_a_hostile_model_before_any_request(
    make_wheel: WheelFactory, fake: FakeUpstream, model: str
) -> None:
    wheel = make_wheel()
    with pytest.raises(BadRequest, match="^.*model: invalid model name"):
        wheel.chat(HELLO, provider="gemini", model=model, fallback=False)
    with pytest.raises(BadRequest):
        list(wheel.stream(HELLO, provider="gemini", model=model))
    assert fake.requests == []


def test_the_url_on_the_wire_keeps_the_base_url_prefix(recorder: Recorder) -> None:
    """A corporate proxy's path prefix survives, and the model is one segment under it."""
    env = {"GEMINI_API_KEY_1": "test-gemini-key-1", "GEMINI_BASE_URL": recorder.url("/corp/prefix/"),
           "KEYWHEEL_MAX_WAIT": "0"}  # fmt: skip
    wheel = Wheel(settings_from_env(env))
    try:
        for model in ("gemini-2.5-flash", "models/gemini-2.5-pro", "tunedModels/my-model-1"):
            wheel.chat(HELLO, model=model)
        list(wheel.stream(HELLO, model="gemini-2.5-flash"))
        with pytest.raises(BadRequest):
            wheel.chat(HELLO, model="x/../../../EVIL")
    finally:
        wheel.close()
    assert recorder.lines == [
        "POST /corp/prefix/v1beta/models/gemini-2.5-flash:generateContent HTTP/1.1",
        "POST /corp/prefix/v1beta/models/gemini-2.5-pro:generateContent HTTP/1.1",
        "POST /corp/prefix/v1beta/tunedModels/my-model-1:generateContent HTTP/1.1",
        "POST /corp/prefix/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse HTTP/1.1",
    ]


def test_openai_and_anthropic_urls_are_base_plus_a_fixed_endpoint(recorder: Recorder) -> None:
    env = {
        "OPENROUTER_API_KEY_1": "test-openrouter-key-1", "OPENROUTER_BASE_URL": recorder.url("/p/api/v1"),
        "ANTHROPIC_API_KEY_1": "test-anthropic-key-1", "ANTHROPIC_BASE_URL": recorder.url("/q"),
        "KEYWHEEL_MAX_WAIT": "0", "KEYWHEEL_PROVIDER_ATTEMPTS": "1",
    }  # fmt: skip
    wheel = Wheel(settings_from_env(env))
    try:
        for provider, model in (("openrouter", "meta-llama/llama-3:free"), ("anthropic", "claude-x")):
            try:  # the recorder answers Gemini-shaped: only the request line matters here
                wheel.chat(HELLO, provider=provider, model=model, fallback=False)
            except KeywheelError:
                pass
    finally:
        wheel.close()
    assert recorder.lines == ["POST /p/api/v1/chat/completions HTTP/1.1", "POST /q/v1/messages HTTP/1.1"]


def test_why_validation_is_needed_aiohttp_resolves_dot_segments(recorder: Recorder) -> None:
    """What the HTTP client does with a path it is handed: ``..`` is resolved (so a model
    must never carry one) while ``%2F`` stays encoded.  If this ever changes, the check
    in keywheel.providers.paths is still what keeps the path fixed."""

    async def send(url: str) -> None:
        transport = Transport()
        try:
            await transport.send(HttpRequest("POST", url, {}, b"{}"), 5)
        finally:
            await transport.aclose()

    asyncio.run(send(recorder.url("/corp/v1beta/models/x/../../../../EVIL:generateContent")))
    asyncio.run(send(recorder.url("/corp/v1beta/models/a%2F..%2Fb:generateContent")))
    assert recorder.lines == [
        "POST /EVIL:generateContent HTTP/1.1",
        "POST /corp/v1beta/models/a%2F..%2Fb:generateContent HTTP/1.1",
    ]


# ------------------------------------------------------------------ the gateway


def _error_message(dialect: str, body: dict[str, Any]) -> str:
    error = body["error"]
    assert isinstance(error, dict), body
    if dialect == "anthropic":
        assert body["type"] == "error"
    if dialect == "gemini":
        assert error["code"] == 400 and error["status"] == "INVALID_ARGUMENT"
    message = error["message"]
    assert isinstance(message, str)
    return message


def test_gateway_refuses_hostile_models_in_every_dialect(serve: GatewayFactory, fake: FakeUpstream) -> None:
    served = serve()
    host, port = served.url.removeprefix("http://").split(":")
    off = {**AUTH, "x-keywheel-fallback": "off", "content-type": "application/json"}
    cases: list[tuple[str, str, dict[str, Any]]] = []
    for model in ("gemini/x/../../v1beta/models/EVIL", "gemini/a%2F..%2Fb", "gemini/x?alt=json", "a/../../x"):
        cases.append(("openai", "/v1/chat/completions", {"model": model, "messages": HELLO}))
        cases.append(("anthropic", "/v1/messages", {"model": model, "max_tokens": 5, "messages": HELLO}))
    contents = {"contents": [{"role": "user", "parts": [{"text": "hello"}]}]}
    # ASGI hands the app a percent-decoded path: %2F arrives as "/".
    for raw in (
        "/v1beta/models/a%2F..%2F..%2Fx:generateContent",
        "/v1beta/models/gemini%2F..%2F..%2Fv1beta%2Fmodels%2FEVIL:generateContent",
        "/v1beta/models/gemini%2Fx%2F..%2F..%2FEVIL:streamGenerateContent",
        "/v1beta/models/x%3Fy:generateContent",
        "/v1beta/models/x%00y:generateContent",
    ):
        cases.append(("gemini", raw, contents))
    for dialect, path, body in cases:
        conn = http.client.HTTPConnection(host, int(port), timeout=10)
        conn.request("POST", path, body=json.dumps(body), headers=off)  # http.client sends the path as given
        resp = conn.getresponse()
        payload = json.loads(resp.read())
        conn.close()
        assert resp.status == 400, (path, body.get("model"), resp.status, payload)
        assert "model" in _error_message(dialect, payload), payload
    assert fake.requests == []  # not one upstream request, keyed or not
    # A good model still works through the same routes.
    good = httpx.post(
        served.url + "/v1/chat/completions", headers=off, json={"model": "gemini/gemini-2.5-flash", "messages": HELLO}
    )
    assert good.status_code == 200, good.text
    assert [r.path for r in fake.requests] == ["/v1beta/models/gemini-2.5-flash:generateContent"]


def test_a_hostile_configured_model_is_a_config_error() -> None:
    from keywheel.errors import ConfigError

    env = {**fake_env_stub(), "GEMINI_MODEL": "x/../../EVIL"}
    with pytest.raises(ConfigError) as caught:
        settings_from_env(env)
    assert "GEMINI_MODEL" in caught.value.problems


def fake_env_stub() -> dict[str, str]:
    return {"GEMINI_API_KEY_1": "test-gemini-key-1", "GEMINI_BASE_URL": "http://127.0.0.1:9/"}


_ = fake_env  # the shared helper, imported for symmetry with the other suites
