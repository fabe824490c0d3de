"""``keywheel keys check``: one free probe per key, each outcome told apart, never a generation."""

from __future__ import annotations

import json
import os
import random
import string
import subprocess
import sys
import time
from pathlib import Path

import pytest

from keywheel.cli import main
from keywheel.testing import FakeUpstream
from tests.helpers import measured

KEYWHEEL = [sys.executable, "-m", "keywheel.cli", "--env-file", os.devnull]
GENERATION_PATHS = ("/chat/completions", "/messages", ":generateContent", ":streamGenerateContent")


def secret(prefix: str) -> str:
    """A fake key with a random 16-character body (leak scans look for pieces of it)."""
    rng = random.SystemRandom()
    return prefix + "".join(rng.choice(string.ascii_letters + string.digits) for _ in range(16))


def mixed_env(fake: FakeUpstream) -> tuple[dict[str, str], dict[str, str]]:
    """An environment with one key of each kind, and the outcome each must get (by variable)."""
    keys = {
        "GEMINI_API_KEY_1": secret("test-gemini-ok-"),
        "GEMINI_API_KEY_2": secret("test-gemini-429-"),
        "GEMINI_API_KEY_3": secret("test-gemini-hang-"),
        "ANTHROPIC_API_KEY_1": secret("test-anthropic-bad-"),
        "OPENROUTER_API_KEY_1": secret("test-openrouter-402-"),
        "OPENROUTER_API_KEY_2": secret("test-openrouter-ok-"),
        "LOCAL_API_KEY_1": secret("test-local-ok-"),
        "NOLIST_API_KEY_1": secret("test-nolist-"),
    }
    fake.set(keys["GEMINI_API_KEY_2"], "rate_limit", retry_after=20)
    fake.set(keys["GEMINI_API_KEY_3"], "hang", seconds=30)
    fake.set(keys["ANTHROPIC_API_KEY_1"], "invalid")
    fake.set(keys["OPENROUTER_API_KEY_1"], "quota", limit_source="openrouter_credits")
    fake.set_credit(keys["OPENROUTER_API_KEY_2"], limit=25.0, usage=5.0)
    env = {
        **keys,
        "GEMINI_BASE_URL": fake.gemini_base_url,
        "ANTHROPIC_BASE_URL": fake.anthropic_base_url,
        "OPENROUTER_BASE_URL": fake.openrouter_base_url,
        "LOCAL_BASE_URL": fake.openai_base_url,
        "LOCAL_MODEL": "gpt-4.1-mini",
        "ENABLE_LOCAL": "true",
        "NOLIST_BASE_URL": fake.url + "/no-listing/v1",  # answers 404 to GET /models
        "NOLIST_MODEL": "m",
        "ENABLE_NOLIST": "true",
        "KEYWHEEL_PROBE_TIMEOUT": "1.5",
    }
    expected = {
        "GEMINI_API_KEY_1": "ok",
        "GEMINI_API_KEY_2": "rate-limited",
        "GEMINI_API_KEY_3": "unreachable",
        "ANTHROPIC_API_KEY_1": "invalid",
        "OPENROUTER_API_KEY_1": "no-credit",
        "OPENROUTER_API_KEY_2": "ok",
        "LOCAL_API_KEY_1": "ok",
        "NOLIST_API_KEY_1": "unverified",
    }
    return env, expected


def fingerprints(env: dict[str, str]) -> dict[str, str]:
    from keywheel.secrets import ApiKey

    out = {}
    for var, value in env.items():
        if "_API_KEY_" in var:
            provider, label = var.lower().split("_api_key_")
            out[var] = ApiKey(value, provider, label).fingerprint
    return out


def test_keys_check_tells_each_kind_apart_without_a_generation(fake: FakeUpstream, tmp_path: Path) -> None:
    env, expected = mixed_env(fake)
    started = time.monotonic()
    result = subprocess.run(
        [*KEYWHEEL, "keys", "check", "--json"],
        env=measured({"PATH": os.environ["PATH"], "HOME": str(tmp_path), **env}),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    took = time.monotonic() - started
    assert result.returncode == 1, result.stderr  # one key is invalid
    results = json.loads(result.stdout)["results"]
    by_fp = {r["fingerprint"]: r for r in results}
    fps = fingerprints(env)
    assert len(results) == len(expected)
    for var, outcome in expected.items():
        row = by_fp[fps[var]]
        assert row["outcome"] == outcome, (var, row)
        assert set(row) == {"fingerprint", "provider", "outcome", "latency_ms", "detail"}
    hanging = by_fp[fps["GEMINI_API_KEY_3"]]
    assert 1400 <= hanging["latency_ms"] < 4000 and "1.5 s" in hanging["detail"]
    assert took < 20  # the hanging key does not hold the others (probes run concurrently)
    assert "credit: 20 left of 25" in by_fp[fps["OPENROUTER_API_KEY_2"]]["detail"]
    assert "404" in by_fp[fps["NOLIST_API_KEY_1"]]["detail"]
    # No generation request was sent: every request the fake saw is a GET of a free endpoint.
    seen = fake.requests
    assert len(seen) == len(expected) - 1  # (the fake has no route for the 404, so it records none)
    assert all(r.method == "GET" and not r.path.endswith(GENERATION_PATHS) for r in seen), [
        (r.method, r.path) for r in seen
    ]
    for value in (v for k, v in env.items() if "_API_KEY_" in k):
        assert value[-16:] not in result.stdout + result.stderr


def test_keys_check_table_and_exit_codes(
    fake: FakeUpstream, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    env, _ = mixed_env(fake)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("COLUMNS", "200")
    assert main(["--env-file", os.devnull, "keys", "check", "--provider", "gemini"]) == 0  # no invalid key there
    out = capsys.readouterr().out
    assert "ok" in out and "rate-limited" in out and "unreachable" in out and "gemini#1" in out
    assert "anthropic" not in out
    assert main(["--env-file", os.devnull, "keys", "check", "--provider", "anthropic"]) == 1
    assert "invalid" in capsys.readouterr().out
    assert main(["--env-file", os.devnull, "keys", "check", "--provider", "nosuch"]) == 2
    assert "no provider 'nosuch'" in capsys.readouterr().err


def test_keys_check_on_a_bad_configuration(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("GEMINI_API_KEY_1", "test-gemini-key-1")
    monkeypatch.setenv("KEYWHEEL_PROBE_TIMEOUT", "soon")
    monkeypatch.setenv("GEMINI_PROBE", "sometimes")
    monkeypatch.setenv("KEYWHEEL_PROBE_CONCURRENCY", "2.5")
    monkeypatch.setenv("KEYWHEEL_MIN_CREDIT", "-1")
    monkeypatch.setenv("KEYWHEEL_PROBE_INTERVAL", "nan")
    assert main(["--env-file", os.devnull, "keys", "check"]) == 2
    err = capsys.readouterr().err
    for name in ("KEYWHEEL_PROBE_TIMEOUT", "GEMINI_PROBE", "KEYWHEEL_PROBE_CONCURRENCY", "KEYWHEEL_MIN_CREDIT"):
        assert name in err
    assert "KEYWHEEL_PROBE_INTERVAL" in err
    assert main(["--env-file", os.devnull, "credits"]) == 2


def test_generate_probe_sends_one_token(
    fake: FakeUpstream, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("LOCAL_API_KEY_1", "test-local-key-1")
    monkeypatch.setenv("LOCAL_BASE_URL", fake.openai_base_url)
    monkeypatch.setenv("LOCAL_MODEL", "gpt-4.1-mini")
    monkeypatch.setenv("ENABLE_LOCAL", "true")
    monkeypatch.setenv("LOCAL_PROBE", "generate")
    assert main(["--env-file", os.devnull, "keys", "check", "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)["results"]
    assert row["outcome"] == "ok" and "1-token" in row["detail"]
    (request,) = fake.requests
    assert request.method == "POST" and request.path == "/v1/chat/completions"
    assert request.body["max_tokens"] == 1
