"""``GET /metrics``: the route (the exposition itself is :mod:`keywheel.ops.metrics`)."""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable

from keywheel.gateway.http import HttpError, Scope, Send, allow
from keywheel.ops.metrics import CONTENT_TYPE, Metrics
from keywheel.ops.shared_metrics import WorkerMetrics
from keywheel.status import Status


async def scrape(
    metrics: Metrics | None,
    check: Callable[[Scope, dict[bytes, bytes]], None] | None,
    status: Callable[[], Awaitable[Status]],
    scope: Scope,
    method: str,
    headers: dict[bytes, bytes],
    send: Send,
) -> int:
    """``GET /metrics``: 404 when metrics are off; else ``check`` (the admin routes' auth) unless
    ``KEYWHEEL_METRICS_PUBLIC`` made it ``None``, then the exposition with the gauges of
    ``status()`` (awaited: a shared store is read over the network)."""
    if metrics is None:
        raise HttpError(404, "metrics are off (KEYWHEEL_METRICS=off)")
    if check is not None:
        check(scope, headers)
    allow(method, "GET")
    body = metrics.render(await status())
    head = [(b"content-type", CONTENT_TYPE), (b"content-length", b"%d" % len(body))]
    if isinstance(metrics, WorkerMetrics):  # every worker's counts; which worker answered (its PID)
        head.append((b"x-keywheel-worker", b"%d" % os.getpid()))
    await send({"type": "http.response.start", "status": 200, "headers": head})
    await send({"type": "http.response.body", "body": body})
    return 200
