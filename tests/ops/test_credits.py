"""Reading OpenRouter's ``/key``, reset times, and what a reading means for a key."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pytest

from keywheel.ops.credits import judge, next_reset, read_key_info
from keywheel.status import Credit


def at(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


@pytest.mark.parametrize(
    ("period", "now", "reset"),
    [
        ("daily", "2026-12-01T13:45:00", "2026-12-02T00:00:00"),
        ("daily", "2026-12-31T23:59:59", "2027-01-01T00:00:00"),
        ("weekly", "2026-12-01T13:45:00", "2026-12-07T00:00:00"),  # a Tuesday -> next Monday
        ("weekly", "2026-12-07T00:00:00", "2026-12-14T00:00:00"),  # a Monday at 00:00 -> the next one
        ("weekly", "2026-12-06T23:00:00", "2026-12-07T00:00:00"),  # a Sunday -> tomorrow
        ("monthly", "2026-12-15T10:00:00", "2027-01-01T00:00:00"),
        ("monthly", "2027-01-31T10:00:00", "2027-02-01T00:00:00"),
    ],
)
def test_next_reset_is_00_utc_weeks_from_monday(period: str, now: str, reset: str) -> None:
    assert next_reset(period, at(now)) == at(reset)


def test_no_reset() -> None:
    assert next_reset(None, at("2026-12-01T00:00:00")) is None
    assert next_reset("yearly", at("2026-12-01T00:00:00")) is None


def body(**data: object) -> bytes:
    return orjson.dumps({"data": {"label": "sk-or-v1-abc...xyz", **data}})


def test_read_key_info_reads_everything_but_the_label() -> None:
    now = at("2026-12-01T12:00:00")
    credit = read_key_info(
        body(
            limit=10,
            limit_remaining=2.5,
            limit_reset="daily",
            usage=7.5,
            usage_daily=1,
            usage_weekly=3,
            usage_monthly=7.5,
            is_free_tier=False,
            free_model_daily_requests={"used": 3, "limit": 1000, "remaining": 997},
        ),
        now,
    )
    assert (credit.limit, credit.remaining, credit.reset, credit.resets_at) == (
        10.0,
        2.5,
        "daily",
        at("2026-12-02T00:00:00"),
    )
    assert (credit.usage, credit.usage_daily, credit.usage_weekly, credit.usage_monthly) == (7.5, 1.0, 3.0, 7.5)
    assert (credit.free_used, credit.free_limit, credit.free_remaining) == (3, 1000, 997)
    assert not credit.unlimited and credit.read_at == now
    assert "sk-or" not in repr(credit) and "sk-or" not in orjson.dumps(credit.to_json()).decode()
    assert Credit.from_json(credit.to_json()) == credit


def test_unlimited_and_derived_remaining() -> None:
    unlimited = read_key_info(body(limit=None, limit_remaining=None, usage=3, is_free_tier=True), 0.0)
    assert (
        unlimited.unlimited and unlimited.remaining is None and unlimited.resets_at is None and unlimited.is_free_tier
    )
    assert unlimited.to_json()["unlimited"] is True
    derived = read_key_info(body(limit=5, usage=4, limit_reset="sometimes"), 0.0)
    assert derived.remaining == 1.0 and derived.reset is None


@pytest.mark.parametrize("raw", [b"nope", b"[]", b'{"data": {}}', b'{"error": {"code": 401}}'])
def test_what_is_not_a_key_answer(raw: bytes) -> None:
    with pytest.raises(ValueError):
        read_key_info(raw, 0.0)


def credit(limit: float | None, remaining: float | None, reset: str | None = None) -> Credit:
    return Credit(limit, remaining, reset, next_reset(reset, at("2026-12-01T12:00:00")) if reset else None)


def test_judge() -> None:
    assert judge(credit(None, None), 1.0).action == "back"  # unlimited
    assert judge(credit(None, None), 1.0, "out of credit or quota: x [openrouter_credits]").action == "keep"
    assert judge(credit(10, 5), 1.0).action == "back"
    low = judge(credit(10, 0.4), 0.5)
    assert low.action == "out" and low.until is None and "low credit: 0.4 left of 10" in low.reason
    assert "KEYWHEEL_MIN_CREDIT 0.5" in low.reason
    empty = judge(credit(10, 0, "weekly"), 0.0)
    assert empty.action == "out" and empty.until == at("2026-12-07T00:00:00")
    assert "key limit 10 reached" in empty.reason and "resets weekly (2026-12-07 00:00 UTC)" in empty.reason
