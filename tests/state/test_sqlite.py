"""The SQLite key store and its file, in this process: what survives a reopen, the counters'
flusher, the lock, schema versions, retention.  Time is an injected clock; restarts of a real
``keywheel serve`` are in ``tests/gateway/test_state_sqlite.py``."""

from __future__ import annotations

import logging
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from keywheel import Wheel
from keywheel.config import settings_from_env
from keywheel.errors import ConfigError, KeyInvalid, RateLimited, ServerError
from keywheel.secrets import ApiKey, Redactor
from keywheel.state.base import Open, key_id
from keywheel.state.factory import Stores, build_stores
from keywheel.state.memory import MemoryStore
from keywheel.state.rules import HALF_OPEN, OPEN, Breaker, BreakerPolicy, ProviderState
from keywheel.state.sqlite import SqliteStore
from keywheel.state.sqlite_file import BATCH_EVENTS, MIGRATIONS, SCHEMA_VERSION, StateFile, day_of
from keywheel.types import Usage
from tests.helpers import measured
from tests.state.test_memory import Clock

T0 = 1_800_000_000.0  # 2027-01-15 08:00 UTC
DAY = 86400.0


def keys_of(n: int, provider: str = "gemini") -> list[ApiKey]:
    return [ApiKey(f"test-{provider}-key-{i}", provider, str(i)) for i in range(1, n + 1)]


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "keys.db"


@pytest.fixture
def clock() -> Clock:
    c = Clock()
    c.now = T0
    return c


class Opened:
    """Stores over one file, reopened at will (each reopen is a restart of the process's state)."""

    def __init__(self, path: Path, clock: Clock) -> None:
        self.path, self.clock = path, clock
        self.files: list[StateFile] = []

    def open(
        self, keys: list[ApiKey], *, redact: Callable[[str], str] = str, breaker: BreakerPolicy | None = None
    ) -> SqliteStore:
        file = StateFile(self.path, clock=self.clock)
        self.files.append(file)
        return SqliteStore("gemini", keys, file=file, clock=self.clock, redact=redact, breaker=breaker)

    def close(self) -> None:
        for file in self.files:
            file.close()


@pytest.fixture
def opened(path: Path, clock: Clock) -> Iterator[Opened]:
    o = Opened(path, clock)
    yield o
    o.close()


def rows(path: Path, sql: str) -> list[tuple[object, ...]]:
    with sqlite3.connect(path) as db:
        return [tuple(r) for r in db.execute(sql)]


# ------------------------------------------------------------------ decisions


def test_disable_and_rest_survive_a_reopen_with_the_same_deadline(opened: Opened, clock: Clock) -> None:
    keys = keys_of(3)
    store = opened.open(keys)
    store.release_nowait(keys[0], KeyInvalid("API key not valid", status=401), 12.0)
    store.release_nowait(keys[1], RateLimited("slow down", status=429, retry_after=30.0), 8.0)
    opened.close()

    clock.now = T0 + 10
    again = opened.open(keys)
    _, states = again.dump_nowait()
    first, second, third = (states[k.fingerprint] for k in keys)
    assert (first.state, first.cause, first.reason) == ("disabled", "invalid", "invalid key: API key not valid")
    assert (second.state, second.cause, second.until) == ("cooling", "rate_limited", T0 + 30.0)
    assert second.last_rate_limited == T0 and third.state == "active"
    assert [again.acquire_nowait() for _ in range(3)] == [keys[2]] * 3  # neither comes back early
    clock.now = T0 + 30.001
    picked = {again.acquire_nowait() for _ in range(4)}
    assert keys[1] in picked and keys[0] not in picked


def test_enable_remove_and_add_are_decisions_too(opened: Opened, clock: Clock) -> None:
    keys = keys_of(3)
    store = opened.open(keys)
    store.disable_nowait(keys[0].fingerprint, "rotating")
    store.disable_nowait(keys[1].fingerprint, "rotating")
    store.enable_nowait(keys[1].fingerprint)
    store.remove_nowait(keys[2].fingerprint)
    store.add_nowait(keys[2])  # back at once: fresh
    opened.close()
    states = opened.open(keys).dump_nowait()[1]
    assert [states[k.fingerprint].state for k in keys] == ["disabled", "active", "active"]
    assert (states[keys[0].fingerprint].reason, states[keys[0].fingerprint].cause) == ("rotating", "operator")


def test_reasons_are_redacted_before_they_reach_the_file(opened: Opened, path: Path) -> None:
    secret = "Zq8RmT2vXw4Yb6Nc"
    keys = [ApiKey(secret, "gemini", "1"), ApiKey("Hj3Kp9Lm2Qr7St5V", "gemini", "2")]
    redactor = Redactor([k.reveal() for k in keys], ["gemini"])
    store = opened.open(keys, redact=redactor.redact)
    store.release_nowait(keys[0], KeyInvalid(f"API key {secret[2:14]} is not valid", status=401), 5.0)
    opened.close()
    (reason,) = rows(path, "SELECT reason FROM keys WHERE state = 'disabled'")[0]
    assert reason == "invalid key: API key [redacted] is not valid"
    assert_no_piece(path, [k.reveal() for k in keys])


def test_provider_throttling_and_an_open_breaker_survive_a_reopen(opened: Opened, clock: Clock) -> None:
    keys = keys_of(2)
    policy = BreakerPolicy(failures=2, cooloff=20.0)
    store = opened.open(keys, breaker=policy)
    for key in keys:  # every key limited at once: the account is throttled, not the keys
        store.release_nowait(key, RateLimited("busy", status=429, retry_after=15.0), 1.0)
    store.release_nowait(keys[0], ServerError("boom", status=500), 1.0)
    store.release_nowait(keys[1], ServerError("boom", status=500), 1.0)
    opened.close()
    clock.now = T0 + 5
    again = opened.open(keys, breaker=policy)
    provider, states = again.dump_nowait()
    assert provider.throttled_until == T0 + 15.0
    assert (provider.breaker.state, provider.breaker.until) == (OPEN, T0 + 20.0)
    assert all(s.state == "active" and s.backoff == 0 for s in states.values())
    assert again.acquire_nowait() == Open(15.0)


def test_a_half_open_breaker_comes_back_open_for_its_next_trial(path: Path, clock: Clock) -> None:
    keys = keys_of(1)
    file = StateFile(path, clock=clock)
    trial = Breaker(HALF_OPEN, 3, T0 + 120.0, 5.0, keys[0].fingerprint)  # the trial died with its process
    file.save("gemini", [], ProviderState(0.0, trial))
    try:
        store = SqliteStore("gemini", keys, file=file, clock=clock)
        assert store.dump_nowait()[0].breaker == Breaker(OPEN, 3, 0.0, 5.0)
        assert store.acquire_nowait() == keys[0]  # the next request is the trial, at once
    finally:
        file.close()


# ------------------------------------------------------------------ counters


def test_the_days_counters_go_on_after_a_reopen_and_a_new_day_starts_at_zero(
    opened: Opened, clock: Clock, path: Path
) -> None:
    keys = keys_of(2)
    store = opened.open(keys)
    for _ in range(3):
        store.release_nowait(keys[0], None, 10.0, Usage(5, 7))
    store.release_nowait(keys[0], ServerError("boom", status=500), 30.0)
    opened.close()
    again = opened.open(keys)
    stats = again.snapshot_nowait()["keys"][0]
    assert (stats["requests"], stats["successes"], stats["failures"]) == (4, 3, {"ServerError": 1})
    assert (stats["tokens_in"], stats["tokens_out"], stats["avg_latency_ms"]) == (15, 21, 15.0)
    again.release_nowait(keys[0], None, 10.0)
    assert again.snapshot_nowait()["keys"][0]["requests"] == 5
    opened.close()
    clock.now = T0 + DAY
    assert opened.open(keys).snapshot_nowait()["keys"][0]["requests"] == 0
    assert rows(path, "SELECT day, requests FROM counters") == [(day_of(T0), 5)]


def test_counters_are_written_behind_without_a_close(path: Path, clock: Clock) -> None:
    made = stores(path, clock, {"GEMINI_API_KEY_1": "test-gemini-key-a"})
    try:
        pool = local(made, "gemini")
        pool.release_nowait(pool.keys_nowait()[0], None, 1.0)
        deadline = time.monotonic() + 10  # written every 0.5 s: generous, only a hang fails
        while not rows(path, "SELECT requests FROM counters") and time.monotonic() < deadline:
            time.sleep(0.05)
        assert rows(path, "SELECT requests FROM counters") == [(1,)]
    finally:
        made.close()


def test_a_closed_file_keeps_the_decision_in_memory_and_says_so(
    opened: Opened, caplog: pytest.LogCaptureFixture
) -> None:
    keys = keys_of(2)
    store = opened.open(keys)
    opened.close()
    with caplog.at_level(logging.WARNING, "keywheel.state"):
        store.disable_nowait(keys[0].fingerprint)
    assert store.dump_nowait()[1][keys[0].fingerprint].state == "disabled"
    assert "not saved" in caplog.text


# ------------------------------------------------------------------ the file


def test_a_second_opener_is_refused_and_told_to_use_redis(path: Path) -> None:
    first = StateFile(path)
    try:
        with pytest.raises(ConfigError) as info:
            StateFile(path)
        message = info.value.problems["KEYWHEEL_STATE"]
        assert "in use" in message and "redis://" in message
    finally:
        first.close()
    StateFile(path).close()  # free again once closed


def test_another_process_holding_the_file_is_named_and_a_dead_one_frees_it(path: Path) -> None:
    hold = "import sys; from keywheel.state.sqlite_file import StateFile; f = StateFile(sys.argv[1]); print('held', flush=True); sys.stdin.read()"  # noqa: E501
    holder = subprocess.Popen(
        [sys.executable, "-c", hold, str(path)],
        env=measured({"PATH": "/usr/bin:/bin"}),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == b"held\n"
        with pytest.raises(ConfigError) as info:
            StateFile(path)
        assert f"process {holder.pid}" in str(info.value) and "redis://" in str(info.value)
    finally:
        holder.kill()  # no clean exit: the kernel lets go of the lock
        holder.wait(10)
    StateFile(path).close()


def test_a_file_of_a_newer_schema_is_refused_and_an_older_one_migrates(path: Path, tmp_path: Path) -> None:
    StateFile(path).close()
    with sqlite3.connect(path) as db:
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(ConfigError, match="newer than this keywheel knows"):
        StateFile(path)

    empty = tmp_path / "old.db"
    sqlite3.connect(empty).close()  # version 0: an empty file
    StateFile(empty).close()
    assert rows(empty, "PRAGMA user_version") == [(SCHEMA_VERSION,)]


def test_a_migration_step_runs_once_and_keeps_the_data(path: Path, clock: Clock) -> None:
    keys = keys_of(1)
    file = StateFile(path, clock=clock)
    SqliteStore("gemini", keys, file=file, clock=clock).disable_nowait(keys[0].fingerprint, "kept")
    file.close()

    def v2(db: sqlite3.Connection) -> None:
        db.execute("ALTER TABLE keys ADD COLUMN note TEXT NOT NULL DEFAULT 'v2'")

    for _ in range(2):  # the second open finds version 2 already
        StateFile(path, clock=clock, migrations=(*MIGRATIONS, v2)).close()
    assert rows(path, "PRAGMA user_version") == [(2,)]
    assert rows(path, "SELECT reason, note FROM keys") == [("kept", "v2")]


def test_a_file_that_is_not_a_state_file_is_refused(tmp_path: Path) -> None:
    other = tmp_path / "app.db"
    with sqlite3.connect(other) as db:
        db.execute("CREATE TABLE users (name TEXT)")
    with pytest.raises(ConfigError, match="not a keywheel state file"):
        StateFile(other)
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"this is no database" * 100)
    with pytest.raises(ConfigError, match="not a keywheel state file"):
        StateFile(garbage)


def test_a_state_file_that_cannot_be_created_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "plain").write_text("a file, not a folder")
    with pytest.raises(ConfigError, match="cannot create the state file"):
        StateFile(tmp_path / "plain" / "state.db")


# ------------------------------------------------------------------ retention, via the factory


def local(made: Stores, provider: str) -> MemoryStore:
    """A SQLite store (an in-process store) of ``made``."""
    pool = made.pools[provider]
    assert isinstance(pool, MemoryStore)
    return pool


def stores(path: Path, clock: Clock, keys: dict[str, str], retention: str = "30d") -> Stores:
    env = {"KEYWHEEL_STATE": f"sqlite:///{path}", "KEYWHEEL_STATE_RETENTION": retention, **keys}
    return build_stores(settings_from_env(env), clock=clock)


def test_a_removed_key_keeps_its_history_for_the_retention_then_is_purged(path: Path, clock: Clock) -> None:
    both = {"GEMINI_API_KEY_1": "test-gemini-key-a", "GEMINI_API_KEY_2": "test-gemini-key-b"}
    only_b = {"GEMINI_API_KEY_2": "test-gemini-key-b"}
    made = stores(path, clock, both)
    pool = local(made, "gemini")
    first = pool.keys_nowait()[0]
    pool.release_nowait(first, None, 1.0)
    pool.disable_nowait(first.fingerprint, "spent")
    made.close()

    clock.now = T0 + DAY  # a day later, key a is gone from the configuration: kept
    stores(path, clock, only_b).close()
    assert len(rows(path, "SELECT id FROM keys")) == 2
    assert rows(path, "SELECT removed_at FROM keys WHERE removed_at IS NOT NULL") == [(T0 + DAY,)]

    clock.now = T0 + 2 * DAY  # back in the configuration: it starts fresh
    back = stores(path, clock, both)
    assert local(back, "gemini").dump_nowait()[1][first.fingerprint].state == "active"
    back.close()

    clock.now = T0 + 3 * DAY  # gone again, now past the retention (30 days after this removal)
    stores(path, clock, only_b).close()
    clock.now = T0 + 34 * DAY
    stores(path, clock, only_b).close()
    assert len(rows(path, "SELECT id FROM keys")) == 1
    assert rows(path, "SELECT count(*) FROM counters") == [(0,)]  # and the counters of days that old


def test_a_new_key_in_an_old_keys_place_starts_fresh(path: Path, clock: Clock) -> None:
    made = stores(path, clock, {"GEMINI_API_KEY_1": "test-gemini-key-old"})
    pool = local(made, "gemini")
    pool.disable_nowait(pool.keys_nowait()[0].fingerprint, "dead")
    made.close()
    again = stores(path, clock, {"GEMINI_API_KEY_1": "test-gemini-key-new"})
    try:
        assert [s.state for s in local(again, "gemini").dump_nowait()[1].values()] == ["active"]
    finally:
        again.close()


def test_the_file_keeps_no_fingerprint_or_key_only_keyed_hashes(path: Path, clock: Clock) -> None:
    made = stores(path, clock, {"GEMINI_API_KEY_1": "test-gemini-key-a"})
    key = local(made, "gemini").keys_nowait()[0]
    made.close()
    (salt,) = rows(path, "SELECT value FROM meta WHERE name = 'salt'")[0]
    assert isinstance(salt, bytes) and len(salt) == 32
    assert rows(path, "SELECT id FROM keys") == [(key_id(key, salt),)]
    assert key.fingerprint.encode() not in path.read_bytes()
    assert rows(path, "PRAGMA journal_mode") == [("wal",)]
    assert path.stat().st_mode & 0o077 == 0  # for its owner only: the salt is in it


# ------------------------------------------------------------------ the library


def test_a_wheel_from_env_keeps_its_state_in_the_file(tmp_path: Path) -> None:
    env = {
        "GEMINI_API_KEY_1": "test-gemini-key-1",
        "GEMINI_API_KEY_2": "test-gemini-key-2",
        "GEMINI_BASE_URL": "http://127.0.0.1:9",
        "KEYWHEEL_STATE": "sqlite:///" + str(tmp_path / "wheel.db"),
    }
    with Wheel.from_env(env) as wheel:
        fingerprint = wheel.snapshot().providers[0].keys[0].fingerprint
        wheel.disable_key(fingerprint, "by hand")
        with pytest.raises(ConfigError, match="in use"):
            Wheel.from_env(env)
    with Wheel.from_env(env) as wheel:
        key = wheel.snapshot().providers[0].keys[0]
        assert (key.fingerprint, key.state, key.reason) == (fingerprint, "disabled", "by hand")


def assert_no_piece(path: Path, secrets: list[str]) -> None:
    """No key, nor any 8-character piece of one, in the file or its -wal / -shm."""
    for suffix in ("", "-wal", "-shm", ".lock"):
        part = Path(f"{path}{suffix}")
        if not part.exists():
            continue
        data = part.read_bytes()
        for secret in secrets:
            for i in range(len(secret) - 7):
                assert secret[i : i + 8].encode() not in data, f"a piece of a key in {part.name}"


def test_a_failing_migration_step_leaves_the_file_at_its_version(path: Path) -> None:
    StateFile(path).close()

    def broken(db: sqlite3.Connection) -> None:
        db.execute("ALTER TABLE keys ADD COLUMN half TEXT")
        raise RuntimeError("a bug in a migration")

    with pytest.raises(RuntimeError, match="a bug in a migration"):
        StateFile(path, migrations=(*MIGRATIONS, broken))
    assert rows(path, "PRAGMA user_version") == [(SCHEMA_VERSION,)]
    assert "half" not in [r[1] for r in rows(path, "PRAGMA table_info(keys)")]
    StateFile(path).close()  # and the lock was let go


def test_a_folder_in_the_files_place_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "state.db").mkdir()
    with pytest.raises(ConfigError, match="cannot open the state file"):
        StateFile(tmp_path / "state.db")


def test_many_requests_are_written_in_several_bounded_transactions(path: Path, clock: Clock) -> None:
    n = BATCH_EVENTS * 2 + 1
    file = StateFile(path, clock=clock)
    try:
        kid = file.key_id(keys_of(1)[0])
        for i in range(n):
            file.count((kid, T0 + i / 1000, None if i % 2 else "ServerError", 1.0, 1, 2))
        assert file.flush() == n
        assert file.flush() == 0
    finally:
        file.close()
    assert rows(path, "SELECT requests, successes, tokens_in, tokens_out FROM counters") == [(n, n // 2, n, 2 * n)]
    assert rows(path, "SELECT kind, count FROM failures") == [("ServerError", n - n // 2)]
