"""The observer seam: one event per attempt, one per gateway request, key-state changes — no key text.

The gateway is a real ``keywheel serve`` run (``gateway.server.serve``, as the CLI calls it) in a
child process whose wheel has one subscriber writing every event as a JSON line; the test
talks to it over loopback HTTP, stops it with SIGTERM, and reads the events back.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from keywheel import Wheel
from keywheel.config import settings_from_env
from keywheel.errors import KeywheelError
from keywheel.observe import AttemptFinished, Event, KeyStateChanged, Observer
from keywheel.testing import FakeUpstream
from tests.gateway.conftest import free_port
from tests.helpers import fake_env

CHAT = {"model": "auto", "messages": [{"role": "user", "content": "hi"}]}

SERVE = """
import dataclasses, json, sys
from keywheel import Wheel
from keywheel.config import settings_from_env
from keywheel.errors import KeywheelError
from keywheel.gateway import Gateway
from keywheel.gateway.server import serve
from keywheel.logs import configure_logging

env, port, out = json.loads(sys.argv[1]), int(sys.argv[2]), open(sys.argv[3], "w")
configure_logging("INFO")
wheel = Wheel(settings_from_env(env))

def write(event):
    fields = {k: dataclasses.asdict(v) if dataclasses.is_dataclass(v) else v for k, v in event._asdict().items()}
    out.write(json.dumps({"kind": type(event).__name__, **fields}) + chr(10))
    out.flush()

wheel.subscribe(write)
serve(Gateway(wheel), wheel.settings, host="127.0.0.1", port=port, workers=1, log_level="INFO", env_file=None)
"""


def serve_observed(env: dict[str, str], tmp_path: Path) -> tuple[str, subprocess.Popen[bytes], Path, Path]:
    port, events, log = free_port(), tmp_path / "events.jsonl", tmp_path / "serve.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-c", SERVE, json.dumps(env), str(port), str(events)], stdout=sink, stderr=sink
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while True:
        assert process.poll() is None, log.read_text()
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return url, process, events, log
        except httpx.TransportError:
            assert time.monotonic() < deadline, "the gateway did not come up"
            time.sleep(0.05)


def _attempts(header: str) -> list[tuple[str, str, str]]:
    """``x-keywheel-attempts``: (provider, fingerprint, outcome) of each try."""
    out = []
    for part in header.split(", "):
        provider, rest = part.split(" ", 1)
        fingerprint, outcome = rest.rsplit(" ", 1)
        out.append((provider, fingerprint.replace("...", "…"), outcome))
    return out


def test_one_event_per_attempt_and_per_request_with_failover_and_no_key_text(
    fake: FakeUpstream, tmp_path: Path
) -> None:
    env = fake_env(fake, gemini=2, openrouter=1, anthropic=0, AI_PROVIDER="gemini", FALLBACK_ORDER="openrouter")
    env["KEYWHEEL_PROVIDER_ATTEMPTS"] = "2"
    settings = settings_from_env(env)
    fingerprints = {k.fingerprint.split(" ")[0]: k.fingerprint for k in settings.providers["gemini"].keys}
    fake.set("test-gemini-key-1", "rate_limit", retry_after=30)  # a key fault: the next key at once
    fake.set("test-gemini-key-2", "overloaded")  # a provider fault: retried, then fail over
    url, process, path, log = serve_observed(env, tmp_path)
    answers: list[httpx.Response] = []
    try:
        with httpx.Client(base_url=url, timeout=30) as http:
            answers.append(http.post("/v1/chat/completions", json=CHAT, headers={"x-request-id": "client-id-1"}))
            with http.stream("POST", "/v1/chat/completions", json={**CHAT, "stream": True}) as stream:
                stream.read()
                answers.append(stream)
            long_id = {"x-request-id": "x" * 200}
            answers.append(http.post("/v1/messages", json={**CHAT, "max_tokens": 8}, headers=long_id))
            answers.append(http.get("/no/such/route"))  # answered without any upstream attempt
            answers.append(http.post("/admin/keys/disable", json={"key": fingerprints["gemini#2"]}))
    finally:
        process.terminate()
        process.wait(30)
    events = [json.loads(line) for line in path.read_text().splitlines()]
    expected: list[tuple[str, str, str]] = []  # (provider, fingerprint, outcome) of every attempt made
    for answer in answers[:3]:
        assert answer.status_code == 200 and answer.headers["x-keywheel-provider"] == "openrouter"
        expected += _attempts(answer.headers["x-keywheel-attempts"])
    assert answers[3].status_code == 404 and answers[4].status_code == 200, answers[4].text
    assert any(outcome == "RateLimited" for _, _, outcome in expected)  # the run did fail over, as planned
    assert any(outcome == "Overloaded" for _, _, outcome in expected)

    attempts = [e for e in events if e["kind"] == "AttemptFinished"]
    requests = [e for e in events if e["kind"] == "RequestFinished" and e["path"] != "/health"]  # not the probes
    assert Counter((e["provider"], e["key"], e["outcome"]) for e in attempts) == Counter(expected)
    served = [e for e in attempts if e["outcome"] == "ok"]
    assert len(served) == 3 and all(e["status"] == 200 and e["latency_ms"] > 0 for e in served)
    assert all(e["usage"] is not None and e["usage"]["output_tokens"] > 0 for e in served)

    # One RequestFinished per request, in the order answered, with the id the response carries.
    assert [e["request_id"] for e in requests] == [a.headers["x-request-id"] for a in answers]
    assert requests[0]["request_id"] == "client-id-1"  # the client's own id is kept ...
    assert requests[2]["request_id"].startswith("kw-")  # ... unless it is not plain and bounded
    assert len({e["request_id"] for e in requests}) == len(requests)
    chat, streamed, messages, missing, disabled = requests
    assert (chat["method"], chat["path"], chat["dialect"], chat["status"]) == (
        "POST",
        "/v1/chat/completions",
        "openai",
        200,
    )
    assert (chat["provider"], chat["key"]) == ("openrouter", answers[0].headers["x-keywheel-key"].replace("...", "…"))
    assert chat["attempts"] == len(_attempts(answers[0].headers["x-keywheel-attempts"]))
    assert chat["model"] == settings.providers["openrouter"].model
    assert chat["bytes_out"] == len(answers[0].content) and chat["bytes_in"] > 0
    assert streamed["bytes_out"] == len(answers[1].content) > 0
    assert messages["dialect"] == "anthropic"
    assert messages["attempts"] == len(_attempts(answers[2].headers["x-keywheel-attempts"]))
    assert (missing["status"], missing["attempts"], missing["provider"], missing["key"]) == (404, 0, None, None)
    assert disabled["path"] == "/admin/keys/disable" and disabled["status"] == 200

    changes = [(e["key"], e["old"], e["new"]) for e in events if e["kind"] == "KeyStateChanged"]
    assert (fingerprints["gemini#1"], "active", "cooling") in changes
    assert (fingerprints["gemini#2"], "active", "disabled") in changes
    (rest,) = [e for e in events if e["kind"] == "KeyStateChanged" and e["new"] == "cooling"]
    assert rest["reason"] == "rate limited" and 20 < rest["until"] - time.time() <= 30

    # The access log is a subscriber too: its line as it always was, one per request.
    lines = [line for line in log.read_text().splitlines() if " keywheel.access: " in line and "/health" not in line]
    assert len(lines) == len(answers), lines
    assert "keywheel.access: POST /v1/chat/completions 200 openrouter openrouter#1 ..." in lines[0]
    assert lines[3].endswith("ms") and "GET /no/such/route 404 " in lines[3]

    texts = path.read_text()
    for secret in [k.reveal() for cfg in settings.providers.values() for k in cfg.keys]:
        assert secret not in texts and secret[:12] not in texts, f"a key leaked into an event: {secret[:9]}…"


def test_library_calls_emit_their_attempts(fake: FakeUpstream) -> None:
    """A Wheel used as a library: one AttemptFinished per attempt (no request events: no gateway)."""
    env = fake_env(fake, gemini=2, openrouter=1, anthropic=0, AI_PROVIDER="gemini", FALLBACK_ORDER="openrouter")
    fake.set("test-gemini-key-1", "invalid")
    events: list[Event] = []
    with Wheel(settings_from_env(env)) as wheel:
        wheel.subscribe(events.append)
        first = wheel.chat([{"role": "user", "content": "hi"}])
        streamed = [e for e in wheel.stream([{"role": "user", "content": "hi"}])]
        assert streamed
    made = [(a.provider, a.key, a.outcome) for a in first.attempts]
    assert made[0][2] == "KeyInvalid" and made[-1][2] == "ok"
    attempts = [(e.provider, e.key, e.outcome) for e in events if isinstance(e, AttemptFinished)]
    assert attempts[: len(made)] == made and len(attempts) == len(made) + 1  # the stream: one more, served
    (disabled,) = [e for e in events if isinstance(e, KeyStateChanged)]
    assert (disabled.old, disabled.new) == ("active", "disabled") and disabled.reason.startswith("invalid key")
    assert all(e.usage is not None for e in events if isinstance(e, AttemptFinished) and e.outcome == "ok")


def test_no_subscriber_no_event_and_a_failing_subscriber_breaks_nothing(caplog: pytest.LogCaptureFixture) -> None:
    observer = Observer()
    assert not (observer.attempts or observer.requests or observer.key_states)
    seen: list[Event] = []
    event = AttemptFinished("gemini", "gemini#1 …ey-1", "ok", 200, 1.0)

    def broken(_: Event) -> None:
        raise RuntimeError("subscriber bug")

    observer.subscribe(broken)
    stop = observer.subscribe(seen.append, AttemptFinished)
    observer.subscribe(seen.append, AttemptFinished)  # once only
    assert not observer.requests or observer.requests == (broken,)
    observer.emit(event)
    observer.emit(KeyStateChanged("gemini", "gemini#1 …ey-1", "active", "cooling", "rate limited", None))
    assert seen == [event]
    assert "subscriber bug" in caplog.text or any("observer" in r.getMessage() for r in caplog.records)
    stop()
    observer.emit(event)
    assert seen == [event]
    with pytest.raises(TypeError, match="not an event kind"):
        observer.subscribe(seen.append, int)


def test_failures_only_sees_the_failed_attempts_of_calls_and_streams(fake: FakeUpstream) -> None:
    """``failures_only=True`` (what the credit monitor asks for): every failed attempt, no served one —
    and with nobody else listening, a call that succeeds builds no attempt event at all."""
    env = fake_env(fake, gemini=2, openrouter=1, anthropic=0, AI_PROVIDER="gemini", FALLBACK_ORDER="openrouter")
    fake.set("test-gemini-key-1", "invalid")
    failed: list[Event] = []
    with Wheel(settings_from_env(env)) as wheel:
        stop = wheel.observer.subscribe(failed.append, AttemptFinished, failures_only=True)
        assert wheel.observer.failures and not wheel.observer.attempts
        first = wheel.chat([{"role": "user", "content": "hi"}])
        assert [e.outcome for e in failed if isinstance(e, AttemptFinished)] == ["KeyInvalid"]
        assert first.attempts[-1].outcome == "ok"
        fake.set("test-gemini-key-2", "break_stream")
        with pytest.raises(KeywheelError):  # the stream breaks after its first event
            for _ in wheel.stream([{"role": "user", "content": "hi"}], fallback=False):
                pass
        outcomes = [e.outcome for e in failed if isinstance(e, AttemptFinished)]
        assert outcomes[0] == "KeyInvalid" and len(outcomes) == 2 and "ok" not in outcomes
        stop()
        assert not wheel.observer.failures
