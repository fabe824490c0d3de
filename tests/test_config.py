"""Configuration: names compatible with existing .env files, and one ConfigError naming every problem."""

from __future__ import annotations

from pathlib import Path

import pytest

from keywheel import ConfigError, Wheel
from keywheel.config import load_env, read_env_file, settings_from_env


def base(**extra: str) -> dict[str, str]:
    env = {"GEMINI_API_KEY_1": "test-gemini-key-1", "GEMINI_API_KEY_2": "test-gemini-key-2"}
    env.update(extra)
    return env


def problems(env: dict[str, str]) -> dict[str, str]:
    with pytest.raises(ConfigError) as info:
        settings_from_env(env)
    return info.value.problems


def test_seed_application_env_works_unchanged() -> None:
    env = {
        "AI_PROVIDER": "openrouter",
        "ENABLE_ANTHROPIC": "true",
        "ENABLE_GEMINI": "true",
        "ENABLE_OPENROUTER": "true",
        "ANTHROPIC_API_KEY": "test-anthropic-key",
        "ANTHROPIC_MODEL": "claude-sonnet-4-5",
        "GEMINI_API_KEY_1": "test-gemini-key-1",
        "GEMINI_API_KEY_2": "test-gemini-key-2",
        "GEMINI_API_KEY_4": "test-gemini-key-4",  # gaps allowed
        "OPENROUTER_API_KEYS": "test-or-key-1,test-or-key-2",
        "OPENROUTER_MODEL": "meta-llama/llama-3.3-70b-instruct:free",
    }
    s = settings_from_env(env)
    assert s.primary == "openrouter"
    assert s.chain == ["openrouter", "anthropic", "gemini"]
    assert [k.fingerprint.split(" ")[0] for k in s.providers["gemini"].keys] == ["gemini#1", "gemini#2", "gemini#4"]
    assert len(s.providers["openrouter"].keys) == 2
    assert s.providers["openrouter"].model == "meta-llama/llama-3.3-70b-instruct:free"
    assert s.providers["gemini"].model  # a default
    assert s.providers["anthropic"].base_url == "https://api.anthropic.com"
    assert s.providers["openrouter"].base_url == "https://openrouter.ai/api/v1"
    assert all(k.auth == "bearer" for k in s.providers["openrouter"].keys)


def test_defaults_primary_and_fallback_order() -> None:
    s = settings_from_env(base(OPENROUTER_API_KEY="test-or-key", ANTHROPIC_API_KEY="test-ant-key"))
    assert s.primary == "anthropic" and s.chain == ["anthropic", "gemini", "openrouter"]
    s = settings_from_env(base(OPENROUTER_API_KEY="test-or-key", AI_PROVIDER="openrouter", FALLBACK_ORDER="gemini"))
    assert s.chain == ["openrouter", "gemini"]


def test_auth_token_is_bearer_and_disabled_provider_is_left_out() -> None:
    s = settings_from_env(base(ANTHROPIC_AUTH_TOKEN="test-glm-token", ENABLE_GEMINI="false", AI_PROVIDER="anthropic"))
    assert s.chain == ["anthropic"]
    (key,) = s.providers["anthropic"].keys
    assert key.auth == "bearer" and key.fingerprint.startswith("anthropic#token")


@pytest.mark.parametrize(
    ("extra", "variable", "words"),
    [
        ({"AI_PROVIDER": "mistral"}, "AI_PROVIDER", "unknown provider"),
        ({"AI_PROVIDER": "openrouter"}, "AI_PROVIDER", "has no keys"),
        (
            {"AI_PROVIDER": "gemini", "ENABLE_GEMINI": "false", "OPENROUTER_API_KEY": "x-test"},
            "AI_PROVIDER",
            "disabled",
        ),
        ({"ENABLE_OPENROUTER": "true"}, "ENABLE_OPENROUTER", "no keys"),
        ({"GEMINI_API_KEY_3": "test-gemini-key-1"}, "GEMINI_API_KEY_3", "same key as GEMINI_API_KEY_1"),
        ({"GEMINI_API_KEY_3": ""}, "GEMINI_API_KEY_3", "empty"),
        ({"GEMINI_API_KEY_3": " test-gemini-key-3 "}, "GEMINI_API_KEY_3", "whitespace"),
        ({"GEMINI_BASE_URL": "ftp://example"}, "GEMINI_BASE_URL", "not an http(s) URL"),
        ({"GEMINI_BASE_URL": "localhost:8080"}, "GEMINI_BASE_URL", "not an http(s) URL"),
        ({"ENABLE_GEMINI": "maybe"}, "ENABLE_GEMINI", "true or false"),
        ({"KEYWHEEL_TIMEOUT": "soon"}, "KEYWHEEL_TIMEOUT", "number"),
        ({"FALLBACK_ORDER": "gemini,nope"}, "FALLBACK_ORDER", "unknown provider"),
        ({"KEYWHEEL_STATE": "postgres://x"}, "KEYWHEEL_STATE", "memory"),
    ],
)
def test_each_bad_configuration_names_its_variable(extra: dict[str, str], variable: str, words: str) -> None:
    found = problems(base(**extra))
    assert variable in found, found
    assert words in found[variable]


def test_all_problems_reported_together_and_no_key_in_message() -> None:
    env = base(AI_PROVIDER="nope", GEMINI_API_KEY_3="test-gemini-key-1", OPENROUTER_BASE_URL="nonsense")
    with pytest.raises(ConfigError) as info:
        settings_from_env(env)
    assert {"AI_PROVIDER", "GEMINI_API_KEY_3", "OPENROUTER_BASE_URL"} <= set(info.value.problems)
    assert "test-gemini-key-1" not in str(info.value)


def test_no_keys_at_all_says_how_to_configure() -> None:
    found = problems({})
    assert "GEMINI_API_KEY_1" in found["AI_PROVIDER"]


def test_key_of_the_wrong_shape_is_a_warning_naming_the_fingerprint(caplog: pytest.LogCaptureFixture) -> None:
    s = settings_from_env(base())
    assert any("does not look like a gemini key" in w for w in s.warnings)
    assert all("test-gemini-key" not in w for w in s.warnings)
    s = settings_from_env({"GEMINI_API_KEY": "AIza" + "x" * 35 + "-fake"})
    assert s.warnings == []


def test_custom_openai_compatible_provider_by_name() -> None:
    env = base(
        AI_PROVIDER="groq", GROQ_BASE_URL="http://127.0.0.1:9/openai/v1", GROQ_MODEL="llama", GROQ_API_KEY_1="test-g"
    )
    s = settings_from_env(env)
    assert s.chain[0] == "groq" and s.providers["groq"].dialect == "openai"
    env = base(ENABLE_GLM="true", GLM_BASE_URL="http://127.0.0.1:9/api/anthropic", GLM_DIALECT="anthropic")
    env.update(GLM_MODEL="glm-4.6", GLM_API_KEY="test-glm-key")
    s = settings_from_env(env)
    assert s.providers["glm"].dialect == "anthropic" and "glm" in s.chain


def test_env_file_parsing_and_process_env_wins(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text(
        "# comment\n"
        "export AI_PROVIDER=gemini\n"
        "GEMINI_API_KEY_1='test-gemini-key-1'\n"
        'GEMINI_API_KEY_2="test-gemini-key-2"  # trailing\n'
        "GEMINI_MODEL=gemini-2.5-pro # comment\n"
        "garbage line\n"
    )
    values = read_env_file(env_file)
    assert values["GEMINI_API_KEY_1"] == "test-gemini-key-1"
    assert values["GEMINI_API_KEY_2"] == "test-gemini-key-2"
    assert values["GEMINI_MODEL"] == "gemini-2.5-pro"
    merged = load_env({"GEMINI_MODEL": "gemini-2.5-flash"}, env_file)
    assert merged["GEMINI_MODEL"] == "gemini-2.5-flash"
    wheel = Wheel.from_env({}, env_file=env_file)
    try:
        assert wheel.settings.primary == "gemini" and len(wheel.settings.providers["gemini"].keys) == 2
    finally:
        wheel.close()


def test_breaker_settings_defaults_and_checks() -> None:
    s = settings_from_env(base())
    assert (s.breaker_failures, s.breaker_cooloff, s.breaker_cooloff_max) == (5, 5.0, 60.0)
    s = settings_from_env(base(KEYWHEEL_BREAKER_FAILURES="0", KEYWHEEL_BREAKER_COOLOFF="90"))
    assert (s.breaker_failures, s.breaker_cooloff, s.breaker_cooloff_max) == (0, 90.0, 90.0)
    found = problems(
        base(KEYWHEEL_BREAKER_FAILURES="2.5", KEYWHEEL_BREAKER_COOLOFF="10", KEYWHEEL_BREAKER_COOLOFF_MAX="5")
    )
    assert "whole number" in found["KEYWHEEL_BREAKER_FAILURES"]
    assert "at least KEYWHEEL_BREAKER_COOLOFF" in found["KEYWHEEL_BREAKER_COOLOFF_MAX"]
    assert "more than zero" in problems(base(KEYWHEEL_BREAKER_COOLOFF="0"))["KEYWHEEL_BREAKER_COOLOFF"]
    assert "KEYWHEEL_BREAKER_FAILURES" in problems(base(KEYWHEEL_BREAKER_FAILURES="-1"))
