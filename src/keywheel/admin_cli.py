"""``keywheel keys list|enable|disable|remove|add`` and ``keywheel reload``: admin from the command line.

Each talks to a running gateway over its admin JSON routes, found as every command finds its
configuration (the environment over ``.env`` or ``--env-file``): ``--url``, else ``KEYWHEEL_URL``,
else ``http://KEYWHEEL_HOST:KEYWHEEL_PORT`` (default ``127.0.0.1:8787``), with ``KEYWHEEL_ADMIN_KEY``
as the bearer token.  A key to add is read from standard input or from an environment variable,
never from the command line (which ``ps`` shows to every user of the machine).

Exit codes: 0 done; 1 the gateway refused (no such key, a configuration that does not load);
2 our side is wrong (configuration, the admin key, the arguments); 3 no gateway answers.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

from rich.console import Console
from rich.markup import escape

from keywheel.config import load_env
from keywheel.errors import ConfigError
from keywheel.render import key_list_table, problems_table
from keywheel.status import Status

REFUSED, OURS, UNREACHABLE = 1, 2, 3


class AdminFailed(Exception):
    """An admin call that did not succeed: what to print and the exit code."""

    def __init__(self, message: str, code: int, problems: dict[str, str] | None = None) -> None:
        self.message, self.code, self.problems = message, code, problems or {}
        super().__init__(message)


class Gateway:
    """A running gateway's admin routes."""

    def __init__(self, url: str, admin_key: str | None, timeout: float = 30) -> None:
        self.url, self._admin_key, self.timeout = url.rstrip("/"), admin_key, timeout

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, method=method)
        request.add_header("accept", "application/json")
        if data is not None:
            request.add_header("content-type", "application/json")
        if self._admin_key:
            request.add_header("authorization", f"Bearer {self._admin_key}")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as resp:
                return json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as err:
            raise self._refused(err, path) from None
        except (OSError, ValueError) as err:
            reason = getattr(err, "reason", err)
            raise AdminFailed(
                f"no keywheel gateway answers at {self.url} ({reason}): start it with `keywheel serve`, "
                "or point --url / KEYWHEEL_URL at it",
                UNREACHABLE,
            ) from None

    def _refused(self, err: urllib.error.HTTPError, path: str) -> AdminFailed:
        try:
            body = json.loads(err.read())
        except ValueError:
            body = {}
        error = body.get("error") if isinstance(body, dict) else None
        message = error.get("message") if isinstance(error, dict) else error
        if err.code == 401:
            hint = "is not the gateway's" if self._admin_key else "is not set: set it in the environment or .env"
            return AdminFailed(f"{self.url} refused the admin key (401): KEYWHEEL_ADMIN_KEY {hint}", OURS)
        if err.code == 403:
            return AdminFailed(f"{self.url} refused (403): {message}", OURS)
        problems = body.get("problems") if isinstance(body, dict) else None
        return AdminFailed(f"{path} answered {err.code}: {message or err.reason}", REFUSED, problems)


def gateway_of(args: argparse.Namespace) -> Gateway:
    """The gateway and admin key as every command reads its configuration."""
    variables = load_env(None, args.env_file)
    url = args.url or variables.get("KEYWHEEL_URL") or local_url(variables)
    return Gateway(url, variables.get("KEYWHEEL_ADMIN_KEY"))


def local_url(variables: dict[str, str]) -> str:
    host = variables.get("KEYWHEEL_HOST") or "127.0.0.1"
    if host in ("0.0.0.0", "::", ""):  # noqa: S104 — a wildcard bind is reached on loopback
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{variables.get('KEYWHEEL_PORT') or 8787}"


def run(args: argparse.Namespace, action: Callable[[Gateway, argparse.Namespace, Console], int]) -> int:
    """Run one admin command: its exit code; failures said plainly on stderr."""
    err = Console(stderr=True, highlight=False)
    try:
        return action(gateway_of(args), args, Console(highlight=False))
    except ConfigError as exc:
        for name, why in exc.problems.items():
            err.print(f"[red]error:[/red] {_plain(name)}: {_plain(why)}")
        return OURS
    except AdminFailed as exc:
        err.print(f"[red]error:[/red] {_plain(exc.message)}")
        if exc.problems:
            err.print(problems_table(exc.problems, "the configuration did not load; the running one stays"))
        return exc.code


def _plain(text: str) -> str:
    return escape(text)


def _print_json(out: Console, value: Any) -> None:
    out.file.write(json.dumps(value, ensure_ascii=False, indent=2) + "\n")


# ----------------------------------------------------------------------------- the commands


def keys_list(gateway: Gateway, args: argparse.Namespace, out: Console) -> int:
    if args.json:
        _print_json(out, gateway.call("GET", "/admin/keys"))
        return 0
    status = Status.from_json(gateway.call("GET", "/status"))
    out.print(key_list_table(status, f"keys of {gateway.url}", out.width))
    return 0


def resolve(gateway: Gateway, given: str) -> str:
    """The full fingerprint for ``given``: a whole one, or its head (``gemini#2``) when that is unique."""
    fingerprints = [str(k["key"]) for k in gateway.call("GET", "/admin/keys")["keys"]]
    wanted = given.replace("...", "…").strip()
    if wanted in fingerprints:
        return wanted
    matches = [fp for fp in fingerprints if fp.split(" ", 1)[0] == wanted]
    if len(matches) == 1:
        return matches[0]
    known = ", ".join(fingerprints) or "none"
    raise AdminFailed(f"no key {given!r} at {gateway.url} (keys: {known})", REFUSED)


def key_action(gateway: Gateway, args: argparse.Namespace, out: Console) -> int:
    fingerprint = resolve(gateway, args.key)
    body: dict[str, Any] = {"key": fingerprint}
    if args.action == "disable":
        body["reason"] = args.reason
    answer = gateway.call("POST", f"/admin/keys/{args.action}", body)
    if args.json:
        _print_json(out, answer)
    else:
        out.print(f"{_plain(fingerprint)}: {args.action}d", highlight=False)
    return 0


def read_new_key(args: argparse.Namespace) -> str:
    """The key to add: from ``--from-env VAR``, else standard input (a prompt without echo on a terminal)."""
    if args.from_env:
        value = os.environ.get(args.from_env, "")
        if not value.strip():
            raise AdminFailed(f"--from-env {args.from_env}: that variable is not set or blank", OURS)
        return value.strip()
    if sys.stdin.isatty():
        value = getpass.getpass(f"{args.provider} key (not echoed): ")
    else:
        value = sys.stdin.readline()
    if not value.strip():
        raise AdminFailed("no key given: pipe it on standard input, or name a variable with --from-env", OURS)
    return value.strip()


def key_add(gateway: Gateway, args: argparse.Namespace, out: Console) -> int:
    answer = gateway.call("POST", "/admin/keys/add", {"provider": args.provider, "key": read_new_key(args)})
    if args.json:
        _print_json(out, answer)
    else:
        out.print(
            f"added {_plain(answer['key'])} to {_plain(args.provider)} (until the next reload or restart: "
            "put it in .env to keep it)"
        )
    return 0


def reload(gateway: Gateway, args: argparse.Namespace, out: Console) -> int:
    answer = gateway.call("POST", "/admin/reload", {})
    if args.json:
        _print_json(out, answer)
        return 0
    out.print(
        f"reloaded {gateway.url}: chain {' → '.join(answer['chain'])}; {answer['kept']} key(s) kept, "
        f"{len(answer['added'])} added, {len(answer['removed'])} removed"
    )
    for word in ("added", "removed"):
        for fingerprint in answer[word]:
            out.print(f"  {word}: {_plain(fingerprint)}")
    return 0


# ----------------------------------------------------------------------------- the parsers

URL_HELP = "the gateway (default KEYWHEEL_URL, else http://KEYWHEEL_HOST:KEYWHEEL_PORT, i.e. http://127.0.0.1:8787)"


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", help=URL_HELP)
    parser.add_argument("--json", action="store_true", help="print the gateway's JSON answer")


def add_keys_commands(sub: argparse._SubParsersAction[Any], options: Callable[[argparse.ArgumentParser], None]) -> None:
    """``keywheel keys list|enable|disable|remove|add`` on the ``keys`` command's actions."""

    def command(name: str, **kwargs: Any) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = sub.add_parser(name, **kwargs)
        options(p)
        _common(p)
        return p

    command("list", help="every key of the running gateway: state, rest, use").set_defaults(
        func=lambda args: run(args, keys_list)
    )
    for action, what in (("enable", "put back in rotation"), ("disable", "take out of rotation"), ("remove", "drop")):
        p = command(action, help=f"{what} one key (until the next reload or restart)")
        p.add_argument("key", help="its fingerprint as `keys list` shows it, or its head (gemini#2)")
        if action == "disable":
            p.add_argument("--reason", default="disabled by operator (keywheel keys disable)", help="shown in status")
        p.set_defaults(func=lambda args: run(args, key_action), action=action)
    add = command(
        "add",
        help="add a key to a provider: read from standard input (or --from-env VAR), never from the command line",
        description="Add a key to a provider of the running gateway until its next reload or restart (put it in .env "
        "to keep it).  The key is read from standard input (a prompt without echo on a terminal) or from the "
        "environment variable --from-env names: never from the command line, which `ps` shows to every user.",
    )
    add.add_argument("provider", help="a provider of the gateway's chain, e.g. gemini")
    add.add_argument("--from-env", metavar="VAR", help="read the key from this environment variable")
    add.set_defaults(func=lambda args: run(args, key_add))


def add_reload_command(reload_parser: argparse.ArgumentParser) -> None:
    """``keywheel reload``: the running gateway reads its configuration again (as SIGHUP does)."""
    _common(reload_parser)
    reload_parser.set_defaults(func=lambda args: run(args, reload))
