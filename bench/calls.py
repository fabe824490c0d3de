"""Calls and instructions per request: a deterministic before/after of keywheel's hot path.

Wall-clock figures move with whatever else runs on the machine; what a request executes does not.
This counts, per request, for:

| row | what |
|---|---|
| `gateway chat` / `gateway stream` | an OpenAI request through `keywheel serve`'s app and protocol, to OpenRouter |
| `floor chat` / `floor stream` | the same through `floor_app.py`: the least a Python gateway costs (the reference) |
| `Wheel.achat` / `raw aiohttp` | one library call, and the raw aiohttp call it wraps (the reference) |

- **Python calls** (`cProfile`, the serving thread only, after a warm-up): functions entered — a
  coroutine or generator resumed counts once per resume — and built-ins called;
- **instructions** (with `--instructions`; needs valgrind): machine instructions the serving thread
  executes per request (`callgrind`, counting only between two marker calls around the measured
  requests), the closest this machine has to a deterministic CPU figure. About 40 s per row;
- **CPU µs** of an unprofiled pass (`time.thread_time` of the serving thread): wall-clock, noisy.

Each row runs in a fresh process (`calls_worker.py`) against the bench's nginx stand-in: the
gateways served in-process by uvicorn's protocol on uvloop (one kept-alive connection, sequential
requests from a client thread), the library calls on the default asyncio loop. For this tree and,
with `BENCH_KEYWHEEL`, another build: a `keywheel` executable of another venv (its `python` is
used) or another tree's `src` directory (put on `PYTHONPATH`).

    .venv/bin/python bench/calls.py                                   # this tree
    BENCH_KEYWHEEL=/work/wt/base/.venv/bin/keywheel .venv/bin/python bench/calls.py --instructions
    .venv/bin/python bench/calls.py --top 30                          # where the calls go
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import nginx_upstream
import procs

HERE = Path(__file__).resolve().parent
ROWS = [  # (label, kind, app, scenario, reference)
    ("gateway chat", "gateway", "keywheel", "chat", "floor chat"),
    ("gateway stream", "gateway", "keywheel", "stream", "floor stream"),
    ("Wheel.achat", "inprocess", "wheel", "chat", "raw aiohttp"),
]
REFERENCES = [
    ("floor chat", "gateway", "floor", "chat"),
    ("floor stream", "gateway", "floor", "stream"),
    ("raw aiohttp", "inprocess", "raw", "chat"),
]


def tree_env(build: str | None) -> tuple[str, dict[str, str]]:
    """The Python and environment that import ``build``'s keywheel (``None``: this tree's)."""
    env = procs.child_env({"PYTHONPATH": str(HERE)})
    if build is None:
        return sys.executable, env
    path = Path(build)
    if path.is_dir():  # a tree's src directory
        env["PYTHONPATH"] = f"{path}{os.pathsep}{HERE}"
        return sys.executable, env
    return str(path.parent / "python"), env  # a keywheel executable: its venv's python


def worker(cmd: list[str], env: dict[str, str]) -> dict[str, Any]:
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1800)
    for line in out.stdout.splitlines():
        if line.startswith("BENCH_JSON "):
            result: dict[str, Any] = json.loads(line.removeprefix("BENCH_JSON "))
            return result
    raise RuntimeError(f"{' '.join(cmd[-12:])} failed (exit {out.returncode}):\n{out.stderr[-3000:]}")


def measure_row(python: str, env: dict[str, str], row: tuple[str, ...], opts: argparse.Namespace) -> dict[str, Any]:
    _, kind, app, scenario = row[:4]
    args = [str(HERE / "calls_worker.py"), kind, "--app", app, "--scenario", scenario, "--upstream", opts.upstream]
    args += ["--warmup", str(opts.warmup), "--requests", str(opts.requests)]
    result = worker([python, *args], env)
    if opts.instructions:
        result["instructions"] = instructions(python, env, args, opts)
    return result


def instructions(python: str, env: dict[str, str], args: list[str], opts: argparse.Namespace) -> float:
    """Instructions per request of the serving (main) thread, counted by callgrind between the
    worker's two marker calls (``os.getppid`` starts the count, ``os.getpgrp`` ends it)."""
    with tempfile.TemporaryDirectory(prefix="calls-cg-") as tmp:
        out = Path(tmp) / "cg"
        grind = ["valgrind", "--tool=callgrind", "--separate-threads=yes", "--zero-before=os_getppid"]
        grind += ["--dump-before=os_getpgrp", f"--callgrind-out-file={out}.%p"]
        requests: int = opts.grind_requests
        cmd = [*grind, python, *args, "--mode", "instructions", "--warmup", "50", "--requests", str(requests)]
        worker(cmd, env)
        (dump,) = glob.glob(f"{out}.*.1-01")  # the first dump, of thread 1 (the loop's)
        for line in Path(dump).read_text().splitlines():
            if line.startswith("summary:"):
                return float(line.split()[1]) / requests
    raise RuntimeError(f"no summary in {dump}")


def measure(opts: argparse.Namespace) -> dict[str, Any]:
    builds: dict[str, str | None] = {"this tree": None}
    if os.environ.get("BENCH_KEYWHEEL"):
        builds = {"baseline": os.environ["BENCH_KEYWHEEL"], "this tree": None}
    results: dict[str, Any] = {"builds": builds, "rows": {}}
    python, env = tree_env(None)
    for ref in REFERENCES:
        say(f"  {ref[0]} ...")
        results["rows"].setdefault("reference", {})[ref[0]] = measure_row(python, env, ref, opts)
    for name, build in builds.items():
        python, env = tree_env(build)
        for label, kind, app, scenario, _ in ROWS:
            say(f"  {name}: {label} ...")
            results["rows"].setdefault(name, {})[label] = measure_row(python, env, (label, kind, app, scenario), opts)
    return results


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def print_tables(results: dict[str, Any], top: int, grind: bool) -> None:
    rows, builds = results["rows"], list(results["builds"])
    ref = rows["reference"]
    figures = ["Python calls", "built-in calls"] + (["instructions"] if grind else []) + ["CPU µs"]
    print("| row | " + " | ".join(f"{b}: {f}/req" for b in builds for f in figures) + " |")
    print("|---" * (1 + len(builds) * len(figures)) + "|")
    for label, _, _, _, reference in ROWS:
        cells = []
        for build in builds:
            got, base = rows[build][label], ref[reference]
            cells.append(f"{got['python_calls']:.0f} ({got['python_calls'] / base['python_calls']:.2f}×)")
            cells.append(f"{got['builtin_calls']:.0f}")
            if grind:
                cells.append(f"{got['instructions'] / 1000:.0f} k ({got['instructions'] / base['instructions']:.2f}×)")
            cells.append(f"{got['cpu_us']:.0f}")
        print(f"| {label} | " + " | ".join(cells) + " |")
    for label, *_ in REFERENCES:
        got = ref[label]
        cell = [f"{got['python_calls']:.0f}", f"{got['builtin_calls']:.0f}"]
        cell += [f"{got['instructions'] / 1000:.0f} k"] if grind else []
        cell += [f"{got['cpu_us']:.0f}"]
        print(f"| {label} (reference) | " + " | ".join(cell * len(builds)) + " |")
    print("\n(×: against the row's reference, floor or raw aiohttp.)")
    for label, *_ in ROWS if top else []:
        functions = [rows[b][label]["functions"] for b in builds]
        print(f"\n{label}: top {top} functions by calls per request" + (" (baseline → this tree)" * (len(builds) > 1)))
        names = sorted(set().union(*functions), key=lambda n: -max(f.get(n, 0.0) for f in functions))
        for name in names[:top]:
            print("  " + " → ".join(f"{f.get(name, 0.0):6.2f}" for f in functions) + f"  {name}")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=1000, help="requests per profiled (and timed) pass")
    parser.add_argument("--warmup", type=int, default=300)
    parser.add_argument("--instructions", action="store_true", help="count instructions too (valgrind)")
    parser.add_argument("--grind-requests", type=int, default=200, help="--instructions: requests counted")
    parser.add_argument("--top", type=int, default=0, help="list the top N functions of each row")
    parser.add_argument("--json", type=Path, help="write the results here")
    opts = parser.parse_args(argv)
    procs.isolate_network(__file__, argv)
    if reason := nginx_upstream.unavailable_reason():
        print(reason, file=sys.stderr)
        return 3
    if opts.instructions and not shutil.which("valgrind"):
        print("--instructions needs valgrind (apt-get install valgrind)", file=sys.stderr)
        return 3
    with tempfile.TemporaryDirectory(prefix="keywheel-calls-") as tmp:
        nginx, port = nginx_upstream.start(Path(tmp) / "nginx")
        try:
            nginx_upstream.wait_ready(nginx, port)
            opts.upstream = f"http://127.0.0.1:{port}"
            results = measure(opts)
        finally:
            procs.stop(nginx)
    print_tables(results, opts.top, opts.instructions)
    if opts.json:
        opts.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
