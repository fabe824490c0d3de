"""Regression tests for the defects the fuzzer found in the dialect parsers, over the live server."""

from __future__ import annotations

from urllib.parse import quote

import pytest

from tests.fuzz.conftest import FuzzTarget
from tests.fuzz.harness import exchange, http_request, violations
from tests.gateway.conftest import GATEWAY_KEY


# A max_tokens the encoder cannot write (above 64 bits, or a float such as 1e30 that int() makes so)
# reached the upstream request builder of a translated request: TypeError, text/plain 500, traceback.
@pytest.mark.parametrize("value", ["18446744073709551616", "1e30", "9223372036854775808"])
@pytest.mark.parametrize(
    ("dialect", "path", "auth", "body", "field"),
    [
        pytest.param(
            "openai",
            "/v1/chat/completions",
            ("authorization", f"Bearer {GATEWAY_KEY}"),
            '{"model":"anthropic/claude-x","messages":[{"role":"user","content":"hi"}],"max_tokens":%s}',
            "max_tokens",
            id="openai",
        ),
        pytest.param(
            "anthropic",
            "/v1/messages",
            ("x-api-key", GATEWAY_KEY),
            '{"model":"gemini/gemini-2.5-flash","messages":[{"role":"user","content":"hi"}],"max_tokens":%s}',
            "max_tokens",
            id="anthropic",
        ),
        pytest.param(
            "gemini",
            f"/v1beta/models/{quote('openrouter/openai/gpt-4o-mini', safe='')}:generateContent",
            ("x-goog-api-key", GATEWAY_KEY),
            '{"contents":[{"parts":[{"text":"hi"}]}],"generationConfig":{"maxOutputTokens":%s}}',
            "generationConfig.maxOutputTokens",
            id="gemini",
        ),
    ],
)
def test_a_token_limit_beyond_64_bits_is_a_400_naming_the_field(
    target: FuzzTarget, dialect: str, path: str, auth: tuple[str, str], body: str, field: str, value: str
) -> None:
    target.new_log()
    # fallback off: the request must be translated (pass-through forwards the value for the upstream to judge)
    sent = exchange(
        target.port, http_request("POST", path, (body % value).encode(), [auth, ("x-keywheel-fallback", "off")])
    )
    answer = sent.answers[0]
    assert answer.status == 400, answer
    assert not violations(answer, dialect)
    assert field in answer.body.decode()
    assert "Traceback" not in target.new_log()


def _deep(depth: int) -> str:
    return "[" * depth + "]" * depth


# Nesting between orjson's encoder limit (254 levels) and its decoder's (1024) was accepted, then
# failed re-encoding upstream (pass-through: TypeError "Recursion limit reached") or blew Python's
# stack translating a Gemini schema (RecursionError): a text/plain 500 with a traceback, either way.
@pytest.mark.parametrize(
    ("dialect", "path", "auth", "body", "field"),
    [
        pytest.param(
            "openai",
            "/v1/chat/completions",
            ("authorization", f"Bearer {GATEWAY_KEY}"),
            '{"model":"openrouter/x","messages":[{"role":"user","content":"hi"}],"x_extra":' + _deep(300) + "}",
            "x_extra",
            id="openai-pass-through",
        ),
        pytest.param(
            "anthropic",
            "/v1/messages",
            ("x-api-key", GATEWAY_KEY),
            '{"model":"anthropic/x","max_tokens":8,"messages":[{"role":"user","content":"hi"}],"metadata":'
            + '{"a":' * 300
            + "1"
            + "}" * 301,
            "metadata",
            id="anthropic-pass-through",
        ),
        pytest.param(
            "gemini",
            # translated (to OpenRouter): the translation recurses.  To Gemini the same body passes through
            # as it is, for the upstream to judge.
            f"/v1beta/models/{quote('openrouter/openai/gpt-4o-mini', safe='')}:generateContent",
            ("x-goog-api-key", GATEWAY_KEY),
            '{"contents":[{"parts":[{"text":"hi"}]}],"tools":[{"functionDeclarations":[{"name":"f","parameters":'
            + '{"items":' * 1000
            + "{}"
            + "}" * 1000
            + "}]}]}",
            "tools",
            id="gemini-schema",
        ),
    ],
)
def test_nesting_the_encoder_cannot_write_is_a_400_naming_the_field(
    target: FuzzTarget, dialect: str, path: str, auth: tuple[str, str], body: str, field: str
) -> None:
    target.new_log()
    headers = [auth, ("x-keywheel-fallback", "off")]
    answer = exchange(target.port, http_request("POST", path, body.encode(), headers)).answers[0]
    assert answer.status == 400, answer
    assert not violations(answer, dialect)
    assert field in answer.body.decode() and "deep" in answer.body.decode()
    assert "Traceback" not in target.new_log()


# A tool call's "extra" (keywheel's own carrier for provider fields) that was not an object made
# dict() raise ValueError/TypeError: a text/plain 500.
@pytest.mark.parametrize("extra", ['"ab"', "[1]", "7"])
def test_a_tool_call_extra_that_is_not_an_object_is_a_400_naming_it(target: FuzzTarget, extra: str) -> None:
    call = '{"id":"c1","type":"function","function":{"name":"f","arguments":"{}"},"extra":' + extra + "}"
    body = (
        '{"model":"gemini/gemini-2.5-flash","messages":[{"role":"user","content":"hi"},'
        + '{"role":"assistant","tool_calls":['
        + call
        + "]}]}"
    )
    target.new_log()
    sent = exchange(
        target.port,
        http_request(
            "POST",
            "/v1/chat/completions",
            body.encode(),
            [("authorization", f"Bearer {GATEWAY_KEY}"), ("x-keywheel-fallback", "off")],
        ),
    )
    answer = sent.answers[0]
    assert answer.status == 400, answer
    assert not violations(answer, "openai")
    assert "messages[1].tool_calls[0].extra" in answer.body.decode()
    assert "Traceback" not in target.new_log()
