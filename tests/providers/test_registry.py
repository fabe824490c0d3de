"""One place per fact: every fact about a provider comes from its module via the registry."""

from __future__ import annotations

import pytest

from keywheel import config
from keywheel.config import settings_from_env
from keywheel.providers import ADAPTERS, FAMILIES, PROVIDERS, anthropic, gemini, openai, openrouter
from keywheel.providers.base import Provider


def test_each_known_provider_is_one_module_with_one_registry_line() -> None:
    assert [p.name for p in PROVIDERS.values()] == ["anthropic", "gemini", "openrouter", "openai"]
    for module in (anthropic, gemini, openrouter, openai):
        provider = module.PROVIDER
        assert isinstance(provider, Provider) and PROVIDERS[provider.name] is provider
    assert {p.adapter.dialect for p in PROVIDERS.values()} == set(ADAPTERS) == set(config.DIALECTS)


def test_configuration_reads_its_defaults_from_the_registry() -> None:
    assert config.BUILTIN_ORDER == ("anthropic", "gemini", "openrouter")  # OpenAI itself only when asked for
    s = settings_from_env({"OPENROUTER_API_KEY_1": "test-openrouter-key-1", "OPENROUTER_APP_TITLE": "test app"})
    cfg = s.providers["openrouter"]
    assert (cfg.base_url, cfg.model, cfg.dialect) == (openrouter.PROVIDER.base_url, openrouter.PROVIDER.model, "openai")
    assert cfg.headers == {"X-OpenRouter-Title": "test app"}
    assert [k.auth for k in cfg.keys] == ["bearer"]  # the OpenAI wire format's key_auth


@pytest.mark.parametrize(
    ("env", "auth"),
    [
        ({"ANTHROPIC_API_KEY": "test-anthropic-key-1"}, "key"),
        ({"ANTHROPIC_AUTH_TOKEN": "test-anthropic-token-1"}, "bearer"),  # the provider's token_var
        ({"GEMINI_API_KEY": "test-gemini-key-1"}, "key"),
    ],
)
def test_the_auth_rule_comes_from_the_provider_and_its_wire_format(env: dict[str, str], auth: str) -> None:
    s = settings_from_env(env)
    assert [k.auth for p in s.providers.values() for k in p.keys] == [auth]


def test_model_families_come_from_the_providers() -> None:
    assert ("claude", "anthropic") in FAMILIES and ("gemini", "gemini") in FAMILIES
    assert {name for _, name in FAMILIES} <= set(PROVIDERS)


def test_whether_a_body_may_pass_through_is_one_decision() -> None:
    s = settings_from_env({"OPENROUTER_API_KEY_1": "test-openrouter-key-1", "GEMINI_API_KEY": "test-gemini-key-1"})
    assert s.providers["openrouter"].speaks("openai") and not s.providers["openrouter"].speaks("anthropic")
    assert s.providers["gemini"].speaks("gemini") and not s.providers["gemini"].speaks("responses")
