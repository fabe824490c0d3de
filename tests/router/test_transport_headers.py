"""The transport sends a request's own headers and aiohttp's defaults, but not aiohttp's User-Agent."""

from __future__ import annotations

import aiohttp
import orjson
from aiohttp import web

from keywheel.providers.base import HttpRequest
from keywheel.transport import Transport


async def _echo_agent(request: web.Request) -> web.Response:
    return web.Response(text=request.headers.get("User-Agent", "<none>"))


async def _echo_headers(request: web.Request) -> web.Response:
    return web.json_response({name.lower(): value for name, value in request.headers.items()})


async def _serve() -> tuple[web.AppRunner, str]:
    app = web.Application()
    app.router.add_post("/echo", _echo_agent)
    app.router.add_post("/headers", _echo_headers)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    return runner, f"http://127.0.0.1:{port}/echo"


async def test_no_user_agent_unless_the_request_brings_its_own() -> None:
    runner, url = await _serve()
    transport = Transport()
    try:
        plain = await transport.send(HttpRequest("POST", url, {"content-type": "application/json"}, b"{}"), 10.0)
        assert plain.body == b"<none>"
        own = await transport.send(HttpRequest("POST", url, {"User-Agent": "caller/1.0"}, b"{}"), 10.0)
        assert own.body == b"caller/1.0"
    finally:
        await transport.aclose()
        await runner.cleanup()


async def test_aiohttps_other_default_headers_still_go_out_and_a_requests_own_win() -> None:
    """The request class drops only the User-Agent line of aiohttp's defaults."""
    runner, url = await _serve()
    transport = Transport()
    defaults = dict(aiohttp.ClientRequest.DEFAULT_HEADERS)  # what aiohttp itself adds
    try:
        plain = await transport.send(HttpRequest("POST", url.replace("/echo", "/headers"), {"x-a": "1"}, b"{}"), 10.0)
        sent = orjson.loads(plain.body)
        assert defaults and all(sent[name.lower()] == value for name, value in defaults.items())
        assert sent["x-a"] == "1" and "user-agent" not in sent
        own = await transport.send(
            HttpRequest("POST", url.replace("/echo", "/headers"), {"Accept": "text/plain"}, b"{}"), 10.0
        )
        assert orjson.loads(own.body)["accept"] == "text/plain"
    finally:
        await transport.aclose()
        await runner.cleanup()
