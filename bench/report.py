"""Medians over rounds, same-round ratios, the printed tables and the JSON file."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import statistics
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

SRC = Path(__file__).resolve().parents[1] / "src" / "keywheel"  # when keywheel is not importable
# metric name -> (part of a scenario's result, field): c16 = wrk at 16 connections, c1 = at 1, seq = sequential
METRICS = {
    "rps": ("c16", "rps"),
    "cpu_ms": ("c16", "cpu_per_request_ms"),
    "cpu_c1_ms": ("c1", "cpu_per_request_ms"),
    "p50_ms": ("c1", "p50_ms"),
    "p99_ms": ("c1", "p99_ms"),
    "ttfb_ms": ("seq", "ttfb_p50_ms"),
    "total_ms": ("seq", "total_p50_ms"),
}
RATIOS = {  # name -> (metric, the target it is divided by)
    "rps_x_floor": ("rps", "floor"),
    "rps_x_litellm": ("rps", "litellm"),
    "cpu_x_floor": ("cpu_ms", "floor"),
    "cpu_x_litellm": ("cpu_ms", "litellm"),
    "cpu_x_keywheel": ("cpu_ms", "keywheel"),  # keywheel-ops (metrics + JSON log on) over keywheel (both off)
}
OPS_BUDGET = 1.10  # metrics and the JSON log on: CPU per request within 10 % of both off
FLAT_TOLERANCE = 0.10  # "flat": within this share of the reference measured in the same round or pass
TITLES = {
    "chat": "OpenAI chat, non-streaming",
    "stream": "OpenAI chat, streaming",
    "anthropic": "Anthropic in, OpenRouter out, non-streaming",
    "anthropic-stream": "Anthropic in, streaming",
    "gemini": "Gemini in, OpenRouter out, non-streaming",
    "gemini-stream": "Gemini in, streaming",
}


def metric(scenario_result: dict[str, Any] | None, name: str) -> float | None:
    if not scenario_result:
        return None
    part, key = METRICS[name]
    value = scenario_result.get(part, {}).get(key)
    return float(value) if value is not None else None


def median(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


class Runs:
    """The measurements of one run, looked up by round and target."""

    def __init__(self, runs: list[dict[str, Any]]) -> None:
        self.by_key = {(r["round"], r["target"]): r for r in runs}
        self.rounds = sorted({r["round"] for r in runs})

    def value(self, round_no: int, target: str, scenario: str, name: str) -> float | None:
        run = self.by_key.get((round_no, target))
        return metric(run["scenarios"].get(scenario), name) if run else None

    def median(self, target: str, scenario: str, name: str) -> float | None:
        return median([self.value(r, target, scenario, name) for r in self.rounds])

    def paired(
        self, target: str, other: str, scenario: str, name: str, combine: Callable[[float, float], float]
    ) -> float | None:
        """Median over rounds of combine(target's value, other's value from the same round)."""
        values: list[float | None] = []
        for r in self.rounds:
            a, b = self.value(r, target, scenario, name), self.value(r, other, scenario, name)
            values.append(combine(a, b) if a is not None and b else None)  # b == 0 has no ratio
        return median(values)

    def attempted(self, target: str, scenario: str) -> bool:
        return any(scenario in run["scenarios"] for (_, name), run in self.by_key.items() if name == target)

    def process_median(self, target: str, key: str) -> float | None:
        return median([run.get(key) for (_, name), run in self.by_key.items() if name == target])


def scenario_errors(result: dict[str, Any]) -> int:
    """Wrong answers in the sequential check plus wrk's non-2xx answers, socket errors and timeouts."""
    return int(result["seq"]["failures"]) + sum(int(result.get(p, {}).get("errors", 0)) for p in ("c16", "c1"))


def errors_of(run: dict[str, Any]) -> int:
    return (1 if run.get("error") else 0) + sum(scenario_errors(r) for r in run["scenarios"].values())


def build(
    *,
    settings: dict[str, Any],
    environment: dict[str, Any],
    skipped: dict[str, str],
    runs: list[dict[str, Any]],
    nginx_start_s: float,
    duration_s: float,
) -> dict[str, Any]:
    table = Runs(runs)
    targets = list(dict.fromkeys(r["target"] for r in runs))
    summary: dict[str, dict[str, dict[str, float | None]]] = {}
    for scenario in settings["scenarios"]:
        for target in targets:
            if not table.attempted(target, scenario):
                continue
            row: dict[str, float | None] = {name: table.median(target, scenario, name) for name in METRICS}
            row["added_p50_ms"] = table.paired(target, "direct", scenario, "p50_ms", lambda a, b: a - b)
            for ratio, (name, other) in RATIOS.items():
                row[ratio] = table.paired(target, other, scenario, name, lambda a, b: a / b)
            summary.setdefault(scenario, {})[target] = row
    process = {
        t: {
            "startup_s": nginx_start_s if t == "direct" else table.process_median(t, "startup_s"),
            "rss_mb": table.process_median(t, "rss_mb"),
        }
        for t in targets
    }
    return {
        "settings": settings,
        "environment": environment,
        "skipped": skipped,
        "duration_s": duration_s,
        "summary": summary,
        "process": process,
        "runs": runs,
    }


def source_state() -> dict[str, Any]:
    """Which keywheel was measured: where the package imported from, its commit, whether its tree
    differs from that commit, and a digest of its source.

    Other people work in this tree; comparing the digest at the start and the end of a run shows
    whether keywheel changed under it (then its figures mix two versions). To measure a fixed copy
    instead, run with ``PYTHONPATH=<copy>/src``: every process the harness starts imports that one.
    """
    spec = importlib.util.find_spec("keywheel")
    package = Path(spec.origin).parent if spec and spec.origin else SRC
    digest = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        digest.update(str(path.relative_to(package)).encode() + b"\0" + path.read_bytes())

    def git(*args: str) -> str:
        try:  # read-only: no optional index refresh
            out = subprocess.run(["git", "--no-optional-locks", *args], capture_output=True, text=True, cwd=package)
        except OSError:
            return ""
        return out.stdout.strip() if out.returncode == 0 else ""

    return {
        "package": str(package),
        "commit": git("rev-parse", "--short", "HEAD") or "unknown (not a git checkout)",
        "src_modified": bool(git("status", "--porcelain", "--", ".")),
        "src_digest": digest.hexdigest()[:16],
    }


def to_json(results: dict[str, Any]) -> str:
    return json.dumps(results, indent=2, sort_keys=False)


# --- Printing ---------------------------------------------------------------------------------------


def fmt_num(value: float | None, digits: int = 2, suffix: str = "") -> str:
    return "—" if value is None else f"{value:,.{digits}f}{suffix}"


def fmt_ratio(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value:.2f}×" if value >= 0.1 else f"{value:.2g}×"  # keep two digits of e.g. 0.0095


def verdict(value: float | None, *, at_most: float | None = None, at_least: float | None = None) -> str:
    """``value`` against a target, in words for the printed tables."""
    if value is None:
        return "not measured"
    ok = (at_most is None or value <= at_most) and (at_least is None or value >= at_least)
    return "[green]meets the target[/green]" if ok else "[red]MISSES the target[/red]"


def scenario_line(result: dict[str, Any]) -> str:
    """One progress line for a measured scenario."""
    seq = result["seq"]
    if seq["failures"]:
        return f"FAILED {seq['failures']} of {seq['ok'] + seq['failures']}: {seq['first_failure']}"
    parts = [f"seq ttfb {fmt_num(seq['ttfb_p50_ms'])} total {fmt_num(seq['total_p50_ms'])} ms"]
    if c16 := result.get("c16"):
        parts.append(f"@16 {c16['rps']:,.0f} req/s cpu {fmt_num(c16['cpu_per_request_ms'], 3)} ms/req")
    if c1 := result.get("c1"):
        parts.append(f"@1 p50 {c1['p50_ms']:.2f} p99 {c1['p99_ms']:.2f} ms")
    if errors := scenario_errors(result):
        parts.append(f"ERRORS {errors}")
    return " | ".join(parts)


def scenario_table(scenario: str, rows: dict[str, dict[str, float | None]], errors: dict[str, int]) -> Table:
    stream = scenario.endswith("stream")
    table = Table(title=f"{scenario}: {TITLES.get(scenario, scenario)} (medians over rounds)", title_justify="left")
    columns = [
        "target",
        "req/s @16",
        "×floor",
        "p50 @1",
        "p99 @1",
        "added p50",
        "CPU/req",
        "CPU ×floor",
        "CPU ×LiteLLM",
    ]
    columns += ["TTFB p50", "last byte p50"] if stream else []
    for column in [*columns, "errors"]:
        table.add_column(column, justify="left" if column == "target" else "right")
    for target, row in rows.items():
        gateway = target != "direct"
        cells = [
            target,
            fmt_num(row["rps"], 0),
            fmt_ratio(row["rps_x_floor"]) if gateway else "",
            fmt_num(row["p50_ms"], 2, " ms"),
            fmt_num(row["p99_ms"], 2, " ms"),
            fmt_num(row["added_p50_ms"], 2, " ms") if gateway else "",
            fmt_num(row["cpu_ms"], 3, " ms"),
            fmt_ratio(row["cpu_x_floor"]) if gateway else "",
            fmt_ratio(row["cpu_x_litellm"]) if gateway else "",
        ]
        if stream:
            cells += [fmt_num(row["ttfb_ms"], 2, " ms"), fmt_num(row["total_ms"], 2, " ms")]
        count = errors.get(target, 0)
        cells.append(f"[red]{count}[/red]" if count else "0")
        table.add_row(*cells)
    return table


def process_table(process: dict[str, dict[str, float | None]]) -> Table:
    table = Table(title="processes (medians over rounds; direct = nginx)", title_justify="left")
    for column in ("target", "start to first answer", "RSS after runs"):
        table.add_column(column, justify="left" if column == "target" else "right")
    for target, row in process.items():
        table.add_row(target, fmt_num(row["startup_s"], 2, " s"), fmt_num(row["rss_mb"], 0, " MB"))
    return table


def _errors_by_target(runs: list[dict[str, Any]], scenario: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    for run in runs:
        result = run["scenarios"].get(scenario)
        if result:
            counts[run["target"]] = counts.get(run["target"], 0) + scenario_errors(result)
    return counts


def print_tables(results: dict[str, Any], console: Console) -> None:
    """The gateway section's tables (print_footer ends the whole run's output)."""
    console.print()
    for scenario, rows in results["summary"].items():
        console.print(scenario_table(scenario, rows, _errors_by_target(results["runs"], scenario)))
    console.print(process_table(results["process"]))
    for scenario, rows in results["summary"].items():
        ratio = rows.get("keywheel", {}).get("cpu_x_litellm")
        if ratio:
            console.print(
                f"keywheel vs LiteLLM, CPU per request ({scenario}): {ratio:.3f}× "
                f"(LiteLLM costs {1 / ratio:.1f}× keywheel's)"
            )
    for scenario, rows in results["summary"].items():
        ops = rows.get("keywheel-ops", {}).get("cpu_x_keywheel")
        if ops:
            verdict = "within" if ops <= OPS_BUDGET else "[red]over[/red]"
            console.print(
                f"keywheel with metrics + JSON log vs both off, CPU per request ({scenario}): {ops:.3f}× "
                f"({verdict} the {OPS_BUDGET:.2f}× budget)"
            )
    for target, reason in results["skipped"].items():
        console.print(f"[yellow]skipped {target}[/yellow]: {reason}")
    for run in results["runs"]:
        if run.get("error"):
            console.print(f"[red]{run['target']} failed in round {run['round']}[/red]: {run['error']}")
        for scenario, result in run["scenarios"].items():
            if result["seq"]["failures"]:
                console.print(
                    f"[red]{run['target']} gave {result['seq']['failures']} wrong answer(s) to {scenario} "
                    f"in round {run['round']}[/red], the first: {result['seq']['first_failure']}"
                )


def print_footer(results: dict[str, Any], console: Console) -> None:
    settings = results["settings"]
    console.print(
        f"sections: {', '.join(settings['sections'])}; {settings['rounds']} round(s), {settings['seconds']} s per "
        f"wrk run, {settings['seq_requests']} sequential requests per scenario; "
        f"whole run {results['duration_s']:.0f} s; network: {results['environment']['network']}. "
        "Compare only figures from the same run."
    )
    source = results["environment"].get("keywheel", {})
    if source:
        console.print(
            f"keywheel {source['commit']}{' with uncommitted changes' if source['src_modified'] else ''}"
            f" from {source['package']} (source digest {source['src_digest']})"
        )
    if source.get("changed_during_run"):
        console.print("[red]keywheel's source changed during the run: its figures mix two versions; run again[/red]")
