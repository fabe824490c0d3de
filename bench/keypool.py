"""Key selection: ``MemoryStore`` acquire+release pairs per second, by pool size, cooling share and threads.

One pair is what the router does per successful call: ``acquire()`` a key, then
``release(key, None, latency_ms, usage)``. Measured on 1 thread and on 16 threads sharing one pool
(the pool's lock is a ``threading.Lock``; under the GIL 16 threads measure contention, not
parallelism), for pools of 1, 10, 100 and 1,000 keys, and with 0 %, 1 % and 50 % of the keys
cooling (a share that rounds to no key, or to every key, is left out).

Keys are cooled as the router cools them: acquired and released with
``RateLimited("bench", retry_after=3600)``, spread evenly over the ring. ``throttle_window=-1``
switches off the pool's provider-level throttling (every live key limited within 5 s = the
account is throttled, so the pool rests the provider instead of the keys), which would otherwise
turn a fully cooled small pool into a throttled provider; it never fires at these shares anyway.

Targets: ≥ 1,000,000 pairs/s on one thread, flat (within 10 %) from 1 to 1,000 keys and from
0 % to 50 % cooling. Every configuration is measured ``PASSES`` times per round, interleaved with
the others; the figures are medians over all of them.

    .venv/bin/python bench/keypool.py            # BENCH_ROUNDS, BENCH_KEYPOOL_PAIRS
    .venv/bin/python bench/keypool.py --smoke    # a few thousand pairs each, no thresholds
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import report
from rich.console import Console
from rich.table import Table

from keywheel.errors import RateLimited
from keywheel.secrets import ApiKey
from keywheel.state.memory import MemoryStore
from keywheel.types import Usage

HERE = Path(__file__).resolve().parent
SIZES = (1, 10, 100, 1000)
COOLING = (0.0, 0.01, 0.5)
THREADS = (1, 16)
PASSES = 3  # per round
PAIRS_PER_S_MIN = 1_000_000  # on one thread
USAGE = Usage(input_tokens=20, output_tokens=7)


@dataclass(frozen=True)
class Config:
    rounds: int
    pairs: int  # per measurement, split over the threads
    smoke: bool


@dataclass(frozen=True)
class PoolShape:
    size: int
    cooling: float  # share of the keys cooling

    @property
    def cooled(self) -> int:
        return sum(1 for i in range(self.size) if cools(i, self.cooling))

    @property
    def name(self) -> str:
        keys = f"{self.size:,} key{'s' if self.size > 1 else ''}"
        return keys if not self.cooling else f"{keys}, {self.cooling:.0%} cooling ({self.cooled})"


def make_config(smoke: bool, rounds: int, pairs: int | None = None) -> Config:
    if smoke:
        return Config(rounds=1, pairs=3_200, smoke=True)
    return Config(rounds=rounds, pairs=pairs or int(os.environ.get("BENCH_KEYPOOL_PAIRS", "320000")), smoke=False)


def shapes() -> list[PoolShape]:
    out = []
    for size in SIZES:
        for cooling in COOLING:
            shape = PoolShape(size, cooling)
            if cooling == 0 or 0 < shape.cooled < size:
                out.append(shape)
    return out


def cools(index: int, share: float) -> bool:
    """Spread ``share`` of the keys evenly: key ``index`` cools when the running count steps up."""
    return int((index + 1) * share) > int(index * share)


def make_pool(shape: PoolShape) -> MemoryStore:
    keys = [
        ApiKey(f"test-openrouter-{'cool' if cools(i, shape.cooling) else 'key'}-{i + 1}", "openrouter", str(i + 1))
        for i in range(shape.size)
    ]
    pool = MemoryStore("openrouter", keys, throttle_window=-1)
    for _ in range(shape.size):  # one turn of the ring, cooling the chosen keys as a 429 would
        key = pool.acquire_nowait()
        assert isinstance(key, ApiKey)
        limited = "-cool-" in key.reveal()
        pool.release_nowait(
            key, RateLimited("bench", retry_after=3600) if limited else None, 1.0, None if limited else USAGE
        )
    cooling = sum(1 for k in pool.snapshot_nowait()["keys"] if k["state"] == "cooling")
    if cooling != shape.cooled:
        raise RuntimeError(f"{shape.name}: {cooling} keys cool, expected {shape.cooled}")
    return pool


def _pairs(pool: MemoryStore, count: int) -> None:
    acquire, release = pool.acquire_nowait, pool.release_nowait
    for _ in range(count):
        key = acquire()
        release(key, None, 1.0, USAGE)  # type: ignore[arg-type]  # always a key here: none is resting long


def pairs_per_s(pool: MemoryStore, pairs: int, threads: int) -> float:
    """Acquire+release pairs per second of wall time, ``pairs`` split over ``threads`` threads."""
    if threads == 1:
        started = time.perf_counter()
        _pairs(pool, pairs)
        return pairs / (time.perf_counter() - started)
    each = pairs // threads
    barrier = threading.Barrier(threads + 1)

    def work() -> None:
        barrier.wait()
        _pairs(pool, each)

    workers = [threading.Thread(target=work) for _ in range(threads)]
    for worker in workers:
        worker.start()
    barrier.wait()
    started = time.perf_counter()
    for worker in workers:
        worker.join()
    return each * threads / (time.perf_counter() - started)


def run(cfg: Config, say: Callable[[str], None]) -> dict[str, Any]:
    pools = {shape: make_pool(shape) for shape in shapes()}
    samples: list[dict[str, Any]] = []
    for round_no in range(1, cfg.rounds + 1):
        say(f"key pool round {round_no}/{cfg.rounds}")
        for pass_no in range(1, (1 if cfg.smoke else PASSES) + 1):
            for shape, pool in pools.items():
                for threads in THREADS:
                    rate = pairs_per_s(pool, cfg.pairs, threads)
                    samples.append(
                        {"round": round_no, "pass": pass_no, **asdict(shape), "threads": threads, "pairs_per_s": rate}
                    )
        last = [s for s in samples if (s["round"], s["pass"], s["threads"]) == (round_no, pass_no, 1)]
        say(
            "  pairs/s on 1 thread, last pass: "
            + ", ".join(f"{s['size']}/{s['cooling']:.0%} {s['pairs_per_s'] / 1e6:.2f}M" for s in last)
        )
    return {"settings": asdict(cfg), "runs": samples, "summary": summarize(samples)}


def summarize(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Median rate per configuration, and its median ratio to the reference measured in the same pass:
    the 1-key pool for the uncooled sizes, the same size uncooled for the cooling shares."""

    def rate(s: dict[str, Any], size: int, cooling: float) -> float | None:
        for o in samples:
            if (o["round"], o["pass"], o["threads"], o["size"], o["cooling"]) == (
                s["round"],
                s["pass"],
                s["threads"],
                size,
                cooling,
            ):
                return float(o["pairs_per_s"])
        return None

    rows = []
    for shape in dict.fromkeys(PoolShape(s["size"], s["cooling"]) for s in samples):
        row: dict[str, Any] = {"name": shape.name, "size": shape.size, "cooling": shape.cooling}
        for threads in THREADS:
            mine = [
                s for s in samples if (s["size"], s["cooling"], s["threads"]) == (shape.size, shape.cooling, threads)
            ]
            ref_size = 1 if shape.cooling == 0 else shape.size
            ratios = []
            for s in mine:
                ref = rate(s, ref_size, 0.0)
                ratios.append(s["pairs_per_s"] / ref if ref else None)
            rates = [s["pairs_per_s"] for s in mine]
            row[f"t{threads}_pairs_per_s"] = report.median(rates)
            row[f"t{threads}_range"] = [min(rates), max(rates)] if rates else None
            row[f"t{threads}_x_ref"] = report.median(ratios)
        rows.append(row)
    one_thread = [r["t1_pairs_per_s"] for r in rows if r["t1_pairs_per_s"] is not None]
    spread = [r["t1_x_ref"] for r in rows if r["t1_x_ref"] is not None]
    return {
        "rows": rows,
        "min_pairs_per_s_1_thread": min(one_thread) if one_thread else None,
        "worst_x_ref_1_thread": max(spread, key=lambda x: abs(x - 1)) if spread else None,
    }


def errors(result: dict[str, Any]) -> int:
    return sum(1 for row in result["summary"]["rows"] if row["t1_pairs_per_s"] is None)


def print_tables(result: dict[str, Any], console: Console) -> None:
    summary = result["summary"]
    cfg = result["settings"]
    table = Table(
        title=f"key pool: acquire+release pairs/s, {cfg['pairs']:,} pairs a measurement (medians)",
        title_justify="left",
    )
    columns = ("pool", "pairs/s 1 thread", "µs/pair", "×ref", "pairs/s 16 threads", "16 threads min–max")
    for column in columns:
        table.add_column(column, justify="left" if column == "pool" else "right")
    for row in summary["rows"]:
        rate = row["t1_pairs_per_s"]
        table.add_row(
            row["name"],
            report.fmt_num(rate, 0),
            report.fmt_num(1e6 / rate if rate else None, 3),
            report.fmt_ratio(row["t1_x_ref"]) if row["size"] > 1 or row["cooling"] else "",
            report.fmt_num(row["t16_pairs_per_s"], 0),
            "–".join(f"{v / 1000:,.0f}k" for v in row["t16_range"]) if row["t16_range"] else "—",
        )
    console.print(table)
    console.print(
        "×ref: against the 1-key pool (sizes) or the same pool uncooled (cooling), measured in the same pass. "
        "16 threads: one pool's lock under the GIL; runs land either near the 1-thread rate or, when the lock "
        "convoys, far below it, whatever the pool size"
    )
    slowest, worst = summary["min_pairs_per_s_1_thread"], summary["worst_x_ref_1_thread"]
    if cfg["smoke"]:
        console.print("key pool: not judged in smoke mode")
        return
    flat = None if worst is None else abs(worst - 1)
    console.print(
        f"key pool, 1 thread: slowest {report.fmt_num(slowest, 0)} pairs/s (target ≥ {PAIRS_PER_S_MIN:,}: "
        f"{report.verdict(slowest, at_least=PAIRS_PER_S_MIN)}); furthest from its reference {report.fmt_ratio(worst)} "
        f"(flat = within {report.FLAT_TOLERANCE:.0%}: {report.verdict(flat, at_most=report.FLAT_TOLERANCE)})"
    )


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true", help="a few thousand pairs per configuration, no thresholds")
    parser.add_argument("--rounds", type=int, default=int(os.environ.get("BENCH_ROUNDS", "2")))
    parser.add_argument("--pairs", type=int, help="pairs per measurement (BENCH_KEYPOOL_PAIRS, 320000)")
    parser.add_argument("--json", type=Path, help="where to write the results (default bench/results/; none in smoke)")
    args = parser.parse_args(argv)
    cfg = make_config(args.smoke, args.rounds, args.pairs)
    source = report.source_state()
    result = run(cfg, lambda text: print(text, flush=True))
    changed = report.source_state()["src_digest"] != source["src_digest"]
    keywheel = {**source, "changed_during_run": changed}
    result["environment"] = {"cpus": os.cpu_count(), "python": sys.version.split()[0], "keywheel": keywheel}
    console = Console(width=200)
    print_tables(result, console)
    console.print(f"keywheel {keywheel['commit']} from {keywheel['package']} (source digest {keywheel['src_digest']})")
    if changed:
        console.print("[red]keywheel's source changed during the run: its figures mix two versions; run again[/red]")
    json_path = args.json or (None if cfg.smoke else HERE / "results" / f"keypool-{datetime.now():%Y%m%d-%H%M%S}.json")
    if json_path:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(result, indent=2))
        print(f"results written to {json_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
