"""Scaling through the gateway: ``keywheel serve``'s CPU per request as its key pool grows and cools.

The harness's ``scaling`` section. ``keywheel serve`` is started afresh for every pool shape and
round, with OpenRouter keys only:

- 1, 10, 100 and 1,000 keys, none cooling;
- 1,000 keys with 1 % and 50 % of them cooling.

A cooling key is named ``test-openrouter-cool-N`` (the others ``test-openrouter-key-N``): the nginx
stand-in answers it ``429`` with ``retry-after: 3600`` and OpenRouter's 429 body (``nginx/bench.js``),
so keywheel rests it for an hour after its first use. Before measuring, a sequential warm-up of at
least one request per key walks the whole ring, so every cooling key has been hit once and rests;
``GET /status`` then has to show exactly that many keys cooling. Then wrk at 16 connections, as the
gateway section measures: CPU per request of the ``keywheel serve`` process tree.

Selection is O(1), so CPU/req must stay flat: each shape is compared with its reference of the
same round (1 key for the sizes; 1,000 keys uncooled for the cooling shares), and "flat" means
within 10 %.
"""

from __future__ import annotations

import http.client
import json
import os
import subprocess
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import loadgen
import procs
import report
import stream_client
from keypool import PoolShape, cools
from rich.console import Console
from rich.table import Table
from targets import SCENARIOS, Keywheel

SHAPES = [PoolShape(1, 0.0), PoolShape(10, 0.0), PoolShape(100, 0.0), PoolShape(1000, 0.0)]
SHAPES += [PoolShape(1000, 0.01), PoolShape(1000, 0.5)]
SMOKE_SHAPES = [PoolShape(1, 0.0), PoolShape(1000, 0.0), PoolShape(1000, 0.5)]


@dataclass(frozen=True)
class Config:
    rounds: int
    seconds: int  # measured wrk run
    warmup: int  # seconds of unmeasured wrk load after the sequential warm-up
    seq_requests: int  # at least this many sequential requests (and at least one per key)
    shapes: list[PoolShape]
    smoke: bool


def make_config(smoke: bool, rounds: int, seconds: int, warmup: int, seq_requests: int) -> Config:
    shapes = SMOKE_SHAPES if smoke else SHAPES
    return Config(rounds, seconds, warmup, seq_requests, shapes, smoke)


class ScaledKeywheel(Keywheel):
    """``keywheel serve`` with ``shape.size`` OpenRouter keys, ``shape.cooled`` of them named to cool."""

    def __init__(self, shape: PoolShape) -> None:
        self.shape = shape
        self.name = f"keywheel, {shape.name}"

    def command(self, port: int, upstream: str, workdir: Path) -> tuple[list[str], dict[str, str]]:
        cmd, env = super().command(port, upstream, workdir)
        env = {k: v for k, v in env.items() if not k.startswith("OPENROUTER_API_KEY")}
        for i in range(self.shape.size):
            kind = "cool" if cools(i, self.shape.cooling) else "key"
            env[f"OPENROUTER_API_KEY_{i + 1}"] = f"test-openrouter-{kind}-{i + 1}"
        # No ./.env: its keys would join the pool and change its size.
        return [cmd[0], "--env-file", os.devnull, *cmd[1:]], env


def cooling_keys(base_url: str) -> int:
    """How many keys ``GET /status`` shows cooling (admin routes are open to loopback without an admin key)."""
    host, port = base_url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        conn.request("GET", "/status")
        resp = conn.getresponse()
        body = resp.read()
    finally:
        conn.close()
    if resp.status != 200:
        raise RuntimeError(f"GET /status answered {resp.status}: {body[:300]!r}")
    status = json.loads(body)
    return sum(1 for p in status["providers"] for k in p["keys"] if k["state"] == "cooling")


def run_shape(shape: PoolShape, round_no: int, upstream: str, workdir: Path, cfg: Config) -> dict[str, Any]:
    target = ScaledKeywheel(shape)
    out: dict[str, Any] = {"round": round_no, **asdict(shape), "name": shape.name, "cooled": shape.cooled}
    port = procs.free_port()
    cmd, env = target.command(port, upstream, workdir)
    log = workdir / f"scaling-{shape.size}-{shape.cooling:g}-round{round_no}.log"
    base_url = f"http://127.0.0.1:{port}"
    req = target.request(base_url, SCENARIOS["chat"])
    assert req is not None
    proc = procs.spawn(cmd, env, log)
    try:
        out["startup_s"] = stream_client.first_good_answer(req, lambda: proc.poll() is None, target.start_timeout)
        seq = stream_client.run(req, max(cfg.seq_requests, shape.size))  # walks the whole ring at least once
        if seq.failures:
            raise RuntimeError(f"{len(seq.failures)} wrong answer(s) in the warm-up, the first: {seq.failures[0]}")
        out["cooling_seen"] = cooling_keys(base_url)
        if out["cooling_seen"] != shape.cooled:
            raise RuntimeError(f"/status shows {out['cooling_seen']} keys cooling, expected {shape.cooled}")
        if cfg.warmup:
            loadgen.wrk(req, 16, cfg.warmup, proc.pid)
        run = loadgen.wrk(req, 16, cfg.seconds, proc.pid)
        out["c16"] = {**asdict(run), "cpu_per_request_ms": run.cpu_per_request_ms}
        out["rss_mb"] = procs.rss_bytes(proc.pid) / 2**20
    except (RuntimeError, OSError, ValueError, subprocess.TimeoutExpired) as exc:
        out["error"] = f"{exc}\n{procs.tail(log)}".strip()
    finally:
        procs.stop(proc)
    return out


def progress_line(result: dict[str, Any]) -> str:
    if result.get("error"):
        return f"FAILED: {result['error']}"
    c16 = result["c16"]
    line = (
        f"{result['cooling_seen']} cooling | @16 {c16['rps']:,.0f} req/s "
        f"cpu {report.fmt_num(c16['cpu_per_request_ms'], 3)} ms/req | RSS {result['rss_mb']:.0f} MB"
    )
    return line + (f" | ERRORS {c16['errors']}" if c16["errors"] else "")


def run(cfg: Config, upstream: str, workdir: Path, say: Callable[[str], None]) -> dict[str, Any]:
    reason = Keywheel().unavailable_reason()
    if reason:
        say(f"skipping scaling: {reason}")
        return {"settings": asdict(cfg), "skipped": reason, "runs": [], "summary": []}
    runs = []
    for round_no in range(1, cfg.rounds + 1):
        say(f"scaling round {round_no}/{cfg.rounds}")
        for shape in cfg.shapes:
            result = run_shape(shape, round_no, upstream, workdir, cfg)
            say(f"  {shape.name:<30} {progress_line(result)}")
            runs.append(result)
    return {"settings": asdict(cfg), "skipped": None, "runs": runs, "summary": summarize(runs)}


def _cpu(runs: list[dict[str, Any]], round_no: int, size: int, cooling: float) -> float | None:
    for r in runs:
        if (r["round"], r["size"], r["cooling"]) == (round_no, size, cooling) and "c16" in r:
            value = r["c16"]["cpu_per_request_ms"]
            return float(value) if value is not None else None
    return None


def summarize(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rounds = sorted({r["round"] for r in runs})
    rows = []
    for size, cooling in dict.fromkeys((r["size"], r["cooling"]) for r in runs):
        mine = [r for r in runs if (r["size"], r["cooling"]) == (size, cooling)]
        ref = (1, 0.0) if cooling == 0 else (size, 0.0)
        ratios = []
        for n in rounds:
            a, b = _cpu(runs, n, size, cooling), _cpu(runs, n, *ref)
            ratios.append(a / b if a is not None and b else None)
        rows.append(
            {
                "name": mine[0]["name"],
                "size": size,
                "cooling": cooling,
                "cooled": mine[0]["cooled"],
                "reference": PoolShape(*ref).name,
                "cpu_ms": report.median([_cpu(runs, n, size, cooling) for n in rounds]),
                "cpu_x_ref": report.median(ratios),
                "rps": report.median([r["c16"]["rps"] for r in mine if "c16" in r]),
                "rss_mb": report.median([r.get("rss_mb") for r in mine]),
                "startup_s": report.median([r.get("startup_s") for r in mine]),
                "errors": sum(1 if r.get("error") else r["c16"]["errors"] for r in mine),
            }
        )
    return rows


def errors(result: dict[str, Any]) -> int:
    return sum(row["errors"] for row in result["summary"])


def print_tables(result: dict[str, Any], console: Console) -> None:
    if result["skipped"]:
        console.print(f"[yellow]skipped scaling[/yellow]: {result['skipped']}")
        return
    cfg = result["settings"]
    table = Table(
        title=f"scaling: keywheel serve, OpenAI chat, wrk @16 for {cfg['seconds']} s (medians over {cfg['rounds']} "
        "round(s); ×ref: against the reference's figure of the same round)",
        title_justify="left",
    )
    columns = ["pool", "req/s @16", "CPU/req", "CPU ×ref", "reference", "RSS", "start", "errors"]
    for column in columns:
        table.add_column(column, justify="left" if column in ("pool", "reference") else "right")
    for row in result["summary"]:
        is_ref = row["size"] == 1 and row["cooling"] == 0
        table.add_row(
            f"keywheel, {row['name']}",
            report.fmt_num(row["rps"], 0),
            report.fmt_num(row["cpu_ms"], 3, " ms"),
            "" if is_ref else report.fmt_ratio(row["cpu_x_ref"]),
            "" if is_ref else row["reference"],
            report.fmt_num(row["rss_mb"], 0, " MB"),
            report.fmt_num(row["startup_s"], 2, " s"),
            f"[red]{row['errors']}[/red]" if row["errors"] else "0",
        )
    console.print(table)
    spread = [row["cpu_x_ref"] for row in result["summary"] if row["cpu_x_ref"] is not None]
    worst = max(spread, key=lambda x: abs(x - 1)) if spread else None
    judged = (
        report.verdict(abs(worst - 1) if worst is not None else None, at_most=report.FLAT_TOLERANCE)
        if not cfg["smoke"]
        else "not judged in smoke mode"
    )
    console.print(
        f"scaling: CPU/req furthest from its reference {report.fmt_ratio(worst)} "
        f"(flat = within {report.FLAT_TOLERANCE:.0%}: {judged})"
    )
    for r in result["runs"]:
        if r.get("error"):
            console.print(f"[red]keywheel, {r['name']} failed in round {r['round']}[/red]: {r['error']}")
