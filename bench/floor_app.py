"""The floor: the least a Python gateway can cost here, to measure keywheel against.

A bare ASGI app under uvicorn (uvloop, httptools, one process) that checks the gateway key,
forwards the body unchanged to the upstream with the upstream key swapped in (round-robin
over the keys), and passes the answer back: whole, or chunk by chunk for event streams.
No routing, no parsing, no logging. See ../shared/PERF-NOTES.md for what it cost before.
"""

from __future__ import annotations

import argparse
import itertools
from typing import Any

import aiohttp
import uvicorn


def make_app(upstream: str, keys: list[str], gateway_key: str) -> Any:
    expected_auth = f"Bearer {gateway_key}".encode()
    upstream_headers = itertools.cycle(
        [{"Authorization": f"Bearer {key}", "Content-Type": "application/json"} for key in keys]
    )
    session: list[aiohttp.ClientSession] = []  # made at lifespan start: it must live on uvicorn's loop

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await lifespan(receive, send)
            return
        if dict(scope["headers"]).get(b"authorization") != expected_auth:
            await send({"type": "http.response.start", "status": 401, "headers": []})
            await send({"type": "http.response.body", "body": b'{"error":"bad gateway key"}'})
            return
        body = b""
        more = True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        url = upstream + scope["path"].removeprefix("/v1")
        async with session[0].post(url, data=body, headers=next(upstream_headers)) as resp:
            content_type = resp.headers.get("Content-Type", "application/json")
            headers = [(b"content-type", content_type.encode())]
            if not content_type.startswith("text/event-stream"):
                data = await resp.read()
                headers.append((b"content-length", str(len(data)).encode()))
                await send({"type": "http.response.start", "status": resp.status, "headers": headers})
                await send({"type": "http.response.body", "body": data})
                return
            await send({"type": "http.response.start", "status": resp.status, "headers": headers})
            async for chunk in resp.content.iter_any():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})

    async def lifespan(receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                session.append(aiohttp.ClientSession())
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await session[0].close()
                await send({"type": "lifespan.shutdown.complete"})
                return

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description="Minimal pass-through gateway (the benchmark's floor).")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True, help="base URL, e.g. http://127.0.0.1:8081/api/v1")
    parser.add_argument("--key", action="append", required=True, help="upstream key (repeatable)")
    parser.add_argument("--gateway-key", required=True)
    args = parser.parse_args()
    app = make_app(args.upstream.rstrip("/"), args.key, args.gateway_key)
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=args.port,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        access_log=False,
        log_level="warning",
    )


if __name__ == "__main__":
    main()
