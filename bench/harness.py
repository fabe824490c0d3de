"""Benchmark keywheel's gateway against nginx itself, a minimal pass-through (the floor) and LiteLLM.

The targets run interleaved, round after round (direct, floor, keywheel, litellm, direct, ...),
because this machine's speed drifts over minutes: only ratios within one run mean anything.
After that section (``gateway``) come ``inprocess`` (inprocess.py: Wheel.achat against the raw
aiohttp call and LiteLLM's Router), ``keypool`` (keypool.py: key selection), ``scaling``
(scaling.py: the gateway with 1 to 1,000 keys, some cooling) and, only when asked for, ``soak``
(soak.py: RSS over 200,000 requests) and ``faultsoak`` (faultsoak.py: RSS and file descriptors
over BENCH_FAULTSOAK_SECONDS, 30 min, of load under flipping faults) and ``quota`` (quota.py:
keywheel and LiteLLM under twice the quota of windowed keys; Redis vs memory, 1 and 2 workers).
See bench/README.md for what is measured and how to read it.

    .venv/bin/python bench/harness.py            # full run (BENCH_SECONDS, BENCH_ROUNDS, ...)
    .venv/bin/python bench/harness.py --soak     # the same plus the soak (BENCH_SOAK=1)
    .venv/bin/python bench/harness.py --smoke    # every section briefly, < 60 s, no thresholds
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import faultsoak
import inprocess
import keypool
import loadgen
import nginx_upstream
import procs
import quota
import report
import scaling
import soak
import stream_client
from rich.console import Console
from targets import ALL_TARGETS, SCENARIOS, Direct, Scenario, Target

RESULTS = Path(__file__).resolve().parent / "results"
CHAT_SCENARIOS = ["chat", "stream"]
MEASUREMENT_ERRORS = (RuntimeError, OSError, subprocess.TimeoutExpired)
EXIT_MISSING_TOOLS = 3  # nothing measured: nginx, njs or wrk is not installed (callers may skip on it)
SECTIONS = ["gateway", "inprocess", "keypool", "scaling", "soak", "faultsoak", "quota"]
DEFAULT_SECTIONS = ["gateway", "inprocess", "keypool", "scaling"]  # the soaks and quota only when asked for
NEEDS: dict[str, set[str]] = {  # tools each section needs ("nginx": with its njs module)
    "gateway": {"nginx", "wrk"},
    "inprocess": {"nginx"},
    "keypool": set(),
    "scaling": {"nginx", "wrk"},
    "soak": {"nginx"},
    "faultsoak": set(),  # its own upstream: keywheel.testing.FakeUpstream
    "quota": {"nginx", "wrk"},  # for req/s with 1 and 2 workers; the rest on FakeUpstream and redis-server
}
SECTION_MODULES: dict[str, Any] = {
    "inprocess": inprocess,
    "keypool": keypool,
    "scaling": scaling,
    "soak": soak,
    "faultsoak": faultsoak,
    "quota": quota,
}


@dataclass(frozen=True)
class Settings:
    seconds: int  # per wrk run
    warmup: int  # seconds of unmeasured wrk load before a scenario's measured runs
    rounds: int
    seq_requests: int  # sequential requests per scenario (TTFB / total; also the correctness check)
    targets: list[str]
    scenarios: list[str]
    wrk_scenarios: list[str]  # scenarios loaded with wrk at 16 connections; the rest are only checked and timed
    latency_scenarios: list[str]  # scenarios also run with wrk at 1 connection
    smoke: bool
    sections: list[str] = field(default_factory=lambda: list(DEFAULT_SECTIONS))
    calls: int | None = None  # inprocess: sequential calls per client and round (None: its default)
    concurrent_calls: int | None = None  # inprocess: calls over 16 tasks
    keypool_pairs: int | None = None  # keypool: pairs per measurement
    soak_requests: int | None = None


def parse_args(argv: list[str]) -> tuple[Settings, Path | None]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true", help="short run of every available target, no thresholds")
    parser.add_argument("--seconds", type=int, default=int(os.environ.get("BENCH_SECONDS", "10")))
    parser.add_argument("--warmup", type=int, default=int(os.environ.get("BENCH_WARMUP", "2")))
    parser.add_argument("--rounds", type=int, default=int(os.environ.get("BENCH_ROUNDS", "2")))
    parser.add_argument("--seq-requests", type=int, default=int(os.environ.get("BENCH_SEQ_REQUESTS", "200")))
    parser.add_argument(
        "--targets", default=os.environ.get("BENCH_TARGETS", "direct,floor,keywheel,keywheel-ops,litellm")
    )
    parser.add_argument(
        "--scenarios",
        default=os.environ.get("BENCH_SCENARIOS"),
        help=f"comma list of {', '.join(SCENARIOS)}, or 'all' (default chat,stream; smoke: all)",
    )
    parser.add_argument(
        "--sections",
        default=os.environ.get("BENCH_SECTIONS", ",".join(DEFAULT_SECTIONS)),
        help=f"comma list of {', '.join(SECTIONS)} (default: all but soak, faultsoak and quota)",
    )
    parser.add_argument(
        "--soak", action="store_true", default=os.environ.get("BENCH_SOAK") == "1", help="add the soak section"
    )
    parser.add_argument("--calls", type=int, help="inprocess: sequential calls per client and round (2000)")
    parser.add_argument("--concurrent-calls", type=int, help="inprocess: calls over 16 tasks (4000)")
    parser.add_argument("--keypool-pairs", type=int, help="keypool: acquire+release pairs per measurement")
    parser.add_argument("--soak-requests", type=int, help="soak: requests in all (BENCH_SOAK_REQUESTS, 200000)")
    parser.add_argument(
        "--json", type=Path, help="where to write the results (default: bench/results/<time>.json; none in smoke mode)"
    )
    args = parser.parse_args(argv)
    sections = _names(args.sections, SECTIONS)
    if args.soak and "soak" not in sections:
        sections.append("soak")
    extra: dict[str, Any] = {
        "sections": [name for name in SECTIONS if name in sections],
        "calls": args.calls,
        "concurrent_calls": args.concurrent_calls,
        "keypool_pairs": args.keypool_pairs,
        "soak_requests": args.soak_requests,
    }
    scenarios_text = args.scenarios or ("all" if args.smoke else ",".join(CHAT_SCENARIOS))
    scenarios = list(SCENARIOS) if scenarios_text == "all" else _names(scenarios_text, SCENARIOS)
    targets = _names(args.targets, [t.name for t in ALL_TARGETS])
    if args.smoke:
        settings = Settings(
            seconds=1,
            warmup=0,
            rounds=1,
            seq_requests=20,
            targets=targets,
            scenarios=scenarios,
            wrk_scenarios=CHAT_SCENARIOS,
            latency_scenarios=["chat"],
            smoke=True,
            **extra,
        )
        return settings, args.json
    settings = Settings(
        seconds=args.seconds,
        warmup=args.warmup,
        rounds=args.rounds,
        seq_requests=args.seq_requests,
        targets=targets,
        scenarios=scenarios,
        wrk_scenarios=scenarios,
        latency_scenarios=scenarios,
        smoke=False,
        **extra,
    )
    json_path = args.json or RESULTS / f"{datetime.now().strftime('%Y%m%d-%H%M%S')}.json"
    return settings, json_path


def _names(text: str, known: Any) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in known]
    if unknown:
        sys.exit(f"unknown name(s): {', '.join(unknown)}; known: {', '.join(known)}")
    return names


# --- One target in one round --------------------------------------------------------------------


@dataclass
class TargetRun:
    round: int
    target: str
    startup_s: float | None = None
    rss_mb: float | None = None
    error: str | None = None
    scenarios: dict[str, dict[str, Any]] = field(default_factory=dict)


def measure_scenario(req: stream_client.Request, pid: int, settings: Settings, name: str) -> dict[str, Any]:
    seq = stream_client.run(req, settings.seq_requests)
    result: dict[str, Any] = {
        "seq": {
            "ok": len(seq.total_s),
            "failures": len(seq.failures),
            "first_failure": next(iter(seq.failures), None),
            "ttfb_p50_ms": seq.median_ms(seq.ttfb_s),
            "total_p50_ms": seq.median_ms(seq.total_s),
        },
    }
    if seq.failures:
        return result  # a target that answers wrongly is not worth loading
    if settings.warmup and name in settings.wrk_scenarios:
        loadgen.wrk(req, 16, settings.warmup, pid)  # fill connection pools and lazy imports before measuring
    for label, connections, wanted in (("c16", 16, settings.wrk_scenarios), ("c1", 1, settings.latency_scenarios)):
        if name in wanted:
            run = loadgen.wrk(req, connections, settings.seconds, pid)
            result[label] = {**asdict(run), "cpu_per_request_ms": run.cpu_per_request_ms}
    return result


def run_scenarios(target: Target, base_url: str, pid: int, settings: Settings, out: TargetRun) -> None:
    for name in settings.scenarios:
        scenario: Scenario = SCENARIOS[name]
        req = target.request(base_url, scenario)
        if req is None:
            continue
        out.scenarios[name] = measure_scenario(req, pid, settings, name)
        say(f"    {name:<17} {report.scenario_line(out.scenarios[name])}")
    out.rss_mb = procs.rss_bytes(pid) / 2**20


def run_gateway(target: Target, round_no: int, upstream: str, workdir: Path, settings: Settings) -> TargetRun:
    out = TargetRun(round_no, target.name)
    port = procs.free_port()
    cmd, env = target.command(port, upstream, workdir)
    log = workdir / f"{target.name}-round{round_no}.log"
    base_url = f"http://127.0.0.1:{port}"
    proc = procs.spawn(cmd, env, log)
    try:
        first = target.request(base_url, SCENARIOS["chat"])
        assert first is not None  # every target speaks OpenAI chat
        out.startup_s = stream_client.first_good_answer(first, lambda: proc.poll() is None, target.start_timeout)
        say(f"  {target.name}: first good answer after {out.startup_s:.2f} s")
        run_scenarios(target, base_url, proc.pid, settings, out)
    except MEASUREMENT_ERRORS as exc:
        out.error = f"{exc}\n{procs.tail(log)}".strip()
        say(f"  {target.name}: FAILED: {out.error}")
    finally:
        procs.stop(proc)
    return out


def run_direct(target: Direct, round_no: int, upstream: str, nginx_pid: int, settings: Settings) -> TargetRun:
    out = TargetRun(round_no, target.name)
    say("  direct: nginx itself")
    try:
        run_scenarios(target, upstream, nginx_pid, settings, out)
    except MEASUREMENT_ERRORS as exc:
        out.error = str(exc)
        say(f"  direct: FAILED: {exc}")
    return out


# --- The whole run --------------------------------------------------------------------------------


def say(text: str) -> None:
    print(text, flush=True)


def available_targets(settings: Settings) -> tuple[list[Target], dict[str, str]]:
    chosen, skipped = [], {}
    for target in ALL_TARGETS:
        if target.name not in settings.targets:
            continue
        reason = target.unavailable_reason()
        if reason:
            skipped[target.name] = reason
            say(f"skipping {target.name}: {reason}")
        else:
            chosen.append(target)
    return chosen, skipped


def run_rounds(
    targets: list[Target], settings: Settings, workdir: Path, nginx_pid: int, upstream: str
) -> list[TargetRun]:
    runs = []
    for round_no in range(1, settings.rounds + 1):
        say(f"round {round_no}/{settings.rounds}")
        for target in targets:
            if isinstance(target, Direct):
                runs.append(run_direct(target, round_no, upstream, nginx_pid, settings))
            else:
                runs.append(run_gateway(target, round_no, upstream, workdir, settings))
    return runs


def missing_tools(sections: list[str]) -> str | None:
    needs = set().union(*(NEEDS[name] for name in sections))
    if "wrk" in needs and not shutil.which("wrk"):
        return "wrk is not installed (bash bench/run.sh installs it)"
    return nginx_upstream.unavailable_reason() if "nginx" in needs else None


def environment() -> dict[str, Any]:
    def version(cmd: list[str]) -> str:
        try:
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            return "unknown"
        lines = (out.stdout + out.stderr).strip().splitlines()  # nginx -v prints to stderr
        return lines[0] if lines else "unknown"

    litellm_python = Path(__file__).resolve().parent / ".venv-litellm" / "bin" / "python"
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "kernel": platform.release(),
        "nginx": version(["nginx", "-v"]),
        "wrk": version(["wrk", "-v"]),
        "litellm": version([str(litellm_python), "-c", "import importlib.metadata as m; print(m.version('litellm'))"])
        if litellm_python.exists()
        else "absent",
        "network": procs.network(),
    }


def run_sections(settings: Settings, workdir: Path, upstream: str) -> dict[str, dict[str, Any]]:
    """Every section but the gateway's, in order; each one's results as its module returns them."""
    smoke, rounds = settings.smoke, settings.rounds
    out: dict[str, dict[str, Any]] = {}
    if "inprocess" in settings.sections:
        cfg = inprocess.make_config(smoke, rounds, settings.calls, settings.concurrent_calls)
        out["inprocess"] = inprocess.run(cfg, upstream, say)
    if "keypool" in settings.sections:
        out["keypool"] = keypool.run(keypool.make_config(smoke, rounds, settings.keypool_pairs), say)
    if "scaling" in settings.sections:
        cfg_scaling = scaling.make_config(smoke, rounds, settings.seconds, settings.warmup, settings.seq_requests)
        out["scaling"] = scaling.run(cfg_scaling, upstream, workdir, say)
    if "soak" in settings.sections:
        out["soak"] = soak.run(soak.make_config(smoke, settings.soak_requests), upstream, workdir, say)
    if "faultsoak" in settings.sections:
        out["faultsoak"] = faultsoak.run(faultsoak.make_config(smoke), workdir, say)
    if "quota" in settings.sections:
        cfg_quota = quota.make_config(smoke, rounds, settings.seconds, settings.warmup)
        out["quota"] = quota.run(cfg_quota, upstream, workdir, say)
    return out


def main(argv: list[str]) -> int:
    settings, json_path = parse_args(argv)
    procs.isolate_network(__file__, argv)
    started = time.monotonic()
    source = report.source_state()
    if reason := missing_tools(settings.sections):
        print(reason, file=sys.stderr)
        return EXIT_MISSING_TOOLS
    gateway = "gateway" in settings.sections
    targets, skipped = available_targets(settings) if gateway else ([], {})
    say(f"settings: {settings}")
    runs: list[TargetRun] = []
    nginx_start, upstream = 0.0, ""  # keypool alone needs no stand-in
    with tempfile.TemporaryDirectory(prefix="keywheel-bench-") as tmp, ExitStack() as stack:
        workdir = Path(tmp)
        if set().union(*(NEEDS[name] for name in settings.sections)):
            nginx, port = nginx_upstream.start(workdir / "nginx")
            stack.callback(procs.stop, nginx)
            nginx_start = nginx_upstream.wait_ready(nginx, port)
            upstream = f"http://127.0.0.1:{port}"
            say(f"nginx stand-in on {upstream} (answered after {nginx_start:.2f} s)")
            if gateway:
                runs = run_rounds(targets, settings, workdir, nginx.pid, upstream)
        sections = run_sections(settings, workdir, upstream)
    results = report.build(
        settings=asdict(settings),
        environment=environment(),
        skipped=skipped,
        runs=[asdict(r) for r in runs],
        nginx_start_s=nginx_start,
        duration_s=time.monotonic() - started,
    )
    results.update(sections)
    changed = report.source_state()["src_digest"] != source["src_digest"]
    results["environment"]["keywheel"] = {**source, "changed_during_run": changed}
    console = Console(width=200)
    if gateway:
        report.print_tables(results, console)
    for name, result in sections.items():
        console.print()
        SECTION_MODULES[name].print_tables(result, console)
    report.print_footer(results, console)
    if json_path:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(report.to_json(results))
        say(f"results written to {json_path}")
    failed = [r for r in runs if r.error] + [n for n, r in sections.items() if SECTION_MODULES[n].errors(r)]
    return 1 if failed or any(report.errors_of(r) for r in results["runs"]) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
