"""Configuration: names compatible with existing .env files, and one ConfigError naming every problem."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from keywheel import ConfigError, Wheel
from keywheel.config import load_env, read_env_file, settings_from_env
from keywheel.testing import FakeUpstream


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
        ({"GEMINI_API_KEY_3": " test-gemini-key-3 "}, "GEMINI_API_KEY_3", "whitespace"),
        ({"GEMINI_BASE_URL": "ftp://example"}, "GEMINI_BASE_URL", "not an http(s) URL"),
        ({"GEMINI_BASE_URL": "localhost:8080"}, "GEMINI_BASE_URL", "not an http(s) URL"),
        ({"ENABLE_GEMINI": "maybe"}, "ENABLE_GEMINI", "true or false"),
        ({"KEYWHEEL_TIMEOUT": "soon"}, "KEYWHEEL_TIMEOUT", "number"),
        ({"FALLBACK_ORDER": "gemini,nope"}, "FALLBACK_ORDER", "unknown provider"),
        ({"KEYWHEEL_STATE": "postgres://x"}, "KEYWHEEL_STATE", "sqlite:///path"),
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


# ------------------------------------------------------------- blank lines and .env files


def test_a_blank_value_means_not_set() -> None:
    """``NAME=`` neither counts as a key nor switches anything: the .env.example lines left empty."""
    s = settings_from_env(
        base(
            GEMINI_API_KEY_3="",
            OPENROUTER_API_KEY_1="",
            ANTHROPIC_API_KEY="  ",
            OPENROUTER_API_KEYS="",
            AI_PROVIDER="",
            ENABLE_OPENROUTER="",
            FALLBACK_ORDER="",
        )
    )
    assert s.chain == ["gemini"]
    assert [k.label for k in s.providers["gemini"].keys] == ["1", "2"]
    assert s.providers["openrouter"].keys == [] and not s.providers["openrouter"].enabled


def test_explicit_enable_without_keys_stays_an_error() -> None:
    found = problems(base(ENABLE_OPENROUTER="true", OPENROUTER_API_KEY_1=""))
    assert "no keys" in found["ENABLE_OPENROUTER"]


def test_a_blank_line_in_the_file_does_not_hide_and_a_blank_variable_does_not_override(tmp_path: Path) -> None:
    env_file = tmp_path / "x.env"
    env_file.write_text("GEMINI_API_KEY_1=test-gemini-key-1\nGEMINI_API_KEY_2=\n")
    merged = load_env({"GEMINI_API_KEY_1": "", "GEMINI_API_KEY_2": "test-gemini-key-2"}, env_file)
    assert merged == {"GEMINI_API_KEY_1": "test-gemini-key-1", "GEMINI_API_KEY_2": "test-gemini-key-2"}


def test_a_named_env_file_that_does_not_exist_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_env({}, tmp_path / "missing.env")
    assert "missing.env" in info.value.problems["--env-file"]
    with pytest.raises(ConfigError):
        Wheel.from_env(env_file=tmp_path / "missing.env")


def test_from_env_with_a_mapping_uses_only_that_mapping(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake: FakeUpstream
) -> None:
    """A folder whose .env holds other keys and another primary: a mapping ignores it; no argument reads it."""
    (tmp_path / ".env").write_text(
        "AI_PROVIDER=openrouter\n"
        "OPENROUTER_API_KEY_1=test-openrouter-key-1\n"
        "ANTHROPIC_API_KEY=test-anthropic-key-1\n"
        f"OPENROUTER_BASE_URL={fake.openrouter_base_url}\n"
        "GEMINI_API_KEY_9=test-gemini-key-9\n"
    )
    monkeypatch.chdir(tmp_path)
    for name in list(os.environ):
        if name.endswith(("_API_KEY", "_API_KEYS", "_AUTH_TOKEN")) or "_API_KEY_" in name or name == "AI_PROVIDER":
            monkeypatch.delenv(name)
    with Wheel.from_env({"GEMINI_API_KEY_1": "test-gemini-key-1", "GEMINI_BASE_URL": fake.gemini_base_url}) as wheel:
        assert wheel.settings.chain == ["gemini"]
        assert [k.label for k in wheel.settings.providers["gemini"].keys] == ["1"]
        assert wheel.chat([{"role": "user", "content": "hi"}]).provider == "gemini"
    assert fake.count("test-openrouter-key-1") == 0
    with Wheel.from_env() as wheel:  # no argument: the environment over ./.env
        assert wheel.settings.primary == "openrouter"
        assert [k.label for k in wheel.settings.providers["gemini"].keys] == ["9"]


# ------------------------------------------------------------------ key shapes


@pytest.mark.parametrize(
    ("variable", "value", "base_url", "provider", "shape"),
    [
        ("GEMINI_API_KEY_1", "sk-or-v1-" + "0" * 20 + "fake", None, "gemini", "openrouter"),
        ("GEMINI_API_KEY_1", "sk-or-v1-" + "0" * 20 + "fake", "http://127.0.0.1:9", "gemini", "openrouter"),
        ("OPENROUTER_API_KEY_1", "AIza" + "x" * 35 + "fake", "http://127.0.0.1:9/api/v1", "openrouter", "gemini"),
        ("ANTHROPIC_API_KEY", "sk-or-v1-fake", "https://api.z.ai/api/anthropic", "anthropic", "openrouter"),
        ("OPENROUTER_API_KEY", "sk-ant-api03-fake", None, "openrouter", "anthropic"),
        ("GEMINI_API_KEY", "sk-proj-fake", "http://127.0.0.1:9", "gemini", "openai"),
    ],
)
def test_a_key_shaped_like_another_providers_warns_wherever_it_points(
    variable: str, value: str, base_url: str | None, provider: str, shape: str
) -> None:
    env = {variable: value}
    if base_url:
        env[f"{provider.upper()}_BASE_URL"] = base_url
    s = settings_from_env(env)
    (warning,) = s.warnings
    assert f"looks like a{'n' if shape[0] in 'aeiou' else ''} {shape} key" in warning
    assert variable in warning and value not in warning


def test_keys_of_no_known_shape_warn_only_at_the_default_url() -> None:
    s = settings_from_env(
        {"ANTHROPIC_API_KEY": "0123abcd.fakeglmkey", "ANTHROPIC_BASE_URL": "https://api.z.ai/api/anthropic"}
    )
    assert s.warnings == []
    env = {"ENABLE_DEEPSEEK": "true", "DEEPSEEK_BASE_URL": "http://127.0.0.1:9/v1", "DEEPSEEK_MODEL": "deepseek-chat"}
    s = settings_from_env({**env, "DEEPSEEK_API_KEY": "sk-fake-deepseek"})
    assert s.warnings == []  # sk- is OpenAI's shape and many compatible hosts'
    s = settings_from_env({**env, "DEEPSEEK_API_KEY": "sk-or-v1-fake"})
    assert any("looks like an openrouter key" in w for w in s.warnings)


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
