"""Reading OpenRouter's ``/key``, reset times, and what a reading means for a key."""

from __future__ import annotations

import os
from datetime import UTC, datetime

import orjson
import pytest

from keywheel.cli import main
from keywheel.ops.credits import credit_line, judge, next_reset, read_key_info
from keywheel.status import Credit
from keywheel.testing import FakeUpstream
from keywheel.testing._openai import echo_label
from tests.ops.test_keys_check import secret


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
    assert credit_line(None) == "-" and credit_line(credit(None, None)).startswith("unlimited")
    assert judge(credit(None, None), 1.0).action == "back"  # unlimited
    assert judge(credit(None, None), 1.0, "out of credit or quota: x [openrouter_credits]").action == "keep"
    assert judge(credit(10, 5), 1.0).action == "back"
    low = judge(credit(10, 0.4), 0.5)
    assert low.action == "out" and low.until is None and "low credit: 0.4 left of 10" in low.reason
    assert "KEYWHEEL_MIN_CREDIT 0.5" in low.reason
    empty = judge(credit(10, 0, "weekly"), 0.0)
    assert empty.action == "out" and empty.until == at("2026-12-07T00:00:00")
    assert "key limit 10 reached" in empty.reason and "resets weekly (2026-12-07 00:00 UTC)" in empty.reason


def test_keywheel_credits_shows_each_kind_and_never_the_label(
    fake: FakeUpstream, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    keys = {i: secret(f"test-or-{i}-") for i in (1, 2, 3)}
    fake.set_credit(keys[1], limit=None, usage=4.0)
    fake.set_credit(keys[2], limit=50.0, usage=5.0, limit_reset="weekly", free_used=2, is_free_tier=False)
    fake.set_credit(keys[3], limit=10.0, usage=9.9, is_free_tier=True)
    for i, key in keys.items():
        monkeypatch.setenv(f"OPENROUTER_API_KEY_{i}", key)
    monkeypatch.setenv("OPENROUTER_BASE_URL", fake.openrouter_base_url)
    monkeypatch.setenv("GEMINI_API_KEY_1", "test-gemini-key-1")  # no credit endpoint: not listed
    monkeypatch.setenv("GEMINI_BASE_URL", fake.gemini_base_url)
    monkeypatch.setenv("COLUMNS", "250")
    assert main(["--env-file", os.devnull, "credits"]) == 0
    table = capsys.readouterr().out
    lines = {line.split()[0]: line for line in table.splitlines() if line.strip().startswith("openrouter#")}
    assert len(lines) == 3 and "gemini" not in table
    assert lines["openrouter#1"].count("unlimited") == 2
    assert "50" in lines["openrouter#2"] and "45" in lines["openrouter#2"] and "weekly" in lines["openrouter#2"]
    assert "2/1000" in lines["openrouter#2"]
    assert "0.1" in lines["openrouter#3"] and "yes" in lines["openrouter#3"] and "0/50" in lines["openrouter#3"]
    assert main(["--env-file", os.devnull, "credits", "--json"]) == 0
    out = capsys.readouterr().out
    rows = orjson.loads(out)["keys"]
    assert [r["credit"]["limit_remaining"] for r in rows] == [None, 45.0, pytest.approx(0.1)]
    assert rows[0]["credit"]["unlimited"] is True and rows[2]["credit"]["is_free_tier"] is True
    for key in keys.values():
        for text in (table, out):
            assert echo_label(key) not in text and key[-16:] not in text and key[:12] not in text


def test_keywheel_credits_without_openrouter(
    fake: FakeUpstream, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("GEMINI_API_KEY_1", "test-gemini-key-1")
    monkeypatch.setenv("GEMINI_BASE_URL", fake.gemini_base_url)
    assert main(["--env-file", os.devnull, "credits"]) == 0
    assert "only OpenRouter keys" in capsys.readouterr().out
    fake.set("test-openrouter-key-1", "invalid")
    monkeypatch.setenv("OPENROUTER_API_KEY_1", "test-openrouter-key-1")
    monkeypatch.setenv("OPENROUTER_BASE_URL", fake.openrouter_base_url)
    monkeypatch.setenv("COLUMNS", "250")
    assert main(["--env-file", os.devnull, "credits"]) == 0
    assert "invalid" in capsys.readouterr().out
