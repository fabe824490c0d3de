"""OpenRouter credit: reading ``GET /api/v1/key``, and what a reading means for a key.

Pure: parses bytes, computes reset times from ``now``, and judges a reading; the gateway's
upkeep (:mod:`keywheel.ops.recovery`) applies the judgement through the store's rule-book calls
(:func:`keywheel.state.rules.take_out` / :func:`~keywheel.state.rules.recover`).

The answer carries a ``label`` that echoes part of the key: it is never read into anything.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from keywheel.status import Credit

RESETS = ("daily", "weekly", "monthly")
#: The tag the OpenAI-format adapter puts on a 402's message (``metadata.limit_source``).
ACCOUNT_CREDITS = "[openrouter_credits]"
KEY_LIMIT = "[openrouter_key_limit]"


def next_reset(period: str | None, now: float) -> float | None:
    """When a ``limit_reset`` period next starts: 00:00 UTC tomorrow, next Monday, the 1st."""
    if period not in RESETS:
        return None
    today = datetime.fromtimestamp(now, UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "daily":
        start = today + timedelta(days=1)
    elif period == "weekly":
        start = today + timedelta(days=7 - today.weekday())  # weeks run Monday to Sunday
    else:
        start = (today.replace(day=1) + timedelta(days=32)).replace(day=1)
    return start.timestamp()


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _count(value: Any) -> int | None:
    number = _number(value)
    return None if number is None else int(number)


def read_key_info(body: bytes, now: float) -> Credit:
    """A :class:`Credit` from the body of ``GET /api/v1/key``; ``ValueError`` if it is not one."""
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise ValueError("the /key answer is not JSON") from None
    data = payload.get("data") if isinstance(payload, dict) else None
    if not isinstance(data, dict) or "limit" not in data:
        raise ValueError("the /key answer has no data.limit")
    limit = _number(data.get("limit"))
    remaining = _number(data.get("limit_remaining"))
    if limit is not None and remaining is None:
        remaining = max(limit - (_number(data.get("usage")) or 0.0), 0.0)
    reset = data.get("limit_reset")
    reset = reset if reset in RESETS else None
    free = data.get("free_model_daily_requests")
    free = free if isinstance(free, dict) else {}
    return Credit(
        limit=limit,
        remaining=None if limit is None else remaining,
        reset=reset,
        resets_at=next_reset(reset, now) if limit is not None else None,
        usage=_number(data.get("usage")) or 0.0,
        usage_daily=_number(data.get("usage_daily")),
        usage_weekly=_number(data.get("usage_weekly")),
        usage_monthly=_number(data.get("usage_monthly")),
        is_free_tier=data.get("is_free_tier") is True,
        free_used=_count(free.get("used")),
        free_limit=_count(free.get("limit")),
        free_remaining=_count(free.get("remaining")),
        read_at=now,
    )


@dataclass(frozen=True, slots=True)
class Verdict:
    """What a reading means: ``out`` (leave rotation; until ``until`` when a reset is known),
    ``back`` (credit seen: a key out for quota may return) or ``keep`` (it says nothing new)."""

    action: str  # out | back | keep
    reason: str = ""
    until: float | None = None


def _money(value: float) -> str:
    return f"{value:.4g}"


def _when(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M UTC")


def judge(credit: Credit, min_credit: float, current_reason: str = "") -> Verdict:
    """The verdict of ``credit`` on a key whose out-reason (if any) is ``current_reason``.

    An unlimited key's reading says nothing of the account's balance, so it does not bring back a
    key that OpenRouter said is out of account credits (``openrouter_credits``)."""
    if credit.remaining is None:
        if ACCOUNT_CREDITS in current_reason:
            return Verdict("keep")
        return Verdict("back")
    remaining = credit.remaining
    if remaining > 0 and remaining >= min_credit:
        return Verdict("back")
    limit = _money(credit.limit or 0.0)
    if remaining <= 0:
        reason = f"out of credit: key limit {limit} reached"
    else:
        reason = f"low credit: {_money(remaining)} left of {limit} (under KEYWHEEL_MIN_CREDIT {_money(min_credit)})"
    if credit.resets_at is not None:
        reason += f"; the limit resets {credit.reset} ({_when(credit.resets_at)})"
    return Verdict("out", reason, credit.resets_at)


def credit_line(credit: Credit | None) -> str:
    """A credit reading in a few words (tables, details)."""
    if credit is None:
        return "-"
    if credit.unlimited:
        return f"unlimited (used {_money(credit.usage)})"
    assert credit.remaining is not None
    text = f"{_money(credit.remaining)} left of {_money(credit.limit or 0.0)}"
    return text + (f", resets {credit.reset}" if credit.reset else "")
