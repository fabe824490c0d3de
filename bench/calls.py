"""Python calls per request: a deterministic before/after of keywheel's hot path.

Wall-clock figures move with whatever else runs on the machine; the number of Python functions a
request enters does not. This counts them (``cProfile``, main thread only, after a warm-up) for:

| row | what |
|---|---|
| `gateway chat` / `gateway stream` | one OpenAI-format request through ``keywheel serve``'s app and uvicorn protocol (pass-through to OpenRouter), in-process on uvloop |
| `floor chat` / `floor stream` | the same through ``floor_app.py``: the least a Python gateway costs |
| `Wheel.achat` / `raw aiohttp` | one library call on the default asyncio loop, and the raw aiohttp call it wraps |

each against the bench's nginx stand-in, in a fresh process per row (``calls_worker.py``), for the
tree this file is in and, with ``BENCH_KEYWHEEL``, another build (a ``keywheel`` executable of
another venv, whose ``python`` is used, or another tree's ``src`` directory, put on
``PYTHONPATH``). Besides the counts, each row has the server thread's CPU per request of an
unprofiled pass (a wall-clock figure: noisy on a shared machine) and, with ``--interleave``, the
two sides of each comparison timed in one process in alternating blocks (floor vs keywheel on one
loop; raw vs ``Wheel.achat``), whose ratio drifts much less than separate runs.

    .venv/bin/python bench/calls.py                      # this tree
    BENCH_KEYWHEEL=/work/wt/base/src .venv/bin/python bench/calls.py --top 25   # and a baseline
    .venv/bin/python bench/calls.py --interleave         # plus in-process CPU ratios

Counts are per request: Python functions entered (a coroutine or generator resumed counts once per
resume) and built-in functions called; the floor's and raw aiohttp's are the references.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import nginx_upstream
import procs

HERE = Path(__file__).resolve().parent
ROWS = [  # (label, kind, app, scenario)
    ("gateway chat", "gateway", "keywheel", "chat"),
    ("gateway stream", "gateway", "keywheel", "stream"),
    ("Wheel.achat", "inprocess", "wheel", "chat"),
]
REFERENCES = [
    ("floor chat", "gateway", "floor", "chat"),
    ("floor stream", "gateway", "floor", "stream"),
    ("raw aiohttp", "inprocess", "raw", "chat"),
]
REFERENCE_OF = {"gateway chat": "floor chat", "gateway stream": "floor stream", "Wheel.achat": "raw aiohttp"}
INTERLEAVED = [  # (label, kind, apps, scenario): the reference first
    ("gateway chat", "gateway", "floor,keywheel", "chat"),
    ("gateway stream", "gateway", "floor,keywheel", "stream"),
    ("Wheel.achat", "inprocess", "raw,wheel", "chat"),
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


def worker(python: str, env: dict[str, str], args: list[str]) -> dict[str, Any]:
    out = subprocess.run(
        [python, str(HERE / "calls_worker.py"), *args], env=env, capture_output=True, text=True, timeout=900
    )
    for line in out.stdout.splitlines():
        if line.startswith("BENCH_JSON "):
            result: dict[str, Any] = json.loads(line.removeprefix("BENCH_JSON "))
            return result
    raise RuntimeError(f"calls_worker {' '.join(args)} failed (exit {out.returncode}):\n{out.stderr[-3000:]}")


def count(python: str, env: dict[str, str], row: tuple[str, str, str, str], opts: argparse.Namespace) -> dict[str, Any]:
    _, kind, app, scenario = row
    args = [kind, "--app", app, "--scenario", scenario, "--upstream", opts.upstream]
    args += ["--warmup", str(opts.warmup), "--requests", str(opts.requests)]
    return worker(python, env, args)


def interleave(python: str, env: dict[str, str], row: tuple[str, str, str, str], opts: argparse.Namespace) -> Any:
    _, kind, apps, scenario = row
    args = [kind, "--app", apps, "--scenario", scenario, "--upstream", opts.upstream, "--mode", "interleave"]
    args += ["--warmup", str(opts.warmup), "--block", str(opts.block), "--rounds", str(opts.rounds)]
    return worker(python, env, args)


def measure(opts: argparse.Namespace) -> dict[str, Any]:
    builds: dict[str, str | None] = {"this tree": None}
    if os.environ.get("BENCH_KEYWHEEL"):
        builds = {"baseline": os.environ["BENCH_KEYWHEEL"], "this tree": None}
    results: dict[str, Any] = {"builds": builds, "counts": {}, "interleaved": {}}
    python, env = tree_env(None)
    for row in REFERENCES:
        say(f"  {row[0]} ...")
        results["counts"].setdefault("reference", {})[row[0]] = count(python, env, row, opts)
    for name, build in builds.items():
        python, env = tree_env(build)
        for row in ROWS:
            say(f"  {name}: {row[0]} ...")
            results["counts"].setdefault(name, {})[row[0]] = count(python, env, row, opts)
        if opts.interleave:
            for row in INTERLEAVED:
                say(f"  {name}: {row[0]} interleaved with its reference ...")
                results["interleaved"].setdefault(name, {})[row[0]] = interleave(python, env, row, opts)
    return results


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def print_tables(results: dict[str, Any], top: int) -> None:
    counts = results["counts"]
    builds = list(results["builds"])
    ref = counts["reference"]
    head = "| row | " + " | ".join(
        f"{b}: Python calls/req (×ref) | {b}: built-in calls/req | {b}: CPU µs/req" for b in builds
    )
    print(head + " |")
    print("|---" * (1 + 3 * len(builds)) + "|")
    for label, _, _, _ in ROWS:
        reference = ref[REFERENCE_OF[label]]
        cells = []
        for build in builds:
            row = counts[build][label]
            ratio = row["python_calls"] / reference["python_calls"]
            cells.append(f"{row['python_calls']:.0f} ({ratio:.2f}×) | {row['builtin_calls']:.0f} | {row['cpu_us']:.0f}")
        print(f"| {label} | " + " | ".join(cells) + " |")
    for label, _, _, _ in REFERENCES:
        row = ref[label]
        cell = f"{row['python_calls']:.0f} | {row['builtin_calls']:.0f} | {row['cpu_us']:.0f}"
        print(f"| {label} (reference) | " + " | ".join([cell] * len(builds)) + " |")
    if results["interleaved"]:
        print()
        print(
            "| in one process, alternating blocks | "
            + " | ".join(f"{b}: CPU µs/req (ref) | {b}: ×ref (range)" for b in builds)
            + " |"
        )
        print("|---" * (1 + 2 * len(builds)) + "|")
        for label, _, apps, _ in INTERLEAVED:
            ref_name, name = apps.split(",")
            cells = []
            for build in builds:
                got = results["interleaved"][build][label]
                low, high = got["ratio_range"]
                cells.append(
                    f"{got['cpu_us'][name]:.0f} ({got['cpu_us'][ref_name]:.0f}) | {got['ratio']:.2f}× ({low:.2f}–{high:.2f})"
                )
            print(f"| {label} | " + " | ".join(cells) + " |")
    if top:
        for label, _, _, _ in ROWS:
            print(
                f"\n{label}: top {top} functions by calls per request"
                + (" (baseline → this tree)" if len(builds) > 1 else "")
            )
            functions = [counts[b][label]["functions"] for b in builds]
            names = sorted(
                set().union(*functions),
                key=lambda n: (
                    -max(abs(f.get(n, 0.0) - functions[0].get(n, 0.0)) for f in functions)
                    if len(builds) > 1
                    else -functions[0][n]
                ),
            )
            for name in names[:top]:
                values = " → ".join(f"{f.get(name, 0.0):6.2f}" for f in functions)
                print(f"  {values}  {name}")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=1000, help="requests per profiled (and timed) pass")
    parser.add_argument("--warmup", type=int, default=300)
    parser.add_argument(
        "--interleave", action="store_true", help="also time each row against its reference in one process"
    )
    parser.add_argument("--block", type=int, default=500, help="--interleave: requests per block")
    parser.add_argument("--rounds", type=int, default=5, help="--interleave: blocks of each side")
    parser.add_argument(
        "--top", type=int, default=0, help="list the top N functions of each row (by change, with a baseline)"
    )
    parser.add_argument("--json", type=Path, help="write the results here")
    opts = parser.parse_args(argv)
    procs.isolate_network(__file__, argv)
    if reason := nginx_upstream.unavailable_reason():
        print(reason, file=sys.stderr)
        return 3
    with tempfile.TemporaryDirectory(prefix="keywheel-calls-") as tmp:
        nginx, port = nginx_upstream.start(Path(tmp) / "nginx")
        try:
            nginx_upstream.wait_ready(nginx, port)
            opts.upstream = f"http://127.0.0.1:{port}"
            results = measure(opts)
        finally:
            procs.stop(nginx)
    print_tables(results, opts.top)
    if opts.json:
        opts.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
