"""Inbound dialects, errors and model lists: status and body shape per dialect, and the exception
each official SDK raises on them."""

from __future__ import annotations

import anthropic
import httpx2
import openai
import orjson
import pytest
from google.genai import errors as genai_errors

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
from keywheel.gateway.dialects.base import Dialect
from keywheel.types import (
    Attempt,
)
from tests.gateway.dialect_helpers import (
    ANTHROPIC,
    GEMINI,
    OPENAI,
    anthropic_client,
    genai_client,
    openai_client,
    serve,
)

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


SDK_CLASSES: list[
    tuple[KeywheelError, type[openai.APIStatusError], type[anthropic.APIStatusError], type[genai_errors.APIError]]
] = [
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
    exc: KeywheelError,
    openai_cls: type[openai.APIStatusError],
    anthropic_cls: type[anthropic.APIStatusError],
    genai_cls: type[genai_errors.APIError],
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
