"""The transport sends a request's own headers and none of aiohttp's User-Agent."""

from __future__ import annotations

from aiohttp import web

from keywheel.providers.base import HttpRequest
from keywheel.transport import Transport


async def _echo_agent(request: web.Request) -> web.Response:
    return web.Response(text=request.headers.get("User-Agent", "<none>"))


async def _serve() -> tuple[web.AppRunner, str]:
    app = web.Application()
    app.router.add_post("/echo", _echo_agent)
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
