"""``keywheel demo``: rotation, cooldowns and failover, live, with no API key.

Starts the fake upstream on loopback with a few flaky keys per provider and
sends a burst of requests through a real :class:`~keywheel.Wheel`, showing a
live table of every key.  The keys are fakes (``test-gemini-key-1`` …); nothing
leaves this machine.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter

from rich.console import Console, Group
from rich.live import Live
from rich.text import Text

from keywheel.client import Wheel
from keywheel.config import settings_from_env
from keywheel.errors import KeywheelError
from keywheel.render import key_table
from keywheel.testing import FakeUpstream


def demo_env(fake: FakeUpstream) -> dict[str, str]:
    env = {
        "AI_PROVIDER": "gemini",
        "FALLBACK_ORDER": "openrouter,anthropic",
        "GEMINI_BASE_URL": fake.gemini_base_url,
        "OPENROUTER_BASE_URL": fake.openrouter_base_url,
        "ANTHROPIC_BASE_URL": fake.anthropic_base_url,
        "KEYWHEEL_MAX_WAIT": "5",
    }
    for i in range(1, 5):
        env[f"GEMINI_API_KEY_{i}"] = f"test-gemini-key-{i}"
    for i in range(1, 4):
        env[f"OPENROUTER_API_KEY_{i}"] = f"test-openrouter-key-{i}"
    for i in range(1, 3):
        env[f"ANTHROPIC_API_KEY_{i}"] = f"test-anthropic-key-{i}"
    return env


def run_demo(*, requests: int = 120, concurrency: int = 6, console: Console | None = None) -> int:
    console = console or Console()
    with FakeUpstream() as fake:
        return asyncio.run(_demo(fake, requests, concurrency, console))


async def _demo(fake: FakeUpstream, total: int, concurrency: int, console: Console) -> int:
    # The script of trouble: one key rate-limited (3 s, twice), one key revoked,
    # and a stretch where Gemini is overloaded for everyone.
    fake.set("test-gemini-key-2", "rate_limit", retry_after=3.0, times=2)
    fake.set("test-gemini-key-4", "invalid")
    fake.set("test-openrouter-key-3", "quota")
    wheel = Wheel(settings_from_env(demo_env(fake)))
    served: Counter[str] = Counter()
    failed: list[str] = []
    events: list[str] = []
    done = 0
    gate = asyncio.Semaphore(concurrency)

    async def one(i: int) -> None:
        nonlocal done
        async with gate:
            try:
                response = await wheel.achat([{"role": "user", "content": f"demo request {i}"}], max_tokens=32)
            except KeywheelError as err:
                failed.append(type(err).__name__)
                events.append(f"#{i}: {type(err).__name__}")
            else:
                served[response.provider] += 1
                if len(response.attempts) > 1:
                    path = " → ".join(f"{a.provider} {a.key} {a.outcome}" for a in response.attempts)
                    events.append(f"#{i}: {path}")
            done += 1

    def view() -> Group:
        header = Text.assemble(
            ("keywheel demo ", "bold"),
            f"— {done}/{total} requests; served by "
            + (", ".join(f"{p} {n}" for p, n in served.most_common()) or "nobody yet")
            + (f"; failed {len(failed)}" if failed else ""),
        )
        recent = Text("\n".join(events[-8:]) or "(no retries yet)", style="dim")
        table = key_table(wheel.snapshot(), "keys", console.width)
        return Group(header, table, Text("recent retries and failovers:"), recent)

    tasks = []
    overload_at, recover_at = total // 2, total // 2 + total // 5
    with Live(view(), console=console, refresh_per_second=8) as live:
        for i in range(total):
            if i == overload_at:
                events.append("— gemini is overloaded for everyone now (503): watch traffic fail over —")
                for k in range(1, 5):
                    fake.set(f"test-gemini-key-{k}", "overloaded")
            if i == recover_at:
                events.append("— gemini recovered —")
                for k in (1, 2, 3):
                    fake.set(f"test-gemini-key-{k}", "ok")
            tasks.append(asyncio.create_task(one(i)))
            await asyncio.sleep(0.05)
            live.update(view())
        started = time.monotonic()
        while any(not t.done() for t in tasks) and time.monotonic() - started < 30:
            await asyncio.sleep(0.1)
            live.update(view())
        await asyncio.gather(*tasks, return_exceptions=True)
        live.update(view())
    await wheel.aclose()
    wheel.close()
    console.print(f"\nDone: {sum(served.values())} answered, {len(failed)} failed.")
    for line in _findings(fake, failovers=sum(1 for e in events if "openrouter" in e and "gemini" in e)):
        console.print(f"  • {line}")
    return 0 if not failed else 1


def _findings(fake: FakeUpstream, failovers: int) -> list[str]:
    """What the fake upstream itself saw: measured, not claimed."""
    out = []
    times = fake.times("test-gemini-key-2")
    if len(times) >= 2:
        out.append(f"gemini#2 was told to rest 3.0 s; its next request came {times[1] - times[0]:.2f} s later")
    elif times:
        out.append("gemini#2 was told to rest 3.0 s and had not been needed again when the demo ended")
    out.append(f"gemini#4 (revoked) received {fake.count('test-gemini-key-4')} request(s), then none")
    out.append(f"openrouter#3 (out of credit) received {fake.count('test-openrouter-key-3')} request(s), then none")
    out.append(f"{failovers} requests failed over from Gemini to OpenRouter while Gemini was overloaded")
    return out
