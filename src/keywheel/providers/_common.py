"""Small pure helpers the three adapters share.

JSON coercion of untrusted upstream payloads, error-body extraction, header
and body merging, tool-argument parsing and the turn ordering every dialect
needs.  Nothing here knows one provider's wire format, and nothing here ever
puts a request header (and so a key) into a message.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

import orjson

from keywheel.errors import (
    BadRequest,
    KeyInvalid,
    ModelNotFound,
    Overloaded,
    QuotaExhausted,
    RateLimited,
    ServerError,
    Timeout,
    UpstreamError,
)
from keywheel.types import Message, Part, Role, TextPart, ToolCall, ToolResultPart

MESSAGE_LIMIT = 500


def dumps(value: Any) -> bytes:
    try:
        return orjson.dumps(value)
    except TypeError as exc:
        if "Integer" not in str(exc):
            raise  # e.g. nesting beyond the encoder's limit: the caller names the field
        # an integer beyond 64 bits (a pass-through body, parsed exactly): the stdlib keeps it
        return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


def loads(data: bytes | str) -> Any:
    """The decoded JSON, or ``None`` if ``data`` is not JSON."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return None


def as_dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def as_str(value: Any) -> str:
    return value if isinstance(value, str) else ""


def as_int(value: Any) -> int:
    if isinstance(value, bool):
        return 0
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return 0


def as_status(value: Any) -> int | None:
    """An HTTP-like status from an error ``code`` that may be an int, a digit string or a word."""
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool) and 100 <= value <= 599:
        return value
    return None


def truncate(text: str, limit: int = MESSAGE_LIMIT) -> str:
    text = text.strip()
    return text if len(text) <= limit else text[: limit - 1] + "…"


def error_object(payload: Any) -> dict[str, Any] | None:
    """The ``error`` object of an error body: ``{"error":{…}}`` or ``[{"error":{…}}]``.

    A bare string ``error`` becomes ``{"message": …}``.  ``None`` when there is none.
    """
    if isinstance(payload, list) and payload:
        payload = payload[0]
    if not isinstance(payload, dict) or "error" not in payload:
        return None
    err = payload["error"]
    if isinstance(err, dict):
        return err
    if isinstance(err, str):
        return {"message": err}
    return None


def upstream_message(err: Mapping[str, Any] | None, body: bytes, status: int | None) -> str:
    """The upstream's own words, truncated: the error's message, else the body text."""
    message = as_str((err or {}).get("message"))
    if not message:
        message = body.decode("utf-8", "replace")
    if not message.strip():
        message = f"upstream answered HTTP {status} with an empty body" if status else "upstream sent an empty error"
    return truncate(message)


def header(headers: Mapping[str, str], name: str) -> str | None:
    """A header by case-insensitive name (plain dicts in tests, multidicts in production)."""
    value = headers.get(name)
    if value is not None:
        return value
    name = name.lower()
    for k, v in headers.items():
        if k.lower() == name:
            return v
    return None


def merge_headers(*layers: Mapping[str, str]) -> dict[str, str]:
    """Later layers override earlier ones; names come out lower-case (HTTP names are case-blind)."""
    merged: dict[str, str] = {}
    for layer in layers:
        for name, value in layer.items():
            merged[name.lower()] = value
    return merged


def merge_extra(body: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    """Merge ``extra`` into ``body``: extra wins, nested objects merge key by key.

    Nested merging lets ``extra={"generationConfig": {"thinkingConfig": …}}`` add to,
    rather than replace, the generation config built from the request.
    """
    for name, value in extra.items():
        current = body.get(name)
        if isinstance(current, dict) and isinstance(value, Mapping):
            body[name] = merge_extra(dict(current), value)
        else:
            body[name] = value
    return body


def parse_tool_arguments(text: str) -> dict[str, Any]:
    """Tool arguments from their JSON text; ``{"_raw": text}`` when it is not a JSON object."""
    if not text.strip():
        return {}
    parsed = loads(text)
    if isinstance(parsed, dict):
        return parsed
    return {"_raw": text}


def split_data_url(url: str) -> tuple[str, str] | None:
    """``(media_type, base64 data)`` of a ``data:<type>;base64,<data>`` URL, else ``None``."""
    if not url.startswith("data:"):
        return None
    meta, sep, data = url[5:].partition(",")
    if not sep or not meta.endswith(";base64"):
        return None
    return meta[: -len(";base64")] or "application/octet-stream", data


def class_for_status(status: int) -> type[UpstreamError]:
    """The default error class of an HTTP status; adapters refine it from the body."""
    if status in (401, 403):
        return KeyInvalid
    if status == 402:
        return QuotaExhausted
    if status == 404:
        return ModelNotFound
    if status in (408, 504):
        return Timeout
    if status == 409:  # a conflict is transient on the provider's side; SDKs retry it
        return ServerError
    if status == 429:
        return RateLimited
    if status in (503, 529):
        return Overloaded
    if 400 <= status < 500:
        return BadRequest
    return ServerError


def _turn_role(part: Part, role: Role) -> Role:
    if isinstance(part, ToolResultPart):
        return "user"
    if isinstance(part, ToolCall):
        return "assistant"
    return role


def ordered_turns(messages: Iterable[Message]) -> list[tuple[Role, list[Part]]]:
    """The conversation as alternating turns, the shape every dialect wants.

    A tool call always belongs to an assistant turn and a tool result to a user
    turn, whatever message carried it; consecutive same-role turns merge; in a
    user turn the tool results come first (Anthropic requires it, and OpenAI
    needs its ``tool`` messages right after the assistant's calls); empty text
    parts are dropped.
    """
    turns: list[tuple[Role, list[Part]]] = []
    for message in messages:
        for part in message.content:
            if isinstance(part, TextPart) and not part.text:
                continue
            role = _turn_role(part, message.role)
            if turns and turns[-1][0] == role:
                turns[-1][1].append(part)
            else:
                turns.append((role, [part]))
    for role, parts in turns:
        if role == "user":
            parts.sort(key=lambda p: not isinstance(p, ToolResultPart))  # stable: keeps order within each group
    return turns


def tool_names_by_id(messages: Iterable[Message]) -> dict[str, str]:
    """Each earlier tool call's name by its id, for dialects whose tool results need the name."""
    return {part.id: part.name for m in messages for part in m.content if isinstance(part, ToolCall)}
