"""The fault soak's verdicts and tables: levelled-off judgement, summary, exit status (see faultsoak.py)."""

from __future__ import annotations

from typing import Any

import report
from rich.console import Console
from rich.table import Table

RSS_SLACK_MB, RSS_SLACK_SHARE = 3.0, 0.05
FD_SLACK, FD_REST_SLACK = 4, 2


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
