"""The rolling per-key counters (requests and failures in the last hour and day) and a provider's
per-minute chart, kept in per-minute buckets for a day, on a clock the test moves."""

from __future__ import annotations

from keywheel.errors import ServerError
from keywheel.secrets import ApiKey
from keywheel.state.memory import MemoryStore
from keywheel.state.stats import DAY_MINUTES
from keywheel.status import provider_status

START = 1_700_000_000.0 - 1_700_000_000.0 % 60  # the start of a minute


def test_last_hour_last_day_and_the_chart_follow_the_clock() -> None:
    now = [START]
    key = ApiKey("test-gemini-key-1", "gemini", "1")
    other = ApiKey("test-gemini-key-2", "gemini", "2")
    store = MemoryStore("gemini", [key, other], clock=lambda: now[0])

    def request(on: ApiKey, fail: bool = False, latency: float = 10.0) -> None:
        assert store.acquire_nowait() in (key, other)
        store.release_nowait(on, ServerError("boom", status=500) if fail else None, latency)

    def view() -> dict[str, dict[str, object]]:
        return {k["key"]: k for k in store.snapshot_nowait()["keys"]}

    request(key)
    request(key, fail=True, latency=30.0)
    request(other, latency=20.0)
    now[0] += 30 * 60  # half an hour on
    request(key)
    now[0] += 45 * 60  # 75 minutes after the first: those left the hour, not the day
    request(key, fail=True)
    first = view()[key.fingerprint]
    assert first["last_hour"] == {"requests": 2, "failures": 1}
    assert first["last_day"] == {"requests": 4, "failures": 2}
    assert view()[other.fingerprint]["last_hour"] == {"requests": 0, "failures": 0}
    assert view()[other.fingerprint]["last_day"] == {"requests": 1, "failures": 0}
    chart = store.snapshot_nowait()["minutes"]  # the last hour's minutes with traffic, both keys summed
    assert [(m["at"], m["requests"], m["failures"]) for m in chart] == [
        (START + 30 * 60, 1, 0),
        (START + 75 * 60, 1, 1),
    ]

    now[0] = START  # the first minute again: all three requests, latency the mean
    chart = store.snapshot_nowait()["minutes"]
    assert chart[0] == {"at": START, "requests": 3, "failures": 1, "latency_ms": 20.0}

    now[0] = START + 75 * 60 + 24 * 3600  # a day after the last request: nothing left
    assert view()[key.fingerprint]["last_day"] == {"requests": 0, "failures": 0}
    assert store.snapshot_nowait()["minutes"] == []
    assert view()[key.fingerprint]["requests"] == 4  # the totals stay

    typed = provider_status(store.snapshot_nowait(), dialect="gemini", model="m", now=now[0])
    assert typed.keys[0].last_day.requests == 0 and typed.minutes == ()


def test_the_buckets_are_bounded_to_a_day() -> None:
    now = [START]
    key = ApiKey("test-gemini-key-1", "gemini", "1")
    store = MemoryStore("gemini", [key], clock=lambda: now[0])
    for _ in range(DAY_MINUTES + 100):  # one request a minute for a day and more
        store.acquire_nowait()
        store.release_nowait(key, None, 1.0)
        now[0] += 60
    now[0] -= 60
    stats = store._keys[key.fingerprint].stats  # noqa: SLF001 — the memory bound itself
    assert len(stats.minutes) == DAY_MINUTES
    view = store.snapshot_nowait()["keys"][0]
    assert view["last_day"]["requests"] == DAY_MINUTES and view["last_hour"]["requests"] == 60
    assert len(store.snapshot_nowait()["minutes"]) == 60
    now[0] -= 3600  # a clock that went back counts in the newest minute, never a new bucket behind it
    store.acquire_nowait()
    store.release_nowait(key, None, 1.0)
    assert len(stats.minutes) == DAY_MINUTES and stats.minutes[-1][1] == 2


def test_the_keys_list_table_at_80_columns_and_wide() -> None:
    from rich.console import Console

    from keywheel.render import key_list_table
    from keywheel.status import KeyStatus, ProviderStatus, Recent, Status

    now = START
    keys = (
        KeyStatus("gemini#1 …6cd7", "cooling", "rate limited [429]", rest_until=now + 42, last_used=now - 30),
        KeyStatus("gemini#2 …3137", "disabled", "invalid key", last_used=now - 600, last_day=Recent(7, 2)),
        KeyStatus("gemini#3 …35d3", "active", last_used=now - 7200, last_hour=Recent(3, 1), tokens_in=5),
        KeyStatus("gemini#4 …404f", "active"),
    )
    status = Status("gemini", ("gemini",), (ProviderStatus("gemini", "gemini", "m", keys=keys),), now)
    for width in (80, 140):
        console = Console(width=width, record=True)
        console.print(key_list_table(status, "keys", width))
        text = console.export_text()
        assert all(k.fingerprint in text for k in keys)
        assert ("tokens" in text) == (width > 100)
        assert "42s" in text and "30s ago" in text and "10m ago" in text and "2.0h ago" in text and "never" in text
        assert "rate limited" in text and "[429]" in text  # markup-looking text shown as it is
        assert "7/2" in text and "3/1" in text
