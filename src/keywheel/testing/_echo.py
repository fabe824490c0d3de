"""The ``echo_key`` fault: an error whose message quotes part of the key that was sent.

Real providers do this ("Incorrect API key provided: sk-proj-…wxyz"), so the
gateway's redaction must catch pieces of a key, not just the whole key.
``part`` picks the piece: ``"ends"`` (the first 8 and last 6 characters, joined
by ``…``), ``"middle"`` (a 12-character chunk from the middle), ``"chopped"``
(the key minus its last character).  ``status`` 401 (default) reads as an
invalid key; 400 as a bad request, whose body a same-dialect gateway passes on.

``where="stream"`` plays it inside a stream instead: ``after`` content events,
then the error as an in-band event in the dialect's own form, written in two
halves split inside the quoted piece (so a reader sees it across two reads).
"""

from __future__ import annotations

import orjson

from keywheel.testing.behaviours import Behaviour
from keywheel.testing.dialects import Answer, Dialect, Json, sse

PARTS = ("ends", "middle", "chopped")


def piece(key: str, part: str) -> str:
    if part == "ends":
        return f"{key[:8]}…{key[-6:]}"
    if part == "middle":
        start = max(0, (len(key) - 12) // 2)
        return key[start : start + 12]
    if part == "chopped":
        return key[:-1]
    raise ValueError(f"echo_key part {part!r} is not one of {PARTS}")


def echo_answer(served_as: Dialect, behaviour: Behaviour, key: str) -> Answer:
    """The ``echo_key`` answer in the dialect of the route ("anthropic", "gemini", "openai", "openrouter")."""
    dialect = "openrouter" if getattr(served_as, "openrouter", False) else served_as.name
    status = int(behaviour.number("status"))
    quoted = piece(key, behaviour.text("part") or "ends")
    auth = status in (401, 403)
    if auth:
        message = f"Incorrect API key provided: {quoted}. You can find your API key in your account settings."
    else:
        message = f"Invalid request for credential '{quoted}': the field 'foo' is not supported."
    body: Json
    if dialect == "anthropic":
        kind = "authentication_error" if auth else "invalid_request_error"
        body = {"type": "error", "error": {"type": kind, "message": message}, "request_id": f"req_echo_{quoted}"}
    elif dialect == "gemini":
        if auth:  # Gemini answers a bad key with 400 INVALID_ARGUMENT, reason API_KEY_INVALID
            status, message = 400, f"API key not valid. Please pass a valid API key. (got {quoted})"
        reason = [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID"}] if auth else []
        body = {"error": {"code": status, "message": message, "status": "INVALID_ARGUMENT", "details": reason}}
    elif dialect == "openrouter":
        body = {"error": {"code": status, "message": message, "metadata": {"key": quoted}}}
    else:
        code = "invalid_api_key" if auth else None
        body = {"error": {"message": message, "type": "invalid_request_error", "param": None, "code": code}}
    return Answer(status, body, {"x-request-id": f"req-{quoted}"} if dialect != "gemini" else {})


def echo_event(served_as: Dialect, behaviour: Behaviour, key: str) -> tuple[bytes, bytes]:
    """The in-stream form: one SSE error event, in two halves split inside the quoted piece."""
    dialect = "openrouter" if getattr(served_as, "openrouter", False) else served_as.name
    quoted = piece(key, behaviour.text("part") or "ends")
    message = f"Incorrect API key provided: {quoted}"
    if dialect == "anthropic":
        event = sse({"type": "error", "error": {"type": "authentication_error", "message": message}}, "error")
    elif dialect == "gemini":
        event = sse({"error": {"code": 401, "message": message, "status": "UNAUTHENTICATED"}}, crlf=True)
    else:
        event = sse({"error": {"code": 401, "message": message}})
    at = event.index(orjson.dumps(quoted)[1:-1]) + len(quoted) // 2
    return event[:at], event[at:]
