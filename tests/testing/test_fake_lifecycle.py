"""Starting, stopping and restarting a fake upstream of one's own."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from keywheel.testing import FakeUpstream

KEY = "test-key-1"


def post(fake: FakeUpstream, timeout: float = 5) -> httpx.Response:
    body = {"model": "gpt-4.1-mini", "messages": [{"role": "user", "content": "hi"}]}
    headers = {"authorization": f"Bearer {KEY}"}
    return httpx.post(fake.openai_base_url + "/chat/completions", headers=headers, json=body, timeout=timeout)


@pytest.fixture
def own_fake() -> Iterator[FakeUpstream]:
    fake = FakeUpstream()
    yield fake
    fake.stop()


def test_lifecycle(own_fake: FakeUpstream) -> None:
    with pytest.raises(RuntimeError):
        _ = own_fake.url
    own_fake.start()
    assert own_fake.url.startswith("http://127.0.0.1:")
    assert own_fake.anthropic_base_url == own_fake.gemini_base_url == own_fake.url
    assert own_fake.openrouter_base_url == own_fake.url + "/api/v1"
    assert own_fake.openai_base_url == own_fake.url + "/v1"
    with pytest.raises(RuntimeError):
        own_fake.start()
    own_fake.stop()
    own_fake.stop()  # idempotent
    with own_fake as again:  # restartable, on a new port
        assert post(again).status_code == 200


def test_stop_cuts_pending_hangs_quickly(own_fake: FakeUpstream) -> None:
    own_fake.start()
    own_fake.set(KEY, "hang", seconds=30)
    outcome: dict[str, Any] = {}

    def hang() -> None:
        try:
            outcome["status"] = post(own_fake, timeout=10).status_code
        except httpx.HTTPError as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=hang)
    thread.start()
    deadline = time.monotonic() + 2
    while own_fake.count(KEY) == 0:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    started = time.monotonic()
    own_fake.stop()
    thread.join(5)
    assert time.monotonic() - started < 2 and "error" in outcome
    assert own_fake.disconnects == []  # the fake stopping is not a client disconnect
