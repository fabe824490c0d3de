"""Strict checks of Responses API output, shared by the Responses tests.

Every streamed event is validated with ``pydantic.TypeAdapter(ResponseStreamEvent)``
(the openai SDK's own parsing uses ``construct()`` and accepts events with missing
fields) and the whole sequence is walked against the order the SDK's accumulator expects.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson
import pydantic
from openai.types.responses import (
    Response,
    ResponseCompletedEvent,
    ResponseContentPartAddedEvent,
    ResponseContentPartDoneEvent,
    ResponseFunctionCallArgumentsDeltaEvent,
    ResponseFunctionCallArgumentsDoneEvent,
    ResponseIncompleteEvent,
    ResponseStreamEvent,
    ResponseTextDeltaEvent,
    ResponseTextDoneEvent,
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

    items: list[dict[str, Any]] = field(default_factory=list)  # as the SDK model dumps them
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
        assert isinstance(last, ResponseCompletedEvent | ResponseIncompleteEvent), last.type
        walk.final = last.response
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
            part_added = body[i]
            assert isinstance(part_added, ResponseContentPartAddedEvent), part_added.type
            assert part_added.part.type == "output_text" and part_added.part.text == ""
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
        assert isinstance(done, ResponseTextDoneEvent | ResponseFunctionCallArgumentsDoneEvent), done
        assert (done.item_id, done.output_index) == where
        i += 1
        if item.type == "message":
            assert isinstance(done, ResponseTextDoneEvent) and done.text == text
            part_done = body[i]
            assert isinstance(part_done, ResponseContentPartDoneEvent), part_done.type
            assert part_done.part.type == "output_text" and part_done.part.text == text
            i += 1
        else:
            assert isinstance(done, ResponseFunctionCallArgumentsDoneEvent) and done.arguments == text
        item_done = body[i]
        assert item_done.type == "response.output_item.done" and item_done.output_index == where[1]
        assert item_done.item.id == where[0]
        finished = item_done.item.model_dump()
        assert (finished.get("arguments") if item.type == "function_call" else finished["content"][0]["text"]) == text
        walk.items.append(finished)
        walk.open_item = None
        i += 1
