"""The ``keywheel`` command: chat, status, demo (and serve, once a gateway is configured)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

from rich.console import Console
from rich.table import Table

from keywheel.client import Wheel
from keywheel.config import load_env
from keywheel.errors import ConfigError, KeywheelError
from keywheel.types import StreamEnd, TextDelta

HOW_TO_CONFIGURE = """\
keywheel found no API keys.  Put them in the environment or in a .env file here, e.g.:

    AI_PROVIDER=gemini
    GEMINI_API_KEY_1=...        # as many as you have: _1, _2, ... _N
    OPENROUTER_API_KEY_1=...
    ANTHROPIC_API_KEY=...       # or ANTHROPIC_AUTH_TOKEN for Anthropic-compatible hosts (GLM)

See .env.example for every setting.  To watch keywheel work without any key: keywheel demo
"""


def _console(stderr: bool = False) -> Console:
    return Console(stderr=stderr, highlight=False)


def _wheel(env_file: str) -> Wheel:
    return Wheel.from_env(env_file=env_file)


def _config_failed(err: ConfigError) -> int:
    console = _console(stderr=True)
    no_keys = any("no provider has keys" in why for why in err.problems.values())
    if no_keys:
        console.print(HOW_TO_CONFIGURE)
    else:
        console.print(f"[red]{err}[/red]")
    return 2


def cmd_chat(args: argparse.Namespace) -> int:
    out = _console()
    try:
        wheel = _wheel(args.env_file)
    except ConfigError as err:
        return _config_failed(err)
    with wheel:
        if args.prompt:
            return _ask(wheel, " ".join(args.prompt), args, out, history=None)
        out.print(
            f"keywheel chat — primary [bold]{wheel.settings.primary}[/bold], chain {' → '.join(wheel.settings.chain)}"
        )
        out.print("Type a message; an empty line or Ctrl-D quits.")
        history: list[dict[str, Any]] = []
        while True:
            try:
                prompt = input("you> ").strip()
            except (EOFError, KeyboardInterrupt):
                out.print()
                return 0
            if not prompt:
                return 0
            _ask(wheel, prompt, args, out, history=history)


def _ask(
    wheel: Wheel, prompt: str, args: argparse.Namespace, out: Console, history: list[dict[str, Any]] | None
) -> int:
    messages = [*(history or []), {"role": "user", "content": prompt}]
    options: dict[str, Any] = {"provider": args.provider, "model": args.model}
    if args.system:
        options["system"] = args.system
    try:
        if args.no_stream:
            response = wheel.chat(messages, **options)
            text = response.text
            out.print(text, markup=False)
            if args.verbose:
                out.print(f"[dim]served by {response.provider} {response.key} ({response.model})[/dim]")
                for attempt in response.attempts:
                    out.print(f"[dim]  tried {attempt}[/dim]")
        else:
            parts = []
            for event in wheel.stream(messages, **options):
                if isinstance(event, TextDelta):
                    parts.append(event.text)
                    out.print(event.text, end="", markup=False)
                elif isinstance(event, StreamEnd) and args.verbose:
                    out.print()
                    out.print(f"[dim]served by {event.provider} {event.key} ({event.model})[/dim]")
                    for attempt in event.attempts:
                        out.print(f"[dim]  tried {attempt}[/dim]")
            out.print()
            text = "".join(parts)
    except KeywheelError as err:
        _console(stderr=True).print(f"[red]error:[/red] {err}", markup=True, highlight=False)
        return 1
    if history is not None:
        history.extend([{"role": "user", "content": prompt}, {"role": "assistant", "content": text}])
    return 0


def key_table(status: dict[str, Any], title: str = "keys") -> Table:
    table = Table(title=title, caption="* primary provider", expand=False)
    for column in ("provider", "key", "state", "rest s", "reqs", "ok", "failures", "tokens in/out"):
        table.add_column(column, no_wrap=True, min_width=len(column))
    table.add_column("last error", overflow="ellipsis", no_wrap=True, max_width=36)
    colors = {"active": "green", "cooling": "yellow", "disabled": "red"}
    for provider in status["providers"]:
        name = provider["provider"] + (" *" if provider.get("primary") else "")
        if provider.get("throttled_for"):
            name += f" throttled {provider['throttled_for']:.1f}s"
        for key in provider["keys"]:
            state = key["state"]
            failures = " ".join(f"{k} {v}" for k, v in sorted(key["failures"].items())) or "-"
            table.add_row(
                name,
                key["key"],
                f"[{colors.get(state, 'white')}]{state}[/]",
                f"{key['cooldown_remaining']:.1f}" if key["cooldown_remaining"] else "",
                str(key["requests"]),
                str(key["successes"]),
                failures,
                f"{key['tokens_in']}/{key['tokens_out']}",
                (key["reason"] or key["last_error"] or "")[:60],
            )
            name = ""
    return table


def _remote_status(url: str, admin_key: str | None) -> int:
    import json
    import urllib.error
    import urllib.request

    request = urllib.request.Request(url.rstrip("/") + "/status")
    if admin_key:
        request.add_header("authorization", f"Bearer {admin_key}")
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            status = json.loads(resp.read())
    except urllib.error.HTTPError as err:
        _console(stderr=True).print(f"[red]{url}/status answered {err.code}[/red] (is KEYWHEEL_ADMIN_KEY right?)")
        return 1
    except (OSError, ValueError) as err:
        _console(stderr=True).print(f"[red]could not read {url}/status:[/red] {err}")
        return 1
    out = _console()
    out.print(f"gateway {url}: primary [bold]{status['primary']}[/bold], chain {' → '.join(status['chain'])}")
    out.print(key_table(status, "keys (live)"))
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    if args.url:
        return _remote_status(args.url, args.admin_key or os.environ.get("KEYWHEEL_ADMIN_KEY"))
    try:
        wheel = _wheel(args.env_file)
    except ConfigError as err:
        return _config_failed(err)
    with wheel:
        out = _console()
        for warning in wheel.settings.warnings:
            out.print(f"[yellow]warning:[/yellow] {warning}")
        settings = wheel.settings
        out.print(f"primary: [bold]{settings.primary}[/bold]   chain: {' → '.join(settings.chain)}")
        for name in settings.chain:
            cfg = settings.providers[name]
            out.print(f"  {name}: {cfg.dialect} dialect, model {cfg.model}, {len(cfg.keys)} keys, {cfg.base_url}")
        out.print(key_table(wheel.status(), "keys (this process)"))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from keywheel.demo import run_demo

    return run_demo(requests=args.requests, concurrency=args.concurrency, console=_console())


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from keywheel.gateway import Gateway
    from keywheel.gateway.app import _is_loopback

    try:
        wheel = _wheel(args.env_file)
    except ConfigError as err:
        return _config_failed(err)
    settings = wheel.settings
    stderr = _console(stderr=True)
    variables = load_env(None, args.env_file)
    args.host = args.host or variables.get("KEYWHEEL_HOST") or "127.0.0.1"
    try:
        args.port = args.port or int(variables.get("KEYWHEEL_PORT") or 8787)
    except ValueError:
        stderr.print(f"[red]KEYWHEEL_PORT must be a port number, got {variables['KEYWHEEL_PORT']!r}[/red]")
        wheel.close()
        return 2
    if not _is_loopback(args.host) and not settings.gateway_keys:
        stderr.print(
            f"[red]refusing to serve on {args.host}:[/red] no KEYWHEEL_GATEWAY_KEYS are set, so anyone who can "
            "reach this address could spend your keys.  Set KEYWHEEL_GATEWAY_KEYS=k1,k2 or bind 127.0.0.1."
        )
        wheel.close()
        return 2
    for warning in settings.warnings:
        stderr.print(f"[yellow]warning:[/yellow] {warning}")
    keys = sum(len(settings.providers[n].keys) for n in settings.chain)
    stderr.print(
        f"keywheel gateway on http://{args.host}:{args.port}  chain {' → '.join(settings.chain)} ({keys} keys), "
        f"{len(settings.gateway_keys)} gateway keys, {args.workers} worker(s)"
    )
    common: dict[str, Any] = {
        "host": args.host,
        "port": args.port,
        "loop": "uvloop",
        "http": "httptools",
        # keywheel's own access log (keywheel.access) logs paths, never query strings.
        "access_log": False,
        "log_level": args.log_level.lower(),
        # No handlers of uvicorn's own: its records reach the root handlers, which redact key pieces.
        "log_config": None,
        "lifespan": "on",
        "timeout_graceful_shutdown": 5,
    }
    if args.workers > 1:
        wheel.close()
        os.environ["KEYWHEEL_ENV_FILE"] = args.env_file
        os.environ["KEYWHEEL_LOG_LEVEL"] = args.log_level.upper()
        uvicorn.run("keywheel.gateway:app_from_env", factory=True, workers=args.workers, **common)
    else:
        uvicorn.run(Gateway(wheel), **common)
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    """The main job: with keys configured, the gateway; without, the demo."""
    try:
        _wheel(args.env_file).close()
    except ConfigError as err:
        if any("no provider has keys" in why for why in err.problems.values()):
            _console().print("No API keys configured (see .env.example), so here is the demo.\n")
            return run_demo_default()
        return _config_failed(err)
    serve_args = build_parser().parse_args(["--env-file", args.env_file, "serve"])
    serve_args.log_level = args.log_level
    return cmd_serve(serve_args)


def run_demo_default() -> int:
    from keywheel.demo import run_demo

    return run_demo(console=_console())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="keywheel", description="Many LLM keys and providers behind one door.")
    parser.add_argument("--env-file", default=".env", help="the .env file to read (default: ./.env)")
    parser.add_argument(
        "--log-level", default=None, help="DEBUG, INFO, WARNING, ERROR (default: INFO for serve, WARNING otherwise)"
    )
    sub = parser.add_subparsers(dest="command", required=True)

    chat = sub.add_parser("chat", help="ask a question (no prompt: interactive)")
    chat.add_argument("prompt", nargs="*", help="the prompt; omit for an interactive session")
    chat.add_argument(
        "-v", "--verbose", action="store_true", help="say which provider and key served, and what was tried"
    )
    chat.add_argument("--provider", help="provider to try first (default: AI_PROVIDER)")
    chat.add_argument("--model", help="model for that provider (default: its configured model)")
    chat.add_argument("--system", help="system prompt")
    chat.add_argument("--no-stream", action="store_true", help="wait for the whole answer instead of streaming")
    chat.set_defaults(func=cmd_chat)

    status = sub.add_parser("status", help="show providers and keys by fingerprint (of a running gateway with --url)")
    status.add_argument("--url", help="a running gateway, e.g. http://127.0.0.1:8787: show its live key state")
    status.add_argument("--admin-key", help="the gateway's KEYWHEEL_ADMIN_KEY (default: from the environment)")
    status.set_defaults(func=cmd_status)

    demo = sub.add_parser("demo", help="watch rotation, cooldowns and failover against a local fake upstream")
    demo.add_argument("--requests", type=int, default=120, help="how many requests (default 120)")
    demo.add_argument("--concurrency", type=int, default=6, help="concurrent requests (default 6)")
    demo.set_defaults(func=cmd_demo)

    serve = sub.add_parser("serve", help="run the HTTP gateway (OpenAI, Anthropic and Gemini dialects)")
    serve.add_argument("--host", help="address to bind (default KEYWHEEL_HOST, else 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (default KEYWHEEL_PORT, else 8787)")
    serve.add_argument(
        "--workers", type=int, default=1, help="worker processes (default 1; each has its own key state)"
    )
    serve.set_defaults(func=cmd_serve)

    run = sub.add_parser("run", help="the main job: the gateway with the configured keys, or the demo without any")
    run.set_defaults(func=cmd_run)
    return parser


def configure_logging(level: str) -> None:
    """Log to stderr through handlers that strip every piece of every key (and any ``?key=``)."""
    from keywheel.secrets import install_log_filter

    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    install_log_filter(handlers=logging.root.handlers)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.log_level is None:
        args.log_level = "INFO" if args.command in ("serve", "run") else "WARNING"
    configure_logging(args.log_level)
    try:
        code: int = args.func(args)
    except KeyboardInterrupt:
        code = 130
    return code


if __name__ == "__main__":
    sys.exit(main())
