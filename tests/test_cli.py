"""The keywheel command, run as a real process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from keywheel.testing import FakeUpstream
from tests.helpers import fake_env

KEYWHEEL = [sys.executable, "-m", "keywheel.cli"]


def run(args: list[str], env: dict[str, str], cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    base = {"PATH": os.environ["PATH"], "HOME": str(cwd), "PYTHONPATH": os.environ.get("PYTHONPATH", "")}
    return subprocess.run(
        KEYWHEEL + args, env={**base, **env}, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False
    )


def test_chat_without_any_key_says_how_to_configure(tmp_path: Path) -> None:
    result = run(["chat", "hello"], {}, tmp_path)
    assert result.returncode == 2
    assert "GEMINI_API_KEY_1" in result.stderr and "keywheel demo" in result.stderr


def test_chat_with_a_bad_config_names_the_variable(tmp_path: Path) -> None:
    result = run(["chat", "hello"], {"GEMINI_API_KEY_1": "test-k", "AI_PROVIDER": "nope"}, tmp_path)
    assert result.returncode == 2 and "AI_PROVIDER" in result.stderr


def test_chat_answers_and_says_who_served(fake: FakeUpstream, tmp_path: Path) -> None:
    env = fake_env(fake, AI_PROVIDER="openrouter", FALLBACK_ORDER="gemini")
    fake.set("test-openrouter-key-1", "overloaded")
    fake.set("test-openrouter-key-2", "overloaded")
    result = run(["chat", "-v", "hello", "there"], env, tmp_path)
    assert result.returncode == 0, result.stderr
    assert "from fake gemini" in result.stdout
    assert "served by gemini gemini#1" in result.stdout
    assert "tried openrouter openrouter#" in result.stdout and "Overloaded" in result.stdout
    for key in ("test-openrouter-key-1", "test-gemini-key-1"):
        assert key not in result.stdout + result.stderr


def test_chat_reads_dotenv_file(fake: FakeUpstream, tmp_path: Path) -> None:
    env = fake_env(fake, AI_PROVIDER="anthropic")
    (tmp_path / ".env").write_text("".join(f"{k}={v}\n" for k, v in env.items()))
    result = run(["chat", "--no-stream", "-v", "hi"], {}, tmp_path)
    assert result.returncode == 0, result.stderr
    assert "from fake anthropic" in result.stdout and "served by anthropic" in result.stdout


def test_status_lists_keys_by_fingerprint(fake: FakeUpstream, tmp_path: Path) -> None:
    result = run(["status"], {**fake_env(fake, AI_PROVIDER="gemini"), "COLUMNS": "200"}, tmp_path)
    assert result.returncode == 0, result.stderr
    assert "gemini#1" in result.stdout and "openrouter#2" in result.stdout
    assert "test-gemini-key-1" not in result.stdout


def test_demo_runs_with_no_keys(tmp_path: Path) -> None:
    result = run(["demo", "--requests", "30", "--concurrency", "4"], {"COLUMNS": "160"}, tmp_path, timeout=120)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "30 answered, 0 failed" in result.stdout
    assert "gemini#4 (revoked) received 1 request(s), then none" in result.stdout
    assert "test-gemini-key" not in result.stdout
