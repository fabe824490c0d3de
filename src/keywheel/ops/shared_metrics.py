"""``/metrics`` over every worker of ``keywheel serve --workers N``.

The parent makes a private directory and names it to its workers (``KEYWHEEL_METRICS_DIR``, see
:mod:`keywheel.gateway.supervisor`).  Each worker counts as one process does
(:class:`~keywheel.ops.metrics.Metrics`) and writes its counts (:meth:`Metrics.sample`, plain
numbers) to its own file there: at most :data:`WRITE_DELAY` seconds after an event (writes are
coalesced, so a busy worker writes about ten times a second, whatever its request rate), at a
scrape, and when it exits.  A scrape, on whichever worker the kernel hands it, sums the files of
every worker, those of workers a reload replaced included, so counters never go down; the
gauges come from the answering worker's status, which is the shared (Redis) state.

Each worker's file is named by its PID and a random suffix (a PID can be reused); it is written
to a temporary name and renamed, so a reader never sees half of one.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
from pathlib import Path
from typing import Any

import orjson

from keywheel.observe import AttemptFinished, ProbeFinished, RequestFinished
from keywheel.ops.metrics import DURATION_BUCKETS, TOKEN_BUCKETS, Histogram, Metrics
from keywheel.status import Status

#: Seconds between a counted event and the write of the worker's file (coalesced).
WRITE_DELAY = 0.1
SUFFIX = ".counts.json"


def encode(sample: dict[str, Any]) -> bytes:
    """A :meth:`Metrics.sample` as JSON (its tuple keys as lists)."""
    return orjson.dumps(
        {
            name: [[list(k), v] for k, v in value.items()] if isinstance(value, dict) else value
            for name, value in sample.items()
        }
    )


def _add(hist: Histogram, counts: list[int], total: float, count: int) -> None:
    if len(counts) != len(hist.counts):
        return  # another bucket layout (another keywheel version): left out rather than mixed in
    hist.counts = [a + b for a, b in zip(hist.counts, counts, strict=True)]
    hist.sum += total
    hist.count += count


def merge(into: Metrics, data: dict[str, Any]) -> None:
    """Add the counts of one worker's file (:func:`encode`) to ``into``."""
    for key, (counts, total, count) in data.get("durations", []):
        hist = into.durations.setdefault(tuple(key), Histogram(DURATION_BUCKETS))
        _add(hist, counts, total, count)
    for key, pair in data.get("tokens", []):
        hists = into.tokens.setdefault(tuple(key), (Histogram(TOKEN_BUCKETS), Histogram(TOKEN_BUCKETS)))
        for hist, (counts, total, count) in zip(hists, pair, strict=True):
            _add(hist, counts, total, count)
    for (dialect, status), n in data.get("requests", []):
        into.requests[(dialect, status)] = into.requests.get((dialect, status), 0) + n
    attempts = data.get("request_attempts")
    if attempts:
        counts, total = attempts
        _add(into.request_attempts, counts, total, sum(counts))
    for (provider, outcome), n in data.get("probes", []):
        into.probes[(provider, outcome)] = into.probes.get((provider, outcome), 0) + n


class WorkerMetrics(Metrics):
    """One worker's :class:`Metrics`, written to the shared directory; its scrape renders the sum of all."""

    def __init__(self, directory: str) -> None:
        super().__init__()
        self.directory = Path(directory)
        self.path = self.directory / f"{os.getpid()}-{secrets.token_hex(4)}{SUFFIX}"
        self._pending = False

    def on_attempt(self, event: AttemptFinished) -> None:
        super().on_attempt(event)
        self._soon()

    def on_request(self, event: RequestFinished) -> None:
        super().on_request(event)
        self._soon()

    def on_probe(self, event: ProbeFinished) -> None:
        super().on_probe(event)
        self._soon()

    def _soon(self) -> None:
        if self._pending:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop (a library call off the gateway's loop): write now
            self.write()
            return
        self._pending = True
        loop.call_later(WRITE_DELAY, self.write)

    def flush(self) -> None:
        """The worker stops (a reload, a shutdown): its last counts, kept for the other workers' scrapes."""
        self.write()

    def write(self) -> None:
        """Write this worker's counts (atomically: a temporary file renamed)."""
        self._pending = False
        temporary = self.path.with_suffix(".tmp")
        with contextlib.suppress(OSError):  # the directory is gone: the parent is stopping
            temporary.write_bytes(encode(self.sample()))
            os.replace(temporary, self.path)

    def total(self) -> Metrics:
        """The counts of every worker (this one's as of now)."""
        self.write()
        merged = Metrics()
        for path in sorted(self.directory.glob("*" + SUFFIX)):
            with contextlib.suppress(OSError, orjson.JSONDecodeError, TypeError, ValueError):
                merge(merged, orjson.loads(path.read_bytes()))
        return merged

    def render(self, status: Status) -> bytes:
        return self.total().render(status)


def process_metrics() -> Metrics:
    """This process's :class:`Metrics`: a :class:`WorkerMetrics` in a worker of ``keywheel serve
    --workers N`` (its parent named the directory, ``KEYWHEEL_METRICS_DIR``), else a plain one."""
    directory = os.environ.get("KEYWHEEL_METRICS_DIR")
    return WorkerMetrics(directory) if directory else Metrics()
