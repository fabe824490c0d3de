"""The fake upstream's pure parts: behaviour scripts, timing formats, frame cuts, tool arguments."""

from __future__ import annotations

import pytest

from keywheel.testing.behaviours import Behaviour, BehaviourTable, go_duration, proto_duration, retry_headers
from keywheel.testing.dialects import Frame, Reply, arguments_for, cut_point, reply_text, tool_result_text, word_count


def test_behaviour_build_fills_defaults() -> None:
    assert dict(Behaviour.build("hang", {}).params) == {"seconds": 30.0}
    assert dict(Behaviour.build("break_stream", {}).params) == {"after": 3}
    assert dict(Behaviour.build("slow_stream", {"interval": 1}).params) == {"interval": 1}
    assert dict(Behaviour.build("rate_limit", {"retry_after": None}).params) == {"retry_after": None, "style": None}


@pytest.mark.parametrize(
    ("kind", "params"),
    [
        ("hang", {"seconds": -1}),
        ("hang", {"seconds": None}),
        ("break_stream", {"after": 1.5}),
        ("break_stream", {"after": True}),
        ("quota", {"limit_source": None}),
        ("ok", {"x": 1}),
    ],
)
def test_behaviour_build_rejects(kind: str, params: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        Behaviour.build(kind, params)


def test_behaviour_table() -> None:
    table = BehaviourTable()
    invalid, limited, broken = (Behaviour.build(k, {}) for k in ("invalid", "rate_limit", "server_error"))
    assert table.take("k").kind == "ok"
    table.set("k", invalid, None)
    table.set("k", limited, 2)
    table.set("k", broken, 1)
    table.set("k", broken, 0)  # zero uses: nothing queued
    assert [table.take("k").kind for _ in range(5)] == [
        "rate_limit",
        "rate_limit",
        "server_error",
        "invalid",
        "invalid",
    ]
    assert table.take("other").kind == "ok"
    table.clear()
    assert table.take("k").kind == "ok"


@pytest.mark.parametrize(
    ("seconds", "expected"),
    [(0.012, "12ms"), (1, "1s"), (1.5, "1.5s"), (59.25, "59.25s"), (360, "6m0s"), (61.5, "1m1.5s")],
)
def test_go_duration(seconds: float, expected: str) -> None:
    assert go_duration(seconds) == expected


@pytest.mark.parametrize(("seconds", "expected"), [(2, "2s"), (1.5, "1.5s"), (59.0, "59s"), (0.25, "0.25s")])
def test_proto_duration(seconds: float, expected: str) -> None:
    assert proto_duration(seconds) == expected


def test_retry_headers() -> None:
    now = 1_764_100_000.0  # 2025-11-25T19:46:40Z
    assert retry_headers("retry-after", 2.0, now=now) == {"retry-after": "2"}
    assert retry_headers("retry-after", 0.25, now=now) == {"retry-after": "0.25"}
    assert retry_headers("retry-after-ms", 2.0, now=now) == {"retry-after-ms": "2000"}
    assert retry_headers("retry-after-ms", 0.0015, now=now) == {"retry-after-ms": "1.5"}
    assert retry_headers("http-date", 1.2, now=now) == {"retry-after": "Tue, 25 Nov 2025 19:46:42 GMT"}
    assert retry_headers("anthropic-reset", 1.2, now=now) == {
        "anthropic-ratelimit-requests-reset": "2025-11-25T19:46:42Z"
    }
    assert retry_headers("openai-reset", 0.5, now=now) == {"x-ratelimit-reset-requests": "500ms"}
    assert retry_headers("retry-info", 2.0, now=now) == {}
    assert retry_headers("none", 2.0, now=now) == {}
    assert retry_headers("retry-after", None, now=now) == {}


def test_cut_point() -> None:
    frames = [Frame(b"start"), Frame(b"a", True), Frame(b"b", True), Frame(b"c", True), Frame(b"end")]
    assert cut_point(frames, 0) == 1
    assert cut_point(frames, 2) == 3
    assert cut_point(frames, 3) == 4  # everything but the terminal frame
    assert cut_point(frames, 99) == 4


def test_arguments_for_schema() -> None:
    schema = {
        "type": "object",
        "properties": {
            "s": {"type": "string"},
            "n": {"type": "number"},
            "i": {"type": "INTEGER"},  # Gemini's upper-case types
            "b": {"type": "boolean"},
            "o": {"type": "object"},
            "nullable": {"type": ["null", "string"]},
            "untyped": {},
        },
    }
    assert arguments_for(schema) == {
        "s": "test",
        "n": 1,
        "i": 1,
        "b": True,
        "o": None,
        "nullable": "test",
        "untyped": None,
    }
    assert arguments_for({"type": "object"}) == {}


def test_reply_pieces_and_tokens() -> None:
    text = reply_text(7, "gemini")
    assert text == "Reply 7 from fake gemini: the quick brown fox jumps over the lazy dog."
    reply = Reply(n=7, model="m", input_tokens=3, text=text)
    assert "".join(reply.pieces) == text and len(reply.pieces) == 14 == reply.output_tokens
    assert reply_text(8, "openai", "4") == "Reply 8 from fake openai: the tool said 4"


def test_word_count_skips_identifiers() -> None:
    content = [
        {"type": "text", "text": "two words"},
        {"type": "image", "source": {"data": "AAAA BBBB", "media_type": "x"}},
    ]
    assert word_count({"role": "user", "content": content}) == 2


def test_tool_result_text() -> None:
    assert tool_result_text("4") == "4"
    assert tool_result_text([{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]) == "a b"
    assert tool_result_text({"result": "4"}) == "4"
    assert tool_result_text({"x": 1, "y": 2}) == '{"x":1,"y":2}'
