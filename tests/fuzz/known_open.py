"""Defects the fuzzer meets whose fixes belong to other work in progress (issue 7).

Each entry names the defect, recognises the examples it explains (so the fuzz properties record
them instead of failing), and carries one repro that the suite runs as a strict xfail.  When the
fix is merged the repro passes, the strict xfail fails, and the entry must be deleted.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from tests.fuzz.raw_http import RawCase
from tests.fuzz.strategies import Case
from tests.gateway.conftest import GATEWAY_KEY


@dataclass(frozen=True)
class KnownOpen:
    name: str
    why: str
    matches: Callable[[Case | RawCase, list[str]], bool]
    case: Case | RawCase  # the repro, run as a strict xfail


def _only_upstream_path(_case: Case | RawCase, problems: list[str]) -> bool:
    return all(p.startswith("upstream request to") for p in problems)


def _unanswered_announced_body(_case: Case | RawCase, problems: list[str]) -> bool:
    return problems == [p for p in problems if p.endswith("(a body was announced and no byte of it sent)")]


def _websocket_handshake_500(case: Case | RawCase, problems: list[str]) -> bool:
    return isinstance(case, RawCase) and "websocket-handshake" in case.note and "status 500" in problems


_STEER = b'{"model":"gemini/x/../../v1beta/models/EVIL","messages":[{"role":"user","content":"hello"}]}'

#: Defects once listed here, now fixed: their repros run as ordinary tests and must pass.
FIXED: list[KnownOpen] = [
    KnownOpen(
        "model-path-steering",
        "issue 7 defect 1: a model name with '/', '..' or escapes steers the keyed upstream URL path",
        _only_upstream_path,
        Case(
            "openai",
            "/v1/chat/completions",
            _STEER,
            [("authorization", f"Bearer {GATEWAY_KEY}"), ("x-keywheel-fallback", "off")],
            "gemini/x/../../v1beta/models/EVIL",
        ),
    ),
    KnownOpen(
        "body-timeout-first-read",
        "KEYWHEEL_BODY_TIMEOUT does not cover the first read: a head announcing a body, then nothing, holds the"
        " request (and its connection) forever instead of getting a 408 (gateway/app.py _body)",
        _unanswered_announced_body,
        RawCase(
            b"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\n"
            b"authorization: Bearer " + GATEWAY_KEY.encode() + b"\r\ncontent-length: 61\r\n\r\n",
            ["long-cl", "no body byte"],
        ),
    ),
    KnownOpen(
        "websocket-handshake-500",
        "a valid WebSocket handshake (uvicorn has the websockets package) reaches the app, which ignores the"
        " 'websocket' scope: uvicorn answers a text/plain 500 and logs 'ASGI callable returned without completing"
        " handshake' (gateway/app.py __call__, or run uvicorn with ws='none' in cli.py)",
        _websocket_handshake_500,
        RawCase(
            b"GET /v1/models HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: upgrade\r\nupgrade: websocket\r\n"
            b"sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\nsec-websocket-version: 13\r\n"
            b"authorization: Bearer " + GATEWAY_KEY.encode() + b"\r\n\r\n",
            ["upgrade", "websocket-handshake"],
        ),
    ),
]


#: Defects met by the fuzzer whose fixes are still to come (none today).
KNOWN_OPEN: list[KnownOpen] = []


def known_open(case: Case | RawCase, problems: list[str]) -> str | None:
    """The name of the known-open defect that explains ``problems``, if one does."""
    for entry in KNOWN_OPEN:
        if entry.matches(case, problems):
            return entry.name
    return None
