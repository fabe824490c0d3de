"""The tables the CLI and the demo share: every key with its state and counters."""

from __future__ import annotations

from rich import box
from rich.markup import escape
from rich.table import Table

from keywheel.status import Status

# Short names for failure kinds, so the key table fits 80 columns.
_SHORT = {
    "RateLimited": "429",
    "KeyInvalid": "invalid",
    "QuotaExhausted": "quota",
    "Overloaded": "overload",
    "ServerError": "5xx",
    "Timeout": "timeout",
    "NetworkError": "network",
    "ModelNotFound": "no-model",
    "BadRequest": "400",
    "ContextTooLong": "too-long",
    "ContentFiltered": "filtered",
}
WIDE = 110  # from this console width on, the table also shows provider, tokens and the last error


def key_table(status: Status, title: str = "keys", width: int | None = None) -> Table:
    """Every key by fingerprint with its state and counters.  Below :data:`WIDE` columns the
    provider (already in each fingerprint), tokens and last-error columns are left out, so
    nothing is squeezed to nothing at 80 columns."""
    wide = (width or 200) >= WIDE
    now = status.taken_at
    notes = []
    for provider in status.providers:
        if provider.primary:
            notes.append(f"primary: {provider.name}")
        throttled = provider.throttled_for(now)
        if throttled:
            notes.append(f"{provider.name} throttled {throttled:.1f} s")
    table = Table(title=title, caption="; ".join(notes) or None, box=box.SIMPLE_HEAD, expand=False, pad_edge=False)
    if wide:
        table.add_column("provider", no_wrap=True)
    table.add_column("key", no_wrap=True)
    table.add_column("state", no_wrap=True)
    table.add_column("rest s", no_wrap=True, justify="right")
    table.add_column("reqs", no_wrap=True, justify="right")
    table.add_column("ok", no_wrap=True, justify="right")
    table.add_column("failures", overflow="fold")
    if wide:
        table.add_column("tokens in/out", no_wrap=True, justify="right")
        table.add_column("last error", overflow="fold", max_width=40)
    colors = {"active": "green", "cooling": "yellow", "disabled": "red"}
    for provider in status.providers:
        name = provider.name + (" *" if provider.primary else "")
        for key in provider.keys:
            state = key.state
            failures = " ".join(f"{_SHORT.get(k, k)}×{v}" for k, v in sorted(key.failures.items())) or "-"
            rest = key.rest_for(now)
            row = [
                key.fingerprint,
                f"[{colors.get(state, 'white')}]{state}[/]",
                f"{rest:.1f}" if rest else "",
                str(key.requests),
                str(key.successes),
                failures,
            ]
            if wide:
                why = (key.reason or key.last_error or "")[:80]
                row = [name, *row, f"{key.tokens_in}/{key.tokens_out}", why]
                name = ""
            table.add_row(*row)
    return table


def key_list_table(status: Status, title: str = "keys", width: int | None = None) -> Table:
    """``keywheel keys list``: every key with its state, rest, use over the last hour and day (requests/
    failures), last use and reason; tokens too from :data:`WIDE` columns on."""
    wide = (width or 200) >= WIDE
    now = status.taken_at
    table = Table(title=title, box=box.SIMPLE_HEAD, expand=False, pad_edge=False)
    table.add_column("key", no_wrap=True)
    table.add_column("state", no_wrap=True)
    table.add_column("rest", no_wrap=True, justify="right")
    table.add_column("1h r/f", no_wrap=True, justify="right")
    table.add_column("24h r/f", no_wrap=True, justify="right")
    if wide:
        table.add_column("tokens in/out", no_wrap=True, justify="right")
    table.add_column("used", no_wrap=True, justify="right")
    table.add_column("reason", overflow="fold", min_width=10)
    colors = {"active": "green", "cooling": "yellow", "disabled": "red"}
    for provider in status.providers:
        for key in provider.keys:
            rest = key.rest_for(now)
            row = [
                escape(key.fingerprint),
                f"[{colors.get(key.state, 'white')}]{escape(key.state)}[/]",
                f"{rest:.0f}s" if rest else "",
                f"{key.last_hour.requests}/{key.last_hour.failures}",
                f"{key.last_day.requests}/{key.last_day.failures}",
                _ago(key.last_used, now),
                escape(key.reason),
            ]
            if wide:
                row.insert(5, f"{key.tokens_in}/{key.tokens_out}")
            table.add_row(*row)
    return table


def _ago(then: float | None, now: float) -> str:
    if then is None:
        return "never"
    seconds = max(now - then, 0.0)
    if seconds < 90:
        return f"{seconds:.0f}s ago"
    if seconds < 5400:
        return f"{seconds / 60:.0f}m ago"
    return f"{seconds / 3600:.1f}h ago"


def problems_table(problems: dict[str, str], title: str = "invalid keywheel configuration") -> Table:
    """A configuration's problems: each setting and what is wrong with it."""
    table = Table(title=f"[red]{escape(title)}[/red]", title_justify="left", box=box.SIMPLE_HEAD)
    table.add_column("setting", style="bold", no_wrap=True)
    table.add_column("problem", overflow="fold")
    for name, why in problems.items():
        table.add_row(escape(name), escape(why))
    return table
