"""Redis-mode CPU per request next to memory mode: ``keywheel serve`` over the fake upstream.

A micro-benchmark (the ``quota`` section of ``bench/harness.py`` reuses it): for each mode, a fresh ``keywheel serve``
(4 Gemini keys, the fake upstream of :mod:`keywheel.testing` in this process), a warm-up, then
``--requests`` OpenAI-dialect chat calls at ``--concurrency``; the figure is the CPU time (user +
system) of the ``keywheel serve`` process tree per request.  Modes run interleaved, ``--rounds``
times, since the machine's speed drifts; a ratio is taken within a round.  In Redis mode the
redis-server's own CPU is reported apart (it is another process, possibly another machine).

    .venv/bin/python bench/redis_cpu.py [--requests 3000] [--concurrency 16] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import httpx
import procs

from keywheel.testing import FakeUpstream

GATEWAY_KEY = "bench-gateway-key-1"
BODY = {"model": "gemini-2.5-flash", "messages": [{"role": "user", "content": "hi"}]}


def start_redis(workdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = procs.free_port()
    cmd = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    proc = procs.spawn([*cmd, "--dir", str(workdir)], None, workdir / "redis.log")
    for _ in range(200):
        if "Ready to accept" in (workdir / "redis.log").read_text(errors="replace"):
            return proc, f"redis://127.0.0.1:{port}/0"
        time.sleep(0.02)
    raise RuntimeError(procs.tail(workdir / "redis.log"))


def start_gateway(
    fake: FakeUpstream, state: str, workers: int, log: Path, extra: dict[str, str] | None = None
) -> tuple[subprocess.Popen[bytes], str]:
    """``keywheel serve`` with 4 Gemini keys on the fake (``extra``: more variables), once it answers."""
    port = procs.free_port()
    env = {f"GEMINI_API_KEY_{i}": f"test-gemini-key-{i}" for i in range(1, 5)}
    env |= {"GEMINI_BASE_URL": fake.gemini_base_url, "KEYWHEEL_STATE": state, "KEYWHEEL_GATEWAY_KEYS": GATEWAY_KEY}
    env |= extra or {}
    cmd = [sys.executable, "-m", "keywheel.cli", "--env-file", os.devnull, "--log-level", "WARNING", "serve"]
    proc = procs.spawn([*cmd, "--port", str(port), "--workers", str(workers)], procs.child_env(env), log)
    url = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            with urllib.request.urlopen(url + "/health", timeout=1):
                return proc, url
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(procs.tail(log))


async def drive(url: str, requests: int, concurrency: int) -> float:
    """Send the requests; the wall seconds they took (every answer must be a 200)."""
    sem = asyncio.Semaphore(concurrency)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=30, limits=limits) as client:

        async def one() -> None:
            async with sem:
                resp = await client.post(
                    url + "/v1/chat/completions", json=BODY, headers={"authorization": f"Bearer {GATEWAY_KEY}"}
                )
                assert resp.status_code == 200, resp.text

        started = time.perf_counter()
        await asyncio.gather(*(one() for _ in range(requests)))
        return time.perf_counter() - started


def measure(fake: FakeUpstream, state: str, workers: int, args: argparse.Namespace, log: Path) -> tuple[float, float]:
    """(CPU ms per request of the gateway tree, requests per second)."""
    proc, url = start_gateway(fake, state, workers, log)
    try:
        asyncio.run(drive(url, max(args.requests // 10, 50), args.concurrency))  # warm-up
        before = procs.cpu_seconds(proc.pid)
        wall = asyncio.run(drive(url, args.requests, args.concurrency))
        cpu = procs.cpu_seconds(proc.pid) - before
    finally:
        procs.stop(proc)
    return cpu * 1000 / args.requests, args.requests / wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="kw-redis-bench-"))
    redis, redis_url = start_redis(workdir)
    try:
        with FakeUpstream() as fake:
            for r in range(1, args.rounds + 1):
                mem, mem_rps = measure(fake, "memory", 1, args, workdir / "memory.log")
                redis_before = procs.cpu_seconds(redis.pid)
                red, red_rps = measure(fake, redis_url, 1, args, workdir / "redis-mode.log")
                server = (procs.cpu_seconds(redis.pid) - redis_before) * 1000 / args.requests
                two, two_rps = measure(fake, redis_url, 2, args, workdir / "redis-2.log")
                fake.reset()
                print(
                    f"round {r}: memory {mem:.3f} ms/req ({mem_rps:.0f} req/s) | redis {red:.3f} ms/req "
                    f"({red_rps:.0f} req/s), ratio {red / mem:.2f}x, redis-server {server:.3f} ms/req | "
                    f"redis 2 workers {two:.3f} ms/req ({two_rps:.0f} req/s)"
                )
    finally:
        procs.stop(redis)


if __name__ == "__main__":
    main()
