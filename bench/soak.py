"""Memory over time: ``keywheel serve``'s RSS across 200,000 requests.

The harness's ``soak`` section, left out of the default run (``BENCH_SOAK=1`` or ``--soak`` adds
it; ``--sections soak`` runs it alone). One ``keywheel serve`` (the gateway section's: 4 OpenRouter
keys) gets ``BENCH_SOAK_REQUESTS`` requests (200,000) from a fixed-count loader — 16 connections of
one aiohttp session on uvloop, alternating OpenAI chat and streamed chat, every answer checked — and
the RSS of its process tree is sampled before the load and after every ``BENCH_SOAK_EVERY``
(10,000) requests, with the gateway's CPU over each interval. (wrk counts time, not requests, so it
cannot stop at a count.)

Levelled off = the last 5 samples lie within 5 % of their mean or within 3 MB of each other. The
full soak takes about 2 minutes here (the loader shares the 2 cores with the gateway and nginx).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import aiohttp
import procs
import report
import stream_client
from rich.console import Console
from rich.table import Table
from targets import SCENARIOS, Keywheel

LEVEL_SAMPLES = 5  # judged on the last this many samples
LEVEL_SHARE = 0.05  # ... lying within this share of their mean
LEVEL_MB = 3.0  # ... or within this many MB of each other


@dataclass(frozen=True)
class Config:
    requests: int
    every: int  # sample RSS after every this many requests
    concurrency: int
    smoke: bool


def make_config(smoke: bool, requests: int | None = None, every: int | None = None) -> Config:
    if smoke:
        return Config(requests=2_000, every=500, concurrency=16, smoke=True)
    return Config(
        requests=requests or int(os.environ.get("BENCH_SOAK_REQUESTS", "200000")),
        every=every or int(os.environ.get("BENCH_SOAK_EVERY", "10000")),
        concurrency=16,
        smoke=False,
    )


class Soak:
    """The fixed-count loader and the samples it takes."""

    def __init__(self, requests: list[stream_client.Request], cfg: Config, pid: int, say: Callable[[str], None]):
        self.requests, self.cfg, self.pid, self.say = requests, cfg, pid, say
        self.issued = self.done = self.failures = 0
        self.first_failure: str | None = None
        self.samples: list[dict[str, float]] = []
        self.started = time.perf_counter()

    def sample(self) -> None:
        self.samples.append(
            {
                "requests": self.done,
                "seconds": time.perf_counter() - self.started,
                "rss_mb": procs.rss_bytes(self.pid) / 2**20,
                "cpu_s": procs.cpu_seconds(self.pid),
            }
        )

    async def one(self, session: aiohttp.ClientSession, req: stream_client.Request) -> None:
        try:
            async with session.post(req.url, data=req.body, headers=req.headers) as resp:
                body = await resp.read()
                wrong = (
                    None if resp.status == 200 and req.ok(body, req.stream) else f"HTTP {resp.status}: {body[:200]!r}"
                )
        except (aiohttp.ClientError, TimeoutError) as exc:
            wrong = f"{type(exc).__name__}: {exc}"
        if wrong:
            self.failures += 1
            self.first_failure = self.first_failure or wrong

    async def worker(self, session: aiohttp.ClientSession) -> None:
        while self.issued < self.cfg.requests:
            req = self.requests[self.issued % len(self.requests)]
            self.issued += 1
            await self.one(session, req)
            self.done += 1
            if self.done % self.cfg.every == 0:
                self.sample()
                last = self.samples[-1]
                self.say(f"  {self.done:>9,} requests  {last['seconds']:6.1f} s  RSS {last['rss_mb']:6.1f} MB")

    async def run(self) -> None:
        connector = aiohttp.TCPConnector(limit=self.cfg.concurrency)
        async with aiohttp.ClientSession(connector=connector) as session:
            self.sample()
            await asyncio.gather(*(self.worker(session) for _ in range(self.cfg.concurrency)))


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def run(cfg: Config, upstream: str, workdir: Path, say: Callable[[str], None]) -> dict[str, Any]:
    target = Keywheel()
    out: dict[str, Any] = {"settings": asdict(cfg), "skipped": target.unavailable_reason(), "samples": []}
    if out["skipped"]:
        say(f"skipping soak: {out['skipped']}")
        return out
    port = procs.free_port()
    cmd, env = target.command(port, upstream, workdir)
    log = workdir / "soak.log"
    base_url = f"http://127.0.0.1:{port}"
    wanted = [target.request(base_url, SCENARIOS[name]) for name in ("chat", "stream")]
    requests = [
        stream_client.Request(r.url, {"Content-Type": "application/json", **r.headers}, r.body, r.stream, r.ok)
        for r in wanted
        if r is not None
    ]
    say(f"soak: {cfg.requests:,} requests through keywheel serve, RSS every {cfg.every:,}")
    proc = procs.spawn(cmd, env, log)
    try:
        out["startup_s"] = stream_client.first_good_answer(
            requests[0], lambda: proc.poll() is None, target.start_timeout
        )
        soak = Soak(requests, cfg, proc.pid, say)
        with asyncio.Runner(loop_factory=_loop_factory()) as runner:
            runner.run(soak.run())
        out.update(samples=soak.samples, failures=soak.failures, first_failure=soak.first_failure)
        if proc.poll() is not None:
            out["error"] = f"keywheel serve exited during the soak\n{procs.tail(log)}"
        elif soak.failures:
            out["error"] = f"{soak.failures} wrong answer(s), the first: {soak.first_failure}"
    except (RuntimeError, OSError) as exc:
        out["error"] = f"{exc}\n{procs.tail(log)}".strip()
    finally:
        procs.stop(proc)
    out["summary"] = summarize(out["samples"])
    return out


def summarize(samples: list[dict[str, float]]) -> dict[str, Any]:
    loaded = samples[1:]  # the first sample is before any load
    if len(loaded) < 2:
        return {"levelled": None}
    tail = [s["rss_mb"] for s in loaded[-LEVEL_SAMPLES:]]
    spread = max(tail) - min(tail)
    mean = sum(tail) / len(tail)
    half = loaded[len(loaded) // 2 - 1]
    last = loaded[-1]
    per_100k = (last["rss_mb"] - half["rss_mb"]) / ((last["requests"] - half["requests"]) / 100_000)
    return {
        "levelled": spread <= LEVEL_SHARE * mean or spread <= LEVEL_MB,
        "tail_spread_mb": spread,
        "tail_spread_share": spread / mean,
        "growth_second_half_mb_per_100k": per_100k,
        "rss_before_mb": samples[0]["rss_mb"],
        "rss_first_mb": loaded[0]["rss_mb"],
        "rss_last_mb": last["rss_mb"],
        "seconds": last["seconds"],
        "requests_per_s": last["requests"] / last["seconds"],
    }


def errors(result: dict[str, Any]) -> int:
    return 1 if result.get("error") else 0


def print_tables(result: dict[str, Any], console: Console) -> None:
    if result["skipped"]:
        console.print(f"[yellow]skipped soak[/yellow]: {result['skipped']}")
        return
    samples, summary = result["samples"], result["summary"]
    table = Table(
        title="soak: keywheel serve RSS over requests (chat and streamed chat alternating, 16 connections)",
        title_justify="left",
    )
    for column in ("requests", "elapsed", "RSS", "Δ since first loaded sample", "CPU/req over the interval"):
        table.add_column(column, justify="right")
    for i, s in enumerate(samples):
        prev = samples[i - 1] if i else None
        cpu = (s["cpu_s"] - prev["cpu_s"]) * 1000 / (s["requests"] - prev["requests"]) if prev else None
        delta = s["rss_mb"] - samples[1]["rss_mb"] if i and len(samples) > 1 else None
        table.add_row(
            f"{int(s['requests']):,}" if i else "0 (before load)",
            report.fmt_num(s["seconds"], 1, " s"),
            report.fmt_num(s["rss_mb"], 1, " MB"),
            report.fmt_num(delta, 1, " MB") if delta is not None else "",
            report.fmt_num(cpu, 3, " ms"),
        )
    console.print(table)
    if summary.get("levelled") is not None:
        judged = (
            "not judged in smoke mode"
            if result["settings"]["smoke"]
            else ("[green]levelled off[/green]" if summary["levelled"] else "[red]still growing[/red]")
        )
        console.print(
            f"soak: last {LEVEL_SAMPLES} samples within {summary['tail_spread_mb']:.1f} MB "
            f"({summary['tail_spread_share']:.1%}; levelled = within {LEVEL_SHARE:.0%} or {LEVEL_MB:g} MB): {judged}; "
            f"second half grew {summary['growth_second_half_mb_per_100k']:+.1f} MB per 100k requests; "
            f"{samples[-1]['requests']:,.0f} requests in {summary['seconds']:.0f} s "
            f"({summary['requests_per_s']:,.0f}/s)"
        )
    if result.get("error"):
        console.print(f"[red]soak failed[/red]: {result['error']}")
