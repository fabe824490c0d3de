"""``KEYWHEEL_STATE``: its forms, its errors, and the stores it builds."""

from __future__ import annotations

from pathlib import Path

import pytest

from keywheel.config import settings_from_env
from keywheel.errors import ConfigError
from keywheel.state.factory import StateSpec, build_stores, parse_retention, parse_state
from keywheel.state.fallback import SharedStore
from keywheel.state.memory import MemoryStore
from keywheel.state.sqlite import SqliteStore

KEYS = {"GEMINI_API_KEY_1": "test-gemini-key-1", "OPENROUTER_API_KEY_1": "test-openrouter-key-1"}


@pytest.mark.parametrize(
    ("text", "kind", "path"),
    [
        ("memory", "memory", None),
        (" MEMORY ", "memory", None),
        ("sqlite:///./x.db", "sqlite", "x.db"),
        ("sqlite:///state/x.db", "sqlite", "state/x.db"),
        ("sqlite:////abs/x.db", "sqlite", "/abs/x.db"),
        ("SQLite:///./.keywheel/state.db", "sqlite", ".keywheel/state.db"),
    ],
)
def test_the_forms_of_keywheel_state(text: str, kind: str, path: str | None) -> None:
    spec = parse_state(text)
    assert spec.kind == kind
    assert spec.path == (Path(path) if path is not None else None)


def test_a_redis_url_is_read_and_its_password_kept_out_of_sight() -> None:
    spec = parse_state("rediss://app:s3cret-pass@cache.internal:6380/2")
    assert (spec.kind, spec.url, spec.secrets) == (
        "redis",
        "rediss://app:s3cret-pass@cache.internal:6380/2",
        ("s3cret-pass",),
    )
    assert spec.public == "rediss://app:***@cache.internal:6380/2"
    assert parse_state("redis://localhost:6379/0") == StateSpec(
        "redis", url="redis://localhost:6379/0", public="redis://localhost:6379/0"
    )
    settings = settings_from_env({**KEYS, "KEYWHEEL_STATE": "redis://:pw-0123456789@h:1/0"})
    assert "pw-0123456789" in settings.secrets()  # redacted wherever it might show up


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("postgres://db/x", "expected memory, sqlite:///path"),
        ("disk", "expected memory"),
        ("sqlite://x.db", "sqlite:///relative/path"),
        ("sqlite:///", "needs a file path"),
        ("sqlite:///folder/", "needs a file path"),
        ("redis://", "names no host"),
        ("redis://h:port/0", "port is not a number"),
        ("redis://h:6379/zero", "must be a number"),
        ("redis://u:hunter2-secret@:6379/x", "u:***@"),
    ],
)
def test_junk_is_a_config_error_naming_keywheel_state(text: str, words: str) -> None:
    with pytest.raises(ConfigError) as info:
        settings_from_env({**KEYS, "KEYWHEEL_STATE": text})
    message = info.value.problems["KEYWHEEL_STATE"]
    assert words in message
    assert "hunter2" not in str(info.value)


def test_a_wrong_scheme_with_a_password_is_shown_without_it() -> None:
    with pytest.raises(ConfigError) as info:
        parse_state("postgres://admin:topsecret@db:5432/x")
    assert "topsecret" not in str(info.value) and "admin:***@" in str(info.value)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        (None, 30 * 86400.0),
        ("30d", 30 * 86400.0),
        ("12h", 43200.0),
        ("90m", 5400.0),
        ("7", 7 * 86400.0),
        ("3600s", 3600.0),
    ],
)
def test_retention(text: str | None, seconds: float) -> None:
    assert parse_retention(text) == seconds


@pytest.mark.parametrize("text", ["soon", "-3d", "0", "3w"])
def test_a_bad_retention_names_its_variable(text: str) -> None:
    with pytest.raises(ConfigError) as info:
        settings_from_env({**KEYS, "KEYWHEEL_STATE_RETENTION": text})
    assert "30d" in info.value.problems["KEYWHEEL_STATE_RETENTION"]


def test_memory_builds_memory_stores_for_the_enabled_providers() -> None:
    made = build_stores(settings_from_env({**KEYS, "ENABLE_OPENROUTER": "false"}))
    assert list(made.pools) == ["gemini"] and type(made.pools["gemini"]) is MemoryStore
    made.flush()
    made.close()  # nothing to close


def test_sqlite_builds_stores_over_one_file(tmp_path: Path) -> None:
    made = build_stores(settings_from_env({**KEYS, "KEYWHEEL_STATE": f"sqlite:///{tmp_path}/a/b/state.db"}))
    try:
        assert {type(p) for p in made.pools.values()} == {SqliteStore}
        assert made.file is not None and made.file.path == tmp_path / "a" / "b" / "state.db"
        assert made.file.path.exists()
    finally:
        made.close()
        made.close()  # idempotent
    assert made.file.closed


def test_redis_builds_a_shared_store_per_provider_without_connecting() -> None:
    """The stores connect on first use: building them needs no Redis (none listens on port 9)."""
    settings = settings_from_env({**KEYS, "KEYWHEEL_STATE": "redis://127.0.0.1:9/0", "KEYWHEEL_REDIS_FALLBACK": "fail"})
    made = build_stores(settings)
    assert {type(p) for p in made.pools.values()} == {SharedStore}
    assert made.file is None
    assert sorted(made.pools) == sorted(n for n, c in settings.providers.items() if c.enabled)


def test_a_bad_state_and_a_bad_retention_are_reported_together() -> None:
    with pytest.raises(ConfigError) as info:
        settings_from_env({**KEYS, "KEYWHEEL_STATE": "disk", "KEYWHEEL_STATE_RETENTION": "forever"})
    assert {"KEYWHEEL_STATE", "KEYWHEEL_STATE_RETENTION"} <= set(info.value.problems)
