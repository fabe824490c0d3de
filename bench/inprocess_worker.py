"""One in-process client's calls, timed: the measuring code every client of ``inprocess.py`` shares.

Run by ``inprocess.py`` as a fresh process per client and round, with ``bench/.venv-litellm``'s
Python for ``litellm`` (LiteLLM is not in the dev venv) and the dev venv's for the others. It
imports only the standard library, aiohttp and the client under test, makes the calls on one
asyncio event loop (the default one, as a library user's ``asyncio.run`` gives), and prints one
``BENCH_JSON {...}`` line:

- ``seq``: ``--seq-warmup`` unmeasured calls, then ``--seq-calls`` calls one after another;
- ``conc``: ``--conc-warmup`` unmeasured calls, then ``--conc-calls`` calls shared by
  ``--concurrency`` tasks.

CPU is ``time.process_time()`` across the measured calls: the whole process's user+system
time, so threads a library starts for itself (LiteLLM's logging workers, say) count too. Every
answer is checked; a wrong one is counted in ``failures`` (and the first is kept).

    .venv/bin/python bench/inprocess_worker.py --client wheel --upstream http://127.0.0.1:8081
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from typing import Any

import fixtures
from targets import litellm_config, upstream_keys

MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 2+2?"}]
MAX_TOKENS = 64
Call = Callable[[], Awaitable[str | None]]  # one call; returns what was wrong with the answer, or None


async def raw_client(upstream: str, stack: AsyncExitStack) -> Call:
    """The raw HTTP client keywheel wraps: one aiohttp session, the OpenAI body, read the answer."""
    import aiohttp

    session = await stack.enter_async_context(aiohttp.ClientSession())
    url = f"{upstream}/api/v1/chat/completions"
    body = fixtures.openai_body(False)
    headers = {"Authorization": f"Bearer {upstream_keys('openrouter')[0]}", "Content-Type": "application/json"}

    async def call() -> str | None:
        async with session.post(url, data=body, headers=headers) as resp:
            data = await resp.read()
            return None if resp.status == 200 else f"HTTP {resp.status}: {data[:200]!r}"

    return call


async def transport_client(upstream: str, stack: AsyncExitStack) -> Call:
    """keywheel's own ``Transport.send`` with a ready-made request: what keywheel's HTTP seam alone costs."""
    from keywheel.providers.base import HttpRequest
    from keywheel.transport import Transport

    transport = Transport()
    stack.push_async_callback(transport.aclose)
    key = upstream_keys("openrouter")[0]
    headers = {"authorization": f"Bearer {key}", "content-type": "application/json"}
    request = HttpRequest("POST", f"{upstream}/api/v1/chat/completions", headers, fixtures.openai_body(False))

    async def call() -> str | None:
        resp = await transport.send(request, 120.0)
        return None if resp.status == 200 else f"HTTP {resp.status}: {resp.body[:200]!r}"

    return call


def wheel_env(upstream: str) -> dict[str, str]:
    env = {
        "AI_PROVIDER": "openrouter",
        "OPENROUTER_BASE_URL": f"{upstream}/api/v1",
        "OPENROUTER_MODEL": fixtures.OPENAI_MODEL,
        "ENABLE_ANTHROPIC": "false",
        "ENABLE_GEMINI": "false",
    }
    for i, key in enumerate(upstream_keys("openrouter"), start=1):
        env[f"OPENROUTER_API_KEY_{i}"] = key
    return env


async def wheel_client(upstream: str, stack: AsyncExitStack) -> Call:
    """``Wheel.achat`` with 4 OpenRouter keys pointed at the stand-in."""
    from keywheel import Wheel
    from keywheel.config import settings_from_env

    wheel = await stack.enter_async_context(Wheel(settings_from_env(wheel_env(upstream))))

    async def call() -> str | None:
        response = await wheel.achat(MESSAGES, max_tokens=MAX_TOKENS)
        return None if response.text == fixtures.TEXT else f"unexpected text {response.text!r}"

    return call


async def litellm_client(upstream: str, _stack: AsyncExitStack) -> Call:
    """``litellm.Router.acompletion``: the proxy's config (4 deployments of one model), logging off."""
    import litellm

    litellm.suppress_debug_info = True
    litellm.turn_off_message_logging = True
    litellm.callbacks, litellm.success_callback, litellm.failure_callback = [], [], []
    config = litellm_config(f"{upstream}/api/v1")
    router = litellm.Router(model_list=config["model_list"], **config["router_settings"], timeout=30)

    async def call() -> str | None:
        response = await router.acompletion(model=fixtures.OPENAI_MODEL, messages=MESSAGES, max_tokens=MAX_TOKENS)
        text = response.choices[0].message.content
        return None if text == fixtures.TEXT else f"unexpected text {text!r}"

    return call


CLIENTS: dict[str, Callable[[str, AsyncExitStack], Awaitable[Call]]] = {
    "raw": raw_client,
    "transport": transport_client,
    "wheel": wheel_client,
    "litellm": litellm_client,
}


class Checked:
    """Runs calls, counting wrong answers and exceptions instead of stopping at the first."""

    def __init__(self, call: Call) -> None:
        self.call = call
        self.failures = 0
        self.first_failure: str | None = None

    async def __call__(self) -> None:
        try:
            wrong = await self.call()
        except Exception as exc:  # any failure of the client under test is a finding, not a crash
            wrong = f"{type(exc).__name__}: {exc}"[:300]
        if wrong is not None:
            self.failures += 1
            self.first_failure = self.first_failure or wrong


async def timed(call: Checked, warmup: int, count: int, concurrency: int) -> dict[str, float]:
    await fixtures.run_calls(call, warmup, concurrency)
    cpu, wall = time.process_time(), time.perf_counter()
    await fixtures.run_calls(call, count, concurrency)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    return {
        "calls": count,
        "concurrency": concurrency,
        "cpu_s": cpu,
        "wall_s": wall,
        "cpu_us": cpu * 1e6 / count,
        "wall_us": wall * 1e6 / count,
        "calls_per_s": count / wall if wall else 0.0,
    }


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    async with AsyncExitStack() as stack:
        started = time.perf_counter()
        call = Checked(await CLIENTS[args.client](args.upstream, stack))
        setup_s = time.perf_counter() - started
        seq = await timed(call, args.seq_warmup, args.seq_calls, 1)
        conc = await timed(call, args.conc_warmup, args.conc_calls, args.concurrency)
    return {
        "client": args.client,
        "setup_s": setup_s,
        "seq": seq,
        "conc": conc,
        "failures": call.failures,
        "first_failure": call.first_failure,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--client", choices=sorted(CLIENTS), required=True)
    parser.add_argument("--upstream", required=True, help="the stand-in's base URL, e.g. http://127.0.0.1:8081")
    parser.add_argument("--seq-warmup", type=int, default=200)
    parser.add_argument("--seq-calls", type=int, default=2000)
    parser.add_argument("--conc-warmup", type=int, default=400)
    parser.add_argument("--conc-calls", type=int, default=4000)
    parser.add_argument("--concurrency", type=int, default=16)
    result = asyncio.run(measure(parser.parse_args()))
    print("BENCH_JSON " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
