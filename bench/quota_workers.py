"""The quota section's gateway throughput: ``keywheel serve`` in memory mode and on Redis with 1 and 2 workers.

``redis_cpu.py``'s loader (httpx) and fake upstream share the harness's process, and on this
machine they, not the gateway, set the pace (~250 req/s whatever the gateway does), so its req/s
cannot show what a second worker adds.  Here the gateway section's tools do it: the nginx
stand-in as the upstream and wrk at 16 connections (``BENCH_WARMUP`` s unmeasured, then
``BENCH_SECONDS``), the gateway target's ``keywheel serve`` (4 OpenRouter keys, metrics off) with
``KEYWHEEL_STATE=memory``, or ``redis://`` and ``--workers 1`` / ``--workers 2``, interleaved per
round; CPU per request of the gateway's process tree and req/s.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import loadgen
import procs
import redis_cpu
import stream_client
from targets import SCENARIOS, Keywheel

MODES = [("memory", False, 1), ("redis", True, 1), ("redis2", True, 2)]  # (name, on Redis, workers)


class StatefulKeywheel(Keywheel):
    """The gateway target with another store and number of workers."""

    def __init__(self, state: str, workers: int) -> None:
        self.state, self.workers = state, workers
        self.name = f"keywheel {state.split(':')[0]} ×{workers}"

    def command(self, port: int, upstream: str, workdir: Path) -> tuple[list[str], dict[str, str]]:
        cmd, env = super().command(port, upstream, workdir)
        env["KEYWHEEL_STATE"] = self.state
        assert cmd[-2] == "--workers"
        return [*cmd[:-1], str(self.workers)], env


def measure(target: StatefulKeywheel, upstream: str, log: Path, seconds: int, warmup: int) -> tuple[float, float]:
    """(CPU ms per request of the gateway tree, req/s) under wrk @16."""
    port = procs.free_port()
    cmd, env = target.command(port, upstream, log.parent)
    req = target.request(f"http://127.0.0.1:{port}", SCENARIOS["chat"])
    assert req is not None
    proc = procs.spawn(cmd, env, log)
    try:
        stream_client.first_good_answer(req, lambda: proc.poll() is None, target.start_timeout)
        if warmup:
            loadgen.wrk(req, 16, warmup, proc.pid)
        run = loadgen.wrk(req, 16, seconds, proc.pid)
    finally:
        procs.stop(proc)
    if run.errors or run.cpu_per_request_ms is None:
        raise RuntimeError(
            f"{target.name}: wrk counted {run.errors} errors, {run.requests} requests\n{procs.tail(log)}"
        )
    return run.cpu_per_request_ms, run.rps


def run(
    upstream: str, workdir: Path, rounds: int, seconds: int, warmup: int, say: Callable[[str], None]
) -> list[dict[str, float]]:
    """One dict per round: ``<mode>_ms`` and ``<mode>_rps`` for memory, redis (1 worker), redis2."""
    redis_dir = workdir / "redis-wrk"
    redis_dir.mkdir(parents=True, exist_ok=True)
    redis, url = redis_cpu.start_redis(redis_dir)
    out = []
    try:
        for r in range(1, rounds + 1):
            row: dict[str, float] = {}
            for name, on_redis, workers in MODES:
                target = StatefulKeywheel(url if on_redis else "memory", workers)
                ms, rps = measure(target, upstream, workdir / f"wrk-{name}-round{r}.log", seconds, warmup)
                row[f"{name}_ms"], row[f"{name}_rps"] = ms, rps
            say(
                f"  wrk round {r}: memory {row['memory_ms']:.3f} ms/req {row['memory_rps']:,.0f} req/s | redis "
                f"{row['redis_ms']:.3f} ms/req {row['redis_rps']:,.0f} req/s | redis 2 workers "
                f"{row['redis2_ms']:.3f} ms/req {row['redis2_rps']:,.0f} req/s"
            )
            out.append(row)
    except subprocess.TimeoutExpired as exc:
        raise RuntimeError(str(exc)) from exc
    finally:
        procs.stop(redis)
    return out
