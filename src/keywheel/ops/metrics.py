"""``GET /metrics``: the gateway in the Prometheus text exposition format (version 0.0.4).

Two sources:

- the observer events (:mod:`keywheel.observe`), counted as they come: one
  :class:`~keywheel.observe.AttemptFinished` per upstream attempt feeds the OpenTelemetry GenAI
  histograms (``gen_ai_client_operation_duration_seconds``, ``gen_ai_client_token_usage``), one
  :class:`~keywheel.observe.RequestFinished` per API request feeds ``keywheel_requests_total``
  and ``keywheel_request_attempts``, one :class:`~keywheel.observe.ProbeFinished` per key check
  feeds ``keywheel_probes_total``;
- the typed status (:class:`keywheel.status.Status`), read at scrape time for the gauges: each
  key's state and rest, quota-window use, credit left.

Our own renderer rather than prometheus-client: recording one attempt and one request costs a
sixth to a tenth of what the client library's labelled histograms and counters cost
(``bench/observe_micro.py``, interleaved A/B), and the exposition of counters and histograms is
small.  The tests read every scrape back with prometheus-client's own parser.

The shapes read from the status beyond :mod:`keywheel.status` today (added by the quota-window
and credit work; absent, their series are left out):

- ``ProviderStatus.windows``: items (objects or mappings) with ``group`` (the key group's name),
  ``window`` (the window's name, e.g. ``rpm``, ``day``) and ``used`` (the share used, 0..1);
  → ``keywheel_window_used{provider,group,window}``;
- ``KeyStatus.credit``: a number, or an object or mapping with ``limit_remaining`` (or
  ``remaining``); ``None`` when unknown or unlimited → ``keywheel_credit_remaining{provider,key}``.

Labels never hold key material: a key is named by its fingerprint (``gemini#2 …9f3a``), label
values are escaped as the format requires, and the label sets that callers can vary (the model
asked for) are bounded: past :data:`MAX_SERIES` series a family counts new ones under
``gen_ai_request_model="other"``.

One process: the counts are plain numbers updated inline on the event loop, no lock (events
run on the loop that finished the work).  Several workers (``--workers N``) each count their
own and write their :meth:`Metrics.sample` to a directory the parent made; a scrape sums them
(:mod:`keywheel.ops.shared_metrics`) and reads the key gauges once from the shared store.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Callable, Iterable, Mapping
from typing import Any, cast

from keywheel.observe import AttemptFinished, Observer, ProbeFinished, RequestFinished, Subscriber
from keywheel.status import ACTIVE, COOLING, DISABLED, Status

#: OpenTelemetry GenAI semantic conventions: ``gen_ai.client.operation.duration`` (seconds) ...
DURATION_BUCKETS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92)
#: ... and ``gen_ai.client.token.usage`` (tokens): their ExplicitBucketBoundaries.
TOKEN_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864)
#: Upstream attempts of one gateway request (0: answered before any, e.g. a 401 or a 404).
ATTEMPT_BUCKETS = (0, 1, 2, 3, 4, 5, 6, 8, 10, 15, 20)
#: Series per labelled family, at most: the model label comes from callers.
MAX_SERIES = 1000
#: Not API requests: ``keywheel_requests_total`` does not count them (scrapes, health checks, admin).
OPS_PATHS = frozenset({"/health", "/metrics", "/status", "/"})
STATES = (ACTIVE, COOLING, DISABLED)
OPERATION = "chat"  # gen_ai.operation.name: every call through keywheel is a chat completion
CONTENT_TYPE = b"text/plain; version=0.0.4; charset=utf-8"


class Histogram:
    """Bucket counts (not cumulative until rendered), their sum and count."""

    __slots__ = ("bounds", "counts", "sum", "count")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one: above every bound (+Inf)
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1  # bucket ``le`` holds value <= le
        self.sum += value
        self.count += 1


class Metrics:
    """The counts of one gateway process, and their exposition.

    :meth:`render` takes the typed status of the scrape (``await wheel.asnapshot()``) for the gauges."""

    def __init__(self) -> None:
        self.durations: dict[tuple[str, str, str], Histogram] = {}  # (provider, model, error type)
        self.tokens: dict[tuple[str, str, str], tuple[Histogram, Histogram]] = {}  # ... → (input, output)
        self.requests: dict[tuple[str, int], int] = {}  # (dialect, status)
        self.request_attempts = Histogram(ATTEMPT_BUCKETS)
        self.probes: dict[tuple[str, str], int] = {}  # (provider, outcome)

    def subscribe(self, observer: Observer) -> Callable[[], None]:
        """Count ``observer``'s attempts, requests and probes; returns the unsubscribe."""
        undo = [
            observer.subscribe(cast(Subscriber, self.on_attempt), AttemptFinished),
            observer.subscribe(cast(Subscriber, self.on_request), RequestFinished),
            observer.subscribe(cast(Subscriber, self.on_probe), ProbeFinished),
        ]

        def unsubscribe() -> None:
            for fn in undo:
                fn()

        return unsubscribe

    # ------------------------------------------------------------ the hot path

    def on_attempt(self, event: AttemptFinished) -> None:
        labels = (event.provider, event.model, "" if event.outcome == "ok" else event.outcome)
        durations = self.durations
        hist = durations.get(labels)
        if hist is None:
            if len(durations) >= MAX_SERIES:
                labels = (labels[0], "other", labels[2])
            hist = durations.get(labels) or durations.setdefault(labels, Histogram(DURATION_BUCKETS))
        hist.observe(event.latency_ms / 1000)
        usage = event.usage
        if usage is not None:
            pair = self.tokens.get(labels)
            if pair is None:
                pair = self.tokens.setdefault(labels, (Histogram(TOKEN_BUCKETS), Histogram(TOKEN_BUCKETS)))
            pair[0].observe(usage.input_tokens)
            pair[1].observe(usage.output_tokens)

    def on_request(self, event: RequestFinished) -> None:
        path = event.path
        if path in OPS_PATHS or path.startswith("/admin/"):
            return
        labels = (event.dialect, event.status)
        self.requests[labels] = self.requests.get(labels, 0) + 1
        self.request_attempts.observe(event.attempts)

    def on_probe(self, event: ProbeFinished) -> None:
        labels = (event.provider, event.outcome)
        self.probes[labels] = self.probes.get(labels, 0) + 1

    def flush(self) -> None:
        """At shutdown: nothing to keep for one process (a worker's :class:`WorkerMetrics` writes its counts)."""

    # --------------------------------------------------------------- a scrape

    def sample(self) -> dict[str, Any]:
        """The counts as plain values (what a multiprocess mode would sum across workers)."""
        return {
            "durations": {k: (list(h.counts), h.sum, h.count) for k, h in self.durations.items()},
            "tokens": {k: [(list(h.counts), h.sum, h.count) for h in pair] for k, pair in self.tokens.items()},
            "requests": dict(self.requests),
            "request_attempts": (list(self.request_attempts.counts), self.request_attempts.sum),
            "probes": dict(self.probes),
        }

    def render(self, status: Status) -> bytes:
        """The whole exposition: the counted families, then the gauges of the status now."""
        out: list[str] = []
        genai = ("gen_ai_operation_name", "gen_ai_provider_name", "gen_ai_request_model", "error_type")
        _histograms(
            out,
            "gen_ai_client_operation_duration_seconds",
            "GenAI operation duration: one upstream attempt (OpenTelemetry gen_ai.client.operation.duration).",
            genai,
            (((OPERATION, *k), h) for k, h in self.durations.items()),
        )
        _histograms(
            out,
            "gen_ai_client_token_usage",
            "Tokens used by one upstream attempt, input and output (OpenTelemetry gen_ai.client.token.usage).",
            (*genai, "gen_ai_token_type"),
            (((OPERATION, *k, kind), pair[i]) for k, pair in self.tokens.items() for i, kind in _TOKEN_TYPES),
        )
        _counters(
            out,
            "keywheel_requests",
            "API requests answered by the gateway, by the caller's dialect and the HTTP status.",
            ("dialect", "status"),
            (((d, str(s)), n) for (d, s), n in self.requests.items()),
        )
        _histograms(
            out,
            "keywheel_request_attempts",
            "Upstream attempts made for one API request.",
            (),
            [((), self.request_attempts)],
        )
        _counters(
            out,
            "keywheel_probes",
            "Key checks (operators' and the gateway's background re-probes), by outcome.",
            ("provider", "outcome"),
            self.probes.items(),
        )
        _status_gauges(out, status)
        return "".join(out).encode()


_TOKEN_TYPES = ((0, "input"), (1, "output"))


# ------------------------------------------------------------------ exposition


def escape(value: str) -> str:
    """A label value as the text format wants it: backslash, double quote and newline escaped."""
    if "\\" in value or '"' in value or "\n" in value:
        value = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return value


def _labels(names: tuple[str, ...], values: Iterable[str], extra: str = "") -> str:
    pairs = [f'{n}="{escape(v)}"' for n, v in zip(names, values, strict=True)]
    if extra:
        pairs.append(extra)
    return "{" + ",".join(pairs) + "}" if pairs else ""


def number(value: float) -> str:
    """A sample value: integers without a point, floats as Python's shortest repr, and +Inf/NaN spelled out."""
    if isinstance(value, int):
        return str(value)
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if math.isnan(value):
        return "NaN"
    return repr(value)


def _head(out: list[str], name: str, help_text: str, kind: str) -> None:
    out.append(f"# HELP {name} {help_text}\n# TYPE {name} {kind}\n")


def _counters(
    out: list[str],
    name: str,
    help_text: str,
    names: tuple[str, ...],
    series: Iterable[tuple[tuple[str, ...], int]],
) -> None:
    _head(out, name + "_total", help_text, "counter")
    for values, count in series:
        out.append(f"{name}_total{_labels(names, values)} {count}\n")


def _histograms(
    out: list[str],
    name: str,
    help_text: str,
    names: tuple[str, ...],
    series: Iterable[tuple[tuple[str, ...], Histogram]],
) -> None:
    _head(out, name, help_text, "histogram")
    for values, hist in series:
        running = 0
        for le, count in zip(_les(hist.bounds), hist.counts, strict=True):
            running += count
            out.append(f"{name}_bucket{_labels(names, values, le)} {running}\n")
        labels = _labels(names, values)
        out.append(f"{name}_sum{labels} {number(hist.sum)}\n{name}_count{labels} {hist.count}\n")


def _les(bounds: tuple[float, ...]) -> tuple[str, ...]:
    """The ``le`` labels of ``bounds`` and +Inf (made once per bucket layout)."""
    les = _LES.get(bounds)
    if les is None:
        les = _LES[bounds] = tuple('le="' + number(float(b)) + '"' for b in (*bounds, math.inf))
    return les


_LES: dict[tuple[float, ...], tuple[str, ...]] = {}


def _gauges(
    out: list[str], name: str, help_text: str, names: tuple[str, ...], series: list[tuple[tuple[str, ...], float]]
) -> None:
    _head(out, name, help_text, "gauge")
    for values, value in series:
        out.append(f"{name}{_labels(names, values)} {number(value)}\n")


def _status_gauges(out: list[str], status: Status) -> None:
    """Each key's state and rest, each quota window's use, each key's credit left: read now."""
    now = status.taken_at
    states: list[tuple[tuple[str, ...], float]] = []
    rests: list[tuple[tuple[str, ...], float]] = []
    credits: list[tuple[tuple[str, ...], float]] = []
    windows: list[tuple[tuple[str, ...], float]] = []
    throttled: list[tuple[tuple[str, ...], float]] = []
    for provider in status.providers:
        throttled.append(((provider.name,), provider.throttled_for(now)))
        for key in provider.keys:
            names = STATES if key.state in STATES else (*STATES, key.state)
            states.extend(((provider.name, key.fingerprint, s), 1 if s == key.state else 0) for s in names)
            rests.append(((provider.name, key.fingerprint), key.rest_for(now)))
            remaining = credit_remaining(getattr(key, "credit", None))
            if remaining is not None:
                credits.append(((provider.name, key.fingerprint), remaining))
        for window in getattr(provider, "windows", None) or ():
            used = _field(window, "used")
            if isinstance(used, int | float):
                group = str(_field(window, "group") or "")
                windows.append(((provider.name, group, str(_field(window, "window") or "")), used))
    _gauges(
        out,
        "keywheel_key_state",
        "1 for the state each key is in (active, cooling, disabled), 0 for the others.",
        ("provider", "key", "state"),
        states,
    )
    _gauges(out, "keywheel_key_rest_seconds", "Seconds of rest left (0 unless cooling).", ("provider", "key"), rests)
    _gauges(
        out,
        "keywheel_provider_throttled_seconds",
        "Seconds left of a provider-wide rest (all its keys were limited at once), 0 when none.",
        ("provider",),
        throttled,
    )
    if windows:
        _gauges(
            out,
            "keywheel_window_used",
            "Share of a quota window used (0..1), per provider, key group and window.",
            ("provider", "group", "window"),
            windows,
        )
    if credits:
        _gauges(
            out,
            "keywheel_credit_remaining",
            "Credit left on a key (OpenRouter limit_remaining, in its credit unit).",
            ("provider", "key"),
            credits,
        )


def _field(item: Any, name: str) -> Any:
    """``item.name`` or ``item[name]``: the status of windows and credits may be objects or mappings."""
    if isinstance(item, Mapping):
        return item.get(name)
    return getattr(item, name, None)


def credit_remaining(credit: Any) -> float | None:
    """A key's credit left, from its status's ``credit`` (a number, or an object or mapping with
    ``limit_remaining`` or ``remaining``); ``None`` when unknown or unlimited."""
    if isinstance(credit, bool) or credit is None:
        return None
    if isinstance(credit, int | float):
        return float(credit)
    for name in ("limit_remaining", "remaining"):
        value = _field(credit, name)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    return None


# ------------------------------------------------------------------- the route


def metrics_for(observer: Observer, enabled: bool, make: Callable[[], Metrics] = Metrics) -> Metrics | None:
    """The gateway's metrics (``make()``: a worker of ``--workers N`` passes
    :func:`keywheel.ops.shared_metrics.process_metrics`), subscribed to ``observer``; ``None`` when
    ``KEYWHEEL_METRICS=off``."""
    if not enabled:
        return None
    metrics = make()
    metrics.subscribe(observer)
    return metrics
