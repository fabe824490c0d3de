"""What the observer seam costs on the hot path: interleaved A/B micro-benchmarks.

    .venv/bin/python bench/observe_micro.py [N]      # N operations per round (default 200,000)

Each pair runs in alternation, 7 rounds, and prints the median nanoseconds per operation:

- ``emit site``: the guarded emit as the router writes it, with nobody subscribed, vs. no
  emit at all (the code before the seam);
- ``settle``: ``Router.settle`` (release of a served key + its guarded event) vs. the bare
  ``MemoryStore.release_nowait`` it was before;
- ``request end``: the gateway's end of request with the access log subscribed and logging at
  WARNING (the event is built and handed over) vs. the ``isEnabledFor`` test it replaced;
- ``request id``: a generated ``x-request-id``;
- ``metrics``: recording one upstream attempt (duration and token histograms) and one request
  (counter and attempts histogram), prometheus-client's labelled metrics vs. keywheel's own
  (:mod:`keywheel.ops.metrics`), through the observer as the gateway does;
- ``ops on``: the end of one request as the gateway does it, at INFO to /dev/null through the
  redacting filter: the text access line alone (metrics and JSON off) vs. the JSON access line
  plus the metrics of its attempt and request (both on).
"""

from __future__ import annotations

import logging
import os
import statistics
import sys
import time
from collections.abc import Callable
from typing import cast

from keywheel.calls import Served
from keywheel.config import settings_from_env
from keywheel.gateway.http import request_id as _request_id
from keywheel.logs import TEXT_FORMAT, JsonFormatter
from keywheel.observe import AttemptFinished, Observer, RequestFinished, access_log
from keywheel.ops import metrics as own
from keywheel.router import Router
from keywheel.secrets import install_log_filter
from keywheel.state.memory import MemoryStore
from keywheel.transport import Transport
from keywheel.types import Attempt, Usage

ROUNDS = 7


def timed(fn: Callable[[int], None], n: int) -> float:
    start = time.perf_counter_ns()
    fn(n)
    return (time.perf_counter_ns() - start) / n


def pair(name: str, before: Callable[[int], None], after: Callable[[int], None], n: int) -> None:
    a: list[float] = []
    b: list[float] = []
    for _ in range(ROUNDS):
        a.append(timed(before, n))
        b.append(timed(after, n))
    ma, mb = statistics.median(a), statistics.median(b)
    spread = (max(a) - min(a)) / ma * 100
    print(f"{name:12s} before {ma:7.1f} ns   after {mb:7.1f} ns   +{mb - ma:6.1f} ns/op   (A spread {spread:.0f} %)")


def main(n: int) -> None:
    env = {"GEMINI_API_KEY_1": "test-gemini-key-1", "GEMINI_API_KEY_2": "test-gemini-key-2"}
    settings = settings_from_env(env)
    observer = Observer()
    pool = MemoryStore("gemini", settings.providers["gemini"].keys)
    router = Router(settings, {"gemini": pool}, Transport(), observer=observer)
    target = router.chain()[0]
    usage = Usage(10, 20)

    def no_emit(k: int) -> None:
        for _ in range(k):
            pass

    def guarded_emit(k: int) -> None:
        for _ in range(k):
            if observer.attempts:
                observer.emit(AttemptFinished("gemini", "gemini#1", "ok", 200, 1.0))

    def bare_release(k: int) -> None:
        for _ in range(k):
            key = pool.acquire_nowait()
            assert not isinstance(key, float | type(None))
            pool.release_nowait(key, None, 1.0, usage)  # type: ignore[arg-type]

    def settle(k: int) -> None:
        for _ in range(k):
            key = pool.acquire_nowait()
            served = Served(target, key, [Attempt("gemini", "gemini#1", "ok", 1.0, 200)])  # type: ignore[arg-type]
            step = router.settle(served, usage)  # async, but with an in-process store it never waits:
            try:  # run it to its end in place
                step.send(None)
            except StopIteration:
                pass

    def bare_release_with_served(k: int) -> None:  # the same allocations as settle, without the event
        for _ in range(k):
            key = pool.acquire_nowait()
            served = Served(target, key, [Attempt("gemini", "gemini#1", "ok", 1.0, 200)])  # type: ignore[arg-type]
            pool.release_nowait(served.key, None, served.attempts[-1].latency_ms, usage)

    access = logging.getLogger("keywheel.access")
    access.setLevel(logging.WARNING)
    gateway_observer = Observer()
    gateway_observer.subscribe(access_log, RequestFinished)

    def log_test(k: int) -> None:
        for _ in range(k):
            if access.isEnabledFor(logging.INFO):
                access.info("never")

    def request_end(k: int) -> None:
        for _ in range(k):
            if gateway_observer.requests:
                gateway_observer.emit(
                    RequestFinished(
                        "kw-1", "POST", "/v1/chat/completions", "openai", "m", "p", "k", 1, 200, 1.0, 100, 200
                    )
                )

    def request_id(k: int) -> None:
        for _ in range(k):
            _request_id(None)

    record_own, record_client = metrics_pair(usage)

    print(f"{n:,} operations per round, {ROUNDS} rounds interleaved, median")
    pair("emit site", no_emit, guarded_emit, n)
    pair("settle", bare_release_with_served, settle, n)
    pair("settle (raw)", bare_release, settle, n)
    pair("request end", log_test, request_end, n)
    pair("request id", no_emit, request_id, n)
    pair("metrics", record_client, record_own, n)
    ops_off, ops_on = ops_pair(usage)
    pair("ops on", ops_off, ops_on, max(n // 10, 1))


def metrics_pair(usage: Usage) -> tuple[Callable[[int], None], Callable[[int], None]]:
    """One attempt + one request recorded: keywheel's own metrics, and prometheus-client's."""
    import prometheus_client as pc

    attempt = AttemptFinished("gemini", "gemini#1 …ab12", "ok", 200, 812.0, usage, "gemini-2.0-flash")
    request = RequestFinished(
        "kw-1", "POST", "/v1/chat/completions", "openai", "m", "gemini", "k", 1, 200, 815.0, 100, 200, usage
    )
    mine = Observer()
    own.Metrics().subscribe(mine)

    registry = pc.CollectorRegistry()
    genai = ["gen_ai_operation_name", "gen_ai_provider_name", "gen_ai_request_model", "error_type"]
    duration = pc.Histogram(
        "gen_ai_client_operation_duration_seconds", "d", genai, registry=registry, buckets=own.DURATION_BUCKETS
    )
    tokens = pc.Histogram(
        "gen_ai_client_token_usage", "t", [*genai, "gen_ai_token_type"], registry=registry, buckets=own.TOKEN_BUCKETS
    )
    requests = pc.Counter("keywheel_requests", "r", ["dialect", "status"], registry=registry)
    attempts = pc.Histogram("keywheel_request_attempts", "a", registry=registry, buckets=own.ATTEMPT_BUCKETS)

    def on_attempt(event: object) -> None:
        e = cast(AttemptFinished, event)
        error = "" if e.outcome == "ok" else e.outcome
        duration.labels("chat", e.provider, e.model, error).observe(e.latency_ms / 1000)
        if e.usage is not None:
            tokens.labels("chat", e.provider, e.model, error, "input").observe(e.usage.input_tokens)
            tokens.labels("chat", e.provider, e.model, error, "output").observe(e.usage.output_tokens)

    def on_request(event: object) -> None:
        r = cast(RequestFinished, event)
        requests.labels(r.dialect, str(r.status)).inc()
        attempts.observe(r.attempts)

    theirs = Observer()
    theirs.subscribe(on_attempt, AttemptFinished)
    theirs.subscribe(on_request, RequestFinished)

    def record(observer: Observer) -> Callable[[int], None]:
        def run(k: int) -> None:
            for _ in range(k):
                observer.emit(attempt)
                observer.emit(request)

        return run

    return record(mine), record(theirs)


def ops_pair(usage: Usage) -> tuple[Callable[[int], None], Callable[[int], None]]:
    """One request's end with metrics and the JSON log off (the text access line), and on."""
    handler = logging.StreamHandler(open(os.devnull, "w"))  # lives as long as the run
    access = logging.getLogger("keywheel.access")
    access.setLevel(logging.INFO)
    access.addHandler(handler)
    access.propagate = False
    install_log_filter(handlers=[handler])
    attempt = AttemptFinished("openrouter", "openrouter#1 …ab12", "ok", 200, 2.0, usage, "openai/gpt-4o-mini")
    request = RequestFinished(
        "kw-1f2e3d4c5b6a-17", "POST", "/v1/chat/completions", "openai", "openai/gpt-4o-mini", "openrouter",
        "openrouter#1 …ab12", 1, 200, 2.3, 300, 500, usage,
    )  # fmt: skip
    off, on = Observer(), Observer()
    off.subscribe(access_log, RequestFinished)
    on.subscribe(access_log, RequestFinished)
    own.Metrics().subscribe(on)
    text, json = logging.Formatter(TEXT_FORMAT), JsonFormatter()

    def run(observer: Observer, fmt: logging.Formatter) -> Callable[[int], None]:
        def go(k: int) -> None:
            handler.setFormatter(fmt)
            for _ in range(k):
                if observer.attempts:
                    observer.emit(attempt)
                observer.emit(request)

        return go

    return run(off, text), run(on, json)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 200_000)
