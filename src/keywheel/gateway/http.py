"""The gateway's HTTP plumbing: ASGI types, errors answered before any upstream work,
the request body with its bounds, credentials as presented, and plain JSON answers."""

from __future__ import annotations

import asyncio
import ipaddress
import urllib.parse
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

JSON_HEADERS = [(b"content-type", b"application/json")]


class HttpError(Exception):
    """A gateway-level failure answered before any upstream work."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        self.status, self.message, self.headers = status, message, headers or {}
        super().__init__(message)


def allow(method: str, *allowed: str) -> None:
    if method not in allowed:
        raise HttpError(405, f"method {method} not allowed here", {"allow": ", ".join(allowed)})


async def read_body(headers: dict[bytes, bytes], receive: Receive, max_body: int, body_timeout: float) -> bytes:
    """The request body, bounded in size (413) and in time (408)."""
    length = headers.get(b"content-length")
    if length is not None and length.isdigit() and int(length) > max_body:
        raise HttpError(413, f"request body over {max_body} bytes")
    # The first read is bounded too: a head that announces a body and sends none must not
    # hold its connection for good.
    try:
        async with asyncio.timeout(body_timeout):
            message = await receive()
            body: bytes = message.get("body", b"")
            if not message.get("more_body"):
                return body
            parts = [body]
            size = len(body)
            while message.get("more_body"):
                message = await receive()
                if message["type"] == "http.disconnect":
                    raise HttpError(400, "client went away while sending the body")
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > max_body:
                    raise HttpError(413, f"request body over {max_body} bytes")
                parts.append(chunk)
    except TimeoutError:
        raise HttpError(408, f"request body not received within {body_timeout:g} s") from None
    return b"".join(parts)


def presented_key(scope: Scope, headers: dict[bytes, bytes], *, query: bool) -> bytes | None:
    auth = headers.get(b"authorization")
    if auth is not None and auth[:7].lower() == b"bearer ":
        return auth[7:].strip()
    for name in (b"x-api-key", b"x-goog-api-key"):
        value = headers.get(name)
        if value is not None:
            return value.strip()
    if not query:
        return None
    query_string: bytes = scope.get("query_string", b"")
    for pair in query_string.split(b"&"):
        if pair.startswith(b"key="):
            return urllib.parse.unquote_to_bytes(pair[4:])
    return None


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def header_list(headers: dict[str, str]) -> list[tuple[bytes, bytes]]:
    return [(k.encode(), v.encode("latin-1", "replace")) for k, v in headers.items()]


async def respond(send: Send, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
    head = JSON_HEADERS + header_list(headers) if headers else list(JSON_HEADERS)
    head.append((b"content-length", b"%d" % len(body)))
    await send({"type": "http.response.start", "status": status, "headers": head})
    await send({"type": "http.response.body", "body": body, "more_body": False})
