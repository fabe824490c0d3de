"""One measurement of ``calls.py``, in a fresh process: Python calls, instructions or CPU per request.

Run by ``calls.py`` with the Python (and ``PYTHONPATH``) of the keywheel tree under test; imports
only the standard library, uvicorn, aiohttp, the bench's fixtures and that tree's keywheel. Prints
one ``BENCH_JSON {...}`` line.

- ``gateway``: the app (``keywheel``: ``Gateway(Wheel)`` as ``keywheel serve`` builds it, with its
  uvicorn protocol class and its INFO access log, to /dev/null; ``floor``: ``floor_app.py``) served
  by uvicorn's protocol on uvloop in this process's main thread, as ``uvicorn.Server`` serves it
  but without the server's 10 Hz housekeeping tick (which would add calls by wall time, not by
  request). The app is wrapped in a :class:`Window` that counts requests and marks the measured
  ones: after ``--warmup`` requests (every answer checked), ``--requests`` more, sent one after
  another from a client thread over one kept-alive connection (``http.client``) or, with
  ``--connections N``, by wrk at N connections.
- ``inprocess``: one library call on the default asyncio loop (as ``asyncio.run`` gives a library
  user): ``raw`` (one ``aiohttp.ClientSession`` POSTing the ready-made OpenAI body), ``transport``
  (keywheel's ``Transport.send``) or ``wheel`` (``Wheel.achat`` with 4 OpenRouter keys);
  ``--concurrency`` tasks share the calls.

Modes: ``count`` — a timed pass (the serving thread's ``time.thread_time``; process time for
``inprocess``) and a pass under ``cProfile`` (main thread only; every Python function entered — a
coroutine or generator resumed counts once per resume — and every built-in called);
``instructions`` — one pass between ``os.getppid()`` and ``os.getpgrp()``, run under ``valgrind
--tool=callgrind --zero-before=os_getppid --dump-before=os_getpgrp`` so that only it is counted;
``interleave`` — CPU only, two apps (``floor,keywheel``; ``raw,wheel``) in one process in
alternating blocks of ``--block`` requests, ``--rounds`` of each, medians and the median ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import http.client
import json
import logging
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from typing import Any

import fixtures
from targets import GATEWAY_KEY, Keywheel, upstream_keys

MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 2+2?"}]
KEYWHEEL_MODEL = f"openrouter/{fixtures.OPENAI_MODEL}"  # as the gateway section sends it
POST_LUA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "wrk", "post.lua")
TOP = 40  # functions per result, by calls per request


# --- counting ---------------------------------------------------------------------------------------


def _name(code: Any) -> str:
    if isinstance(code, str):
        return code  # a built-in: "<built-in method len>"
    path = code.co_filename
    for marker in ("/site-packages/", "/src/", "/bench/", "/lib/python3"):
        at = path.rfind(marker)
        if at >= 0:
            path = path[at + len(marker) :]
            break
    return f"{path}:{code.co_firstlineno}({code.co_name})"


def summarise(profiler: cProfile.Profile, requests: int) -> dict[str, Any]:
    """Calls per request from a profile of ``requests`` requests: totals and the top functions
    (``CALLS_PSTATS=file``: the profile itself is written there too, for ``pstats``)."""
    if os.environ.get("CALLS_PSTATS"):
        profiler.dump_stats(os.environ["CALLS_PSTATS"])
    python = builtin = 0
    per_function: dict[str, int] = {}
    for entry in profiler.getstats():
        name = _name(entry.code)
        if "_lsprof.Profiler" in name:
            continue  # the profiler's own enable/disable
        if isinstance(entry.code, str):
            builtin += entry.callcount
        else:
            python += entry.callcount
        per_function[name] = per_function.get(name, 0) + entry.callcount
    top = sorted(per_function.items(), key=lambda item: -item[1])
    return {
        "python_calls": python / requests,
        "builtin_calls": builtin / requests,
        "functions": {name: count / requests for name, count in top},
    }


# --- the gateway, served as uvicorn serves it ---------------------------------------------------------


def keywheel_app(upstream: str) -> tuple[Window, Any]:
    """``keywheel serve``'s app and protocol class, with its logging (INFO to /dev/null), configured as
    the gateway section's ``keywheel`` target (``Keywheel.ops_env``: no metrics, the text log)."""
    from keywheel.client import Wheel
    from keywheel.config import settings_from_env
    from keywheel.gateway.app import Gateway
    from keywheel.gateway.server import config as server_config
    from keywheel.logs import configure_logging

    sys.stderr = open(os.devnull, "w")  # noqa: SIM115 — the access log goes here, as to a file
    configure_logging(os.environ.get("CALLS_LOG_LEVEL", "INFO"))
    from inprocess_worker import wheel_env

    # The library rows' keys and stand-in, plus the gateway key; as the gateway section's `keywheel`
    # target: metrics off, text log.
    env = {**wheel_env(upstream), "KEYWHEEL_GATEWAY_KEYS": GATEWAY_KEY, **Keywheel.ops_env}
    wheel = Wheel(settings_from_env(env))
    window = Window(Gateway(wheel))
    return window, server_config(window, wheel.settings, workers=1, log_level="INFO")  # type: ignore[arg-type]


def floor_app(upstream: str) -> tuple[Window, Any]:
    import uvicorn
    from floor_app import make_app

    window = Window(make_app(f"{upstream}/api/v1", upstream_keys("openrouter"), GATEWAY_KEY))
    cfg = uvicorn.Config(window, loop="uvloop", http="httptools", lifespan="on", access_log=False, log_level="warning")
    return window, cfg


async def serve(cfg: Any, stack: AsyncExitStack) -> int:
    """Serve ``cfg``'s app on a free loopback port (as uvicorn.Server would, minus its tick)."""
    from email.utils import formatdate

    from uvicorn.server import ServerState

    if not cfg.loaded:
        cfg.load()
    lifespan = cfg.lifespan_class(cfg)
    await lifespan.startup()
    stack.push_async_callback(lifespan.shutdown)
    state = ServerState()
    state.default_headers = [(b"date", formatdate(usegmt=True).encode()), *cfg.encoded_headers]

    def protocol() -> asyncio.Protocol:
        return cfg.http_protocol_class(config=cfg, server_state=state, app_state=lifespan.state)  # type: ignore[no-any-return]

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = await asyncio.get_running_loop().create_server(protocol, sock=sock)
    stack.callback(server.close)
    port: int = sock.getsockname()[1]
    return port


class Window:
    """The app, counting its requests: ``marks[n]()`` runs as request ``n`` starts.

    A plain function returning the app's coroutine (one call per request, the same for every
    app measured), so the measured window is whole requests, whoever sends them."""

    def __init__(self, app: Any) -> None:
        self.app = app  # GatewayProtocol finds the Gateway through .app
        self.count = 0
        self.marks: dict[int, Callable[[], Any]] = {}

    def __call__(self, scope: Any, receive: Any, send: Any) -> Any:
        if scope["type"] == "http":
            self.count += 1
            mark = self.marks.pop(self.count, None)
            if mark is not None:
                mark()
        return self.app(scope, receive, send)


class Client:
    """Sequential requests over one kept-alive connection, from its own thread."""

    def __init__(self, port: int, app: str, stream: bool) -> None:
        model = KEYWHEEL_MODEL if app == "keywheel" else fixtures.OPENAI_MODEL
        self.body = fixtures.openai_body(stream, model)
        self.headers = {"Authorization": f"Bearer {GATEWAY_KEY}", "Content-Type": "application/json"}
        self.stream = stream
        self.port = port
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

    def run(self, count: int) -> None:
        for _ in range(count):
            self.conn.request("POST", "/v1/chat/completions", self.body, self.headers)
            resp = self.conn.getresponse()
            data = resp.read()
            ok = fixtures.DIALECTS["openai"].ok(data, self.stream)
            if resp.status != 200 or not ok:
                raise RuntimeError(f"wrong answer: HTTP {resp.status} {data[:300]!r}")

    def until(self, done: threading.Event) -> None:
        while not done.is_set():
            self.run(1)

    def wrk(self, connections: int, done: threading.Event) -> None:
        """wrk at ``connections`` connections until ``done`` (wrk's own answers are not checked: run() was)."""
        with tempfile.NamedTemporaryFile(prefix="calls-body-", suffix=".json") as body:
            body.write(self.body)
            body.flush()
            headers = [a for k, v in self.headers.items() for a in ("-H", f"{k}: {v}")]
            cmd = ["wrk", "-t2", f"-c{connections}", "-d3600s", "--timeout", "30s", "-s", str(POST_LUA), *headers]
            cmd.append(f"http://127.0.0.1:{self.port}/v1/chat/completions")
            env = {**os.environ, "BENCH_BODY": body.name}
            proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                done.wait()
            finally:
                proc.terminate()
                proc.wait()


def _sync_on_loop(loop: asyncio.AbstractEventLoop, fn: Callable[[], Any]) -> Any:
    done = threading.Event()
    out: list[Any] = []

    def call() -> None:
        out.append(fn())
        done.set()

    loop.call_soon_threadsafe(call)
    done.wait()
    return out[0]


async def gateway(args: argparse.Namespace) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    apps = {"keywheel": keywheel_app, "floor": floor_app}
    async with AsyncExitStack() as stack:
        names = args.app.split(",")
        clients, windows = {}, {}
        for name in names:
            window, cfg = apps[name](args.upstream)
            cfg.interface = "asgi3"  # the Window is a plain callable returning the app's coroutine
            port = await serve(cfg, stack)
            clients[name], windows[name] = Client(port, name, args.scenario == "stream"), window
        if args.mode == "interleave":
            return await asyncio.to_thread(_interleave_gateway, loop, clients, args)
        return await asyncio.to_thread(_count_gateway, clients[names[0]], windows[names[0]], args)


def _count_gateway(client: Client, window: Window, args: argparse.Namespace) -> dict[str, Any]:
    """The window's requests: counted (instructions), then timed and profiled (count)."""
    client.run(args.warmup)  # every answer checked, connection pools and lazy imports filled
    passes: list[tuple[Callable[[], Any], Callable[[], Any]]]
    if args.mode == "instructions":
        # callgrind --zero-before=os_getppid --dump-before=os_getpgrp: counting runs between the two.
        passes = [(os.getppid, os.getpgrp)]
    else:
        profiler = cProfile.Profile()
        cpu: list[float] = []
        passes = [
            (lambda: cpu.append(time.thread_time()), lambda: cpu.append(time.thread_time())),
            (profiler.enable, profiler.disable),
        ]
    for start, stop in passes:
        done = threading.Event()
        first = window.count + 1 + (args.warmup if args.connections > 1 else 0)
        window.marks = {first: start, first + args.requests: _then(stop, done.set)}
        if args.connections > 1:
            client.wrk(args.connections, done)
        else:
            client.until(done)
    if args.mode == "instructions":
        return {"requests": args.requests}
    return {"cpu_us": (cpu[1] - cpu[0]) * 1e6 / args.requests, **summarise(profiler, args.requests)}


def _then(first: Callable[[], Any], second: Callable[[], Any]) -> Callable[[], None]:
    def both() -> None:
        first()
        second()

    return both


def _interleave_gateway(
    loop: asyncio.AbstractEventLoop, clients: dict[str, Client], args: argparse.Namespace
) -> dict[str, Any]:
    for client in clients.values():
        client.run(args.warmup)
    blocks: dict[str, list[float]] = {name: [] for name in clients}
    for _ in range(args.rounds):
        for name, client in clients.items():
            cpu = _sync_on_loop(loop, time.thread_time)
            client.run(args.block)
            blocks[name].append((_sync_on_loop(loop, time.thread_time) - cpu) * 1e6 / args.block)
    return interleave_result(blocks)


def interleave_result(blocks: dict[str, list[float]]) -> dict[str, Any]:
    names = list(blocks)
    out: dict[str, Any] = {"cpu_us": {name: statistics.median(v) for name, v in blocks.items()}}
    if len(names) == 2:
        a, b = names
        ratios = [y / x for x, y in zip(blocks[a], blocks[b], strict=True)]
        out["ratio"] = statistics.median(ratios)
        out["ratio_range"] = [min(ratios), max(ratios)]
    return out


# --- the library call ---------------------------------------------------------------------------------

Call = Callable[[], Awaitable[None]]


async def raw_client(upstream: str, stack: AsyncExitStack) -> Call:
    import aiohttp

    session = await stack.enter_async_context(aiohttp.ClientSession())
    url = f"{upstream}/api/v1/chat/completions"
    body = fixtures.openai_body(False)
    headers = {"Authorization": f"Bearer {upstream_keys('openrouter')[0]}", "Content-Type": "application/json"}

    async def call() -> None:
        async with session.post(url, data=body, headers=headers) as resp:
            data = await resp.read()
            if resp.status != 200:
                raise RuntimeError(f"HTTP {resp.status}: {data[:200]!r}")

    return call


async def wheel_client(upstream: str, stack: AsyncExitStack) -> Call:
    from inprocess_worker import wheel_env

    from keywheel import Wheel
    from keywheel.config import settings_from_env

    wheel = await stack.enter_async_context(Wheel(settings_from_env(wheel_env(upstream))))

    async def call() -> None:
        response = await wheel.achat(MESSAGES, max_tokens=64)
        if response.text != fixtures.TEXT:
            raise RuntimeError(f"unexpected text {response.text!r}")

    return call


async def transport_client(upstream: str, stack: AsyncExitStack) -> Call:
    """keywheel's ``Transport.send`` with a ready-made request: its HTTP seam alone (a diagnostic)."""
    from keywheel.providers.base import HttpRequest
    from keywheel.transport import Transport

    transport = Transport()
    stack.push_async_callback(transport.aclose)
    headers = {"authorization": f"Bearer {upstream_keys('openrouter')[0]}", "content-type": "application/json"}
    request = HttpRequest("POST", f"{upstream}/api/v1/chat/completions", headers, fixtures.openai_body(False))

    async def call() -> None:
        resp = await transport.send(request, 120.0)
        if resp.status != 200:
            raise RuntimeError(f"HTTP {resp.status}: {resp.body[:200]!r}")

    return call


CLIENTS = {"raw": raw_client, "transport": transport_client, "wheel": wheel_client}


async def inprocess(args: argparse.Namespace) -> dict[str, Any]:
    async with AsyncExitStack() as stack:
        calls = {name: await CLIENTS[name](args.upstream, stack) for name in args.app.split(",")}
        for call in calls.values():
            for _ in range(args.warmup):
                await call()
        if args.mode == "interleave":
            blocks: dict[str, list[float]] = {name: [] for name in calls}
            for _ in range(args.rounds):
                for name, call in calls.items():
                    cpu = time.process_time()
                    for _ in range(args.block):
                        await call()
                    blocks[name].append((time.process_time() - cpu) * 1e6 / args.block)
            return interleave_result(blocks)
        (call,) = calls.values()
        if args.mode == "instructions":
            await fixtures.run_calls(call, args.warmup, args.concurrency)
            os.getppid()  # callgrind --zero-before=os_getppid: counting starts here
            await fixtures.run_calls(call, args.requests, args.concurrency)
            os.getpgrp()  # callgrind --dump-before=os_getpgrp: and ends here
            return {"requests": args.requests}
        cpu = time.process_time()
        for _ in range(args.requests):
            await call()
        cpu = time.process_time() - cpu
        profiler = cProfile.Profile()
        profiler.enable()
        for _ in range(args.requests):
            await call()
        profiler.disable()
        return {"cpu_us": cpu * 1e6 / args.requests, **summarise(profiler, args.requests)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("kind", choices=["gateway", "inprocess"])
    parser.add_argument(
        "--app",
        required=True,
        help="keywheel|floor (gateway), raw|wheel (inprocess); two, comma-separated, to interleave",
    )
    parser.add_argument("--scenario", default="chat", choices=["chat", "stream"])
    parser.add_argument("--mode", default="count", choices=["count", "interleave", "instructions"])
    parser.add_argument("--upstream", required=True)
    parser.add_argument("--warmup", type=int, default=300)
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=1, help="inprocess: tasks sharing the calls")
    parser.add_argument("--connections", type=int, default=1, help="gateway: >1 loads it with wrk at that many")
    parser.add_argument("--block", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    logging.getLogger("asyncio").setLevel(logging.ERROR)
    if args.kind == "gateway":
        import uvloop

        result = uvloop.run(gateway(args))
    else:
        result = asyncio.run(inprocess(args))
    print("BENCH_JSON " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
