"""The fake upstream's Gemini dialect, driven by google-genai (v1beta and its default v1): if
a fake wire shape drifts from what the SDK parses, these tests fail.  The OpenAI and Anthropic
dialects are in test_fake_contract.py."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from google import genai
from google.genai import errors as genai_errors
from google.genai import types
from tests.testing.test_fake_contract import CALC_ARGS, FOX, GEMINI, GEMINI_KEY, OPENAI_KEY, openai_client

from keywheel.testing import FakeUpstream

# -- Gemini ----------------------------------------------------------------------------------------------------------

API_VERSIONS = ["v1beta", None]  # None: google-genai's default, which is v1


def gemini_client(fake: FakeUpstream, api_version: str | None) -> genai.Client:
    options = types.HttpOptions(base_url=fake.gemini_base_url, api_version=api_version)
    return genai.Client(api_key=GEMINI_KEY, http_options=options)


GeminiFactory = Callable[[str | None], genai.Client]


@pytest.fixture
def gemini(fake: FakeUpstream) -> Iterator[GeminiFactory]:
    """Makes clients and keeps them alive: google-genai closes its HTTP client when a Client is collected."""
    clients: list[genai.Client] = []

    def make(api_version: str | None) -> genai.Client:
        clients.append(gemini_client(fake, api_version))
        return clients[-1]

    yield make
    for client in clients:
        client.close()


CALC_GEMINI = types.Tool(
    function_declarations=[
        types.FunctionDeclaration(
            name="calc",
            description="arithmetic",
            parameters=types.Schema(
                type=types.Type.OBJECT,
                properties={
                    "expr": types.Schema(type=types.Type.STRING),
                    "precise": types.Schema(type=types.Type.BOOLEAN),
                    "digits": types.Schema(type=types.Type.INTEGER),
                    "extra": types.Schema(type=types.Type.OBJECT),
                },
            ),
        )
    ]
)


@pytest.mark.parametrize("api_version", API_VERSIONS)
def test_gemini_generate_content(fake: FakeUpstream, gemini: GeminiFactory, api_version: str | None) -> None:
    response = gemini(api_version).models.generate_content(
        model=GEMINI,
        contents="What is two plus two?",
        config=types.GenerateContentConfig(system_instruction="Be brief."),
    )
    assert response.text is not None and response.text.endswith(f"from fake gemini: {FOX}")
    assert response.candidates and response.candidates[0].finish_reason == types.FinishReason.STOP
    usage = response.usage_metadata
    assert usage is not None and usage.prompt_token_count == 7
    assert usage.candidates_token_count == len(response.text.split())
    [request] = fake.requests
    assert request.path == f"/{api_version or 'v1'}/models/{GEMINI}:generateContent"
    # the key travels in x-goog-api-key, never in the query string
    assert request.headers["x-goog-api-key"] == GEMINI_KEY and "key" not in request.query
    assert (request.dialect, request.key, request.stream) == ("gemini", GEMINI_KEY, False)


@pytest.mark.parametrize("api_version", API_VERSIONS)
def test_gemini_stream(fake: FakeUpstream, gemini: GeminiFactory, api_version: str | None) -> None:
    chunks = list(gemini(api_version).models.generate_content_stream(model=GEMINI, contents="hello"))
    assert len(chunks) > 5
    text = "".join(c.text or "" for c in chunks)
    assert text.endswith(f"from fake gemini: {FOX}")
    last = chunks[-1]
    assert last.candidates and last.candidates[0].finish_reason == types.FinishReason.STOP
    assert all(c.candidates and c.candidates[0].finish_reason is None for c in chunks[:-1])
    assert last.usage_metadata is not None and last.usage_metadata.candidates_token_count == len(text.split())
    assert fake.requests[0].query == {"alt": "sse"} and fake.requests[0].stream


@pytest.mark.parametrize("api_version", API_VERSIONS)
def test_gemini_function_call_round_trip(fake: FakeUpstream, gemini: GeminiFactory, api_version: str | None) -> None:
    client = gemini(api_version)
    config = types.GenerateContentConfig(tools=[CALC_GEMINI])
    question = types.Content(role="user", parts=[types.Part(text="compute 2+2")])
    first = client.models.generate_content(model=GEMINI, contents=[question], config=config)
    assert first.function_calls and first.function_calls[0].name == "calc"
    assert first.function_calls[0].args == CALC_ARGS
    assert first.candidates and first.candidates[0].finish_reason == types.FinishReason.STOP
    model_turn = first.candidates[0].content
    assert model_turn is not None
    answer = types.Content(
        role="user", parts=[types.Part.from_function_response(name="calc", response={"result": "4"})]
    )
    second = client.models.generate_content(model=GEMINI, contents=[question, model_turn, answer], config=config)
    assert second.text is not None and second.text.endswith("from fake gemini: the tool said 4")
    assert fake.requests[0].body["tools"][0]["functionDeclarations"][0]["name"] == "calc"


def test_gemini_streamed_function_call(fake: FakeUpstream, gemini: GeminiFactory) -> None:
    config = types.GenerateContentConfig(tools=[CALC_GEMINI])
    chunks = list(gemini("v1beta").models.generate_content_stream(model=GEMINI, contents="c", config=config))
    assert len(chunks) == 1 and chunks[0].function_calls and chunks[0].function_calls[0].args == CALC_ARGS


def _details(error: genai_errors.APIError) -> list[dict[str, Any]]:
    assert isinstance(error.details, dict)
    details: list[dict[str, Any]] = error.details["error"].get("details", [])
    return details


GEMINI_ERRORS: list[tuple[str, type[genai_errors.APIError], int, str]] = [
    ("rate_limit", genai_errors.ClientError, 429, "RESOURCE_EXHAUSTED"),
    ("quota", genai_errors.ClientError, 429, "RESOURCE_EXHAUSTED"),
    ("invalid", genai_errors.ClientError, 400, "INVALID_ARGUMENT"),
    ("forbidden", genai_errors.ClientError, 403, "PERMISSION_DENIED"),
    ("not_found", genai_errors.ClientError, 404, "NOT_FOUND"),
    ("bad_request", genai_errors.ClientError, 400, "INVALID_ARGUMENT"),
    ("context_too_long", genai_errors.ClientError, 400, "INVALID_ARGUMENT"),
    ("server_error", genai_errors.ServerError, 500, "INTERNAL"),
    ("overloaded", genai_errors.ServerError, 503, "UNAVAILABLE"),
]


@pytest.mark.parametrize(("kind", "error", "code", "status"), GEMINI_ERRORS)
def test_gemini_errors(
    fake: FakeUpstream, gemini: GeminiFactory, kind: str, error: type[genai_errors.APIError], code: int, status: str
) -> None:
    fake.set(GEMINI_KEY, kind)
    with pytest.raises(error) as caught:
        gemini("v1beta").models.generate_content(model=GEMINI, contents="x")
    assert (caught.value.code, caught.value.status) == (code, status)
    assert GEMINI_KEY not in str(caught.value)


def test_gemini_error_details(fake: FakeUpstream, gemini: GeminiFactory) -> None:
    client = gemini("v1beta")
    details_of: dict[str, list[dict[str, Any]]] = {}
    for kind, params in [("rate_limit", {"retry_after": 1.5}), ("quota", {}), ("invalid", {})]:
        fake.set(GEMINI_KEY, kind, times=None, **params)
        with pytest.raises(genai_errors.ClientError) as caught:
            client.models.generate_content(model=GEMINI, contents="x")
        details_of[kind] = _details(caught.value)

    def find(kind: str, type_name: str) -> dict[str, Any]:
        return next(d for d in details_of[kind] if d["@type"].endswith(type_name))

    assert find("rate_limit", "RetryInfo")["retryDelay"] == "1.5s"
    assert "PerMinute" in find("rate_limit", "QuotaFailure")["violations"][0]["quotaId"]
    assert "PerDay" in find("quota", "QuotaFailure")["violations"][0]["quotaId"]
    assert not any(d["@type"].endswith("RetryInfo") for d in details_of["quota"])
    assert find("invalid", "ErrorInfo")["reason"] == "API_KEY_INVALID"


def test_gemini_in_band_stream_error(fake: FakeUpstream, gemini: GeminiFactory) -> None:
    fake.set(GEMINI_KEY, "stream_error", after=3)
    texts: list[str] = []
    with pytest.raises(genai_errors.ServerError) as caught:
        for chunk in gemini("v1beta").models.generate_content_stream(model=GEMINI, contents="x"):
            texts.append(chunk.text or "")
    assert len(texts) == 3 and caught.value.code == 503


def test_gemini_models_list(fake: FakeUpstream, gemini: GeminiFactory) -> None:
    for api_version in API_VERSIONS:
        models = list(gemini(api_version).models.list())
        assert models and all(m.name and m.name.startswith("models/") for m in models)
        model = gemini(api_version).models.get(model=GEMINI)
        assert model.name == f"models/{GEMINI}" and model.input_token_limit
    assert [(r.dialect, r.path) for r in fake.requests] == [
        ("gemini", "/v1beta/models"),
        ("gemini", f"/v1beta/models/{GEMINI}"),
        ("gemini", "/v1/models"),
        ("gemini", f"/v1/models/{GEMINI}"),
    ]


# -- every SDK, one fake ---------------------------------------------------------------------------------------------


def test_answers_are_numbered_and_never_echo_the_key(fake: FakeUpstream, gemini: GeminiFactory) -> None:
    calls: list[Callable[[], str | None]] = [
        lambda: (
            openai_client(fake, "openai")
            .chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
            .choices[0]
            .message.content
        ),
        lambda: gemini("v1beta").models.generate_content(model=GEMINI, contents="x").text,
    ]
    texts = [call() for call in calls]
    assert texts[0] != texts[1]
    assert all(t and OPENAI_KEY not in t and GEMINI_KEY not in t for t in texts)
    assert [r.seq for r in fake.requests] == sorted(r.seq for r in fake.requests)
