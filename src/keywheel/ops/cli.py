"""``keywheel keys check`` and ``keywheel credits``: run here, from the configuration (like
``keywheel config``), against the providers themselves — no gateway needed.

``keys check`` exits 1 when any key is invalid (2 on a configuration error).  Both print
fingerprints only; ``credits`` never shows OpenRouter's ``label`` (it echoes part of the key).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable
from typing import Any

import orjson
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from keywheel.calls import redactor_for
from keywheel.config import Settings, load_env, settings_from_env
from keywheel.errors import ConfigError
from keywheel.ops.probes import INVALID, Prober, ProbeResult
from keywheel.status import Credit
from keywheel.transport import Transport

COLOURS = {
    "ok": "green",
    "invalid": "red",
    "rate-limited": "yellow",
    "no-credit": "magenta",
    "unreachable": "red",
    "unverified": "cyan",
}


def add_commands(
    keys: argparse._SubParsersAction[Any],
    command: Callable[..., argparse.ArgumentParser],
    options: Callable[[argparse.ArgumentParser], None],
) -> None:
    """``keys check`` under ``keys``, and ``credits`` at the top (``command`` adds a top-level one;
    ``options`` adds the global ``--env-file`` and ``--log-level``)."""
    check = keys.add_parser(
        "check", help="probe every key with a free request (no generation unless <P>_PROBE=generate)"
    )
    options(check)
    check.add_argument("--provider", help="only this provider's keys")
    check.add_argument("--json", action="store_true", help="print JSON: {results: [...]}")
    check.set_defaults(func=cmd_keys_check)
    credits = command("credits", help="OpenRouter keys' credit: limit, remaining, reset, usage (from GET /api/v1/key)")
    credits.add_argument("--json", action="store_true", help="print JSON: {keys: [...]}")
    credits.set_defaults(func=cmd_credits)


async def _probe(settings: Settings, provider: str | None, only_credit: bool) -> list[ProbeResult]:
    transport = Transport()
    try:
        prober = Prober(settings, transport, redactor_for(settings).redact)
        keys = prober.keys(provider)
        if only_credit:
            keys = [(name, key) for name, key in keys if prober.reads_credit(name)]
            return list(await asyncio.gather(*(prober.probe(name, key, generate=False) for name, key in keys)))
        return await prober.probe_all(keys)
    finally:
        await transport.aclose()


def _settings(env_file: str | None) -> Settings | int:
    try:
        return settings_from_env(load_env(None, env_file))
    except ConfigError as err:
        console = Console(stderr=True, highlight=False)
        for name, why in err.problems.items():
            console.print(f"[red]{escape(name)}[/red]: {escape(why)}")
        return 2


def cmd_keys_check(args: argparse.Namespace) -> int:
    settings = _settings(getattr(args, "env_file", None))
    if isinstance(settings, int):
        return settings
    try:
        results = asyncio.run(_probe(settings, args.provider, only_credit=False))
    except KeyError as exc:
        Console(stderr=True, highlight=False).print(f"[red]error:[/red] {escape(str(exc.args[0]))}")
        return 2
    if args.json:
        sys.stdout.write(orjson.dumps({"results": [r.to_json() for r in results]}).decode() + "\n")
    else:
        table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
        for column in ("key (fingerprint)", "provider", "outcome", "latency", "detail"):
            table.add_column(column, overflow="fold", no_wrap=column != "detail")
        for r in results:
            colour = COLOURS.get(r.outcome, "white")
            table.add_row(
                r.fingerprint,
                r.provider,
                f"[{colour}]{r.outcome}[/{colour}]",
                f"{r.latency_ms:.0f} ms",
                escape(r.detail),
            )
        Console(highlight=False).print(table)
    return 1 if any(r.outcome == INVALID for r in results) else 0


def _money(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def credit_json(result: ProbeResult) -> dict[str, Any]:
    return {
        "fingerprint": result.fingerprint,
        "provider": result.provider,
        "outcome": result.outcome,
        "detail": result.detail,
        "credit": result.credit.to_json() if result.credit is not None else None,
    }


def _row(result: ProbeResult) -> list[str]:
    c: Credit | None = result.credit
    if c is None:
        return [result.fingerprint, result.outcome, "-", "-", "-", "-", "-", "-", escape(result.detail)]
    free = f"{c.free_used}/{c.free_limit}" if c.free_limit is not None else "-"
    usage = f"{_money(c.usage)} (d {_money(c.usage_daily)} w {_money(c.usage_weekly)} m {_money(c.usage_monthly)})"
    return [
        result.fingerprint,
        result.outcome,
        "unlimited" if c.unlimited else _money(c.limit),
        "unlimited" if c.unlimited else _money(c.remaining),
        c.reset or "never",
        usage,
        "yes" if c.is_free_tier else "no",
        free,
        "",
    ]


def cmd_credits(args: argparse.Namespace) -> int:
    settings = _settings(getattr(args, "env_file", None))
    if isinstance(settings, int):
        return settings
    results = asyncio.run(_probe(settings, None, only_credit=True))
    if args.json:
        sys.stdout.write(orjson.dumps({"keys": [credit_json(r) for r in results]}).decode() + "\n")
        return 0
    out = Console(highlight=False)
    if not results:
        out.print("no key reports its credit (only OpenRouter keys do, through GET /api/v1/key)")
        return 0
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    for column in ("key (fingerprint)", "probe", "limit", "remaining", "resets", "usage", "free tier", "free today"):
        table.add_column(column, no_wrap=True)
    table.add_column("detail", overflow="fold")
    for result in results:
        table.add_row(*_row(result))
    out.print(table)
    return 0
