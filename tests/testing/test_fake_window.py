"""The fake upstream's own per-key sliding window (``FakeUpstream(window=(limit, seconds))``)."""

from __future__ import annotations

import time

import httpx
import pytest

from keywheel.testing import FakeUpstream
from keywheel.testing.dialects import Json, word_count


def post(client: httpx.Client, fake: FakeUpstream, key: str) -> httpx.Response:
    return client.post(
        fake.openai_base_url + "/chat/completions",
        headers={"authorization": f"Bearer {key}"},
        json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]},
    )


def test_the_fake_answers_429_over_its_window_with_the_exact_retry_time() -> None:
    with FakeUpstream(window=(3, 1.0)) as fake, httpx.Client(timeout=10) as client:
        started = time.monotonic()
        assert [post(client, fake, "test-openai-key-1").status_code for _ in range(3)] == [200, 200, 200]
        over = post(client, fake, "test-openai-key-1")
        assert over.status_code == 429
        retry = float(over.headers["retry-after"])
        log = fake.requests
        assert [r.over_window for r in log] == [False, False, False, True]
        assert retry == pytest.approx(log[0].at + 1.0 - log[3].at, abs=0.002)
        assert 0 < retry <= 1.0 and log[0].at >= started
        # Another key has its own window; a refused request does not count.
        assert post(client, fake, "test-openai-key-2").status_code == 200
        time.sleep(retry + 0.01)
        assert post(client, fake, "test-openai-key-1").status_code == 200  # the oldest has left: a slot
        assert fake.count("test-openai-key-1") == 5  # the log records every arrival, refused ones included
        fake.reset()
        assert post(client, fake, "test-openai-key-1").status_code == 200  # reset forgets the window too


@pytest.mark.parametrize("window", [(0, 1.0), (3, 0.0)])
def test_a_window_must_make_sense(window: tuple[int, float]) -> None:
    with pytest.raises(ValueError, match="window"):
        FakeUpstream(window=window)


def test_the_fakes_word_count_walks_a_body_nested_past_the_recursion_limit() -> None:
    deep: Json = "one two"
    for _ in range(5000):
        deep = [{"text": deep}]
    assert word_count(deep) == 2
