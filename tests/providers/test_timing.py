from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from keywheel.providers.timing import (
    explicit_retry_after,
    parse_duration,
    ratelimit_reset_after,
    retry_after_from_headers,
    seconds_until_pacific_midnight,
)

NOW = datetime(2026, 11, 25, 12, 0, 0, tzinfo=UTC).timestamp()


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("59s", 59.0),  # Gemini RetryInfo.retryDelay
        ("1.5s", 1.5),
        ("0.250s", 0.25),
        ("1s", 1.0),  # OpenAI x-ratelimit-reset-* (Go durations)
        ("6m0s", 360.0),
        ("12ms", 0.012),
        ("1m30.5s", 90.5),
        ("1h2m3s", 3723.0),
        ("500us", 0.0005),
        ("250µs", 0.00025),
        ("7", 7.0),  # a bare number is seconds
        (" 2s ", 2.0),
        ("-5s", 0.0),  # never negative
        ("0s", 0.0),
    ],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "abc", "5 s", "s", "1x", "nan", "inf", "1s2"])
def test_parse_duration_rejects_non_durations(text: str) -> None:
    assert parse_duration(text) is None


def test_retry_after_seconds() -> None:
    assert retry_after_from_headers({"retry-after": "30"}) == 30.0
    assert retry_after_from_headers({"Retry-After": "1.5"}) == 1.5


def test_retry_after_http_date() -> None:
    headers = {"Retry-After": "Wed, 25 Nov 2026 12:00:42 GMT"}
    assert retry_after_from_headers(headers, now=NOW) == pytest.approx(42.0)


def test_retry_after_http_date_in_the_past_clamps_to_zero() -> None:
    headers = {"retry-after": "Wed, 25 Nov 2026 11:00:00 GMT"}
    assert retry_after_from_headers(headers, now=NOW) == 0.0


def test_retry_after_negative_clamps_to_zero() -> None:
    assert retry_after_from_headers({"retry-after": "-3"}) == 0.0


def test_retry_after_ms_wins_over_retry_after() -> None:
    headers = {"retry-after-ms": "1500", "retry-after": "30"}
    assert retry_after_from_headers(headers) == 1.5
    assert explicit_retry_after(headers) == 1.5


def test_unparseable_retry_after_is_absent() -> None:
    assert retry_after_from_headers({"retry-after": "soon"}) is None
    assert retry_after_from_headers({}) is None


def test_anthropic_reset_rfc3339_takes_the_exhausted_limit() -> None:
    headers = {
        "anthropic-ratelimit-requests-remaining": "0",
        "anthropic-ratelimit-requests-reset": "2026-11-25T12:00:20Z",
        "anthropic-ratelimit-tokens-remaining": "50000",
        "anthropic-ratelimit-tokens-reset": "2026-11-25T12:00:50Z",
    }
    assert retry_after_from_headers(headers, now=NOW) == pytest.approx(20.0)


def test_anthropic_reset_takes_the_latest_when_none_says_exhausted() -> None:
    headers = {
        "anthropic-ratelimit-input-tokens-reset": "2026-11-25T12:00:05.123456789Z",
        "anthropic-ratelimit-output-tokens-reset": "2026-11-25T13:00:10+01:00",  # 12:00:10Z
    }
    assert ratelimit_reset_after(headers, now=NOW) == pytest.approx(10.0)


def test_retry_after_wins_over_reset_headers() -> None:
    headers = {"retry-after": "3", "anthropic-ratelimit-requests-reset": "2026-11-25T12:00:50Z"}
    assert retry_after_from_headers(headers, now=NOW) == 3.0


def test_reset_in_the_past_clamps_to_zero() -> None:
    headers = {"anthropic-ratelimit-tokens-reset": "2026-11-25T11:59:00Z"}
    assert retry_after_from_headers(headers, now=NOW) == 0.0


def test_openai_reset_go_durations() -> None:
    headers = {"x-ratelimit-reset-requests": "1s", "x-ratelimit-reset-tokens": "6m0s"}
    assert retry_after_from_headers(headers) == 360.0
    headers |= {"x-ratelimit-remaining-requests": "0", "x-ratelimit-remaining-tokens": "1200"}
    assert retry_after_from_headers(headers) == 1.0
    assert retry_after_from_headers({"X-RateLimit-Reset-Tokens": "12ms"}) == pytest.approx(0.012)


def test_openrouter_reset_epoch_milliseconds() -> None:
    headers = {
        "X-RateLimit-Limit": "20",
        "X-RateLimit-Remaining": "0",
        "X-RateLimit-Reset": str(int(NOW * 1000) + 9000),
    }
    assert retry_after_from_headers(headers, now=NOW) == pytest.approx(9.0)


def _pacific(year: int, month: int, day: int, hour: int, minute: int) -> float:
    return datetime(year, month, day, hour, minute, tzinfo=ZoneInfo("America/Los_Angeles")).timestamp()


def test_seconds_until_pacific_midnight() -> None:
    assert seconds_until_pacific_midnight(_pacific(2026, 11, 25, 20, 0)) == pytest.approx(4 * 3600)
    # the day daylight saving time ends has 25 hours
    assert seconds_until_pacific_midnight(_pacific(2026, 11, 1, 0, 0)) == pytest.approx(25 * 3600)
    left = seconds_until_pacific_midnight()
    assert left is not None and 0 < left <= 25 * 3600
