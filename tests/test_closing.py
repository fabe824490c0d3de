"""A plain ``with Wheel.from_env(...)`` around async calls closes every connection it opened."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from keywheel.testing import FakeUpstream

SCRIPT = """
import asyncio, gc, sys
from keywheel import Wheel

async def main():
    env = {"GEMINI_API_KEY_1": "test-gemini-key-1", "GEMINI_BASE_URL": sys.argv[1]}
    with Wheel.from_env(env) as wheel:          # sync context manager, async calls
        r = await wheel.achat([{"role": "user", "content": "hi"}])
        print(r.text)
        async for event in wheel.astream([{"role": "user", "content": "hi"}]):
            pass
        wheel.chat([{"role": "user", "content": "and from the sync side"}])
    gc.collect()

asyncio.run(main())
gc.collect()
print("done")
"""


def test_sync_with_in_async_code_leaves_no_unclosed_session(fake: FakeUpstream, tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-W", "default::ResourceWarning", "-c", SCRIPT, fake.gemini_base_url],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "from fake gemini" in result.stdout and "done" in result.stdout
    assert "Unclosed" not in result.stderr, result.stderr
    assert fake.count("test-gemini-key-1") == 3


OPEN_STREAM = """
import gc, sys
from keywheel import Wheel

mode = sys.argv[2]
env = {"GEMINI_API_KEY_1": "test-gemini-key-1", "GEMINI_BASE_URL": sys.argv[1]}
wheel = Wheel.from_env(env)
events = wheel.stream([{"role": "user", "content": "hi"}])
print("first:", type(next(events)).__name__, flush=True)
if mode != "no-close":
    wheel.close()
    print("closed", flush=True)
    key = wheel.status()["providers"][0]["keys"][0]
    print("in flight after close:", key["in_flight"], flush=True)
    print("after close:", next(events, "ended"), flush=True)
if mode == "collect":
    del events
    gc.collect()
    print("collected", flush=True)
print("exiting", flush=True)
"""


@pytest.mark.parametrize("mode", ["exit", "collect", "no-close"])
def test_an_unclosed_sync_stream_does_not_hang_the_process(fake: FakeUpstream, tmp_path: Path, mode: str) -> None:
    """A sync ``Wheel.stream()`` generator left open: ``close()`` closes it (its key freed), and
    neither its collection nor the interpreter's exit waits for a loop that is gone."""
    try:
        result = subprocess.run(
            [sys.executable, "-c", OPEN_STREAM, fake.gemini_base_url, mode],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"the process hung ({mode}); its output: {exc.stdout!r} {exc.stderr!r}")
    assert result.returncode == 0, result.stderr
    assert "first: TextDelta" in result.stdout
    assert result.stdout.rstrip().endswith("exiting")
    if mode != "no-close":
        assert "in flight after close: 0" in result.stdout  # close() closed the stream and freed its key
        assert "after close: ended" in result.stdout
    assert "Traceback" not in result.stderr, result.stderr
