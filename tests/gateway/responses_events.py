"""Strict checks of Responses API output, shared by the Responses tests.

Every streamed event is validated with ``pydantic.TypeAdapter(ResponseStreamEvent)``
(the openai SDK's own parsing uses ``construct()`` and accepts events with missing
fields) and the whole sequence is walked against the order the SDK's accumulator expects.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import orjson
import pydantic
from openai.types.responses import (
    Response,
    ResponseFunctionCallArgumentsDeltaEvent,
    ResponseStreamEvent,
    ResponseTextDeltaEvent,
)

from keywheel.sse import SSEDecoder

EVENT: pydantic.TypeAdapter[ResponseStreamEvent] = pydantic.TypeAdapter(ResponseStreamEvent)
RESPONSE: pydantic.TypeAdapter[Response] = pydantic.TypeAdapter(Response)
TERMINAL = ("response.completed", "response.incomplete")


def validate_events(raw: bytes) -> list[ResponseStreamEvent]:
    """SSE bytes to validated events; each ``event:`` name equals its data's ``type``."""
    decoder = SSEDecoder()
    events = []
    for sse in decoder.feed(raw) + decoder.close():
        payload = orjson.loads(sse.data)
        assert sse.event == payload["type"], (sse.event, payload)
        events.append(EVENT.validate_python(payload))
    return events


@dataclass
class Walk:
    """What a stream said: its finished items, the one left open (if any), and the end."""

    items: list[dict[str, object]] = field(default_factory=list)
    open_item: str | None = None  # type of the item a failure interrupted
    final: Response | None = None
    error: str | None = None  # the message of an in-band ``error`` event


def check_order(events: list[ResponseStreamEvent]) -> Walk:
    """Assert the event grammar; return the items each ``response.output_item.done`` carried.

    created, in_progress; then per item: output_item.added, then either
    content_part.added, output_text.delta…, output_text.done, content_part.done
    or function_call_arguments.delta…, function_call_arguments.done; then
    output_item.done; at the end completed or incomplete, or error then failed.
    One response id throughout; sequence numbers rise by one from 0.
    """
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert [e.type for e in events[:2]] == ["response.created", "response.in_progress"]
    ids = {e.response.id for e in events if hasattr(e, "response")}
    assert len(ids) == 1 and next(iter(ids)).startswith("resp_"), ids
    walk = Walk()
    last = events[-1]
    if last.type == "response.failed":
        assert events[-2].type == "error"
        walk.error = events[-2].message
        body = events[2:-2]
    else:
        assert last.type in TERMINAL, last.type
        body = events[2:-1]
    if last.type != "response.failed":
        walk.final = last.response  # type: ignore[union-attr]
    _walk_items(body, walk)
    if walk.open_item is not None:
        assert last.type == "response.failed", "an item was left open by a stream that did not fail"
    return walk


def _walk_items(body: list[ResponseStreamEvent], walk: Walk) -> None:
    i = 0
    while i < len(body):
        added = body[i]
        assert added.type == "response.output_item.added", added.type
        assert added.output_index == len(walk.items)
        item, where = added.item, (added.item.id, added.output_index)
        i += 1
        walk.open_item = item.type
        if item.type == "message":
            if i == len(body):
                return
            assert body[i].type == "response.content_part.added" and body[i].part.text == ""  # type: ignore[union-attr]
            i += 1
            delta_type, done_type = "response.output_text.delta", "response.output_text.done"
        else:
            assert item.type == "function_call" and item.arguments == "", item
            delta_type, done_type = "response.function_call_arguments.delta", "response.function_call_arguments.done"
        text = ""
        while i < len(body) and body[i].type == delta_type:
            delta = body[i]
            assert isinstance(delta, ResponseTextDeltaEvent | ResponseFunctionCallArgumentsDeltaEvent), delta
            assert (delta.item_id, delta.output_index) == where
            text += delta.delta
            i += 1
        if i == len(body):
            return
        assert text, f"no {delta_type} before {body[i].type}"
        done = body[i]
        assert done.type == done_type, done.type
        assert (done.item_id, done.output_index) == where  # type: ignore[union-attr]
        i += 1
        if item.type == "message":
            assert done.text == text  # type: ignore[union-attr]
            part_done = body[i]
            assert part_done.type == "response.content_part.done" and part_done.part.text == text  # type: ignore[union-attr]
            i += 1
        else:
            assert done.arguments == text  # type: ignore[union-attr]
        item_done = body[i]
        assert item_done.type == "response.output_item.done" and item_done.output_index == where[1]
        assert item_done.item.id == where[0]
        finished = item_done.item.model_dump()
        assert (finished.get("arguments") if item.type == "function_call" else finished["content"][0]["text"]) == text
        walk.items.append(finished)
        walk.open_item = None
        i += 1
