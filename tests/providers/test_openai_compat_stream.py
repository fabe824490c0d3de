"""The OpenAI-compatible adapter's stream parser: examples, errors in-band, the fast path for the
usual chunk, and what a watched pass-through stream must still read."""

import pytest

from keywheel.errors import (
    ContextTooLong,
    NetworkError,
    Overloaded,
    RateLimited,
    ServerError,
    UpstreamError,
)
from keywheel.providers.openai_compat import OpenAICompatAdapter
from keywheel.sse import SSEDecoder, SSEEvent
from keywheel.types import (
    StreamEnd,
    TextDelta,
    ToolCallDelta,
    Usage,
)
from tests.providers.test_openai_compat import ADAPTER, run_stream, sse


def test_stream_openrouter_example_counts_finish_once() -> None:
    raw = b": OPENROUTER PROCESSING\n\n" + sse(
        b'{"id":"gen-abc","object":"chat.completion.chunk","created":1764100000,"model":"openai/gpt-4o",'
        b'"choices":[{"index":0,"delta":{"role":"assistant","content":"4"},"finish_reason":null}]}',
        b'{"id":"gen-abc","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":""},'
        b'"finish_reason":"stop","native_finish_reason":"stop"}]}',
        b'{"id":"gen-abc","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":""},'
        b'"finish_reason":"stop","native_finish_reason":"stop"}],'
        b'"usage":{"prompt_tokens":20,"completion_tokens":1,"total_tokens":21,"cost":0.00006}}',
        b"[DONE]",
    )
    assert run_stream(raw) == [
        TextDelta("4"),
        StreamEnd("stop", Usage(20, 1, cost=0.00006), model="openai/gpt-4o", id="gen-abc"),
    ]


def test_stream_openai_tool_call_example() -> None:
    raw = sse(
        b'{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1764100000,"model":"gpt-4.1-mini",'
        b'"choices":[{"index":0,"delta":{"role":"assistant","content":null,"tool_calls":[{"index":0,"id":"call_1",'
        b'"type":"function","function":{"name":"calc","arguments":""}}]},"finish_reason":null}],"usage":null}',
        b'{"id":"chatcmpl-1","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"tool_calls":'
        b'[{"index":0,"function":{"arguments":"{\\"expr\\":\\"2+2\\"}"}}]},"finish_reason":null}],"usage":null}',
        b'{"id":"chatcmpl-1","object":"chat.completion.chunk","choices":[{"index":0,"delta":{},'
        b'"finish_reason":"tool_calls"}],"usage":null}',
        b'{"id":"chatcmpl-1","object":"chat.completion.chunk","choices":[],'
        b'"usage":{"prompt_tokens":60,"completion_tokens":15,"total_tokens":75}}',
        b"[DONE]",
    )
    assert run_stream(raw) == [
        ToolCallDelta(0, id="call_1", name="calc", arguments=""),
        ToolCallDelta(0, arguments='{"expr":"2+2"}'),
        StreamEnd("tool_calls", Usage(60, 15), model="gpt-4.1-mini", id="chatcmpl-1"),
    ]


def test_stream_tool_calls_without_index() -> None:
    raw = sse(
        {"choices": [{"delta": {"tool_calls": [{"id": "a", "function": {"name": "f", "arguments": "{}"}}]}}]},
        {"choices": [{"delta": {"tool_calls": [{"id": "b", "function": {"name": "g", "arguments": "{"}}]}}]},
        {"choices": [{"delta": {"tool_calls": [{"function": {"arguments": "}"}}]}, "finish_reason": "stop"}]},
        b"[DONE]",
    )
    assert run_stream(raw) == [
        ToolCallDelta(0, id="a", name="f", arguments="{}"),
        ToolCallDelta(1, id="b", name="g", arguments="{"),
        ToolCallDelta(1, arguments="}"),
        StreamEnd("tool_calls", Usage()),
    ]


def test_stream_without_done_ends_at_close_if_finished() -> None:
    raw = sse({"choices": [{"delta": {"content": "hi"}, "finish_reason": "length"}]})
    assert run_stream(raw) == [TextDelta("hi"), StreamEnd("length", Usage())]


def test_stream_cut_short_is_a_network_error() -> None:
    with pytest.raises(NetworkError):
        run_stream(sse({"choices": [{"delta": {"content": "hi"}, "finish_reason": None}]}))


def test_stream_mid_stream_error_from_openrouter() -> None:
    raw = sse(
        {"choices": [{"delta": {"content": "partial"}}]},
        b'{"id":"gen-1","object":"chat.completion.chunk","error":{"code":429,"message":"Rate limit exceeded",'
        b'"metadata":{"error_type":"rate_limit_exceeded"}},'
        b'"choices":[{"index":0,"delta":{"content":""},"finish_reason":"error"}]}',
    )
    with pytest.raises(RateLimited) as caught:
        run_stream(raw)
    assert caught.value.status == 429
    assert caught.value.message == "Rate limit exceeded"


@pytest.mark.parametrize(
    ("error", "cls"),
    [
        (
            {"code": 502, "message": "Provider returned error", "metadata": {"error_type": "provider_unavailable"}},
            ServerError,
        ),
        ({"code": 503, "message": "overloaded", "metadata": {"error_type": "provider_overloaded"}}, Overloaded),
        ({"message": "slow down", "metadata": {"error_type": "rate_limit_exceeded"}}, RateLimited),
        ({"message": "too long", "type": "invalid_request_error", "code": "context_length_exceeded"}, ContextTooLong),
        ({"message": "The server had an error", "type": "server_error"}, ServerError),
        ({"message": "???"}, ServerError),
    ],
)
def test_stream_error_chunk_classes(error: dict[str, object], cls: type[UpstreamError]) -> None:
    with pytest.raises(cls) as caught:
        run_stream(sse({"error": error}))
    assert type(caught.value) is cls


def test_stream_choice_level_error_without_top_level_error() -> None:
    chunk = {
        "choices": [
            {
                "index": 0,
                "delta": {"content": ""},
                "finish_reason": "error",
                "error": {"code": 503, "message": "Provider overloaded", "metadata": {}},
            }
        ]
    }
    with pytest.raises(Overloaded) as caught:
        run_stream(sse(chunk))
    assert caught.value.message == "Provider overloaded"


def test_stream_refusal_is_content_filter() -> None:
    raw = sse(
        {"choices": [{"delta": {"role": "assistant", "refusal": "I can't"}}]},
        {"choices": [{"delta": {}, "finish_reason": "stop"}]},
        b"[DONE]",
    )
    assert run_stream(raw) == [TextDelta("I can't"), StreamEnd("content_filter", Usage())]


def test_events_after_done_are_ignored() -> None:
    parser = ADAPTER.stream_parser()
    decoder = SSEDecoder()
    events = decoder.feed(sse({"choices": [{"delta": {"content": "a"}, "finish_reason": "stop"}]}, b"[DONE]"))
    out = [e for event in events for e in parser.feed(event)]
    assert out == [TextDelta("a"), StreamEnd("stop", Usage())]
    assert parser.close() == []


def _chunk(delta: object = None, finish: object = None, **top: object) -> dict[str, object]:
    return {"model": "m", "id": "c1", "choices": [{"index": 0, "delta": delta or {}, "finish_reason": finish}], **top}


# The usual chunk is read on a fast path; every other shape on the general one, to the same result.
@pytest.mark.parametrize(
    ("chunks", "expected"),
    [
        # the usual shape: model and id kept, a new model taken, empty or non-string ones left alone
        (
            [
                _chunk({"role": "assistant", "content": ""}),
                _chunk({"content": "a"}, model="m2", id="c2"),
                _chunk({"content": "b"}, model="", id=7),
                _chunk({"content": ["not", "text"]}, "stop", model="m2", id="c2"),
                _chunk({}, "", model="m2", id="c2", usage={"prompt_tokens": 3, "completion_tokens": 2}),
            ],
            [TextDelta("a"), TextDelta("b"), StreamEnd("stop", Usage(3, 2), model="m2", id="c2")],
        ),
        # the general path: no choices, choices or a choice or a delta of another type, no delta
        (
            [
                {"model": "m", "choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": 1}},
                {"choices": "x"},
                {"choices": [["x"]]},
                {"choices": [{"delta": "x"}]},
                {"choices": [{"finish_reason": None}]},
                _chunk({"content": "a"}, "length"),
            ],
            [TextDelta("a"), StreamEnd("length", Usage(1, 1), model="m", id="c1")],
        ),
        # an error that is null, a finish reason that is not a string, an empty refusal or tool calls
        (
            [
                _chunk({"content": "a"}, error=None),
                _chunk({"content": "", "refusal": "", "tool_calls": []}),
                _chunk({}, 1),
            ],
            [TextDelta("a"), StreamEnd("other", Usage(), model="m", id="c1")],
        ),
        # a refusal and tool calls go to the general path, which reads them
        (
            [_chunk({"refusal": "no"}), _chunk({}, "stop")],
            [TextDelta("no"), StreamEnd("content_filter", Usage(), model="m", id="c1")],
        ),
        (
            [_chunk({"tool_calls": [{"index": 0, "id": "t", "function": {"name": "f"}}]}), _chunk({}, "stop")],
            [ToolCallDelta(0, id="t", name="f"), StreamEnd("tool_calls", Usage(), model="m", id="c1")],
        ),
        # leading blank space before a chunk and after [DONE]
        (
            [b'  {"choices":[{"delta":{"content":"a"},"finish_reason":"stop"}]}', b"[DONE]  "],
            [TextDelta("a"), StreamEnd("stop", Usage())],
        ),
    ],
)
def test_stream_chunk_shapes(chunks: list[object], expected: list[object]) -> None:
    assert run_stream(sse(*chunks)) == expected


@pytest.mark.parametrize(
    ("chunk", "cls"),
    [
        (_chunk({"content": "a"}, "error"), ServerError),
        (_chunk({"content": "a"}, error={"code": 429, "message": "slow down"}), RateLimited),
        (b"{not json", ServerError),
    ],
)
def test_stream_chunk_errors_off_the_fast_path(chunk: object, cls: type[UpstreamError]) -> None:
    with pytest.raises(cls):
        run_stream(sse(chunk))


FIRST = '{"id":"c1","model":"m","choices":[{"delta":{"role":"assistant","content":""},"finish_reason":null}]}'
CONTENT = '{"choices":[{"delta":{"content":"hi"},"finish_reason":null}]}'


def _ends(chunks: list[str], *, watch: bool) -> list[object]:
    """What a stream's chunks give but text: read whole (``feed``), or watched after the first (``tap``)."""
    parser = OpenAICompatAdapter().stream_parser()
    out: list[object] = []
    for i, data in enumerate(chunks):
        event = SSEEvent(None, data)
        try:
            got = parser.tap(event) if watch and i > 0 else parser.feed(event)
        except UpstreamError as exc:
            return [*out, type(exc)]
        out += [e for e in got if not isinstance(e, TextDelta)]
    return out


@pytest.mark.parametrize(
    "chunks",
    [
        [FIRST, CONTENT, '{"choices":[{"delta":{},"finish_reason":"stop"}]}', "[DONE]"],
        [FIRST, CONTENT, '{"choices":[{"delta":{},"finish_reason": "length"}]}', " [DONE] "],
        [FIRST, '{"usage":null,"choices":[{"delta":{"content":"a"},"finish_reason":null}]}', "[DONE]"],
        [FIRST, '{"choices":[{"delta":{"content":"finish_reason\\" \\"usage\\":{"},"finish_reason":null}]}', "[DONE]"],
        [FIRST, '{"choices":[{"finish_reason":null},{"index":1,"delta":{},"finish_reason":"stop"}]}', "[DONE]"],
        [FIRST, CONTENT, '{"choices":[],"usage":{"prompt_tokens":1,"completion_tokens":2}}', "[DONE]"],
        [FIRST, CONTENT, '{"choices":[],"usage": {"prompt_tokens":3,"completion_tokens":4}}', "[DONE]"],
        [FIRST, CONTENT, '{"error":{"message":"over quota","code":429}}'],
        [FIRST, CONTENT, "", "[DONE]"],
    ],
)
def test_a_watched_pass_through_stream_ends_as_a_read_one(chunks: list[str]) -> None:
    """``tap`` (a pass-through stream after its first event) skips plain content chunks, and loses
    none of a finish, a usage object, an error or the end."""
    whole = _ends(chunks, watch=False)
    assert whole and _ends(chunks, watch=True) == whole
