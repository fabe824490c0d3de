"""A time-based soak under flipping faults: ``keywheel serve``'s RSS and open file descriptors over time.

The harness's ``faultsoak`` section, never in the default run (``--sections faultsoak`` runs it;
``.venv/bin/python bench/faultsoak.py [--smoke]`` runs it on its own). It stops by itself after
``BENCH_FAULTSOAK_SECONDS`` (1800) of load, ~20 s in smoke mode.

- Upstream: ``keywheel.testing.FakeUpstream`` on loopback, in this process (its own thread),
  with 4 Gemini, 3 OpenRouter and 3 Anthropic keys. Every ``BENCH_FAULTSOAK_FLIP`` seconds (5)
  each key is given a new behaviour, drawn with a fixed seed: ok, 429 (retry time 0.5–4 s in one
  of the styles providers use), 500, 529/503 overloaded, hang (30 s, cut by keywheel's attempt
  timeout), a stream cut mid-body, an in-band stream error, or 401. Now and then one provider has
  an outage (every key 500, overloaded or hanging). After each flip, every key the gateway has
  disabled (a 401 disables a key) and that is no longer told to answer 401 is re-enabled through
  ``POST /admin/keys/enable`` — so disabled keys come back, as an operator would bring them back.
- Gateway: one real ``keywheel serve --workers 1`` with short timeouts for the soak
  (``KEYWHEEL_ATTEMPT_TIMEOUT=1.5``, ``KEYWHEEL_TIMEOUT=8``, ``KEYWHEEL_STREAM_IDLE_TIMEOUT=3``,
  ``KEYWHEEL_MAX_WAIT=1``), Gemini primary, then OpenRouter, then Anthropic.
- Load: at most ``BENCH_FAULTSOAK_CONCURRENCY`` (12) requests in flight, paced to
  ``BENCH_FAULTSOAK_RATE`` (80) requests/s, round-robin over ten shapes: OpenAI, Anthropic and
  Gemini inbound, streamed and not, pass-through and translated. Every answer is checked:
  a 200 must carry exactly one whole fake reply (``Reply N from fake X: the quick brown fox…``),
  a stream must end with its dialect's end marker or with an in-band error after a prefix of one
  reply (never text of two replies), an error must be JSON in the caller's dialect's error shape,
  a 429 must carry ``retry-after``, and a 5xx must be 502/503/504 (or 529, Anthropic's
  "overloaded", to an Anthropic client). A failed connection or a client timeout (60 s) is a lost
  request.
- Samples every ``BENCH_FAULTSOAK_EVERY`` seconds (30; smoke 2): RSS (``VmRSS`` summed over the
  gateway's process tree), open file descriptors (entries of ``/proc/PID/fd`` over the tree),
  CPU, and the requests answered, by outcome, and upstream attempts in the interval. Before the
  load (after a fault-free warm-up of every shape) and after it (once the connections are closed)
  the file descriptors are counted at rest too.

Levelled off (judged in full runs only), over the loaded samples, "tail" = the last third (at
least 3), "earlier" = the loaded samples before it:

- RSS: the tail sets no new high: max(tail) <= max(earlier) + max(3 MB, 5 %);
- fds: the tail sets no new high: max(tail) <= max(earlier) + 4 (the count at one instant moves
  with the requests and connections in flight: 28-39 in a 20-minute run, two clusters, as hangs
  hold all the slots or not; a leak keeps setting new highs), and the count at rest after the
  load is within 2 of the count at rest before it (every connection closed: the exact check).

The section fails (exit 1) on any lost request, malformed answer or unexpected 5xx, on a
traceback in the gateway's log, on the gateway exiting, or (full runs) when either series is
still growing.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import random
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import procs
import report
from faultsoak_answers import GATEWAY_KEY, MODELS, Shape, judge, shapes
from faultsoak_report import errors, print_tables, summarize
from rich.console import Console
from targets import Keywheel

from keywheel.testing import FakeUpstream

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
ADMIN_KEY = "test-admin-key-soak-0123456789"
KEYS = {
    "gemini": [f"test-gemini-key-{i}" for i in range(1, 5)],
    "openrouter": [f"test-openrouter-key-{i}" for i in range(1, 4)],
    "anthropic": [f"test-anthropic-key-{i}" for i in range(1, 4)],
}
GATEWAY_ENV = {
    "AI_PROVIDER": "gemini",
    "FALLBACK_ORDER": "openrouter,anthropic",
    "KEYWHEEL_ATTEMPT_TIMEOUT": "1.5",
    "KEYWHEEL_TIMEOUT": "8",
    "KEYWHEEL_STREAM_IDLE_TIMEOUT": "3",
    "KEYWHEEL_MAX_WAIT": "1",
}
CLIENT_TIMEOUT_S = 60.0
# (kind, weight): what a key is told to do for one flip period
KINDS = [
    ("ok", 40),
    ("rate_limit", 15),
    ("server_error", 10),
    ("overloaded", 5),
    ("hang", 8),
    ("break_stream", 8),
    ("stream_error", 4),
    ("invalid", 10),
]
OUTAGE_CHANCE = 0.1  # per flip: one provider's keys all fail the same way
OUTAGE_KINDS = ("server_error", "overloaded", "hang")
RETRY_STYLES = {  # None: the dialect's own default
    "gemini": [None, "retry-info", "retry-after", "retry-after-ms", "http-date"],
    "openrouter": [None, "retry-after", "retry-after-ms", "http-date", "openai-reset"],
    "anthropic": [None, "retry-after", "anthropic-reset", "http-date", "retry-after-ms"],
}
EXAMPLES = 5  # kept per anomaly kind


@dataclass(frozen=True)
class Config:
    seconds: float
    every: float  # seconds between samples
    flip: float  # seconds between fault flips
    rate: float  # requests per second at most
    concurrency: int
    seed: int
    smoke: bool


def make_config(smoke: bool, seconds: float | None = None) -> Config:
    env = os.environ.get
    if smoke:
        return Config(seconds=20, every=2, flip=2, rate=40, concurrency=8, seed=7, smoke=True)
    return Config(
        seconds=seconds or float(env("BENCH_FAULTSOAK_SECONDS", "1800")),
        every=float(env("BENCH_FAULTSOAK_EVERY", "30")),
        flip=float(env("BENCH_FAULTSOAK_FLIP", "5")),
        rate=float(env("BENCH_FAULTSOAK_RATE", "80")),
        concurrency=int(env("BENCH_FAULTSOAK_CONCURRENCY", "12")),
        seed=int(env("BENCH_FAULTSOAK_SEED", "7")),
        smoke=False,
    )


# --- The soak ------------------------------------------------------------------------------------


def fd_count(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            total += len(os.listdir(f"/proc/{pid}/fd"))
        except OSError:
            continue
    return total


@dataclass
class Tally:
    outcomes: Counter[str] = field(default_factory=Counter)
    by_shape: dict[str, Counter[str]] = field(default_factory=dict)
    examples: dict[str, list[str]] = field(default_factory=dict)

    def add(self, shape: str, outcome: str, detail: str) -> None:
        self.outcomes[outcome] += 1
        self.by_shape.setdefault(shape, Counter())[outcome] += 1
        if detail:
            kept = self.examples.setdefault(outcome, [])
            if len(kept) < EXAMPLES:
                kept.append(f"{shape}: {detail}")


def _done(tasks: set[asyncio.Task[None]], gate: asyncio.Semaphore) -> Callable[[asyncio.Task[None]], None]:
    """A finished request's callback: forget its task and free its slot."""

    def done(task: asyncio.Task[None]) -> None:
        tasks.discard(task)
        gate.release()

    return done


class FaultSoak:
    def __init__(self, cfg: Config, fake: FakeUpstream, base: str, pid: int, say: Callable[[str], None]):
        self.cfg, self.fake, self.base, self.pid, self.say = cfg, fake, base, pid, say
        self.rng = random.Random(cfg.seed)
        self.shapes = shapes(base)
        self.tally = Tally()
        self.interval: Counter[str] = Counter()
        self.samples: list[dict[str, Any]] = []
        self.flips = self.outages = self.reenabled = self.admin_failures = 0
        self.fault_counts: Counter[str] = Counter()
        self.upstream_done = 0  # upstream requests of the fake's records already cleared
        self.issued = self.done = self.in_flight = 0
        self.started = 0.0
        self.stop_at = 0.0
        self.tree: list[int] = [pid]

    # -- one request

    async def one(self, session: aiohttp.ClientSession, shape: Shape) -> None:
        self.in_flight += 1
        try:
            async with session.post(shape.path, data=shape.body, headers=shape.headers) as resp:
                body = await resp.read()
                outcome, detail = judge(shape, resp.status, resp.headers, body)
        except (aiohttp.ClientError, TimeoutError) as exc:
            outcome, detail = "lost", f"{type(exc).__name__}: {exc}"
        finally:
            self.in_flight -= 1
        self.done += 1
        self.tally.add(shape.name, outcome, detail)
        self.interval[outcome] += 1

    async def load(self, session: aiohttp.ClientSession) -> None:
        gate = asyncio.Semaphore(self.cfg.concurrency)
        loop = asyncio.get_running_loop()
        tasks: set[asyncio.Task[None]] = set()
        gap = 1.0 / self.cfg.rate
        next_at = loop.time()
        for shape in itertools.cycle(self.shapes):
            if loop.time() >= self.stop_at:
                break
            await gate.acquire()
            delay = next_at - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            next_at = max(next_at + gap, loop.time() - 1.0)  # behind by over 1 s: no catch-up burst
            self.issued += 1
            task = asyncio.create_task(self.one(session, shape))
            tasks.add(task)
            task.add_done_callback(_done(tasks, gate))
        if tasks:
            await asyncio.wait(tasks, timeout=CLIENT_TIMEOUT_S + 10)

    # -- faults

    def draw(self, provider: str) -> tuple[str, dict[str, Any]]:
        kind = self.rng.choices([k for k, _ in KINDS], [w for _, w in KINDS])[0]
        if kind == "rate_limit":
            style = self.rng.choice(RETRY_STYLES[provider])
            params: dict[str, Any] = {"retry_after": round(self.rng.uniform(0.5, 4.0), 1)}
            return kind, {**params, "style": style} if style else params
        if kind == "hang":
            return kind, {"seconds": 30.0}
        if kind in ("break_stream", "stream_error"):
            return kind, {"after": self.rng.randint(0, 3)}
        return kind, {}

    async def flip(self, admin: aiohttp.ClientSession) -> None:
        self.upstream_done += len(self.fake.requests)
        self.fake.reset()  # the fake keeps every request it saw: forget them, or it grows for 30 min
        plan = {p: [self.draw(p) for _ in keys] for p, keys in KEYS.items()}
        if self.rng.random() < OUTAGE_CHANCE:
            provider = self.rng.choice(sorted(KEYS))
            kind = self.rng.choice(OUTAGE_KINDS)
            plan[provider] = [(kind, {"seconds": 30.0} if kind == "hang" else {}) for _ in KEYS[provider]]
            self.outages += 1
        told_invalid = set()
        for provider, keys in KEYS.items():
            for key, (kind, params) in zip(keys, plan[provider], strict=True):
                self.fake.set(key, kind, **params)
                self.fault_counts[kind] += 1
                if kind == "invalid":
                    told_invalid.add(f"{provider}#{keys.index(key) + 1}")
        self.flips += 1
        await self.reenable(admin, told_invalid)

    async def reenable(self, admin: aiohttp.ClientSession, keep_out: set[str]) -> None:
        """Bring back every disabled key that is no longer told to answer 401, as an operator would."""
        try:
            async with admin.get(self.base + "/status") as resp:
                status = await resp.json()
            for provider in status["providers"]:
                for key in provider["keys"]:
                    label = key["key"].split(" ")[0]  # "gemini#2 …9f3a" -> "gemini#2"
                    if key["state"] != "disabled" or label in keep_out:
                        continue
                    async with admin.post(self.base + "/admin/keys/enable", json={"key": key["key"]}) as resp:
                        await resp.read()
                        if resp.status == 200:
                            self.reenabled += 1
                        else:
                            self.admin_failures += 1
        except (aiohttp.ClientError, TimeoutError, KeyError, ValueError) as exc:
            self.admin_failures += 1
            self.tally.add("admin", "admin_error", f"{type(exc).__name__}: {exc}")

    async def flipper(self, admin: aiohttp.ClientSession) -> None:
        loop = asyncio.get_running_loop()
        while loop.time() < self.stop_at:
            await self.flip(admin)
            await asyncio.sleep(min(self.cfg.flip, max(self.stop_at - loop.time(), 0)))

    # -- samples

    def sample(self, label: str = "") -> dict[str, Any]:
        self.tree = procs.process_tree(self.pid)
        outcomes = dict(self.interval)
        self.interval.clear()
        s: dict[str, Any] = {
            "seconds": time.perf_counter() - self.started,
            "label": label,
            "rss_mb": procs.rss_bytes(self.pid) / 2**20,
            "fds": fd_count(self.tree),
            "cpu_s": procs.cpu_seconds(self.pid),
            "answered": self.done,
            "in_flight": self.in_flight,
            "upstream_requests": self.upstream_done + len(self.fake.requests),
            "interval": outcomes,
        }
        self.samples.append(s)
        return s

    async def sampler(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(min(self.cfg.every, max(self.stop_at - loop.time(), 0)))
            if loop.time() >= self.stop_at:
                return
            s = self.sample()
            iv = s["interval"]
            bad = sum(v for k, v in iv.items() if k in ("lost", "malformed", "bad_5xx"))
            self.say(
                f"  {s['seconds']:7.0f} s  RSS {s['rss_mb']:6.1f} MB  fds {s['fds']:4d}  "
                f"answered {sum(iv.values()):6,} (ok {iv.get('ok', 0):,}, anomalies {bad})  total {self.done:,}"
            )

    # -- the whole run

    async def warm_up(self) -> None:
        """Every shape once with every key ok: the gateway's lazy imports and pools, before the baseline."""
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=CLIENT_TIMEOUT_S)) as session:
            for _ in range(3):
                for shape in self.shapes:
                    await self.one(session, shape)
        self.interval.clear()

    async def at_rest(self, label: str) -> dict[str, Any]:
        """Sample once the fd count has stood still for a while: idle connections closed.

        keywheel's upstream pool closes an idle connection after 15 s (aiohttp's keep-alive), so a
        full run waits for 20 s without change (at most 60 s); smoke mode for 2 s (at most 6 s).
        """
        steady, settle = (2.0, 6.0) if self.cfg.smoke else (20.0, 60.0)
        deadline = time.monotonic() + settle
        last, steady_since = fd_count(procs.process_tree(self.pid)), time.monotonic()
        while time.monotonic() < deadline and time.monotonic() - steady_since < steady:
            await asyncio.sleep(0.5)
            now = fd_count(procs.process_tree(self.pid))
            if now != last:
                last, steady_since = now, time.monotonic()
        return self.sample(label)

    async def run(self) -> dict[str, Any]:
        self.started = time.perf_counter()
        await self.warm_up()
        if self.tally.outcomes["ok"] != self.done:
            raise RuntimeError(f"warm-up with every key ok was not all ok: {dict(self.tally.outcomes)}")
        rest_before = await self.at_rest("at rest before the load")
        self.tally = Tally()  # the warm-up is not part of the soak's counts
        warm = self.done
        self.done = 0
        loop = asyncio.get_running_loop()
        self.stop_at = loop.time() + self.cfg.seconds
        admin_headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
        timeout = aiohttp.ClientTimeout(total=CLIENT_TIMEOUT_S)
        connector = aiohttp.TCPConnector(limit=self.cfg.concurrency)
        async with (
            aiohttp.ClientSession(timeout=timeout, connector=connector) as session,
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10), headers=admin_headers) as admin,
        ):
            self.sample("load starts")
            sampler = asyncio.create_task(self.sampler())
            flipper = asyncio.create_task(self.flipper(admin))
            await self.load(session)
            await asyncio.gather(sampler, flipper)
            self.sample("load ends")
            self.fake.reset()  # every key ok again, then bring back the disabled ones
            await self.reenable(admin, set())
            async with admin.get(self.base + "/status") as resp:
                status = await resp.json()
        rest_after = await self.at_rest("at rest after the load")
        return {"warm_up_requests": warm, "rest_before": rest_before, "rest_after": rest_after, "status": status}


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def gateway_env(fake: FakeUpstream) -> dict[str, str]:
    env = {
        **GATEWAY_ENV,
        "GEMINI_BASE_URL": fake.gemini_base_url,
        "OPENROUTER_BASE_URL": fake.openrouter_base_url,
        "ANTHROPIC_BASE_URL": fake.anthropic_base_url,
        "KEYWHEEL_GATEWAY_KEYS": GATEWAY_KEY,
        "KEYWHEEL_ADMIN_KEY": ADMIN_KEY,
    }
    for provider, keys in KEYS.items():
        env[f"{provider.upper()}_MODEL"] = MODELS[provider]
        for i, key in enumerate(keys, start=1):
            env[f"{provider.upper()}_API_KEY_{i}"] = key
    return env


def wait_healthy(base: str, alive: Callable[[], bool], timeout: float = 60.0) -> float:
    import urllib.request

    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if not alive():
            raise RuntimeError("keywheel serve exited at start")
        try:
            with urllib.request.urlopen(base + "/health", timeout=1) as resp:
                if resp.status == 200:
                    return time.monotonic() - started
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"keywheel serve did not answer /health within {timeout:g} s")


def run(cfg: Config, workdir: Path, say: Callable[[str], None]) -> dict[str, Any]:
    target = Keywheel()
    out: dict[str, Any] = {"settings": asdict(cfg), "skipped": target.unavailable_reason(), "samples": []}
    if out["skipped"]:
        say(f"skipping faultsoak: {out['skipped']}")
        return out
    say(
        f"faultsoak: {cfg.seconds:g} s of load at ≤{cfg.rate:g} req/s, ≤{cfg.concurrency} in flight, "
        f"faults flip every {cfg.flip:g} s, samples every {cfg.every:g} s"
    )
    log = workdir / "faultsoak.log"
    with FakeUpstream() as fake:
        port = procs.free_port()
        base = f"http://127.0.0.1:{port}"
        cmd = [str(target.executable), "--env-file", os.devnull, "serve", "--host", "127.0.0.1"]
        cmd += ["--port", str(port), "--workers", "1"]
        state = {"KEYWHEEL_STATE": f"sqlite:///{(workdir / 'faultsoak-state.db').resolve()}"}  # not ./.keywheel
        proc = procs.spawn(cmd, procs.child_env({**gateway_env(fake), **state}), log)
        soak: FaultSoak | None = None
        try:
            out["startup_s"] = wait_healthy(base, lambda: proc.poll() is None)
            soak = FaultSoak(cfg, fake, base, proc.pid, say)
            with asyncio.Runner(loop_factory=_loop_factory()) as runner:
                out.update(runner.run(soak.run()))
            if proc.poll() is not None:
                out["error"] = f"keywheel serve exited during the soak\n{procs.tail(log)}"
        except (RuntimeError, OSError, aiohttp.ClientError, TimeoutError) as exc:
            out["error"] = f"{type(exc).__name__}: {exc}\n{procs.tail(log)}".strip()
        finally:
            procs.stop(proc)
        if soak is not None:
            out.update(
                samples=soak.samples,
                outcomes=dict(soak.tally.outcomes),
                by_shape={k: dict(v) for k, v in soak.tally.by_shape.items()},
                examples=soak.tally.examples,
                flips=soak.flips,
                outages=soak.outages,
                faults=dict(soak.fault_counts),
                reenabled=soak.reenabled,
                admin_failures=soak.admin_failures,
            )
    text = log.read_text(errors="replace") if log.exists() else ""
    out["log"] = {
        "lines": text.count("\n"),
        "tracebacks": text.count("Traceback"),
        "errors": sum(1 for line in text.splitlines() if " ERROR " in line or line.startswith("ERROR")),
        "warnings": sum(1 for line in text.splitlines() if " WARNING " in line or line.startswith("WARNING")),
        "first_traceback": _first_traceback(text),
    }
    out["summary"] = summarize(out)
    return out


def _first_traceback(text: str) -> str | None:
    at = text.find("Traceback")
    return text[max(0, text.rfind("\n", 0, max(at - 300, 0))) : at + 3000] if at >= 0 else None


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true", help="~20 s, not judged")
    parser.add_argument("--seconds", type=float, help="seconds of load (BENCH_FAULTSOAK_SECONDS, 1800)")
    parser.add_argument("--json", type=Path, help="default: bench/results/faultsoak-<time>.json (smoke: none)")
    args = parser.parse_args(argv)
    procs.isolate_network(__file__, argv)
    cfg = make_config(args.smoke, args.seconds)
    json_path = args.json or (None if args.smoke else RESULTS / f"faultsoak-{datetime.now():%Y%m%d-%H%M%S}.json")
    source = report.source_state()
    with tempfile.TemporaryDirectory(prefix="keywheel-faultsoak-") as tmp:
        result = run(cfg, Path(tmp), lambda text: print(text, flush=True))
    result["environment"] = {"network": procs.network(), "keywheel": source}
    print_tables(result, Console(width=200))
    if json_path:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(report.to_json({"faultsoak": result, "environment": result.pop("environment")}))
        print(f"results written to {json_path}")
    return errors(result)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
