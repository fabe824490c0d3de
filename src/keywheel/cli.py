"""The ``keywheel`` command: chat, status, demo (and serve, once a gateway is configured)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from keywheel.admin_cli import add_keys_commands, add_reload_command
from keywheel.admin_cli import local_url as _local_url
from keywheel.client import Wheel
from keywheel.config import config_source, load_env, settings_from_env
from keywheel.errors import ConfigError, KeywheelError
from keywheel.logs import configure_logging
from keywheel.render import key_table
from keywheel.state.factory import SERVE_DEFAULT, parse_state
from keywheel.state.windows import WindowSpec
from keywheel.status import Status
from keywheel.types import Attempt, StreamEnd, TextDelta

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


def _wheel(env_file: str | None) -> Wheel:
    """The one way every command reads its configuration: the environment over ``--env-file``
    (default ``./.env`` when there is one)."""
    return Wheel.from_env(env_file=env_file)


def _variables(env_file: str | None) -> dict[str, str]:
    return load_env(None, env_file)


def _log_format(env_file: str | None) -> str:
    """``KEYWHEEL_LOG_FORMAT`` as the command will read it (``text`` when it cannot be read yet:
    the command itself reports a broken configuration)."""
    try:
        return load_env(None, env_file).get("KEYWHEEL_LOG_FORMAT", "text").strip().lower()
    except ConfigError:
        return "text"


def _config_failed(err: ConfigError) -> int:
    console = _console(stderr=True)
    no_keys = any("no provider has keys" in why for why in err.problems.values())
    if no_keys:
        console.print(HOW_TO_CONFIGURE)
    else:
        console.print(problem_table(err))
    return 2


def problem_table(err: ConfigError) -> Table:
    table = Table(title="[red]invalid keywheel configuration[/red]", title_justify="left", box=box.SIMPLE_HEAD)
    table.add_column("setting", style="bold", no_wrap=True)
    table.add_column("problem", overflow="fold")
    for name, why in err.problems.items():
        table.add_row(name, why)
    return table


def _quiet_config_log() -> None:
    # The commands below print configuration warnings themselves, once, in their own words.
    logging.getLogger("keywheel.config").setLevel(logging.ERROR)


def cmd_chat(args: argparse.Namespace) -> int:
    out = _console()
    _quiet_config_log()
    try:
        wheel = _wheel(args.env_file)
    except ConfigError as err:
        return _config_failed(err)
    with wheel:
        for warning in wheel.settings.warnings:
            _console(stderr=True).print(f"[yellow]warning:[/yellow] {warning}")
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


def _print_attempts(out: Console, attempts: Sequence[Attempt]) -> None:
    for attempt in attempts:
        if attempt.outcome == "ok":
            continue
        out.print(f"[dim]  tried {escape(str(attempt))}[/dim]", highlight=False, soft_wrap=True)


def _ask(
    wheel: Wheel, prompt: str, args: argparse.Namespace, out: Console, history: list[dict[str, Any]] | None
) -> int:
    messages = [*(history or []), {"role": "user", "content": prompt}]
    options: dict[str, Any] = {"provider": args.provider, "model": args.model, "fallback": not args.no_fallback}
    if args.system:
        options["system"] = args.system
    if args.max_tokens is not None:
        options["max_tokens"] = args.max_tokens
    try:
        if args.no_stream:
            response = wheel.chat(messages, **options)
            text = response.text
            out.print(text, markup=False)
            if args.verbose:
                out.print(f"[dim]served by {response.provider} {response.key} ({response.model})[/dim]")
                _print_attempts(out, response.attempts)
        else:
            parts = []
            for event in wheel.stream(messages, **options):
                if isinstance(event, TextDelta):
                    parts.append(event.text)
                    out.print(event.text, end="", markup=False)
                elif isinstance(event, StreamEnd) and args.verbose:
                    out.print()
                    out.print(f"[dim]served by {event.provider} {event.key} ({event.model})[/dim]")
                    _print_attempts(out, event.attempts)
            out.print()
            text = "".join(parts)
    except KeywheelError as err:
        err_console = _console(stderr=True)
        err_console.print(f"[red]error:[/red] {escape(str(err))}", highlight=False, soft_wrap=True)
        if args.verbose:
            _print_attempts(err_console, getattr(err, "attempts", []))
        return 1
    if history is not None:
        history.extend([{"role": "user", "content": prompt}, {"role": "assistant", "content": text}])
    return 0


class _StatusUnavailable(Exception):
    """A gateway's /status could not be read; the message says why."""


def _fetch_status(url: str, admin_key: str | None, timeout: float = 10) -> Status:
    import json
    import urllib.error
    import urllib.request

    request = urllib.request.Request(url.rstrip("/") + "/status")
    if admin_key:
        request.add_header("authorization", f"Bearer {admin_key}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            body = json.loads(resp.read())
    except urllib.error.HTTPError as err:
        hint = (
            "KEYWHEEL_ADMIN_KEY (environment, .env or --admin-key) is not the gateway's"
            if admin_key
            else "the gateway wants its KEYWHEEL_ADMIN_KEY: set it in the environment or .env, or pass --admin-key"
        )
        raise _StatusUnavailable(f"{url}/status answered {err.code}: {hint}") from None
    except (OSError, ValueError) as err:
        raise _StatusUnavailable(f"could not read {url}/status: {err}") from None
    try:
        return Status.from_json(body)
    except ValueError:
        raise _StatusUnavailable(f"{url}/status is not a keywheel gateway's status") from None


def _gateway_answers(url: str) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(url + "/health", timeout=1) as resp:
            return bool(resp.status == 200)
    except (OSError, ValueError):
        return False


def cmd_status(args: argparse.Namespace) -> int:
    _quiet_config_log()
    try:
        variables = _variables(args.env_file)
    except ConfigError as err:
        return _config_failed(err)
    admin_key = args.admin_key or variables.get("KEYWHEEL_ADMIN_KEY")
    url = args.url
    if url is None and not args.local:
        candidate = _local_url(variables)
        if _gateway_answers(candidate):
            url = candidate
    if url is not None:
        return _watch(args, lambda: _remote_view(url, admin_key))
    try:
        wheel = _wheel(args.env_file)
    except ConfigError as err:
        return _config_failed(err)
    with wheel:
        note = (
            "this process only: fresh counters of the configuration below"
            if args.local
            else f"no gateway answers at {_local_url(variables)}, so this is this process only: "
            "fresh counters of the configuration below (a running gateway's state: --url)"
        )
        return _watch(args, lambda: _local_view(wheel, note))


def _remote_view(url: str, admin_key: str | None) -> list[Any]:
    status = _fetch_status(url, admin_key)
    width = _console().width
    return [
        f"gateway {url} (live): primary [bold]{status.primary}[/bold], chain {' → '.join(status.chain)}",
        key_table(status, "keys (live)", width),
        *(f"[yellow]warning:[/yellow] {w}" for p in status.providers for w in p.warnings()),
    ]


def _local_view(wheel: Wheel, note: str) -> list[Any]:
    settings = wheel.settings
    parts: list[Any] = [f"[yellow]warning:[/yellow] {w}" for w in settings.warnings]
    parts.append(f"[dim]{note}[/dim]")
    parts.append(f"primary: [bold]{settings.primary}[/bold]   chain: {' → '.join(settings.chain)}")
    for name in settings.chain:
        cfg = settings.providers[name]
        parts.append(f"  {name}: {cfg.dialect} dialect, model {cfg.model}, {len(cfg.keys)} keys, {cfg.base_url}")
    parts.append(key_table(wheel.snapshot(), "keys (this process)", _console().width))
    return parts


def _watch(args: argparse.Namespace, view: Callable[[], list[Any]]) -> int:
    out = _console()
    try:
        parts = view()
    except _StatusUnavailable as err:
        _console(stderr=True).print(f"[red]error:[/red] {err}")
        return 1
    if args.watch is None:
        for part in parts:
            out.print(part)
        return 0
    interval = max(args.watch, 0.1)
    try:
        while True:
            if out.is_terminal:
                out.clear()
            out.print(f"[dim]{time.strftime('%H:%M:%S')} — every {interval:g} s, Ctrl-C stops[/dim]")
            for part in parts:
                out.print(part)
            out.file.flush()
            time.sleep(interval)
            try:
                parts = view()
            except _StatusUnavailable as err:
                parts = [f"[red]{err}[/red]"]
    except KeyboardInterrupt:
        return 0


def cmd_config(args: argparse.Namespace) -> int:
    """Print the resolved configuration (keys by fingerprint) with warnings; non-zero on errors."""
    _quiet_config_log()
    out = _console()
    try:
        # The settings only: no key store is opened (a running gateway holds its state file).
        variables = _variables(args.env_file)
        settings = settings_from_env(variables)
    except ConfigError as err:
        _console(stderr=True).print(problem_table(err))
        return 2
    source = args.env_file or (".env" if os.path.isfile(".env") else "no .env file")
    out.print(f"configuration from the environment and {source}")
    out.print(f"primary: [bold]{settings.primary}[/bold]   chain: {' → '.join(settings.chain)}")
    providers = Table(title="providers", title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
    for column in ("provider", "on", "dialect", "model", "base URL"):
        providers.add_column(column, overflow="fold")
    keys = Table(title="keys", title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
    keys.add_column("provider", no_wrap=True)
    keys.add_column("key (fingerprint)", no_wrap=True)
    keys.add_column("sent as", no_wrap=True)
    keys.add_column("group", no_wrap=True)
    keys.add_column("windows", overflow="fold")
    for name, cfg in settings.providers.items():
        if not cfg.keys and not cfg.enabled:
            continue
        providers.add_row(name, "yes" if cfg.enabled else "no", cfg.dialect, cfg.model, cfg.base_url)
        for key in cfg.keys:
            group, specs = cfg.quota.of(key.fingerprint)
            shown = group if group in cfg.quota.groups else "-"
            limits = ", ".join(_window_text(s) for s in specs) or "-"
            sent_as = "Bearer" if key.auth == "bearer" else "API key header"
            keys.add_row(name, key.fingerprint, sent_as, shown, limits)
    out.print(providers)
    out.print(keys)
    behaviour = Table(title="behaviour", title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
    behaviour.add_column("setting", no_wrap=True)
    behaviour.add_column("value", overflow="fold")
    for name, value in (
        ("KEYWHEEL_TIMEOUT", f"{settings.timeout:g} s"),
        ("KEYWHEEL_ATTEMPT_TIMEOUT", f"{settings.attempt_timeout:g} s"),
        ("KEYWHEEL_STREAM_IDLE_TIMEOUT", f"{settings.stream_idle_timeout:g} s"),
        ("KEYWHEEL_MAX_WAIT", f"{settings.max_wait:g} s"),
        ("KEYWHEEL_PROVIDER_ATTEMPTS", str(settings.provider_attempts)),
        ("KEYWHEEL_STATE", _state_shown(settings.state, "KEYWHEEL_STATE" in variables)),
        ("KEYWHEEL_GATEWAY_KEYS", f"{len(settings.gateway_keys)} set" if settings.gateway_keys else "none"),
        ("KEYWHEEL_ADMIN_KEY", "set" if settings.admin_key else "not set (admin endpoints: loopback only)"),
    ):
        behaviour.add_row(name, value)
    out.print(behaviour)
    for warning in settings.warnings:
        out.print(f"[yellow]warning:[/yellow] {warning}")
    seen = _seen_warnings(args, out)
    out.print("[green]configuration is valid[/green]" + (" (with warnings)" if settings.warnings or seen else ""))
    return 0


def _state_shown(state: str, given: bool) -> str:
    if given:
        return parse_state(state).public  # a Redis password masked
    return f"not set: {state} for the library and chat, {SERVE_DEFAULT} for keywheel serve"


def _window_text(spec: WindowSpec) -> str:
    if spec.daily:
        return f"{spec.limit} {spec.unit}/day ({spec.tz})"
    return f"{spec.limit} {spec.unit}/{spec.seconds:g}s"


def _seen_warnings(args: argparse.Namespace, out: Console) -> int:
    """What a running gateway has seen that the configuration cannot show: keys of different groups
    throttled within the same second again and again (they share one project's or account's quota).
    Read from its ``/status`` (``--url``, else the local gateway if one answers); how many warned."""
    variables = _variables(args.env_file)
    url = args.url
    if url is None:
        candidate = _local_url(variables)
        url = candidate if _gateway_answers(candidate) else None
    if url is None:
        out.print("[dim]no gateway running here: keys that behave as one group show once one has run (--url)[/dim]")
        return 0
    try:
        status = _fetch_status(url, args.admin_key or variables.get("KEYWHEEL_ADMIN_KEY"))
    except _StatusUnavailable as err:
        out.print(f"[yellow]warning:[/yellow] {err}")
        return 1
    warnings = [w for p in status.providers for w in p.warnings()]
    for warning in warnings:
        out.print(f"[yellow]warning:[/yellow] {warning} (seen by the gateway at {url})")
    return len(warnings)


def cmd_demo(args: argparse.Namespace) -> int:
    from keywheel.demo import run_demo

    return run_demo(requests=args.requests, concurrency=args.concurrency, console=_console())


def cmd_serve(args: argparse.Namespace) -> int:
    from keywheel.gateway import Gateway
    from keywheel.gateway.http import is_loopback
    from keywheel.gateway.server import BindError, serve

    try:
        variables = load_env(None, args.env_file)
        variables.setdefault("KEYWHEEL_STATE", SERVE_DEFAULT)  # the gateway's state outlives it
        settings = settings_from_env(variables)
    except ConfigError as err:
        return _config_failed(err)
    stderr = _console(stderr=True)
    args.host = args.host or variables.get("KEYWHEEL_HOST") or "127.0.0.1"
    try:
        args.port = args.port or int(variables.get("KEYWHEEL_PORT") or 8787)
    except ValueError:
        stderr.print(f"[red]KEYWHEEL_PORT must be a port number, got {variables['KEYWHEEL_PORT']!r}[/red]")
        return 2
    if not is_loopback(args.host) and not settings.gateway_keys:
        stderr.print(
            f"[red]refusing to serve on {args.host}:[/red] no KEYWHEEL_GATEWAY_KEYS are set, so anyone who can "
            "reach this address could spend your keys.  Set KEYWHEEL_GATEWAY_KEYS=k1,k2 or bind 127.0.0.1."
        )
        return 2
    if args.workers > 1 and parse_state(settings.state).kind != "redis":
        stderr.print(
            f"[red]refusing --workers {args.workers} with KEYWHEEL_STATE={escape(parse_state(settings.state).public)}:"
            "[/red] each worker would keep its own key state (its own rotation, rests and quota). Set "
            "KEYWHEEL_STATE=redis://HOST:PORT/0 so the workers share one pool, or run one worker."
        )
        return 2
    try:
        wheel = Wheel(settings)  # opens (and locks) the key state: after every refusal above
    except ConfigError as err:
        return _config_failed(err)
    if settings.log_format != "json":  # JSON: config.py logged them already, and stderr holds only JSON lines
        for warning in settings.warnings:
            stderr.print(f"[yellow]warning:[/yellow] {warning}")
    keys = sum(len(settings.providers[n].keys) for n in settings.chain)
    say = logging.getLogger("keywheel").info if settings.log_format == "json" else stderr.print
    say(
        f"keywheel gateway on http://{args.host}:{args.port}  chain {' → '.join(settings.chain)} ({keys} keys), "
        f"{len(settings.gateway_keys)} gateway keys, {args.workers} worker(s)"
    )
    if args.workers > 1:
        wheel.close()
    app = Gateway(wheel, config_source(args.env_file)) if args.workers <= 1 else None
    try:
        serve(
            app,
            settings,
            host=args.host,
            port=args.port,
            workers=args.workers,
            log_level=args.log_level,
            env_file=args.env_file,
        )
    except BindError as err:
        if err.in_use:
            stderr.print(
                f"[red]port {err.port} on {err.host} is already in use[/red] (another keywheel or another "
                "program).  Stop that program, or choose a free port: --port N or KEYWHEEL_PORT=N."
            )
        else:
            stderr.print(f"[red]{err}[/red]  Check --host / KEYWHEEL_HOST and --port / KEYWHEEL_PORT.")
        if app is not None:
            wheel.close()
        return 2
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    """The main job: with keys configured, the gateway; without, the demo."""
    try:
        _wheel(args.env_file).close()
    except ConfigError as err:
        if any("no provider has keys" in why for why in err.problems.values()):
            if not args.log_level_given:
                logging.getLogger().setLevel(DEMO_LOG_LEVEL)  # the demo's own level: no INFO lines over its table
            _console().print("No API keys configured (see .env.example), so here is the demo.\n")
            return run_demo_default()
        return _config_failed(err)
    serve_args = build_parser().parse_args(["serve", *(["--env-file", args.env_file] if args.env_file else [])])
    serve_args.log_level = args.log_level
    return cmd_serve(serve_args)


def run_demo_default() -> int:
    from keywheel.demo import run_demo

    return run_demo(console=_console())


# The demo plays faults on purpose (429s, dead keys, an overloaded provider that opens its breaker)
# and reports them in its own table: warnings about them would only garble it.
DEMO_LOG_LEVEL = "ERROR"


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("keywheel")
    except PackageNotFoundError:  # pragma: no cover — running from a source tree without install
        return "unknown"


def _global_options(parser: argparse.ArgumentParser, *, top: bool) -> None:
    """``--env-file`` and ``--log-level``, accepted before and after the subcommand.

    On the subcommands they default to SUPPRESS, so an option given before the
    subcommand is not overwritten by the subcommand's default."""
    default: Any = None if top else argparse.SUPPRESS
    parser.add_argument(
        "--env-file",
        default=default,
        help="the .env file to read (default: ./.env when it exists); a named file must exist",
    )
    parser.add_argument(
        "--log-level",
        default=default,
        type=str.upper,
        choices=("DEBUG", "INFO", "WARNING", "ERROR"),
        help="default: INFO for serve and run, ERROR for demo, WARNING otherwise",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="keywheel", description="Many LLM keys and providers behind one door.")
    parser.add_argument("--version", action="version", version=f"keywheel {_version()}")
    _global_options(parser, top=True)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, **kwargs: Any) -> argparse.ArgumentParser:
        p = sub.add_parser(name, **kwargs)
        _global_options(p, top=False)
        return p

    chat = command("chat", help="ask a question (no prompt: interactive)")
    chat.add_argument("prompt", nargs="*", help="the prompt; omit for an interactive session")
    chat.add_argument(
        "-v", "--verbose", action="store_true", help="say who served, what was tried, and each retry time"
    )
    chat.add_argument("--provider", help="provider to try first (default: AI_PROVIDER)")
    chat.add_argument("--model", help="model for that provider (default: its configured model)")
    chat.add_argument("--system", help="system prompt")
    chat.add_argument("--max-tokens", type=int, metavar="N", help="longest answer, in tokens")
    chat.add_argument("--no-fallback", action="store_true", help="use only the first provider; never fail over")
    chat.add_argument("--no-stream", action="store_true", help="wait for the whole answer instead of streaming")
    chat.set_defaults(func=cmd_chat)

    status = command("status", help="key state of the running gateway (found at KEYWHEEL_HOST:KEYWHEEL_PORT, or --url)")
    status.add_argument("--url", help="a running gateway, e.g. http://127.0.0.1:8787 (default: the local one, if up)")
    status.add_argument("--admin-key", help="the gateway's KEYWHEEL_ADMIN_KEY (default: from the environment or .env)")
    status.add_argument("--local", action="store_true", help="do not look for a gateway: this process's view only")
    status.add_argument(
        "--watch", nargs="?", type=float, const=2.0, metavar="SECONDS", help="refresh every SECONDS (default 2)"
    )
    status.set_defaults(func=cmd_status)

    config = command("config", help="print the resolved configuration (keys by fingerprint) and check it")
    config.add_argument(
        "--url", help="also read a running gateway's /status for keys that behave as one group (default: the local one)"
    )
    config.add_argument("--admin-key", help="the gateway's KEYWHEEL_ADMIN_KEY (default: from the environment or .env)")
    config.set_defaults(func=cmd_config)

    demo = command("demo", help="watch rotation, cooldowns and failover against a local fake upstream")
    demo.add_argument("--requests", type=int, default=120, help="how many requests (default 120)")
    demo.add_argument("--concurrency", type=int, default=6, help="concurrent requests (default 6)")
    demo.set_defaults(func=cmd_demo)

    serve = command("serve", help="run the HTTP gateway (OpenAI, Anthropic and Gemini dialects)")
    serve.add_argument("--host", help="address to bind (default KEYWHEEL_HOST, else 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (default KEYWHEEL_PORT, else 8787)")
    serve.add_argument(
        "--workers", type=int, default=1, help="worker processes (default 1; more need KEYWHEEL_STATE=redis://...)"
    )
    serve.set_defaults(func=cmd_serve)

    run = command("run", help="the main job: the gateway with the configured keys, or the demo without any")
    run.set_defaults(func=cmd_run)
    _keys_commands(command)
    add_reload_command(command("reload", help="make the running gateway read its configuration again (as SIGHUP)"))
    return parser


def _keys_commands(command: Callable[..., argparse.ArgumentParser]) -> None:
    """``keywheel keys check`` and ``keywheel credits`` (keywheel.ops.cli: run here, from the
    configuration), and ``keywheel keys list|enable|disable|remove|add`` (keywheel.admin_cli:
    against a running gateway), under one ``keys`` command."""
    from keywheel.ops import cli as ops_cli

    keys = command("keys", help="list, check, enable, disable, remove or add keys")
    actions = keys.add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    ops_cli.add_commands(actions, command, lambda p: _global_options(p, top=False))
    add_keys_commands(actions, lambda p: _global_options(p, top=False))


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.log_level_given = args.log_level is not None
    if args.log_level is None:
        args.log_level = {"serve": "INFO", "run": "INFO", "demo": DEMO_LOG_LEVEL}.get(args.command, "WARNING")
    configure_logging(args.log_level, _log_format(args.env_file))
    try:
        code: int = args.func(args)
    except KeyboardInterrupt:
        code = 130
    return code


if __name__ == "__main__":
    sys.exit(main())
