"""Running wrk against one target and reading its figures, plus the target's CPU time meanwhile."""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import procs
from stream_client import Request

POST_LUA = Path(__file__).resolve().parent / "wrk" / "post.lua"


@dataclass(frozen=True)
class WrkResult:
    connections: int
    requests: int
    seconds: float
    errors: int  # non-2xx/3xx answers, socket errors and timeouts
    p50_ms: float
    p99_ms: float
    cpu_s: float  # the target's user+system CPU during the run
    rps: float

    @property
    def cpu_per_request_ms(self) -> float | None:
        return self.cpu_s * 1000 / self.requests if self.requests else None


def wrk(req: Request, connections: int, seconds: int, target_pid: int) -> WrkResult:
    """Load ``req`` at ``connections`` open connections for ``seconds``, metering ``target_pid``'s tree."""
    threads = min(2, connections)
    headers = [
        arg
        for name, value in {"Content-Type": "application/json", **req.headers}.items()
        for arg in ("-H", f"{name}: {value}")
    ]
    with tempfile.NamedTemporaryFile(prefix="bench-body-", suffix=".json") as body:
        body.write(req.body)
        body.flush()
        cmd = [
            "wrk",
            f"-t{threads}",
            f"-c{connections}",
            f"-d{seconds}s",
            "--timeout",
            "10s",
            "-s",
            str(POST_LUA),
            *headers,
            req.url,
        ]
        cpu_before = procs.cpu_seconds(target_pid)
        out = subprocess.run(
            cmd, capture_output=True, text=True, env={**os.environ, "BENCH_BODY": body.name}, timeout=seconds + 60
        )
        cpu = procs.cpu_seconds(target_pid) - cpu_before
    return _parse(out, connections, cpu)


def _parse(out: subprocess.CompletedProcess[str], connections: int, cpu_s: float) -> WrkResult:
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("BENCH_JSON ")), None)
    if out.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed (exit {out.returncode}): {out.stderr.strip() or out.stdout[-500:]}")
    data = json.loads(line.removeprefix("BENCH_JSON "))
    seconds = data["duration_us"] / 1e6
    return WrkResult(
        connections=connections,
        requests=data["requests"],
        seconds=seconds,
        errors=data["status_errors"] + data["socket_errors"] + data["timeouts"],
        p50_ms=data["p50_us"] / 1000,
        p99_ms=data["p99_us"] / 1000,
        cpu_s=cpu_s,
        rps=data["requests"] / seconds if seconds else 0.0,
    )
