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
    sent = exchange(target.port, http_request("POST", path, (body % value).encode(), [auth]))
    answer = sent.answers[0]
    assert answer.status == 400, answer
    assert not violations(answer, dialect)
    assert field in answer.body.decode()
    assert "Traceback" not in target.new_log()
