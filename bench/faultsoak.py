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
import re
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
import orjson
import procs
import report
from rich.console import Console
from rich.table import Table
from targets import Keywheel

from keywheel.testing import FakeUpstream
from keywheel.testing.dialects import QUICK_BROWN_FOX

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
GATEWAY_KEY = "test-gateway-key-soak"
ADMIN_KEY = "test-admin-key-soak-0123456789"
KEYS = {
    "gemini": [f"test-gemini-key-{i}" for i in range(1, 5)],
    "openrouter": [f"test-openrouter-key-{i}" for i in range(1, 4)],
    "anthropic": [f"test-anthropic-key-{i}" for i in range(1, 4)],
}
MODELS = {"gemini": "gemini-2.5-flash", "openrouter": "openai/gpt-4o-mini", "anthropic": "claude-sonnet-4-5"}
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
ALLOWED_5XX = {502, 503, 504}
RSS_SLACK_MB, RSS_SLACK_SHARE = 3.0, 0.05
FD_SLACK, FD_REST_SLACK = 4, 2
EXAMPLES = 5  # kept per anomaly kind
REPLY = re.compile(r"Reply (\d+) from fake (anthropic|gemini|openai): " + re.escape(QUICK_BROWN_FOX))
FAKE_DIALECTS = ("anthropic", "gemini", "openai")


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


# --- What is sent ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Shape:
    name: str
    dialect: str  # the caller's: openai | anthropic | gemini
    stream: bool
    path: str
    headers: dict[str, str]
    body: bytes


def _json(obj: object) -> bytes:
    return orjson.dumps(obj)


def shapes(base: str) -> list[Shape]:
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 2+2?"}]
    user = [{"role": "user", "content": "What is 2+2?"}]
    openai_h = {"Authorization": f"Bearer {GATEWAY_KEY}", "Content-Type": "application/json"}
    anthropic_h = {"x-api-key": GATEWAY_KEY, "anthropic-version": "2023-06-01", "Content-Type": "application/json"}
    gemini_h = {"x-goog-api-key": GATEWAY_KEY, "Content-Type": "application/json"}

    def openai(model: str, stream: bool) -> bytes:
        return _json({"model": model, "max_tokens": 64, "messages": messages, "stream": stream})

    def anthropic(model: str, stream: bool) -> bytes:
        return _json({"model": model, "max_tokens": 64, "system": "Be brief.", "messages": user, "stream": stream})

    gemini_body = _json(
        {
            "contents": [{"role": "user", "parts": [{"text": "What is 2+2?"}]}],
            "systemInstruction": {"parts": [{"text": "Be brief."}]},
            "generationConfig": {"maxOutputTokens": 64},
        }
    )
    chat, msgs, gem = f"{base}/v1/chat/completions", f"{base}/v1/messages", f"{base}/v1beta/models/gemini-2.5-flash:"
    router, claude = "openrouter/openai/gpt-4o-mini", MODELS["anthropic"]
    return [
        Shape("openai auto (gemini first)", "openai", False, chat, openai_h, openai("auto", False)),
        Shape("openai auto, stream", "openai", True, chat, openai_h, openai("auto", True)),
        Shape("openai → openrouter", "openai", False, chat, openai_h, openai(router, False)),
        Shape("openai → openrouter, stream", "openai", True, chat, openai_h, openai(router, True)),
        Shape("anthropic → anthropic", "anthropic", False, msgs, anthropic_h, anthropic(claude, False)),
        Shape("anthropic → anthropic, stream", "anthropic", True, msgs, anthropic_h, anthropic(claude, True)),
        Shape("anthropic → openrouter, stream", "anthropic", True, msgs, anthropic_h, anthropic(router, True)),
        Shape("gemini → gemini", "gemini", False, gem + "generateContent", gemini_h, gemini_body),
        Shape("gemini → gemini, stream", "gemini", True, gem + "streamGenerateContent?alt=sse", gemini_h, gemini_body),
        Shape("openai → anthropic, stream", "openai", True, chat, openai_h, openai("anthropic/" + claude, True)),
    ]


# --- How an answer is judged -----------------------------------------------------------------------


def is_reply(text: str) -> bool:
    return REPLY.fullmatch(text) is not None


def is_reply_prefix(text: str) -> bool:
    """``text`` is the start of one fake reply (what a stream cut mid-way may have carried)."""
    if not text:
        return True
    number = re.match(r"Reply (\d+)", text)
    n = number.group(1) if number else "0"
    return any(f"Reply {n} from fake {d}: {QUICK_BROWN_FOX}".startswith(text) for d in FAKE_DIALECTS)


def error_shaped(dialect: str, status: int, body: bytes) -> bool:
    """JSON in the caller's dialect's error shape (what its SDK needs to raise its own error)."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        return False
    if not isinstance(doc, dict) or not isinstance(doc.get("error"), dict):
        return False
    error = doc["error"]
    if not isinstance(error.get("message"), str):
        return False
    if dialect == "anthropic":
        return doc.get("type") == "error" and isinstance(error.get("type"), str)
    if dialect == "gemini":
        return error.get("code") == status and isinstance(error.get("status"), str)
    return True


def _sse_events(body: bytes) -> list[tuple[str | None, bytes]]:
    events: list[tuple[str | None, bytes]] = []
    for block in body.replace(b"\r\n", b"\n").split(b"\n\n"):
        name, data = None, []
        for line in block.split(b"\n"):
            if line.startswith(b"event:"):
                name = line[6:].strip().decode(errors="replace")
            elif line.startswith(b"data:"):
                data.append(line[5:].strip())
        if data or name:
            events.append((name, b"\n".join(data)))
    return events


def _text_of(dialect: str, doc: Any) -> str:
    """The reply text of a whole (non-streamed) answer."""
    if dialect == "openai":
        return str(doc["choices"][0]["message"]["content"])
    if dialect == "anthropic":
        return "".join(b["text"] for b in doc["content"] if b.get("type") == "text")
    return "".join(p.get("text", "") for p in doc["candidates"][0]["content"]["parts"])


def judge_stream(dialect: str, body: bytes) -> tuple[str, str]:
    """("ok" | "inband_error" | "malformed", detail) for a 200 event stream."""
    text: list[str] = []
    finished = errored = False
    after_end = 0  # events after the end or the error: neither may be followed by more content
    for name, data in _sse_events(body):
        if finished or errored:
            after_end += data not in (b"[DONE]", b"")
            continue
        if dialect == "openai":
            if data == b"[DONE]":
                finished = True
                continue
            if not data:
                continue
            doc = orjson.loads(data)
            if "error" in doc:
                errored = True
                continue
            for choice in doc.get("choices") or []:
                text.append((choice.get("delta") or {}).get("content") or "")
        elif dialect == "anthropic":
            if name == "error":
                errored = True
            elif name == "message_stop":
                finished = True
            elif name == "content_block_delta":
                delta = orjson.loads(data)["delta"]
                text.append(delta.get("text", "") if delta.get("type") == "text_delta" else "")
        else:
            doc = orjson.loads(data)
            if "error" in doc:
                errored = True
                continue
            candidate = doc["candidates"][0]
            text.extend(p.get("text", "") for p in (candidate.get("content") or {}).get("parts", []))
            finished = "finishReason" in candidate
    whole = "".join(text)
    if after_end:
        return "malformed", f"{after_end} event(s) after the end of the stream: {body[-300:]!r}"
    if finished and not errored:
        return ("ok", "") if is_reply(whole) else ("malformed", f"stream text {whole[:200]!r}")
    if errored:
        return ("inband_error", "") if is_reply_prefix(whole) else ("malformed", f"text before error {whole[:200]!r}")
    return "malformed", f"stream with neither end nor error ({len(body)} bytes): {body[-300:]!r}"


def judge(shape: Shape, status: int, headers: Any, body: bytes) -> tuple[str, str]:
    """The outcome of one answer and, when it is an anomaly, what was wrong."""
    dialect = shape.dialect
    try:
        if status == 200:
            if shape.stream:
                if not headers.get("content-type", "").startswith("text/event-stream"):
                    return "malformed", f"200 stream with content-type {headers.get('content-type')!r}"
                return judge_stream(dialect, body)
            text = _text_of(dialect, orjson.loads(body))
            return ("ok", "") if is_reply(text) else ("malformed", f"200 text {text[:200]!r}")
    except (orjson.JSONDecodeError, KeyError, IndexError, TypeError, AttributeError) as exc:
        return "malformed", f"200 {type(exc).__name__}: {body[:300]!r}"
    if not error_shaped(dialect, status, body):
        return "malformed", f"{status} not a {dialect} error: {body[:300]!r}"
    if status >= 500 and status not in ALLOWED_5XX and not (status == 529 and dialect == "anthropic"):
        return "bad_5xx", f"{status}: {body[:300]!r}"
    if status == 429 and "retry-after" not in headers:
        return "malformed", f"429 without retry-after: {body[:300]!r}"
    return f"http_{status}", ""


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
        proc = procs.spawn(cmd, procs.child_env(gateway_env(fake)), log)
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


def _series(samples: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The samples taken under load (not the rest samples, not the one at the start of the load)."""
    return [s for s in samples if not s["label"]]


def levelled(samples: list[dict[str, Any]], rest_before: int | None, rest_after: int | None) -> dict[str, Any]:
    loaded = _series(samples)
    if len(loaded) < 6:
        return {"judged": False, "why": f"{len(loaded)} loaded samples (6 needed)"}
    n_tail = max(3, len(loaded) // 3)
    tail, earlier = loaded[-n_tail:], loaded[:-n_tail]
    rss_tail, rss_earlier = [s["rss_mb"] for s in tail], [s["rss_mb"] for s in earlier]
    rss_growth = max(rss_tail) - max(rss_earlier)
    rss_slack = max(RSS_SLACK_MB, RSS_SLACK_SHARE * max(rss_earlier))
    fd_growth = max(s["fds"] for s in tail) - max(s["fds"] for s in earlier)
    rest_growth = None if rest_before is None or rest_after is None else rest_after - rest_before
    half = loaded[len(loaded) // 2 :]
    minutes = (half[-1]["seconds"] - half[0]["seconds"]) / 60
    slope = (half[-1]["rss_mb"] - half[0]["rss_mb"]) / minutes * 10 if minutes > 0 else 0.0
    return {
        "judged": True,
        "tail_samples": n_tail,
        "rss_levelled": rss_growth <= rss_slack,
        "rss_tail_new_high_mb": rss_growth,
        "rss_slack_mb": rss_slack,
        "rss_second_half_mb_per_10min": slope,
        "fds_levelled": fd_growth <= FD_SLACK and (rest_growth is None or rest_growth <= FD_REST_SLACK),
        "fds_tail_new_high": fd_growth,
        "fds_rest_growth": rest_growth,
    }


def summarize(out: dict[str, Any]) -> dict[str, Any]:
    samples = out.get("samples") or []
    outcomes = out.get("outcomes") or {}
    rest_before = (out.get("rest_before") or {}).get("fds")
    rest_after = (out.get("rest_after") or {}).get("fds")
    answered = sum(outcomes.values()) - outcomes.get("admin_error", 0)
    loaded = _series(samples)
    summary: dict[str, Any] = {
        "answered": answered,
        "ok": outcomes.get("ok", 0),
        "inband_error": outcomes.get("inband_error", 0),
        "lost": outcomes.get("lost", 0),
        "malformed": outcomes.get("malformed", 0),
        "bad_5xx": outcomes.get("bad_5xx", 0),
        "rss_before_mb": (out.get("rest_before") or {}).get("rss_mb"),
        "rss_after_mb": (out.get("rest_after") or {}).get("rss_mb"),
        "fds_rest_before": rest_before,
        "fds_rest_after": rest_after,
        "rss_range_mb": [min(s["rss_mb"] for s in loaded), max(s["rss_mb"] for s in loaded)] if loaded else None,
        "fds_range": [min(s["fds"] for s in loaded), max(s["fds"] for s in loaded)] if loaded else None,
    }
    load = [s for s in samples if s["label"] in ("load starts", "load ends")]
    if len(load) == 2 and load[1]["seconds"] > load[0]["seconds"]:
        span = load[1]["seconds"] - load[0]["seconds"]
        summary["load_seconds"] = span
        summary["answered_per_s"] = answered / span
        attempts = load[1]["upstream_requests"] - load[0]["upstream_requests"]
        summary["upstream_per_request"] = attempts / answered if answered else None
        cpu = load[1]["cpu_s"] - load[0]["cpu_s"]
        summary["cpu_per_request_ms"] = cpu * 1000 / answered if answered else None
    summary["level"] = levelled(samples, rest_before, rest_after)
    return summary


def errors(result: dict[str, Any]) -> int:
    if result.get("skipped"):
        return 0
    s = result.get("summary", {})
    level = s.get("level", {})
    problems = [
        result.get("error"),
        s.get("lost"),
        s.get("malformed"),
        s.get("bad_5xx"),
        result.get("admin_failures"),
        result.get("log", {}).get("tracebacks"),
        level.get("judged") and not result["settings"]["smoke"] and not level.get("rss_levelled"),
        level.get("judged") and not result["settings"]["smoke"] and not level.get("fds_levelled"),
    ]
    return 1 if any(problems) else 0


# --- Report --------------------------------------------------------------------------------------


def print_tables(result: dict[str, Any], console: Console) -> None:
    if result.get("skipped"):
        console.print(f"faultsoak skipped: {result['skipped']}")
        return
    samples = result.get("samples") or []
    table = Table(title="faultsoak: keywheel serve under flipping faults (RSS and fds of its process tree)")
    for column in ("time", "", "RSS", "fds", "in flight", "answered", "ok", "in-band err", "429", "502", "503", "504"):
        table.add_column(column, justify="right")
    table.add_column("other", justify="left")
    table.add_column("upstream/req", justify="right")
    table.add_column("CPU/req", justify="right")
    counted = ("ok", "inband_error", "http_429", "http_502", "http_503", "http_504")
    for i, s in enumerate(samples):
        iv = s["interval"]
        prev = samples[i - 1] if i else None
        n = sum(iv.values())
        other = ", ".join(f"{k.removeprefix('http_')}: {v}" for k, v in sorted(iv.items()) if k not in counted)
        per_req = cpu = None
        if prev is not None and n and not s["label"].startswith("at rest"):
            per_req = (s["upstream_requests"] - prev["upstream_requests"]) / n
            cpu = (s["cpu_s"] - prev["cpu_s"]) * 1000 / n
        table.add_row(
            f"{s['seconds']:.0f} s",
            s["label"],
            report.fmt_num(s["rss_mb"], 1, " MB"),
            str(s["fds"]),
            str(s["in_flight"]),
            f"{n:,}" if n else "",
            *(f"{iv.get(k, 0):,}" if n else "" for k in counted),
            other,
            report.fmt_num(per_req, 2),
            report.fmt_num(cpu, 3, " ms"),
        )
    console.print(table)
    s = result.get("summary", {})
    console.print(
        f"faultsoak: {s.get('answered', 0):,} answers in {s.get('load_seconds', 0):.0f} s "
        f"({s.get('answered_per_s', 0):.1f}/s): ok {s.get('ok', 0):,}, in-band stream errors "
        f"{s.get('inband_error', 0):,}; lost {s.get('lost', 0)}, malformed {s.get('malformed', 0)}, "
        f"unexpected 5xx {s.get('bad_5xx', 0)}; upstream attempts per answer "
        f"{report.fmt_num(s.get('upstream_per_request'), 2)}; {result.get('flips', 0)} flips "
        f"({result.get('outages', 0)} provider outages), {result.get('reenabled', 0)} keys re-enabled "
        f"(admin failures {result.get('admin_failures', 0)})"
    )
    console.print(f"faults drawn (key × flip): {result.get('faults', {})}")
    log = result.get("log", {})
    console.print(
        f"gateway log: {log.get('lines', 0):,} lines, {log.get('tracebacks', 0)} tracebacks, "
        f"{log.get('errors', 0)} ERROR, {log.get('warnings', 0)} WARNING lines"
    )
    for kind, examples in (result.get("examples") or {}).items():
        console.print(f"[red]{kind}[/red]:")
        for example in examples:
            console.print(f"  {example}", markup=False)
    if log.get("first_traceback"):
        console.print("[red]first traceback in the gateway log:[/red]")
        console.print(log["first_traceback"], markup=False)
    level = s.get("level", {})
    if not level.get("judged"):
        console.print(f"levelled off: not judged ({level.get('why', '')}: lower BENCH_FAULTSOAK_EVERY or run longer)")
    else:
        smoke = result["settings"]["smoke"]

        def verdict(ok: bool) -> str:
            if smoke:
                return "not judged in smoke mode"
            return "[green]levelled off[/green]" if ok else "[red]still growing[/red]"

        console.print(
            f"RSS: {verdict(level['rss_levelled'])} — the last {level['tail_samples']} samples' high is "
            f"{level['rss_tail_new_high_mb']:+.1f} MB over the earlier high (allowed {level['rss_slack_mb']:.1f} MB); "
            f"second half {level['rss_second_half_mb_per_10min']:+.2f} MB per 10 min; "
            f"at rest {report.fmt_num(s.get('rss_before_mb'), 1)} → {report.fmt_num(s.get('rss_after_mb'), 1)} MB"
        )
        console.print(
            f"fds: {verdict(level['fds_levelled'])} — the last {level['tail_samples']} samples' high is "
            f"{level['fds_tail_new_high']:+d} over the earlier high (allowed {FD_SLACK}); at rest "
            f"{s.get('fds_rest_before')} before the load, {s.get('fds_rest_after')} after (allowed +{FD_REST_SLACK})"
        )
    if result.get("error"):
        console.print(f"[red]faultsoak failed[/red]: {result['error']}", markup=False)


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


def _done(tasks: set[asyncio.Task[None]], gate: asyncio.Semaphore) -> Callable[[asyncio.Task[None]], None]:
    """A finished request's callback: forget its task and free its slot."""

    def done(task: asyncio.Task[None]) -> None:
        tasks.discard(task)
        gate.release()

    return done
