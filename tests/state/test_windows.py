"""Quota windows and key groups: the pure window math, and the memory store that applies it.

Every clock is injected: time is stepped, never slept.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from keywheel.errors import QuotaExhausted, RateLimited
from keywheel.secrets import ApiKey
from keywheel.state.memory import MemoryStore
from keywheel.state.windows import (
    GUARD,
    TOKENS,
    GroupWindows,
    Quota,
    WindowSpec,
    body_tokens,
    estimate_tokens,
    next_midnight,
    parse_rate,
)
from keywheel.types import Usage

PACIFIC = "America/Los_Angeles"


def utc(year: int, month: int, day: int, hour: int, minute: int) -> float:
    return datetime(year, month, day, hour, minute, tzinfo=UTC).timestamp()


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def keys(n: int) -> list[ApiKey]:
    return [ApiKey(f"test-gemini-key-{i}", "gemini", str(i)) for i in range(1, n + 1)]


def store(ks: list[ApiKey], quota: Quota, clock: Clock) -> MemoryStore:
    return MemoryStore("gemini", ks, clock=clock, quota=quota)


# ------------------------------------------------------------------ the pure math


@pytest.mark.parametrize(
    ("text", "limit", "seconds"),
    [("10/5s", 10, 5.0), ("100/1m", 100, 60.0), ("1000/2h", 1000, 7200.0), ("3/s", 3, 1.0), (" 7 / 1.5s ", 7, 1.5)],
)
def test_parse_rate(text: str, limit: int, seconds: float) -> None:
    assert parse_rate(text) == (limit, seconds)


@pytest.mark.parametrize("text", ["10", "10/5", "ten/5s", "10/5d", "0/5s", "10/0s", "-1/5s", ""])
def test_parse_rate_refuses_junk(text: str) -> None:
    with pytest.raises(ValueError, match="N/Ts"):
        parse_rate(text)


def test_next_midnight_on_an_ordinary_day_and_both_dst_days() -> None:
    # An ordinary winter day: 00:00 PST is 08:00 UTC.
    assert next_midnight(utc(2026, 1, 15, 20, 0), PACIFIC) == utc(2026, 1, 16, 8, 0)
    # 8 March 2026, spring forward: from 00:30 PST (08:30 UTC) the next midnight is 00:00 PDT (07:00 UTC), 22.5 h.
    start = utc(2026, 3, 8, 8, 30)
    assert next_midnight(start, PACIFIC) == utc(2026, 3, 9, 7, 0)
    assert next_midnight(start, PACIFIC) - start == 22.5 * 3600
    # 1 November 2026, fall back: from 00:30 PDT (07:30 UTC) to 00:00 PST (08:00 UTC next day), 24.5 h.
    start = utc(2026, 11, 1, 7, 30)
    assert next_midnight(start, PACIFIC) - start == 24.5 * 3600
    # One second before Pacific midnight: one second left; at midnight itself: a whole day.
    midnight = utc(2026, 11, 2, 8, 0)
    assert next_midnight(midnight - 1, PACIFIC) == midnight
    assert next_midnight(midnight, PACIFIC) == utc(2026, 11, 3, 8, 0)
    assert next_midnight(utc(2026, 6, 1, 23, 0), "UTC") == utc(2026, 6, 2, 0, 0)


def test_sliding_window_admits_limit_then_waits_for_the_oldest_plus_the_guard() -> None:
    g = GroupWindows("g", (WindowSpec("10/5s", 10, 5.0),), 0.0)
    for i in range(10):
        t = 100.0 + i * 0.1
        assert g.wait(t, 0) == 0.0
        g.take(t, 0)
    assert g.wait(101.0, 0) == pytest.approx(100.0 + 5.0 + GUARD - 101.0)
    # Exactly at the oldest's exit (+ guard) one slot frees, and only one.
    t = 105.0 + GUARD
    assert g.wait(t, 0) == 0.0
    g.take(t, 0)
    assert g.wait(t, 0) == pytest.approx(0.1)
    assert g.view(t)[0]["used"] == 10


def test_token_window_reserves_then_settles_to_actual_usage() -> None:
    spec = WindowSpec("tpm", 1000, 60.0, TOKENS)
    g = GroupWindows("g", (spec,), 0.0)
    assert g.counts_tokens
    first = g.take(0.0, 600)
    assert g.wait(1.0, 600) == pytest.approx(60.0 + GUARD - 1.0)  # 600 + 600 > 1000: wait for the first to leave
    g.settle(first, 250)  # it used 250: room for 600 more
    assert g.view(1.0)[0]["used"] == 250
    assert g.wait(1.0, 600) == 0.0
    g.take(1.0, 600)
    assert g.view(1.0)[0]["used"] == 850
    # A request bigger than the whole limit still goes when the window is empty, never starves.
    assert g.wait(200.0, 5000) == 0.0
    # A settlement after the charge left its window changes nothing.
    late = g.take(200.0, 10)
    g.wait(300.0, 0)
    g.settle(late, 999)
    assert g.view(300.0)[0]["used"] == 0


def test_token_estimates() -> None:
    assert estimate_tokens(400, 50) == 150
    assert estimate_tokens(400, None) == 100 + 1024
    assert body_tokens(40, {"max_tokens": 7}) == 17
    assert body_tokens(40, {"max_completion_tokens": 7}) == 17
    assert body_tokens(40, {"max_output_tokens": 7}) == 17
    assert body_tokens(40, {"generationConfig": {"maxOutputTokens": 7}}) == 17
    assert body_tokens(40, {"max_tokens": True}) == 10 + 1024  # junk is no cap


# ------------------------------------------------------------------ the store


def test_no_windows_keeps_plain_rotation() -> None:
    pool = store(keys(3), Quota(), Clock())
    assert [pool.acquire_nowait() for _ in range(6)] == keys(3) * 2
    assert pool.snapshot_nowait()["groups"] == []


def test_full_windows_are_skipped_and_the_wait_is_the_earliest_free_slot() -> None:
    clock = Clock(1000.0)
    ks = keys(2)
    pool = store(ks, Quota(default=(WindowSpec("2/5s", 2, 5.0),)), clock)
    got = []
    for i in range(4):
        clock.now = 1000.0 + i
        got.append(pool.acquire_nowait())
    assert got == [ks[0], ks[1], ks[0], ks[1]]
    clock.now = 1003.5
    wait = pool.acquire_nowait()
    assert wait == pytest.approx(1000.0 + 5.0 + GUARD - 1003.5)  # key 1's first pick leaves first
    clock.now = 1005.0 + GUARD
    assert pool.acquire_nowait() == ks[0]
    assert pool.acquire_nowait() == pytest.approx(1.0)  # key 2 frees at 1006 + guard
    view = pool.snapshot_nowait()
    assert [g["windows"][0]["used"] for g in view["groups"]] == [2, 2]
    assert view["groups"][0]["windows"][0]["resets_at"] == pytest.approx(1002.0 + 5.0 + GUARD)
    assert view["keys"][0]["group"] is None  # ungrouped: its own group


def test_a_resting_key_and_a_full_window_wait_for_whichever_frees_first() -> None:
    clock = Clock(1000.0)
    ks = keys(2)
    pool = store(ks, Quota(default=(WindowSpec("1/10s", 1, 10.0),)), clock)
    assert pool.acquire_nowait() == ks[0]
    assert pool.acquire_nowait() == ks[1]
    pool.release_nowait(ks[1], RateLimited("slow", retry_after=3.0), 1.0)
    assert pool.acquire_nowait() == pytest.approx(3.0)  # key 2's rest ends before key 1's window


def test_grouped_keys_share_one_window_and_another_group_keeps_its_own() -> None:
    clock = Clock(1000.0)
    ks = keys(3)
    quota = Quota(
        default=(WindowSpec("rpm", 2, 60.0),),
        groups={"proj-a": (WindowSpec("rpm", 2, 60.0),)},
        key_group={ks[0].fingerprint: "proj-a", ks[1].fingerprint: "proj-a"},
    )
    pool = store(ks, quota, clock)
    picks = [pool.acquire_nowait() for _ in range(4)]
    assert picks == [ks[0], ks[1], ks[2], ks[2]]  # proj-a spent its 2 on keys 1 and 2; key 3 has its own 2
    assert isinstance(pool.acquire_nowait(), float)
    groups = {g["group"]: g for g in pool.snapshot_nowait()["groups"]}
    assert groups["proj-a"]["keys"] == [ks[0].fingerprint, ks[1].fingerprint]
    assert groups["proj-a"]["windows"][0]["used"] == 2


def test_tpm_reservation_settles_to_usage_and_abandon_releases_it() -> None:
    clock = Clock(1000.0)
    ks = keys(1)
    pool = store(ks, Quota(default=(WindowSpec("tpm", 1000, 60.0, TOKENS),)), clock)

    def used() -> int:
        return int(pool.snapshot_nowait()["groups"][0]["windows"][0]["used"])

    key = pool.acquire_nowait(tokens=700)
    assert key == ks[0] and used() == 700
    assert isinstance(pool.acquire_nowait(tokens=700), float)  # 1400 > 1000: full
    pool.release_nowait(ks[0], None, 5.0, Usage(input_tokens=120, output_tokens=80))
    assert used() == 200  # settled to the known usage
    assert pool.acquire_nowait(tokens=700) == ks[0]
    assert used() == 900
    pool.abandon_nowait(ks[0])  # cancelled: its reservation goes
    assert used() == 200
    assert pool.acquire_nowait(tokens=300) == ks[0]
    pool.release_nowait(ks[0], RateLimited("no", retry_after=0.001), 5.0)  # a refusal spent no tokens
    assert used() == 200
    clock.now += 1
    assert pool.acquire_nowait(tokens=300) == ks[0]
    pool.release_nowait(ks[0], None, 5.0)  # no usage reported: the estimate stands
    assert used() == 500


@pytest.mark.parametrize(
    "midnight",
    [utc(2026, 3, 9, 7, 0), utc(2026, 11, 2, 8, 0), utc(2026, 1, 16, 8, 0)],
    ids=["spring-forward day", "fall-back day", "winter day"],
)
def test_rpd_resets_at_pacific_midnight(midnight: float) -> None:
    clock = Clock(midnight - 10.0)
    ks = keys(1)
    pool = store(ks, Quota(default=(WindowSpec("rpd", 2, 86400.0, daily=True, tz=PACIFIC),)), clock)
    assert pool.acquire_nowait() == ks[0]
    assert pool.acquire_nowait() == ks[0]
    assert pool.acquire_nowait() == pytest.approx(10.0)
    assert pool.snapshot_nowait()["groups"][0]["windows"][0]["resets_at"] == midnight
    clock.now = midnight - 0.001
    assert isinstance(pool.acquire_nowait(), float)
    clock.now = midnight
    assert pool.acquire_nowait() == ks[0]  # a new day
    assert pool.acquire_nowait() == ks[0]
    wait = pool.acquire_nowait()
    assert isinstance(wait, float) and 23 * 3600 <= wait <= 25 * 3600


def per_day(retry_after: float = 3600.0) -> QuotaExhausted:
    error = QuotaExhausted("Quota exceeded for GenerateRequestsPerDayPerProjectPerModel", status=429)
    error.retry_after, error.daily = retry_after, True
    return error


def test_a_per_day_quota_rests_the_whole_group_until_pacific_midnight_and_another_group_serves() -> None:
    midnight = utc(2026, 11, 2, 8, 0)
    clock = Clock(midnight - 3 * 3600)
    ks = keys(4)
    quota = Quota(
        key_group={ks[0].fingerprint: "proj-a", ks[1].fingerprint: "proj-a", ks[2].fingerprint: "proj-b"},
        day_tz=PACIFIC,
    )
    pool = store(ks, quota, clock)
    assert pool.acquire_nowait() == ks[0]
    change = pool.release_nowait(ks[0], per_day(retry_after=5.0), 1.0)  # the store's own clock decides the reset
    assert change is not None and change.until == midnight
    states = {k["key"]: k for k in pool.snapshot_nowait()["keys"]}
    assert states[ks[1].fingerprint]["state"] == "cooling"
    assert states[ks[1].fingerprint]["cooldown_remaining"] == pytest.approx(3 * 3600)
    assert states[ks[1].fingerprint]["group"] == "proj-a"
    assert "daily quota of its group" in states[ks[1].fingerprint]["reason"]
    assert states[ks[2].fingerprint]["state"] == "active" and states[ks[3].fingerprint]["state"] == "active"
    picks = {pool.acquire_nowait() for _ in range(6)}
    assert picks == {ks[2], ks[3]}  # proj-b and the ungrouped key keep serving
    clock.now = midnight
    assert {pool.acquire_nowait() for _ in range(8)} == set(ks)


def test_a_per_day_quota_on_an_ungrouped_key_rests_only_that_key() -> None:
    clock = Clock(utc(2026, 6, 1, 12, 0))
    ks = keys(2)
    pool = store(ks, Quota(day_tz=PACIFIC), clock)
    pool.release_nowait(ks[0], per_day(), 1.0)
    assert [k["state"] for k in pool.snapshot_nowait()["keys"]] == ["cooling", "active"]


def test_keys_throttled_together_again_and_again_are_counted_as_a_pair() -> None:
    clock = Clock(1000.0)
    ks = keys(3)
    pool = store(ks, Quota(), clock)
    for i in range(3):
        clock.now = 1000.0 + 100 * i
        pool.release_nowait(ks[0], RateLimited("a", retry_after=1.0), 1.0)
        clock.now += 0.4
        pool.release_nowait(ks[1], RateLimited("b", retry_after=1.0), 1.0)
    clock.now += 50
    pool.release_nowait(ks[2], RateLimited("c", retry_after=1.0), 1.0)  # alone: no pair
    co = pool.snapshot_nowait()["co_throttled"]
    assert co == [{"keys": sorted([ks[0].fingerprint, ks[1].fingerprint]), "times": 3}]


def test_keys_already_grouped_are_not_counted_as_a_pair() -> None:
    clock = Clock(1000.0)
    ks = keys(2)
    pool = store(ks, Quota(key_group={k.fingerprint: "same" for k in ks}), clock)
    pool.release_nowait(ks[0], RateLimited("a", retry_after=1.0), 1.0)
    pool.release_nowait(ks[1], RateLimited("b", retry_after=1.0), 1.0)
    assert pool.snapshot_nowait()["co_throttled"] == []


def test_an_added_key_joins_its_group_windows() -> None:
    clock = Clock(1000.0)
    ks = keys(2)
    pool = store(ks[:1], Quota(default=(WindowSpec("1/60s", 1, 60.0),)), clock)
    assert pool.acquire_nowait() == ks[0]
    pool.add_nowait(ks[1])  # ungrouped: its own window
    assert pool.acquire_nowait() == ks[1]
    assert isinstance(pool.acquire_nowait(), float)
