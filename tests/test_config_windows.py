"""Configuration of quota windows and key groups: ``<P>_RPM`` and kin, groups, overrides, the day's time zone."""

from __future__ import annotations

import pytest

from keywheel import ConfigError
from keywheel.config import settings_from_env
from keywheel.state.windows import TOKENS, Quota, WindowSpec


def quota(**env: str) -> tuple[Quota, list[str]]:
    base = {"GEMINI_API_KEY_1": "test-gemini-key-1", "GEMINI_API_KEY_2": "test-gemini-key-2"}
    settings = settings_from_env({**base, **env})
    cfg = settings.providers["gemini"]
    return cfg.quota, [k.fingerprint for k in cfg.keys]


def problems(**env: str) -> dict[str, str]:
    base = {"GEMINI_API_KEY_1": "test-gemini-key-1", "GEMINI_API_KEY_2": "test-gemini-key-2"}
    with pytest.raises(ConfigError) as info:
        settings_from_env({**base, **env})
    return info.value.problems


def test_no_limits_means_no_windows() -> None:
    q, fps = quota()
    assert not q.any
    assert q.of(fps[0]) == (fps[0], ())
    assert q.day_tz == "America/Los_Angeles"  # Gemini's day ends at Pacific midnight


def test_provider_limits_apply_to_every_ungrouped_key_as_its_own_group() -> None:
    q, fps = quota(GEMINI_RPM="15", GEMINI_TPM="1000000", GEMINI_RPD="1500", GEMINI_RATE="10/5s, 100/1h")
    group, specs = q.of(fps[0])
    assert group == fps[0] and q.of(fps[1])[0] == fps[1]
    assert specs == (
        WindowSpec("rpm", 15, 60.0),
        WindowSpec("tpm", 1000000, 60.0, TOKENS),
        WindowSpec("rpd", 1500, 86400.0, daily=True, tz="America/Los_Angeles"),
        WindowSpec("10/5s", 10, 5.0),
        WindowSpec("100/1h", 100, 3600.0),
    )


def test_groups_share_and_override_and_a_key_overrides_its_own() -> None:
    q, fps = quota(
        GEMINI_API_KEY_3="test-gemini-key-3",
        GEMINI_RPM="10",
        GEMINI_RPD="100",
        GEMINI_API_KEY_1_GROUP="Proj-A",
        GEMINI_API_KEY_2_GROUP="proj-a",
        GEMINI_GROUP_PROJ_A_RPM="30",
        GEMINI_API_KEY_3_RATE="2/1s",
    )
    assert q.of(fps[0]) == q.of(fps[1])
    name, specs = q.of(fps[0])
    assert name == "proj-a"
    assert {s.name: s.limit for s in specs} == {"rpm": 30, "rpd": 100}  # the group's RPM, the provider's RPD
    own, specs3 = q.of(fps[2])
    assert own == fps[2]
    assert {s.name: s.limit for s in specs3} == {"rpm": 10, "rpd": 100, "2/1s": 2}


def test_unnumbered_and_listed_and_token_keys_take_groups() -> None:
    env = {
        "GEMINI_API_KEY": "test-gemini-key-0",
        "GEMINI_API_KEY_GROUP": "p",
        "GEMINI_API_KEY_RPM": "5",
    }
    with pytest.raises(ConfigError) as info:
        settings_from_env(env)
    assert "GEMINI_API_KEY_RPM" in info.value.problems  # a grouped key's limits are its group's
    settings = settings_from_env(
        {
            "OPENROUTER_API_KEYS": "test-or-key-1,test-or-key-2",
            "OPENROUTER_API_KEYS_GROUP": "account",
            "ANTHROPIC_AUTH_TOKEN": "test-anthropic-token",
            "ANTHROPIC_AUTH_TOKEN_GROUP": "org",
            "ANTHROPIC_DAY_RESET_TZ": "Europe/Berlin",
            "ANTHROPIC_RPD": "3",
        }
    )
    q = settings.providers["openrouter"].quota
    assert {q.of(k.fingerprint)[0] for k in settings.providers["openrouter"].keys} == {"account"}
    a = settings.providers["anthropic"]
    berlin = WindowSpec("rpd", 3, 86400.0, daily=True, tz="Europe/Berlin")
    assert a.quota.of(a.keys[0].fingerprint) == ("org", (berlin,))
    assert settings.providers["openrouter"].quota.day_tz == "UTC"


@pytest.mark.parametrize(
    ("variable", "value", "words"),
    [
        ("GEMINI_RPM", "lots", "whole number"),
        ("GEMINI_TPM", "0", "whole number"),
        ("GEMINI_RPD", "1.5", "whole number"),
        ("GEMINI_RATE", "10 per 5s", "N/Ts"),
        ("GEMINI_RATE", "10/5s,junk", "N/Ts"),
        ("GEMINI_DAY_RESET_TZ", "Mars/Olympus", "time zone"),
        ("GEMINI_API_KEY_1_GROUP", "no spaces please", "group name"),
        ("GEMINI_API_KEY_9_RPM", "5", "no key GEMINI_API_KEY_9"),
        ("GEMINI_API_KEY_9_GROUP", "a", "no key GEMINI_API_KEY_9"),
        ("GEMINI_GROUP_NOBODY_RPM", "5", "no key of gemini is in a group 'nobody'"),
    ],
)
def test_junk_is_a_config_error_naming_the_variable(variable: str, value: str, words: str) -> None:
    found = problems(**{variable: value})
    assert variable in found
    assert words in found[variable]


def test_a_group_override_of_junk_names_its_variable() -> None:
    found = problems(GEMINI_API_KEY_1_GROUP="a", GEMINI_GROUP_A_RATE="fast")
    assert "N/Ts" in found["GEMINI_GROUP_A_RATE"]
