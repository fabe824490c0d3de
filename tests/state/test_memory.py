"""The in-memory key store on its own: rotation, cooldowns, disabling, provider-level throttling, the breaker.

The pool takes its clock as an argument, so time is stepped here rather than slept.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter

import pytest

from keywheel.errors import (
    BadRequest,
    KeyInvalid,
    ModelNotFound,
    NetworkError,
    Overloaded,
    QuotaExhausted,
    RateLimited,
    ServerError,
    Timeout,
)
from keywheel.secrets import ApiKey
from keywheel.state.base import Open
from keywheel.state.memory import MemoryStore
from keywheel.state.rules import (
    BACKOFF_CAP,
    Breaker,
    BreakerPolicy,
    breaker_admit,
    breaker_record,
)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make(n: int, clock: Clock | None = None) -> tuple[MemoryStore, list[ApiKey]]:
    keys = [ApiKey(f"test-gemini-key-{i}", "gemini", str(i)) for i in range(1, n + 1)]
    return MemoryStore("gemini", keys, clock=clock or Clock()), keys


def take(pool: MemoryStore) -> ApiKey:
    got = pool.acquire_nowait()
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
            pool.release_nowait(key, None, 1.0)
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
    pool.release_nowait(k1, RateLimited("slow down", retry_after=2.0), 5.0)
    for _ in range(10):
        assert take(pool) != k1
    clock.now += 1.999
    assert all(take(pool) != k1 for _ in range(4))
    clock.now += 0.002
    assert k1 in {take(pool) for _ in range(3)}
    snap = pool.snapshot_nowait()["keys"][0]
    assert snap["state"] == "active" and snap["failures"] == {"RateLimited": 1}


def test_second_rate_limit_extends_never_shortens() -> None:
    clock = Clock()
    pool, keys = make(3, clock)
    k1 = take(pool)
    pool.release_nowait(k1, RateLimited("a", retry_after=10.0), 1.0)
    pool.release_nowait(k1, RateLimited("b", retry_after=2.0), 1.0)  # a late answer of an in-flight request
    assert pool.snapshot_nowait()["keys"][0]["cooldown_remaining"] == pytest.approx(10.0)
    pool.release_nowait(k1, RateLimited("c", retry_after=20.0), 1.0)
    assert pool.snapshot_nowait()["keys"][0]["cooldown_remaining"] == pytest.approx(20.0)


def test_backoff_without_retry_time_doubles_from_one_second_to_the_cap() -> None:
    clock = Clock()
    pool, keys = make(3, clock)
    rests = []
    for _ in range(9):
        pool.release_nowait(keys[0], RateLimited("no timing"), 1.0)
        rests.append(pool.snapshot_nowait()["keys"][0]["cooldown_remaining"])
        clock.now += 100  # let it come back, and let the throttle window pass
    assert rests == [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0, 60.0][: len(rests)]
    assert max(rests) == BACKOFF_CAP
    pool.release_nowait(keys[0], None, 1.0)  # a success resets the backoff
    pool.release_nowait(keys[0], RateLimited("no timing"), 1.0)
    assert pool.snapshot_nowait()["keys"][0]["cooldown_remaining"] == 1.0


def test_invalid_and_out_of_credit_keys_are_disabled_until_enabled() -> None:
    clock = Clock()
    pool, keys = make(3, clock)
    pool.release_nowait(take(pool), KeyInvalid("API key not valid", status=401), 1.0)
    pool.release_nowait(take(pool), QuotaExhausted("Insufficient credits", status=402), 1.0)
    clock.now += 10_000
    assert {take(pool) for _ in range(5)} == {keys[2]}
    snap = {k["key"]: k for k in pool.snapshot_nowait()["keys"]}
    assert snap[keys[0].fingerprint]["state"] == "disabled"
    assert "invalid key" in snap[keys[0].fingerprint]["reason"]
    assert "credit" in snap[keys[1].fingerprint]["reason"]
    pool.enable_nowait(keys[0].fingerprint)
    assert keys[0] in {take(pool) for _ in range(2)}


def test_quota_with_known_reset_cools_until_then() -> None:
    clock = Clock()
    pool, keys = make(2, clock)
    pool.release_nowait(keys[0], QuotaExhausted("daily quota", retry_after=3600.0), 1.0)
    assert pool.snapshot_nowait()["keys"][0]["state"] == "cooling"
    clock.now += 3601
    assert keys[0] in {take(pool), take(pool)}


def test_provider_faults_do_not_touch_the_key() -> None:
    pool, keys = make(2)
    for _ in range(5):
        pool.release_nowait(keys[0], ServerError("boom", status=500), 1.0)
    assert pool.snapshot_nowait()["keys"][0]["state"] == "active"


def test_all_keys_limited_together_is_provider_throttling_not_key_punishment() -> None:
    clock = Clock()
    pool, keys = make(3, clock)
    for key in keys:
        pool.release_nowait(key, RateLimited("account limit"), 1.0)  # no retry time: backoff 1 s each
        clock.now += 0.5
    snap = pool.snapshot_nowait()
    assert snap["throttled_for"] == pytest.approx(0.5)  # 1 s from the last 429, 0.5 s ago
    assert all(k["state"] == "active" for k in snap["keys"])  # the keys themselves are not rested
    wait = pool.acquire_nowait()
    assert isinstance(wait, float) and 0 < wait <= 1.0
    clock.now += 1.0
    assert {take(pool) for _ in range(3)} == set(keys)
    # No key's backoff grew: the next rate limit starts again at 1 s.
    pool.release_nowait(keys[0], RateLimited("again"), 1.0)
    assert pool.snapshot_nowait()["keys"][0]["cooldown_remaining"] == 1.0


def test_every_key_resting_reports_seconds_to_the_earliest() -> None:
    clock = Clock()
    keys = [ApiKey(f"test-gemini-key-{i}", "gemini", str(i)) for i in (1, 2)]
    pool = MemoryStore("gemini", keys, clock=clock, throttle_window=-1)  # no provider throttling
    pool.release_nowait(keys[0], RateLimited("x", retry_after=5.0), 1.0)
    clock.now += 0.1
    pool.release_nowait(keys[1], RateLimited("x", retry_after=3.0), 1.0)
    pool.release_nowait(keys[0], RateLimited("x", retry_after=7.0), 1.0)
    assert pool.acquire_nowait() == pytest.approx(3.0)
    pool.disable_nowait(keys[0].fingerprint, "test")
    pool.disable_nowait(keys[1].fingerprint, "test")
    assert pool.acquire_nowait() is None


def test_selection_stays_constant_time_with_many_cooling_keys() -> None:
    clock = Clock()
    keys = [ApiKey(f"test-key-{i}", "gemini", str(i)) for i in range(1000)]
    pool = MemoryStore("gemini", keys, clock=clock)
    for key in keys[:999]:
        pool.release_nowait(key, RateLimited("x", retry_after=60.0), 1.0)
    # Lazy removal: after one pass the ring holds only the usable key.
    assert take(pool) == keys[999]
    assert len(pool._ring) == 1  # noqa: SLF001 — the O(1) claim is about this structure
    assert all(take(pool) == keys[999] for _ in range(100))


def test_in_flight_is_counted_and_freed() -> None:
    pool, keys = make(1)
    key = take(pool)
    assert pool.snapshot_nowait()["keys"][0]["in_flight"] == 1
    pool.abandon_nowait(key)
    assert pool.snapshot_nowait()["keys"][0]["in_flight"] == 0
    assert pool.snapshot_nowait()["keys"][0]["requests"] == 0


def test_add_and_remove_keys() -> None:
    pool, keys = make(2)
    extra = ApiKey("test-gemini-key-9", "gemini", "9")
    pool.add_nowait(extra)
    assert extra in {take(pool) for _ in range(3)}
    pool.remove_nowait(keys[0].fingerprint)
    assert keys[0] not in {take(pool) for _ in range(6)}
    with pytest.raises(ValueError):
        pool.add_nowait(extra)


# ------------------------------------------------------------------ the breaker

POLICY = BreakerPolicy(failures=3, cooloff=5.0, cooloff_max=12.0, trial_timeout=30.0)


def breaker_pool(
    n: int = 2, clock: Clock | None = None, policy: BreakerPolicy = POLICY
) -> tuple[MemoryStore, list[ApiKey]]:
    keys = [ApiKey(f"test-gemini-key-{i}", "gemini", str(i)) for i in range(1, n + 1)]
    return MemoryStore("gemini", keys, clock=clock or Clock(), breaker=policy), keys


def fail(pool: MemoryStore, error: Exception | None = None) -> None:
    """One request on the next key that ends in a provider fault (default a 500)."""
    pool.release_nowait(take(pool), error or ServerError("boom", status=500), 1.0)  # type: ignore[arg-type]


def breaker(pool: MemoryStore) -> dict[str, object]:
    view = pool.snapshot_nowait()["breaker"]
    assert isinstance(view, dict)
    return view


def test_breaker_opens_after_consecutive_provider_faults_spread_over_keys() -> None:
    clock = Clock()
    pool, keys = breaker_pool(2, clock)
    for error in (ServerError("500", status=500), Overloaded("529", status=529), Timeout("slow")):
        assert pool.breaker_closed_nowait()
        fail(pool, error)  # alternating keys: the count is the provider's, not a key's
    assert not pool.breaker_closed_nowait()
    got = pool.acquire_nowait()
    assert isinstance(got, Open) and got.retry_in == pytest.approx(5.0)
    view = breaker(pool)
    assert view["state"] == "open" and view["failures"] == 3 and view["open_for"] == pytest.approx(5.0)
    assert isinstance(view["open_until"], float)
    assert all(k["state"] == "active" for k in pool.snapshot_nowait()["keys"])  # the keys are not punished
    assert pool.acquire_nowait(force=True) in keys  # forced past it (every provider of a chain open)


def test_key_and_request_faults_neither_count_nor_reset_and_a_success_resets() -> None:
    pool, keys = breaker_pool(4)
    fail(pool)
    fail(pool, NetworkError("reset"))
    # 429, 401, 402, 400, a missing model: none of them says the provider is down
    for error in (
        RateLimited("429", status=429, retry_after=1.0),
        KeyInvalid("401", status=401),
        QuotaExhausted("402", status=402),
        BadRequest("400", status=400),
        ModelNotFound("404", status=404),
    ):
        pool.enable_nowait(keys[0].fingerprint)
        pool.release_nowait(keys[0], error, 1.0)
    assert breaker(pool)["failures"] == 2 and pool.breaker_closed_nowait()
    pool.release_nowait(take(pool), None, 1.0)  # a success resets the count
    assert breaker(pool)["failures"] == 0
    fail(pool)
    fail(pool)
    assert pool.breaker_closed_nowait()  # 2 in a row again: still under 3
    fail(pool)
    assert not pool.breaker_closed_nowait()


def test_exactly_one_trial_after_the_cooloff_and_success_closes() -> None:
    clock = Clock()
    pool, keys = breaker_pool(2, clock)
    for _ in range(3):
        fail(pool)
    clock.now += 4.9
    assert isinstance(pool.acquire_nowait(), Open)
    clock.now += 0.1
    assert breaker(pool)["state"] == "half-open"  # the next request is the trial
    trial = take(pool)
    assert breaker(pool)["state"] == "half-open"
    for _ in range(5):  # the trial is out: nobody else goes
        got = pool.acquire_nowait()
        assert isinstance(got, Open) and got.retry_in == pytest.approx(30.0)
    pool.release_nowait(trial, None, 1.0)
    assert pool.breaker_closed_nowait() and breaker(pool) == {
        "state": "closed",
        "failures": 0,
        "open_until": None,
        "open_for": 0.0,
        "cooloff": 0.0,
    }
    assert {take(pool) for _ in range(2)} == set(keys)


def test_a_streams_first_event_closes_the_breaker_before_the_stream_ends() -> None:
    clock = Clock()
    pool, _ = breaker_pool(2, clock)
    for _ in range(3):
        fail(pool)
    clock.now += 5.0
    trial = take(pool)
    pool.answered_nowait(trial)  # the trial stream's first event
    assert pool.breaker_closed_nowait() and isinstance(pool.acquire_nowait(), ApiKey)
    pool.release_nowait(trial, NetworkError("cut mid-stream"), 1.0)  # a later cut counts as one fault, no more
    assert pool.breaker_closed_nowait() and breaker(pool)["failures"] == 1


def test_a_failed_trial_reopens_with_a_cooloff_doubling_to_the_cap() -> None:
    clock = Clock()
    pool, _ = breaker_pool(2, clock)
    for _ in range(3):
        fail(pool)
    cooloffs = [breaker(pool)["cooloff"]]
    for _ in range(3):
        clock.now += float(cooloffs[-1])  # type: ignore[arg-type]
        fail(pool)  # the trial fails
        got = pool.acquire_nowait()
        assert isinstance(got, Open)
        cooloffs.append(breaker(pool)["cooloff"])
        assert got.retry_in == pytest.approx(cooloffs[-1])
    assert cooloffs == [5.0, 10.0, 12.0, 12.0]
    clock.now += 12.0
    pool.release_nowait(take(pool), None, 1.0)  # it answers again: closed, and the next opening starts at 5 s
    for _ in range(3):
        fail(pool)
    assert breaker(pool)["cooloff"] == 5.0


def test_a_trial_that_tells_nothing_lets_the_next_request_try_at_once() -> None:
    clock = Clock()
    pool, keys = breaker_pool(3, clock)
    for _ in range(3):
        fail(pool)
    clock.now += 5.0
    trial = take(pool)
    pool.release_nowait(trial, RateLimited("this key is limited", retry_after=60.0), 1.0)
    second = take(pool)  # a key fault on the trial: another key is the trial at once
    assert second != trial
    pool.abandon_nowait(second)  # cancelled: the same
    third = take(pool)
    assert third not in (trial, second)
    assert isinstance(pool.acquire_nowait(), Open)
    pool.release_nowait(third, Overloaded("529", status=529), 1.0)
    assert breaker(pool)["cooloff"] == 10.0


def test_a_lost_trial_is_replaced_after_its_lease() -> None:
    clock = Clock()
    pool, _ = breaker_pool(2, clock)
    for _ in range(3):
        fail(pool)
    clock.now += 5.0
    take(pool)  # never reports back
    clock.now += 29.9
    assert isinstance(pool.acquire_nowait(), Open)
    clock.now += 0.1
    assert isinstance(pool.acquire_nowait(), ApiKey)


def test_a_late_failure_while_open_does_not_extend_the_cooloff() -> None:
    clock = Clock()
    pool, keys = breaker_pool(2, clock)
    late = take(pool)  # sent before the breaker opens, answers after
    for _ in range(3):
        fail(pool)
    clock.now += 4.0
    pool.release_nowait(late, ServerError("late", status=502), 1.0)
    got = pool.acquire_nowait()
    assert isinstance(got, Open) and got.retry_in == pytest.approx(1.0)


def test_breaker_off_with_zero_failures() -> None:
    pool, _ = breaker_pool(2, policy=BreakerPolicy(failures=0))
    for _ in range(50):
        fail(pool)
    assert pool.breaker_closed_nowait() and isinstance(pool.acquire_nowait(), ApiKey)


def test_only_one_trial_under_threads() -> None:
    clock = Clock()
    pool, _ = breaker_pool(8, clock)
    for _ in range(3):
        fail(pool)
    clock.now += 5.0
    got: list[object] = []
    barrier = threading.Barrier(16)

    def worker() -> None:
        barrier.wait()
        got.append(pool.acquire_nowait())

    threads = [threading.Thread(target=worker) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(isinstance(g, ApiKey) for g in got) == 1
    assert sum(isinstance(g, Open) for g in got) == 15


def test_each_transition_is_logged_once_without_the_upstream_text(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    pool, keys = breaker_pool(2, clock)
    caplog.set_level(logging.INFO, logger="keywheel.keys")
    for _ in range(5):  # the 4th and 5th are late answers while open: no new line
        pool.release_nowait(keys[0], ServerError("Incorrect API key provided: test-gemini-key-1", status=500), 1.0)
    clock.now += 5.0
    pool.release_nowait(take(pool), Timeout("slow"), 1.0)
    clock.now += 10.0
    pool.release_nowait(take(pool), None, 1.0)
    lines = [r.getMessage() for r in caplog.records if r.name == "keywheel.keys"]
    assert len(lines) == 5, lines
    assert lines[0].startswith(
        "breaker of gemini opened after 3 consecutive provider faults (last: ServerError HTTP 500)"
    )
    assert "skipping gemini for 5 s" in lines[0]
    assert "half-open" in lines[1] and "reopened" in lines[2] and "for 10 s" in lines[2]
    assert "half-open" in lines[3] and "closed" in lines[4]
    assert not any("test-gemini-key" in line for line in lines)


@pytest.mark.parametrize(
    ("start", "outcome", "now", "expected"),
    [
        (Breaker(), "failure", 0.0, Breaker("closed", 1)),
        (Breaker("closed", 2), "failure", 7.0, Breaker("open", 3, 12.0, 5.0)),
        (Breaker("closed", 2), "success", 7.0, Breaker()),
        (Breaker("closed", 2), "inconclusive", 7.0, Breaker("closed", 2)),
        (Breaker("open", 3, 12.0, 5.0), "failure", 8.0, Breaker("open", 4, 12.0, 5.0)),
        (Breaker("open", 3, 12.0, 5.0), "success", 8.0, Breaker()),
        (Breaker("half-open", 3, 42.0, 5.0, "k"), "failure", 12.0, Breaker("open", 4, 22.0, 10.0)),
        (Breaker("half-open", 3, 42.0, 10.0, "k"), "failure", 22.0, Breaker("open", 4, 34.0, 12.0)),
        (Breaker("half-open", 3, 42.0, 5.0, "k"), "inconclusive", 13.0, Breaker("open", 3, 13.0, 5.0)),
        (Breaker("half-open", 3, 42.0, 5.0, "k"), "success", 13.0, Breaker()),
    ],
)
def test_breaker_transitions_are_a_pure_function_of_state_outcome_and_time(
    start: Breaker, outcome: str, now: float, expected: Breaker
) -> None:
    assert breaker_record(start, outcome, now, POLICY, "k") == expected  # type: ignore[arg-type]


def test_breaker_admit_is_a_pure_function_of_state_and_time() -> None:
    assert breaker_admit(Breaker(), 1.0, POLICY, "k") == (Breaker(), 0.0)
    opened = Breaker("open", 3, 12.0, 5.0)
    assert breaker_admit(opened, 10.0, POLICY, "k") == (opened, 2.0)
    assert breaker_admit(opened, 12.0, POLICY, "k") == (Breaker("half-open", 3, 42.0, 5.0, "k"), 0.0)


def test_a_minute_bucket_is_reused_within_its_minute_and_the_clock_going_back() -> None:
    from collections import deque

    from keywheel.state.stats import minute_bucket

    minutes: deque[list[float]] = deque()
    first = minute_bucket(minutes, 600.0)
    assert minute_bucket(minutes, 659.0) is first  # the same minute
    assert minute_bucket(minutes, 30.0) is first  # the clock went back: counted in the last one
    assert minute_bucket(minutes, 660.0) is not first and len(minutes) == 2
