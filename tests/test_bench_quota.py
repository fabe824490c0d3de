"""The bench's quota section reports the right figures: its arithmetic, without processes."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"


def _maths() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_quota_maths", BENCH / "quota_maths.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


maths = _maths()


def test_the_quota_over_whole_and_started_windows() -> None:
    quota = maths.Quota(keys=4, limit=10, window_s=5.0)
    assert quota.per_second == 8.0
    assert quota.allowed(20.0) == 160  # four windows, each spent whole by every key
    assert quota.allowed(5.0) == 40
    assert quota.allowed(6.0) == 80  # a started window can be spent whole
    assert quota.offered(2.0, 20.0) == 320
    assert quota.litellm_rpm() == 120  # 10 per 5 s as requests per minute


def test_a_row_divides_served_by_allowed_and_upstream_429s_by_upstream_requests() -> None:
    quota = maths.Quota(keys=4, limit=10, window_s=5.0)
    counts = {"offered": 320, "ok": 157, "refused": 163, "failed": 0, "upstream": 170, "upstream_429": 13}
    row = maths.summarise(quota, 20.0, counts)
    assert row["goodput_ratio"] == pytest.approx(157 / 160)
    assert row["goodput_per_s"] == pytest.approx(157 / 20)
    assert row["refused_share"] == pytest.approx(163 / 320)
    assert row["upstream_429_share"] == pytest.approx(13 / 170)
    empty = maths.summarise(quota, 20.0, {**counts, "offered": 0, "ok": 0, "upstream": 0})
    assert empty["ok_share"] == empty["upstream_429_share"] == 0.0


def test_cpu_ratios_are_taken_within_a_round_then_the_median() -> None:
    rounds = [
        {"memory_ms": 0.2, "redis_ms": 0.3, "redis2_ms": 0.3, "memory_rps": 900, "redis_rps": 600, "redis2_rps": 900},
        {"memory_ms": 0.4, "redis_ms": 0.4, "redis2_ms": 0.5, "memory_rps": 500, "redis_rps": 400, "redis2_rps": 400},
        {"memory_ms": 0.1, "redis_ms": 0.2, "redis2_ms": 0.2, "memory_rps": 990, "redis_rps": 500, "redis2_rps": 600},
    ]
    out = maths.cpu_ratios(rounds)
    assert out["redis_over_memory"] == pytest.approx(1.5)  # of 1.5, 1.0, 2.0 — not 0.3 / 0.2
    assert out["two_over_one_rps"] == pytest.approx(1.2)  # of 1.5, 1.0, 1.2
    assert out["memory_ms"] == pytest.approx(0.2)
    assert maths.cpu_ratios([]) == {}
