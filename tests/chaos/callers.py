"""The inbound dialects of the chaos matrix: how each official SDK calls the gateway,
and what a well-formed error looks like to it.

Adding a dialect is one line in :data:`INBOUND` (plus its caller here).  Each caller
takes its SDK client (made once per module by ``connect``) and returns a :class:`Result`
whatever happened; each checker validates an error with the SDK's own exception classes
and the dialect's error-object shape.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import anthropic
import openai
from google import genai
from google.genai import errors as genai_errors
from google.genai import types as gtypes

from tests.gateway.conftest import GATEWAY_KEY

PROMPT = "what is two plus two"
TIMEOUT = 20.0


@dataclass
class Result:
    """What the caller saw: the text (partial for a cut stream), the answer's headers, and the
    SDK exception that ended it with its HTTP status (``None`` for an in-band stream error)."""

    text: str
    headers: Mapping[str, str]
    error: Exception | None = None
    status: int | None = None
    pieces: int = 0  # text pieces received (streams)


@dataclass(frozen=True)
class Inbound:
    name: str
    upstream: str  # the provider asked first: the one speaking this dialect (pass-through)
    fallback: str  # the next provider of the chain for this call
    connect: Callable[[str], Any]  # gateway URL -> the SDK's client (it has a close())
    call: Callable[[Any, bool], Result]  # (client, stream) -> Result
    check_error: Callable[[Result, int | None], None]  # (result, expected HTTP status or None: in-band)


# ------------------------------------------------------------------ OpenAI


def connect_openai(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=url + "/v1", api_key=GATEWAY_KEY, max_retries=0, timeout=TIMEOUT)


def call_openai(client: openai.OpenAI, stream: bool) -> Result:
    messages: Any = [{"role": "user", "content": PROMPT}]
    try:
        raw = client.chat.completions.with_raw_response.create(
            model="openrouter/openai/gpt-4o-mini", messages=messages, max_tokens=50, stream=stream
        )
    except openai.APIStatusError as exc:
        return Result("", exc.response.headers, exc, exc.status_code)
    headers = raw.headers
    if not stream:
        completion = raw.parse()
        assert isinstance(completion, openai.types.chat.ChatCompletion), type(completion)
        return Result(completion.choices[0].message.content or "", headers)
    chunks = raw.parse()
    assert isinstance(chunks, openai.Stream), type(chunks)
    pieces: list[str] = []
    try:
        for chunk in chunks:
            if chunk.choices and chunk.choices[0].delta.content:
                pieces.append(chunk.choices[0].delta.content)
    except openai.APIError as exc:
        return Result("".join(pieces), headers, exc, None, len(pieces))
    return Result("".join(pieces), headers, pieces=len(pieces))


_OPENAI_CLASSES: Mapping[int, type[openai.APIStatusError]] = {
    400: openai.BadRequestError,
    401: openai.AuthenticationError,
    403: openai.PermissionDeniedError,
    404: openai.NotFoundError,
    429: openai.RateLimitError,
    502: openai.InternalServerError,
    503: openai.InternalServerError,
}


def check_openai(result: Result, status: int | None) -> None:
    exc = result.error
    if status is None:  # in-band: the SDK raises APIError on a chunk carrying "error"
        assert isinstance(exc, openai.APIError) and not isinstance(exc, openai.APIStatusError), repr(exc)
    else:
        assert isinstance(exc, _OPENAI_CLASSES[status]) and exc.status_code == status, repr(exc)
    body = exc.body  # the SDK unwraps {"error": {...}}
    assert isinstance(body, dict) and isinstance(body.get("message"), str) and body["message"], body


# ------------------------------------------------------------------ Anthropic


def connect_anthropic(url: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=url, api_key=GATEWAY_KEY, max_retries=0, timeout=TIMEOUT)


def call_anthropic(client: anthropic.Anthropic, stream: bool) -> Result:
    messages: Any = [{"role": "user", "content": PROMPT}]
    try:
        raw = client.messages.with_raw_response.create(
            model="anthropic/claude-sonnet-4-6", max_tokens=50, messages=messages, stream=stream
        )
    except anthropic.APIStatusError as exc:
        return Result("", exc.response.headers, exc, exc.status_code)
    headers = raw.headers
    if not stream:
        message = raw.parse()
        assert isinstance(message, anthropic.types.Message), type(message)
        return Result("".join(b.text for b in message.content if b.type == "text"), headers)
    events = raw.parse()
    assert isinstance(events, anthropic.Stream), type(events)
    pieces: list[str] = []
    try:
        for event in events:
            if event.type == "content_block_delta" and event.delta.type == "text_delta":
                pieces.append(event.delta.text)
    except anthropic.APIStatusError as exc:  # an "event: error" is raised as a status error of the 200
        return Result("".join(pieces), headers, exc, None, len(pieces))
    return Result("".join(pieces), headers, pieces=len(pieces))


_ANTHROPIC_CLASSES: Mapping[int, type[anthropic.APIStatusError]] = {
    400: anthropic.BadRequestError,
    401: anthropic.AuthenticationError,
    403: anthropic.PermissionDeniedError,
    404: anthropic.NotFoundError,
    429: anthropic.RateLimitError,
    502: anthropic.InternalServerError,
    503: anthropic.InternalServerError,
}


def check_anthropic(result: Result, status: int | None) -> None:
    exc = result.error
    if status is None:
        assert isinstance(exc, anthropic.APIStatusError) and exc.status_code == 200, repr(exc)
    else:
        assert isinstance(exc, _ANTHROPIC_CLASSES[status]) and exc.status_code == status, repr(exc)
    body = exc.body
    assert isinstance(body, dict) and body.get("type") == "error", body
    error = body.get("error")
    assert isinstance(error, dict) and isinstance(error.get("type"), str), body
    assert isinstance(error.get("message"), str) and error["message"], body


# ------------------------------------------------------------------ Gemini


def connect_gemini(url: str) -> genai.Client:
    options = gtypes.HttpOptions(base_url=url, api_version="v1beta", timeout=int(TIMEOUT * 1000))
    return genai.Client(api_key=GATEWAY_KEY, http_options=options)


def call_gemini(client: genai.Client, stream: bool) -> Result:
    config = gtypes.GenerateContentConfig(max_output_tokens=50)
    pieces: list[str] = []
    headers: Mapping[str, str] = {}
    try:
        if not stream:
            response = client.models.generate_content(model="gemini-2.5-flash", contents=PROMPT, config=config)
            if response.sdk_http_response is not None:
                headers = response.sdk_http_response.headers or {}
            return Result(response.text or "", headers)
        for chunk in client.models.generate_content_stream(model="gemini-2.5-flash", contents=PROMPT, config=config):
            if chunk.sdk_http_response is not None and not headers:
                headers = chunk.sdk_http_response.headers or {}
            if chunk.text:
                pieces.append(chunk.text)
    except genai_errors.APIError as exc:
        in_band = bool(pieces) or (stream and exc.response is not None and exc.response.status_code == 200)
        if exc.response is not None and not headers:
            headers = exc.response.headers
        return Result("".join(pieces), headers, exc, None if in_band else exc.code, len(pieces))
    return Result("".join(pieces), headers, pieces=len(pieces))


def check_gemini(result: Result, status: int | None) -> None:
    exc = result.error
    assert isinstance(exc, genai_errors.APIError), repr(exc)
    if status is not None:
        expected = genai_errors.ClientError if status < 500 else genai_errors.ServerError
        assert isinstance(exc, expected) and exc.code == status, repr(exc)
    assert isinstance(exc.status, str) and exc.status.isupper(), exc.details  # google.rpc.Code name
    assert isinstance(exc.message, str) and exc.message, exc.details
    assert isinstance(exc.code, int) and 400 <= exc.code <= 599, exc.details


# ------------------------------------------------------------------ the registry

OPENAI = Inbound("openai", "openrouter", "gemini", connect_openai, call_openai, check_openai)
ANTHROPIC = Inbound("anthropic", "anthropic", "gemini", connect_anthropic, call_anthropic, check_anthropic)
GEMINI = Inbound("gemini", "gemini", "openrouter", connect_gemini, call_gemini, check_gemini)
INBOUND: list[Inbound] = [OPENAI, ANTHROPIC, GEMINI]
