"""A plain ``with Wheel.from_env(...)`` around async calls closes every connection it opened."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

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
