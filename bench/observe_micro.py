"""What the observer seam costs on the hot path: interleaved A/B micro-benchmarks.

    .venv/bin/python bench/observe_micro.py [N]      # N operations per round (default 200,000)

Each pair runs in alternation, 7 rounds, and prints the median nanoseconds per operation:

- ``emit site``: the guarded emit as the router writes it, with nobody subscribed, vs. no
  emit at all (the code before the seam);
- ``settle``: ``Router.settle`` (release of a served key + its guarded event) vs. the bare
  ``MemoryStore.release_nowait`` it was before;
- ``request end``: the gateway's end of request with the access log subscribed and logging at
  WARNING (the event is built and handed over) vs. the ``isEnabledFor`` test it replaced;
- ``request id``: a generated ``x-request-id``.
"""

from __future__ import annotations

import logging
import statistics
import sys
import time
from collections.abc import Callable

from keywheel.calls import Served
from keywheel.config import settings_from_env
from keywheel.gateway.http import request_id as _request_id
from keywheel.observe import AttemptFinished, Observer, RequestFinished, access_log
from keywheel.router import Router
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

    print(f"{n:,} operations per round, {ROUNDS} rounds interleaved, median")
    pair("emit site", no_emit, guarded_emit, n)
    pair("settle", bare_release_with_served, settle, n)
    pair("settle (raw)", bare_release, settle, n)
    pair("request end", log_test, request_end, n)
    pair("request id", no_emit, request_id, n)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 200_000)
