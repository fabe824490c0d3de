"""No configured key may appear in any log line, exception text, traceback or status output."""

from __future__ import annotations

import json
import logging
import traceback

import pytest

from keywheel import KeywheelError, Wheel
from keywheel.config import settings_from_env
from keywheel.errors import ConfigError
from keywheel.testing import FakeUpstream
from tests.helpers import fake_env

HELLO = [{"role": "user", "content": "hello"}]


def test_a_run_full_of_failures_leaks_no_key(fake: FakeUpstream, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)  # every logger, every level: keywheel's, aiohttp's, asyncio's
    env = fake_env(fake, gemini=4, openrouter=2, anthropic=2, AI_PROVIDER="gemini", KEYWHEEL_MAX_WAIT="0")
    env["ANTHROPIC_AUTH_TOKEN"] = "test-anthropic-token-secret"
    wheel = Wheel(settings_from_env(env))
    secrets = wheel.secrets()
    assert len(secrets) == 9
    texts: list[str] = []

    def attempt(**kwargs: object) -> None:
        try:
            if kwargs.pop("stream", False):
                list(wheel.stream(HELLO, **kwargs))
            else:
                wheel.chat(HELLO, **kwargs)
        except KeywheelError as exc:
            texts.extend([str(exc), repr(exc), "".join(traceback.format_exception(exc))])
            texts.extend(str(a) + repr(a) for a in getattr(exc, "attempts", []))

    scripts: list[tuple[str, str, dict[str, object]]] = [
        ("test-gemini-key-1", "rate_limit", {"retry_after": 1.0}),
        ("test-gemini-key-2", "invalid", {}),
        ("test-gemini-key-3", "quota", {}),
        ("test-gemini-key-4", "server_error", {}),
        ("test-openrouter-key-1", "bad_request", {}),
        ("test-openrouter-key-2", "break_stream", {"after": 2}),
        ("test-anthropic-key-1", "overloaded", {}),
        ("test-anthropic-key-2", "forbidden", {}),
        ("test-anthropic-token-secret", "invalid", {}),
    ]
    for key, kind, params in scripts:
        fake.set(key, kind, times=None, **params)
    for provider in ("gemini", "openrouter", "anthropic", "gemini", "openrouter", "anthropic"):
        attempt(provider=provider)
        attempt(provider=provider, stream=True)
        attempt(provider=provider, fallback=False)
    try:
        settings_from_env({"GEMINI_API_KEY_1": "test-gemini-key-1", "GEMINI_API_KEY_2": "test-gemini-key-1"})
    except ConfigError as exc:
        texts.append(str(exc))
    texts.append(json.dumps(wheel.status()))
    texts.append(repr(wheel.settings))
    texts.extend(record.getMessage() for record in caplog.records)
    texts.append(caplog.text)
    wheel.close()
    everything = "\n".join(texts)
    assert "gemini#2" in everything and "RateLimited" in everything  # the run did produce failures to read
    for secret in secrets + ["test-gemini-key-1"]:
        assert secret not in everything, f"a key leaked: {secret[:9]}…"
