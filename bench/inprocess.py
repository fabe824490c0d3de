"""In-process cost of one chat call: the raw aiohttp call, ``Wheel.achat`` on it, and LiteLLM's Router.

Three clients make the same OpenAI-format chat call to the nginx stand-in:

- ``raw``: one ``aiohttp.ClientSession`` POSTing the chat body to ``/api/v1/chat/completions`` with a
  Bearer key and reading the answer — the raw client call keywheel wraps (the baseline);
- ``transport``: keywheel's own ``Transport.send`` with a ready-made request (not a target: it
  splits what ``Wheel`` adds into its HTTP seam and the rest — routing, keys, translation, parsing);
- ``wheel``: ``Wheel.achat`` with 4 OpenRouter keys, ``OPENROUTER_BASE_URL`` at the stand-in,
  Anthropic and Gemini off;
- ``litellm``: ``litellm.Router.acompletion`` with the 4 keys as 4 deployments of one model (the
  LiteLLM proxy target's config), run with ``bench/.venv-litellm``'s Python.

Each client runs in a fresh process per round (``inprocess_worker.py``, the same measuring code for
all), interleaved ``raw, transport, wheel, litellm, raw, ...`` over ``BENCH_ROUNDS``.
Ratios are taken between clients of the same round, then the median over rounds. Targets:
``Wheel/raw`` CPU per call ≤ 1.15, ``LiteLLM/Wheel`` ≥ 4.

Run by ``harness.py`` as its ``inprocess`` section, or on its own (starts its own stand-in):

    .venv/bin/python bench/inprocess.py            # BENCH_ROUNDS, BENCH_CALLS, BENCH_CONCURRENT_CALLS
    .venv/bin/python bench/inprocess.py --smoke    # a few hundred calls each, no thresholds
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import nginx_upstream
import procs
import report
from rich.console import Console
from rich.table import Table
from targets import LITELLM_VENV

HERE = Path(__file__).resolve().parent
WORKER = HERE / "inprocess_worker.py"
CLIENTS = {"raw": "raw aiohttp", "transport": "kw Transport", "wheel": "Wheel.achat", "litellm": "litellm Router"}
WHEEL_OVER_RAW_MAX = 1.15  # Wheel.achat may cost at most this much CPU per call over the raw call
LITELLM_OVER_WHEEL_MIN = 4.0  # LiteLLM's Router should cost at least this many times Wheel's CPU per call
MODES = {"seq": "sequential", "conc": "16 concurrent tasks"}
EXIT_MISSING_TOOLS = 3


@dataclass(frozen=True)
class Config:
    rounds: int
    seq_warmup: int
    seq_calls: int
    conc_warmup: int
    conc_calls: int
    concurrency: int
    smoke: bool


def make_config(smoke: bool, rounds: int, calls: int | None = None, concurrent_calls: int | None = None) -> Config:
    if smoke:
        return Config(
            rounds=1, seq_warmup=20, seq_calls=200, conc_warmup=32, conc_calls=200, concurrency=16, smoke=True
        )
    return Config(
        rounds=rounds,
        seq_warmup=200,
        seq_calls=calls or int(os.environ.get("BENCH_CALLS", "2000")),
        conc_warmup=400,
        conc_calls=concurrent_calls or int(os.environ.get("BENCH_CONCURRENT_CALLS", "4000")),
        concurrency=16,
        smoke=False,
    )


def unavailable(client: str) -> str | None:
    if client == "litellm" and not (LITELLM_VENV / "bin" / "python").exists():
        return f"{LITELLM_VENV} is missing (bash bench/run.sh installs it)"
    return None


def run_worker(client: str, upstream: str, cfg: Config) -> dict[str, Any]:
    """One client's calls in a fresh process; its BENCH_JSON result, or ``{"error": ...}``."""
    python = str(LITELLM_VENV / "bin" / "python") if client == "litellm" else sys.executable
    cmd = [
        python,
        str(WORKER),
        "--client",
        client,
        "--upstream",
        upstream,
        f"--seq-warmup={cfg.seq_warmup}",
        f"--seq-calls={cfg.seq_calls}",
        f"--conc-warmup={cfg.conc_warmup}",
        f"--conc-calls={cfg.conc_calls}",
        f"--concurrency={cfg.concurrency}",
    ]
    # As for the LiteLLM proxy: no price-list download (the network namespace stops it anyway), logs off.
    env = procs.child_env({"LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_LOG": "ERROR"})
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1800)
    except subprocess.TimeoutExpired:
        return {"error": "did not finish within 30 min"}
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("BENCH_JSON ")), None)
    if out.returncode != 0 or line is None:
        tail = "\n".join((out.stderr.strip() or out.stdout.strip()).splitlines()[-15:])
        return {"error": f"exit {out.returncode}: {tail}"}
    result: dict[str, Any] = json.loads(line.removeprefix("BENCH_JSON "))
    if result["failures"]:
        result["error"] = f"{result['failures']} wrong answer(s), the first: {result['first_failure']}"
    return result


def progress_line(result: dict[str, Any]) -> str:
    if "seq" not in result:
        return f"FAILED: {result['error']}"
    seq, conc = result["seq"], result["conc"]
    line = (
        f"seq {seq['cpu_us']:,.1f} µs CPU {seq['wall_us']:,.1f} µs wall per call | "
        f"@{conc['concurrency']} {conc['cpu_us']:,.1f} µs CPU per call, {conc['calls_per_s']:,.0f} calls/s"
    )
    return line + (f" | ERRORS: {result['error']}" if result.get("error") else "")


def run(cfg: Config, upstream: str, say: Callable[[str], None]) -> dict[str, Any]:
    """Every round, every available client; the raw results, medians and same-round ratios."""
    skipped = {c: reason for c in CLIENTS if (reason := unavailable(c))}
    for client, reason in skipped.items():
        say(f"skipping {client}: {reason}")
    clients = [c for c in CLIENTS if c not in skipped]
    runs = []
    for round_no in range(1, cfg.rounds + 1):
        say(f"in-process round {round_no}/{cfg.rounds}")
        for client in clients:
            result = {"round": round_no, **run_worker(client, upstream, cfg), "client": client}
            say(f"  {CLIENTS[client]:<15} {progress_line(result)}")
            runs.append(result)
    return {"settings": asdict(cfg), "skipped": skipped, "runs": runs, "summary": summarize(runs)}


def _value(runs: list[dict[str, Any]], round_no: int, client: str, mode: str, field: str) -> float | None:
    for r in runs:
        if r["round"] == round_no and r["client"] == client and mode in r and not r.get("error"):
            return float(r[mode][field])
    return None


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    rounds = sorted({r["round"] for r in runs})
    clients = list(dict.fromkeys(r["client"] for r in runs))
    medians = {
        client: {
            f"{mode}_{field}": report.median([_value(runs, n, client, mode, field) for n in rounds])
            for mode in MODES
            for field in ("cpu_us", "wall_us", "calls_per_s")
        }
        for client in clients
    }

    def paired(top: str, bottom: str, mode: str, field: str = "cpu_us") -> float | None:
        values = []
        for n in rounds:
            a, b = _value(runs, n, top, mode, field), _value(runs, n, bottom, mode, field)
            values.append(a / b if a is not None and b else None)
        return report.median(values)

    ratios = {
        f"{top}_over_{bottom}_{mode}_{field}": paired(top, bottom, mode, field)
        for top, bottom in (
            ("transport", "raw"),
            ("wheel", "raw"),
            ("wheel", "transport"),
            ("litellm", "wheel"),
            ("litellm", "raw"),
        )
        for mode in MODES
        for field in ("cpu_us", "wall_us")
    }
    return {"medians": medians, "ratios": ratios}


def errors(result: dict[str, Any]) -> int:
    return sum(1 for r in result["runs"] if r.get("error"))


def print_tables(result: dict[str, Any], console: Console) -> None:
    medians, ratios = result["summary"]["medians"], result["summary"]["ratios"]
    cfg = result["settings"]
    table = Table(
        title=f"in-process: per chat call, {cfg['seq_calls']:,} sequential and {cfg['conc_calls']:,} over "
        f"{cfg['concurrency']} tasks (medians over {cfg['rounds']} round(s))",
        title_justify="left",
    )
    columns = ["client", "CPU seq", "wall seq", "CPU ×raw seq", "CPU @16", "wall @16", "calls/s @16", "CPU ×raw @16"]
    for column in columns:
        table.add_column(column, justify="left" if column == "client" else "right")
    for client, row in medians.items():
        over_raw = {m: ratios.get(f"{client}_over_raw_{m}_cpu_us") for m in MODES} if client != "raw" else {}
        table.add_row(
            CLIENTS[client],
            report.fmt_num(row["seq_cpu_us"], 1, " µs"),
            report.fmt_num(row["seq_wall_us"], 1, " µs"),
            report.fmt_ratio(over_raw.get("seq")) if client != "raw" else "",
            report.fmt_num(row["conc_cpu_us"], 1, " µs"),
            report.fmt_num(row["conc_wall_us"], 1, " µs"),
            report.fmt_num(row["conc_calls_per_s"], 0),
            report.fmt_ratio(over_raw.get("conc")) if client != "raw" else "",
        )
    console.print(table)
    for mode, label in MODES.items():
        wheel_raw = ratios.get(f"wheel_over_raw_{mode}_cpu_us")
        litellm_wheel = ratios.get(f"litellm_over_wheel_{mode}_cpu_us")
        smoke = "not judged in smoke mode"
        wheel_verdict = smoke if cfg["smoke"] else report.verdict(wheel_raw, at_most=WHEEL_OVER_RAW_MAX)
        litellm_verdict = smoke if cfg["smoke"] else report.verdict(litellm_wheel, at_least=LITELLM_OVER_WHEEL_MIN)
        console.print(
            f"{label}: CPU Wheel/raw {report.fmt_ratio(wheel_raw)} (target ≤ {WHEEL_OVER_RAW_MAX}: {wheel_verdict}), "
            f"LiteLLM/Wheel {report.fmt_ratio(litellm_wheel)} (target ≥ {LITELLM_OVER_WHEEL_MIN:g}: {litellm_verdict})"
        )
    for client, reason in result["skipped"].items():
        console.print(f"[yellow]skipped {client}[/yellow]: {reason}")
    for r in result["runs"]:
        if r.get("error"):
            console.print(f"[red]{CLIENTS[r['client']]} failed in round {r['round']}[/red]: {r['error']}")


# --- On its own ------------------------------------------------------------------------------------


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true", help="a few hundred calls per client, no thresholds")
    parser.add_argument("--rounds", type=int, default=int(os.environ.get("BENCH_ROUNDS", "2")))
    parser.add_argument("--calls", type=int, help="sequential calls per client and round (BENCH_CALLS, 2000)")
    parser.add_argument(
        "--concurrent-calls", type=int, help="calls over 16 tasks per client and round (BENCH_CONCURRENT_CALLS, 4000)"
    )
    parser.add_argument("--json", type=Path, help="where to write the results (default bench/results/; none in smoke)")
    args = parser.parse_args(argv)
    procs.isolate_network(__file__, argv)
    if reason := nginx_upstream.unavailable_reason():
        print(reason, file=sys.stderr)
        return EXIT_MISSING_TOOLS
    cfg = make_config(args.smoke, args.rounds, args.calls, args.concurrent_calls)
    source = report.source_state()
    with tempfile.TemporaryDirectory(prefix="keywheel-bench-") as tmp:
        nginx, port = nginx_upstream.start(Path(tmp) / "nginx")
        try:
            nginx_upstream.wait_ready(nginx, port)
            result = run(cfg, f"http://127.0.0.1:{port}", lambda text: print(text, flush=True))
        finally:
            procs.stop(nginx)
    changed = report.source_state()["src_digest"] != source["src_digest"]
    keywheel = {**source, "changed_during_run": changed}
    result["environment"] = {"network": procs.network(), "cpus": os.cpu_count(), "keywheel": keywheel}
    console = Console(width=200)
    print_tables(result, console)
    console.print(f"keywheel {keywheel['commit']} from {keywheel['package']} (source digest {keywheel['src_digest']})")
    if changed:
        console.print("[red]keywheel's source changed during the run: its figures mix two versions; run again[/red]")
    json_path = args.json or (
        None if cfg.smoke else HERE / "results" / f"inprocess-{datetime.now():%Y%m%d-%H%M%S}.json"
    )
    if json_path:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(result, indent=2))
        print(f"results written to {json_path}")
    return 1 if errors(result) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
