"""The key pool on its own: rotation, cooldowns, disabling, provider-level throttling.

The pool takes its clock as an argument, so time is stepped here rather than slept.
"""

from __future__ import annotations

import threading
from collections import Counter

import pytest

from keywheel.errors import KeyInvalid, QuotaExhausted, RateLimited, ServerError
from keywheel.keys import BACKOFF_CAP, KeyPool
from keywheel.secrets import ApiKey


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make(n: int, clock: Clock | None = None) -> tuple[KeyPool, list[ApiKey]]:
    keys = [ApiKey(f"test-gemini-key-{i}", "gemini", str(i)) for i in range(1, n + 1)]
    return KeyPool("gemini", keys, clock=clock or Clock()), keys


def take(pool: KeyPool) -> ApiKey:
    got = pool.acquire()
    assert isinstance(got, ApiKey), got
    return got


def test_round_robin_is_exact() -> None:
    pool, keys = make(4)
    picks = [take(pool) for _ in range(12)]
    assert picks == keys * 3


def test_round_robin_exact_under_threads() -> None:
    pool, keys = make(4)
    counts: Counter[str] = Counter()
    lock = threading.Lock()

    def worker() -> None:
        local: Counter[str] = Counter()
        for _ in range(2500):
            key = take(pool)
            local[key.fingerprint] += 1
            pool.release(key, None, 1.0)
        with lock:
            counts.update(local)

    threads = [threading.Thread(target=worker) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(counts.values()) == [10_000] * 4


def test_rate_limited_key_rests_exactly_as_asked_then_returns() -> None:
    clock = Clock()
    pool, keys = make(3, clock)
    k1 = take(pool)
    pool.release(k1, RateLimited("slow down", retry_after=2.0), 5.0)
    for _ in range(10):
        assert take(pool) != k1
    clock.now += 1.999
    assert all(take(pool) != k1 for _ in range(4))
    clock.now += 0.002
    assert k1 in {take(pool) for _ in range(3)}
    snap = pool.snapshot()["keys"][0]
    assert snap["state"] == "active" and snap["failures"] == {"RateLimited": 1}


def test_second_rate_limit_extends_never_shortens() -> None:
    clock = Clock()
    pool, keys = make(3, clock)
    k1 = take(pool)
    pool.release(k1, RateLimited("a", retry_after=10.0), 1.0)
    pool.release(k1, RateLimited("b", retry_after=2.0), 1.0)  # a late answer of an in-flight request
    assert pool.snapshot()["keys"][0]["cooldown_remaining"] == pytest.approx(10.0)
    pool.release(k1, RateLimited("c", retry_after=20.0), 1.0)
    assert pool.snapshot()["keys"][0]["cooldown_remaining"] == pytest.approx(20.0)


def test_backoff_without_retry_time_doubles_from_one_second_to_the_cap() -> None:
    clock = Clock()
    pool, keys = make(3, clock)
    rests = []
    for _ in range(9):
        pool.release(keys[0], RateLimited("no timing"), 1.0)
        rests.append(pool.snapshot()["keys"][0]["cooldown_remaining"])
        clock.now += 100  # let it come back, and let the throttle window pass
    assert rests == [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0, 60.0][: len(rests)]
    assert max(rests) == BACKOFF_CAP
    pool.release(keys[0], None, 1.0)  # a success resets the backoff
    pool.release(keys[0], RateLimited("no timing"), 1.0)
    assert pool.snapshot()["keys"][0]["cooldown_remaining"] == 1.0


def test_invalid_and_out_of_credit_keys_are_disabled_until_enabled() -> None:
    clock = Clock()
    pool, keys = make(3, clock)
    pool.release(take(pool), KeyInvalid("API key not valid", status=401), 1.0)
    pool.release(take(pool), QuotaExhausted("Insufficient credits", status=402), 1.0)
    clock.now += 10_000
    assert {take(pool) for _ in range(5)} == {keys[2]}
    snap = {k["key"]: k for k in pool.snapshot()["keys"]}
    assert snap[keys[0].fingerprint]["state"] == "disabled"
    assert "invalid key" in snap[keys[0].fingerprint]["reason"]
    assert "credit" in snap[keys[1].fingerprint]["reason"]
    pool.enable(keys[0].fingerprint)
    assert keys[0] in {take(pool) for _ in range(2)}


def test_quota_with_known_reset_cools_until_then() -> None:
    clock = Clock()
    pool, keys = make(2, clock)
    pool.release(keys[0], QuotaExhausted("daily quota", retry_after=3600.0), 1.0)
    assert pool.snapshot()["keys"][0]["state"] == "cooling"
    clock.now += 3601
    assert keys[0] in {take(pool), take(pool)}


def test_provider_faults_do_not_touch_the_key() -> None:
    pool, keys = make(2)
    for _ in range(5):
        pool.release(keys[0], ServerError("boom", status=500), 1.0)
    assert pool.snapshot()["keys"][0]["state"] == "active"


def test_all_keys_limited_together_is_provider_throttling_not_key_punishment() -> None:
    clock = Clock()
    pool, keys = make(3, clock)
    for key in keys:
        pool.release(key, RateLimited("account limit"), 1.0)  # no retry time: backoff 1 s each
        clock.now += 0.5
    snap = pool.snapshot()
    assert snap["throttled_for"] == pytest.approx(0.5)  # 1 s from the last 429, 0.5 s ago
    assert all(k["state"] == "active" for k in snap["keys"])  # the keys themselves are not rested
    wait = pool.acquire()
    assert isinstance(wait, float) and 0 < wait <= 1.0
    clock.now += 1.0
    assert {take(pool) for _ in range(3)} == set(keys)
    # No key's backoff grew: the next rate limit starts again at 1 s.
    pool.release(keys[0], RateLimited("again"), 1.0)
    assert pool.snapshot()["keys"][0]["cooldown_remaining"] == 1.0


def test_every_key_resting_reports_seconds_to_the_earliest() -> None:
    clock = Clock()
    keys = [ApiKey(f"test-gemini-key-{i}", "gemini", str(i)) for i in (1, 2)]
    pool = KeyPool("gemini", keys, clock=clock, throttle_window=-1)  # no provider throttling
    pool.release(keys[0], RateLimited("x", retry_after=5.0), 1.0)
    clock.now += 0.1
    pool.release(keys[1], RateLimited("x", retry_after=3.0), 1.0)
    pool.release(keys[0], RateLimited("x", retry_after=7.0), 1.0)
    assert pool.acquire() == pytest.approx(3.0)
    pool.disable(keys[0].fingerprint, "test")
    pool.disable(keys[1].fingerprint, "test")
    assert pool.acquire() is None


def test_selection_stays_constant_time_with_many_cooling_keys() -> None:
    clock = Clock()
    keys = [ApiKey(f"test-key-{i}", "gemini", str(i)) for i in range(1000)]
    pool = KeyPool("gemini", keys, clock=clock)
    for key in keys[:999]:
        pool.release(key, RateLimited("x", retry_after=60.0), 1.0)
    # Lazy removal: after one pass the ring holds only the usable key.
    assert take(pool) == keys[999]
    assert len(pool._ring) == 1  # noqa: SLF001 — the O(1) claim is about this structure
    assert all(take(pool) == keys[999] for _ in range(100))


def test_in_flight_is_counted_and_freed() -> None:
    pool, keys = make(1)
    key = take(pool)
    assert pool.snapshot()["keys"][0]["in_flight"] == 1
    pool.abandon(key)
    assert pool.snapshot()["keys"][0]["in_flight"] == 0
    assert pool.snapshot()["keys"][0]["requests"] == 0


def test_add_and_remove_keys() -> None:
    pool, keys = make(2)
    extra = ApiKey("test-gemini-key-9", "gemini", "9")
    pool.add(extra)
    assert extra in {take(pool) for _ in range(3)}
    pool.remove(keys[0].fingerprint)
    assert keys[0] not in {take(pool) for _ in range(6)}
    with pytest.raises(ValueError):
        pool.add(extra)
