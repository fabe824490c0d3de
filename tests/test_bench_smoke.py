"""The benchmark cannot rot: its smoke run — every section briefly, no thresholds — must pass.

Runs ``bench/harness.py --smoke --soak`` (the gateway targets, the in-process clients, the key
pool, the gateway scaling and the soak; ~35 s here) and checks that it exits 0 and prints every
table's rows. Without nginx, its njs module or wrk the harness exits 3: the test skips then,
except in CI (``CI=true``), where it fails, since ``make sysdeps`` is meant to have installed them.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HARNESS = ROOT / "bench" / "harness.py"
LITELLM_PYTHON = ROOT / "bench" / ".venv-litellm" / "bin" / "python"
EXIT_MISSING_TOOLS = 3
BUDGET_S = 60  # the smoke run must stay well inside this

ROWS = [
    # gateway section (a skipped target is still named, in its "skipped ..." line)
    "direct",
    "floor",
    "keywheel",
    "litellm",
    # inprocess
    "raw aiohttp",
    "kw Transport",
    "Wheel.achat",
    # keypool
    "1 key",
    "1,000 keys, 50% cooling (500)",
    # scaling
    "keywheel, 1 key",
    "keywheel, 1,000 keys, 50% cooling (500)",
    # soak
    "0 (before load)",
]


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


@pytest.mark.timeout(2 * BUDGET_S + 30)
def test_bench_smoke() -> None:
    python = ROOT / ".venv" / "bin" / "python"
    if not python.exists():
        python = Path(sys.executable)
    # The run must not follow whatever BENCH_* settings the caller's shell carries.
    env = {k: v for k, v in os.environ.items() if not k.startswith("BENCH_")}
    started = time.monotonic()
    out = subprocess.run(
        [str(python), str(HARNESS), "--smoke", "--soak"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=2 * BUDGET_S,
    )
    took = time.monotonic() - started
    if out.returncode == EXIT_MISSING_TOOLS:
        reason = out.stderr.strip() or "nginx, its njs module or wrk is missing"
        if _in_ci():
            pytest.fail(f"the benchmark's tools are missing in CI: {reason} (make sysdeps installs them)")
        pytest.skip(reason)
    tail = "\n".join((out.stdout + out.stderr).splitlines()[-60:])
    assert out.returncode == 0, f"harness --smoke exited {out.returncode} after {took:.0f} s:\n{tail}"
    rows = ROWS + (["litellm Router"] if LITELLM_PYTHON.exists() else [])
    missing = [row for row in rows if row not in out.stdout]
    assert not missing, f"rows missing from the smoke output: {missing}\n{tail}"
    assert "Traceback" not in out.stdout + out.stderr, tail
    print(f"bench smoke took {took:.0f} s")
