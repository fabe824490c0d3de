"""Quota windows under twice the quota: keywheel (1 replica; 3 replicas on Redis) and LiteLLM's Router.

The harness's ``quota`` section, only when asked for (``--sections quota``).  A fake upstream
(:class:`keywheel.testing.FakeUpstream` with ``window=(limit, seconds)``, in this process) holds
4 keys and refuses with 429 anything over ``limit`` requests per key in any ``seconds`` (sliding).
Each target gets a fresh fake (empty windows) and, where it uses Redis, a fresh ``redis-server``
(free loopback port, no persistence), and is offered ``load × the aggregate quota`` requests per
second, paced (open loop), for ``BENCH_QUOTA_SECONDS``:

- ``keywheel``: one ``keywheel serve``, memory state, ``GEMINI_RATE=<limit>/<seconds>s``,
  ``KEYWHEEL_MAX_WAIT=0`` (a call over the quota is refused at once with 429 and ``retry-after``);
- ``keywheel ×3 redis``: three ``keywheel serve`` on one Redis, the client going round-robin over
  their ports;
- ``litellm`` / ``litellm ×3 redis``: ``quota_litellm.py`` processes (``litellm.Router``, the keys
  as 4 deployments with ``rpm`` = the same quota per minute, ``usage-based-routing-v2``,
  ``redis_host``/``redis_port``), each offered its share of the load.

Then, from ``redis_cpu.py``, the gateway's CPU per request in Redis mode next to memory mode and
its req/s with 1 and 2 workers on Redis (the fake without a window), interleaved over rounds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import aiohttp
import procs
import quota_workers
import redis_cpu
from quota_maths import Quota, cpu_ratios, summarise
from rich.console import Console
from rich.table import Table

from keywheel.testing import FakeUpstream

HERE = Path(__file__).resolve().parent
LITELLM_PYTHON = HERE / ".venv-litellm" / "bin" / "python"
KEYWHEEL_GOAL = 0.98  # goodput ÷ quota
CPU_GOAL = 1.5  # Redis-mode ÷ memory-mode CPU per request
TARGETS = ["keywheel", "keywheel ×3 redis", "litellm", "litellm ×3 redis"]


@dataclass(frozen=True)
class Config:
    limit: int
    window_s: float
    keys: int
    load: float  # offered load ÷ aggregate quota
    seconds: float  # of offered load per target
    cpu_requests: int
    rounds: int
    smoke: bool
    wrk_seconds: int = 10  # quota_workers: measured wrk run per mode
    wrk_warmup: int = 2

    @property
    def quota(self) -> Quota:
        return Quota(self.keys, self.limit, self.window_s)


def make_config(smoke: bool, rounds: int, wrk_seconds: int = 10, wrk_warmup: int = 2) -> Config:
    env = os.environ.get
    limit, window = int(env("BENCH_QUOTA_LIMIT", "10")), float(env("BENCH_QUOTA_WINDOW", "5"))
    if smoke:
        return Config(limit, window, 4, 2.0, window, 200, 1, True, 1, 0)
    seconds = float(env("BENCH_QUOTA_SECONDS", str(4 * window)))
    cpu = int(env("BENCH_QUOTA_CPU_REQUESTS", "2000"))
    load = float(env("BENCH_QUOTA_LOAD", "2"))
    return Config(limit, window, 4, load, seconds, cpu, rounds, False, wrk_seconds, wrk_warmup)


# --- Load ---------------------------------------------------------------------------------------------


async def offer_keywheel(urls: list[str], rate: float, seconds: float) -> dict[str, Any]:
    """``rate`` OpenAI chat calls per second for ``seconds``, round-robin over ``urls``; counted."""
    counts: dict[str, Any] = {"offered": 0, "ok": 0, "refused": 0, "failed": 0, "first_failure": None}
    headers = {"authorization": f"Bearer {redis_cpu.GATEWAY_KEY}"}
    timeout = aiohttp.ClientTimeout(total=30)

    async with aiohttp.ClientSession(timeout=timeout, connector=aiohttp.TCPConnector(limit=0)) as session:

        async def one(url: str) -> None:
            try:
                async with session.post(url + "/v1/chat/completions", json=redis_cpu.BODY, headers=headers) as resp:
                    body = await resp.read()
                    if resp.status == 200:
                        counts["ok"] += 1
                        return
                    if resp.status == 429 and "retry-after" in resp.headers:
                        counts["refused"] += 1
                        return
                    problem = f"HTTP {resp.status}: {body[:200]!r}"
            except (TimeoutError, aiohttp.ClientError) as exc:
                problem = f"{type(exc).__name__}: {exc}"
            counts["failed"] += 1
            counts["first_failure"] = counts["first_failure"] or problem

        total = round(rate * seconds)
        began, tasks = time.monotonic(), []
        for i in range(total):
            await asyncio.sleep(max(0.0, began + i / rate - time.monotonic()))
            tasks.append(asyncio.create_task(one(urls[i % len(urls)])))
        counts["offered"] = total
        await asyncio.gather(*tasks)
    return counts


def run_keywheel(cfg: Config, replicas: int, workdir: Path, stack: ExitStack, fake: FakeUpstream) -> dict[str, Any]:
    state = "memory"
    if replicas > 1:
        redis, state = redis_cpu.start_redis(_fresh(workdir / "redis-kw"))
        stack.callback(procs.stop, redis)
    rate = f"{cfg.limit}/{cfg.window_s:g}s"
    extra = {"GEMINI_RATE": rate, "KEYWHEEL_MAX_WAIT": "0"}
    urls = []
    for n in range(replicas):
        proc, url = redis_cpu.start_gateway(fake, state, 1, workdir / f"quota-kw{replicas}-{n}.log", extra)
        stack.callback(procs.stop, proc)
        urls.append(url)
    return asyncio.run(offer_keywheel(urls, cfg.quota.per_second * cfg.load, cfg.seconds))


def run_litellm(cfg: Config, replicas: int, workdir: Path, stack: ExitStack, fake: FakeUpstream) -> dict[str, Any]:
    redis, url = redis_cpu.start_redis(_fresh(workdir / f"redis-litellm{replicas}"))
    stack.callback(procs.stop, redis)
    port = url.rsplit(":", 1)[1].split("/")[0]
    keys = ",".join(f"test-openai-key-{i}" for i in range(1, cfg.keys + 1))
    rate = cfg.quota.per_second * cfg.load
    cmd = [str(LITELLM_PYTHON), str(HERE / "quota_litellm.py"), "--api-base", fake.openai_base_url, "--keys", keys]
    cmd += ["--rpm", str(cfg.quota.litellm_rpm()), "--redis-port", port, "--rate", str(rate)]
    cmd += ["--seconds", str(cfg.seconds), "--replicas", str(replicas)]
    env = procs.child_env({"LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_LOG": "ERROR"})
    workers = []
    for n in range(replicas):
        with (workdir / f"quota-litellm{replicas}-{n}.log").open("ab") as log:
            proc = subprocess.Popen(
                [*cmd, "--index", str(n)],
                env=env,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                start_new_session=True,
            )
        stack.callback(procs.stop, proc)
        workers.append(proc)
    for proc in workers:
        assert proc.stdout is not None
        if proc.stdout.readline().strip() != b"READY":
            raise RuntimeError(
                f"LiteLLM replica did not start: {procs.tail(workdir / f'quota-litellm{replicas}-0.log')}"
            )
    go = f"GO {time.time() + 0.5}\n".encode()
    for proc in workers:
        assert proc.stdin is not None
        proc.stdin.write(go)
        proc.stdin.flush()
    total: dict[str, Any] = {"offered": 0, "ok": 0, "refused": 0, "failed": 0, "first_failure": None}
    for proc in workers:
        out, _ = proc.communicate(timeout=cfg.seconds + 120)
        line = next(x for x in out.decode().splitlines() if x.startswith("BENCH_JSON "))
        result = json.loads(line.removeprefix("BENCH_JSON "))
        for key in ("offered", "ok", "refused", "failed"):
            total[key] += result[key]
        total["first_failure"] = total["first_failure"] or result["first_failure"]
    return total


def _fresh(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def run_target(name: str, cfg: Config, workdir: Path) -> dict[str, Any]:
    replicas = 3 if "×3" in name else 1
    runner = run_litellm if name.startswith("litellm") else run_keywheel
    with FakeUpstream(window=(cfg.limit, cfg.window_s)) as fake, ExitStack() as stack:
        started = time.monotonic()
        counts = runner(cfg, replicas, workdir, stack, fake)
        seen = fake.requests
        counts["upstream"] = len(seen)
        counts["upstream_429"] = sum(1 for r in seen if r.over_window)
        counts["wall_s"] = time.monotonic() - started
    return {**counts, **summarise(cfg.quota, cfg.seconds, counts)}


# --- CPU per request, memory vs Redis; 1 and 2 workers --------------------------------------------


def run_cpu(cfg: Config, workdir: Path, say: Callable[[str], None]) -> list[dict[str, float]]:
    args = argparse.Namespace(requests=cfg.cpu_requests, concurrency=16)
    rounds = []
    redis, url = redis_cpu.start_redis(_fresh(workdir / "redis-cpu"))
    try:
        with FakeUpstream() as fake:
            for r in range(1, cfg.rounds + 1):
                mem, mem_rps = redis_cpu.measure(fake, "memory", 1, args, workdir / "cpu-memory.log")
                red, red_rps = redis_cpu.measure(fake, url, 1, args, workdir / "cpu-redis.log")
                two, two_rps = redis_cpu.measure(fake, url, 2, args, workdir / "cpu-redis2.log")
                fake.reset()
                rounds.append(
                    {"memory_ms": mem, "memory_rps": mem_rps, "redis_ms": red, "redis_rps": red_rps}
                    | {"redis2_ms": two, "redis2_rps": two_rps}
                )
                say(
                    f"  cpu round {r}: memory {mem:.3f} ms/req, redis {red:.3f} ms/req ({red / mem:.2f}×); "
                    f"req/s redis 1 worker {red_rps:.0f}, 2 workers {two_rps:.0f}"
                )
    finally:
        procs.stop(redis)
    return rounds


def run(cfg: Config, upstream: str, workdir: Path, say: Callable[[str], None]) -> dict[str, Any]:
    q = cfg.quota
    say(
        f"quota: {q.keys} keys × {q.limit}/{q.window_s:g}s = {q.per_second:g} req/s; offered {cfg.load:g}× "
        f"for {cfg.seconds:g} s"
    )
    result: dict[str, Any] = {"settings": asdict(cfg), "targets": {}, "skipped": {}, "error": None}
    for name in TARGETS:
        if name.startswith("litellm") and not LITELLM_PYTHON.exists():
            result["skipped"][name] = f"{LITELLM_PYTHON} is missing (bash bench/run.sh installs it)"
            continue
        try:
            row = run_target(name, cfg, workdir)
        except (RuntimeError, OSError, subprocess.TimeoutExpired, StopIteration, AssertionError) as exc:
            result["error"] = f"{name}: {exc}"
            say(f"  {name}: FAILED: {exc}")
            continue
        result["targets"][name] = row
        say(
            f"  {name}: ok {row['ok']} of {row['offered']} (goodput ÷ quota {row['goodput_ratio']:.3f}), "
            f"refused {row['refused']}, upstream 429s {row['upstream_429']}, failed {row['failed']}"
        )
    if cfg.cpu_requests <= 0:  # BENCH_QUOTA_CPU_REQUESTS=0: the quota table only
        result |= {"cpu_rounds": [], "cpu": {}, "wrk_rounds": [], "wrk": {}}
        return result
    try:
        result["cpu_rounds"] = run_cpu(cfg, workdir, say)
    except (RuntimeError, OSError, AssertionError) as exc:
        result["error"] = f"cpu: {exc}"
        result["cpu_rounds"] = []
    result["cpu"] = cpu_ratios(result["cpu_rounds"])
    try:
        result["wrk_rounds"] = quota_workers.run(upstream, workdir, cfg.rounds, cfg.wrk_seconds, cfg.wrk_warmup, say)
    except (RuntimeError, OSError) as exc:
        result["error"] = f"wrk: {exc}"
        result["wrk_rounds"] = []
    result["wrk"] = cpu_ratios(result["wrk_rounds"])
    return result


def errors(result: dict[str, Any]) -> int:
    """keywheel answering anything but 200 or 429-with-retry-after is an error; LiteLLM's are figures."""
    failed = sum(1 for name, row in result["targets"].items() if row["failed"] and name.startswith("keywheel"))
    return 1 if result.get("error") or failed else 0


def print_tables(result: dict[str, Any], console: Console) -> None:
    s = result["settings"]
    q = Quota(s["keys"], s["limit"], s["window_s"])
    table = Table(
        title=f"quota: {q.keys} keys × {q.limit} per {q.window_s:g} s (sliding, enforced by the fake) = "
        f"{q.per_second:g} req/s; offered {s['load']:g}× for {s['seconds']:g} s; LiteLLM rpm {q.litellm_rpm()}",
        title_justify="left",
    )
    for column in (
        "target",
        "offered",
        "served",
        "goodput ÷ quota",
        "refused to client",
        "upstream 429s",
        "other failures",
        "verdict",
    ):
        table.add_column(column, justify="left" if column in ("target", "verdict") else "right")
    for name, row in result["targets"].items():
        verdict = ""
        if name.startswith("keywheel") and not s["smoke"]:
            good = row["goodput_ratio"] >= KEYWHEEL_GOAL and row["upstream_429"] == 0
            verdict = "meets the target" if good else "MISSES the target"
        table.add_row(
            name,
            f"{row['offered']:,}",
            f"{row['ok']:,} of {row['allowed']:,.0f}",
            f"{row['goodput_ratio']:.3f}",
            f"{row['refused']:,}",
            f"{row['upstream_429']:,} of {row['upstream']:,}",
            f"{row['failed']:,}",
            verdict,
        )
    for name, reason in result["skipped"].items():
        table.add_row(name, "skipped", "", "", "", "", "", reason)
    console.print(table)
    _print_cpu(result, console)
    for row in result["targets"].values():
        if row.get("first_failure"):
            console.print(f"quota: first other failure: {row['first_failure']}")
    if result.get("error"):
        console.print(f"[red]quota failed[/red]: {result['error']}")


def _print_cpu(result: dict[str, Any], console: Console) -> None:
    s = result["settings"]
    if not result.get("cpu") and not result.get("wrk"):
        return  # skipped (BENCH_QUOTA_CPU_REQUESTS=0) or failed: the error is printed below
    table = Table(
        title="quota: gateway CPU per request and req/s, memory vs Redis, 1 and 2 workers (medians of rounds; "
        "×memory and 2w÷1w taken within each round)",
        title_justify="left",
    )
    for column in ("measurement", "memory", "Redis 1 worker", "Redis ÷ memory CPU", "Redis 2 workers", "2w ÷ 1w req/s"):
        table.add_column(column, justify="left" if column == "measurement" else "right")
    sources = [
        ("cpu", f"redis_cpu.py: fake upstream, httpx @16, {s['cpu_requests']:,} req"),
        ("wrk", f"nginx stand-in, wrk @16, {s['wrk_seconds']} s"),
    ]
    for key, label in sources:
        m = result.get(key) or {}
        if not m:
            continue
        ratio = m["redis_over_memory"]
        mark = "" if s["smoke"] else (" (meets ≤ 1.5×)" if ratio <= CPU_GOAL else " (MISSES ≤ 1.5×)")
        table.add_row(
            label,
            f"{m['memory_ms']:.3f} ms, {m['memory_rps']:,.0f}/s",
            f"{m['redis_ms']:.3f} ms, {m['redis_rps']:,.0f}/s",
            f"{ratio:.2f}×{mark}",
            f"{m['redis2_ms']:.3f} ms, {m['redis2_rps']:,.0f}/s",
            f"{m['two_over_one_rps']:.2f}×",
        )
    console.print(table)
