"""The leak scan: one run of a real ``keywheel serve`` over the fake upstream, with
distinctive keys (a random 16-character body each), through every fault the fake can
play, via every inbound dialect (OpenAI, Anthropic, Gemini, Responses), streamed
and not.  Every log line (the server's whole stdout and stderr at DEBUG), every
response status line, header and body,
``/status`` and every exception text of library calls are scanned for any
8-character piece of any key, minus pieces that also occur in public configuration
text (provider names, base URLs, model names, known key prefixes).

The faults are read from the fake itself (``keywheel.testing.KINDS``), so a fault
added there is scanned without touching this file.
"""

from __future__ import annotations

import json
import logging
import secrets
import string
import traceback
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from keywheel import KeywheelError, Wheel
from keywheel.config import settings_from_env
from keywheel.testing import KINDS, FakeUpstream
from tests.gateway.conftest import start_gateway
from tests.helpers import fake_env

PROVIDERS = {"gemini": "gemini-2.5-flash", "openrouter": "openai/gpt-4o-mini", "anthropic": "claude-sonnet-4-6"}
PREFIXES = ["sk-or-v1-", "sk-ant-api03-", "sk-ant-", "sk-proj-", "sk-", "AIza"]
HELLO = [{"role": "user", "content": "hello"}]
# Parameters that keep each fault quick; a fault not named here plays with its defaults.
PARAMS: dict[str, dict[str, object]] = {
    "rate_limit": {"retry_after": 0.2},
    "quota": {"retry_after": 0.2},
    "hang": {"seconds": 5.0},
    "break_stream": {"after": 1},
    "stream_error": {"after": 1},
    "slow_stream": {"interval": 0.01},
}
PARTS = ("ends", "middle", "chopped")
ECHOES: list[tuple[str, dict[str, object]]] = [
    ("echo_key", {"part": part, "status": status}) for part in PARTS for status in (401, 400)
]
ECHOES += [("echo_key", {"part": part, "where": "stream"}) for part in PARTS]  # in-band, split across reads


def faults() -> list[tuple[str, dict[str, object]]]:
    # Rate limits last: they may rest a whole provider, which admin "enable" does not undo.
    last = ("quota", "rate_limit")
    plays = [(kind, PARAMS.get(kind, {})) for kind in sorted(KINDS) if kind not in ("echo_key", *last)]
    return ECHOES + plays + [(kind, PARAMS[kind]) for kind in last]


# Letters and digits, not hex: the answers are full of random hex ids (message ids, fingerprints),
# and an 8-character piece of a hex body turns up in them by chance in about one run in fifty.
ALPHABET = string.ascii_letters + string.digits


def body() -> str:
    """A random 16-character key body."""
    return "".join(secrets.choice(ALPHABET) for _ in range(16))


def random_keys() -> dict[str, list[str]]:
    return {p: [f"test-{p}-{body()}" for _ in range(2)] for p in PROVIDERS}


def public_grams(fake: FakeUpstream) -> set[str]:
    """Pieces of public configuration text: they may appear anywhere."""
    public = [*PROVIDERS, *PROVIDERS.values(), *PREFIXES, "test-gateway-", "test-admin-"]
    public += [f"test-{p}-" for p in PROVIDERS]
    public += [fake.gemini_base_url, fake.openrouter_base_url, fake.anthropic_base_url]
    return {text[i : i + 8] for text in public for i in range(len(text) - 7)}


def leaks(everything: str, secret_values: list[str], public: set[str]) -> list[str]:
    found = []
    for value in secret_values:
        for i in range(len(value) - 7):
            piece = value[i : i + 8]
            if piece not in public and piece in everything:
                at = everything.index(piece)
                found.append(f"{value[:10]}… piece {piece!r} in …{everything[max(0, at - 80) : at + 20]!r}")
    return found


def _request(dialect: str, provider: str | None, stream: bool) -> tuple[str, dict[str, Any]]:
    model = f"{provider}/{PROVIDERS[provider]}" if provider else "auto"
    if dialect == "openai":
        return "/v1/chat/completions", {"model": model, "messages": HELLO, "stream": stream}
    if dialect == "anthropic":
        return "/v1/messages", {"model": model, "max_tokens": 16, "messages": HELLO, "stream": stream}
    if dialect == "responses":
        return "/v1/responses", {"model": model, "input": "hello", "stream": stream}
    method = "streamGenerateContent?alt=sse&" if stream else "generateContent?"
    return f"/v1beta/models/{model}:{method}", {"contents": [{"role": "user", "parts": [{"text": "hello"}]}]}


@pytest.fixture
def keys() -> Iterator[dict[str, list[str]]]:
    yield random_keys()


def test_leak_scan_of_a_gateway_run_through_every_fault(
    fake: FakeUpstream, tmp_path: Path, keys: dict[str, list[str]]
) -> None:
    gateway_key = f"test-gateway-{body()}"
    admin_key = f"test-admin-{body()}"
    env = fake_env(fake, gemini=0, openrouter=0, anthropic=0)
    for provider, values in keys.items():
        for i, value in enumerate(values, 1):
            env[f"{provider.upper()}_API_KEY_{i}"] = value
    env.update(
        {
            "KEYWHEEL_GATEWAY_KEYS": gateway_key,
            "KEYWHEEL_ADMIN_KEY": admin_key,
            "KEYWHEEL_TIMEOUT": "3",
            "KEYWHEEL_ATTEMPT_TIMEOUT": "0.5",
            "KEYWHEEL_STREAM_IDLE_TIMEOUT": "0.5",
            "KEYWHEEL_PROVIDER_ATTEMPTS": "1",
        }
    )
    served = start_gateway(env, tmp_path / "leak-scan.log", "--log-level", "DEBUG")
    admin = {"authorization": f"Bearer {admin_key}"}
    texts: list[str] = []
    statuses: dict[int, int] = {}
    try:
        with httpx.Client(base_url=served.url, timeout=15) as client, ThreadPoolExecutor(8) as pool:

            def call(dialect: str, provider: str | None, stream: bool) -> str:
                path, body = _request(dialect, provider, stream)
                headers = {"x-keywheel-fallback": "off" if provider else "on"}
                if dialect == "gemini":
                    path += f"key={gateway_key}"  # Google's convention: the key in the query
                else:
                    headers["authorization"] = f"Bearer {gateway_key}"
                resp = client.post(path, json=body, headers=headers)
                statuses[resp.status_code] = statuses.get(resp.status_code, 0) + 1
                head = "\n".join(f"{k}: {v}" for k, v in resp.headers.items())
                return f"HTTP {resp.status_code} {resp.reason_phrase}\n{head}\n\n{resp.text}"

            fingerprints = [
                k["key"] for p in client.get("/status", headers=admin).json()["providers"] for k in p["keys"]
            ]
            assert len(fingerprints) == 6
            dialects = ("openai", "anthropic", "gemini", "responses")
            combos = [(d, p, s) for d in dialects for p in [*PROVIDERS, None] for s in (0, 1)]
            for kind, params in faults():
                for values in keys.values():
                    for value in values:
                        fake.set(value, kind, times=None, **params)
                texts += pool.map(lambda c: call(c[0], c[1], bool(c[2])), combos)
                texts.append(client.get("/status", headers=admin).text)
                for fingerprint in fingerprints:  # back to active for the next fault
                    enable = client.post("/admin/keys/enable", headers=admin, json={"key": fingerprint})
                    assert enable.status_code == 200, enable.text
            texts.append(client.get("/v1/models", headers={"authorization": f"Bearer {gateway_key}"}).text)
    finally:
        served.stop()
    log = served.log()
    texts.append(log)
    everything = "\n".join(texts)
    secret_values = [v for values in keys.values() for v in values] + [gateway_key, admin_key]
    found = leaks(everything, secret_values, public_grams(fake))
    assert not found, "\n".join(found[:10])
    # The run did meet the faults (and the echoes came back, and were caught).
    assert {200, 400, 429, 502}.issubset(statuses), statuses
    assert "[redacted]" in everything and "keywheel.access" in log and "attempt failed" in log
    assert "Traceback" not in log, log[-3000:]


def test_leak_scan_of_library_calls_through_every_fault(
    fake: FakeUpstream, keys: dict[str, list[str]], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)  # every logger, every level
    env = fake_env(fake, gemini=0, openrouter=0, anthropic=0)
    for provider, values in keys.items():
        for i, value in enumerate(values, 1):
            env[f"{provider.upper()}_API_KEY_{i}"] = value
    env.update({"KEYWHEEL_TIMEOUT": "3", "KEYWHEEL_ATTEMPT_TIMEOUT": "0.5", "KEYWHEEL_STREAM_IDLE_TIMEOUT": "0.5"})
    env["KEYWHEEL_PROVIDER_ATTEMPTS"] = "1"
    wheel = Wheel(settings_from_env(env))
    added = f"test-gemini-{body()}"
    wheel.add_key("gemini", added)
    texts: list[str] = []
    failures = 0
    try:
        for kind, params in faults():
            for value in [v for values in keys.values() for v in values] + [added]:
                fake.set(value, kind, times=None, **params)
            for provider in PROVIDERS:
                for stream in (False, True):
                    try:
                        if stream:
                            texts += [repr(e) for e in wheel.stream(HELLO, provider=provider, fallback=False)]
                        else:
                            texts.append(repr(wheel.chat(HELLO, provider=provider, fallback=False)))
                    except KeywheelError as exc:
                        failures += 1
                        texts += [str(exc), repr(exc), "".join(traceback.format_exception(exc))]
                        texts += [repr(vars(exc))] + [repr(a) for a in getattr(exc, "attempts", [])]
            texts.append(json.dumps(wheel.status()))
            for pool in wheel.pools.values():
                for key in pool.keys_nowait():  # type: ignore[attr-defined]  # a MemoryStore
                    wheel.enable_key(key.fingerprint)
    finally:
        wheel.close()
    texts += [r.getMessage() for r in caplog.records] + [caplog.text]
    everything = "\n".join(texts)
    secret_values = [v for values in keys.values() for v in values] + [added]
    found = leaks(everything, secret_values, public_grams(fake))
    assert not found, "\n".join(found[:10])
    assert failures > 20 and "[redacted]" in everything
