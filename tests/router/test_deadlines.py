"""An upstream request's deadline (keywheel.deadlines, one timer per loop): it fires on time, it
turns into keywheel's Timeout, a caller's own cancellation stays a cancellation, and requests
that finish leave nothing behind.  Over a real loopback server; the bounds only catch hangs."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from keywheel.deadlines import Deadlines
from keywheel.errors import Timeout
from keywheel.providers.base import HttpRequest
from keywheel.transport import Transport


async def _hang(request: web.Request) -> web.Response:
    await asyncio.sleep(float(request.query.get("s", "30")))
    return web.Response(text="late")


async def _ok(request: web.Request) -> web.Response:
    return web.Response(text="ok")


@pytest.fixture
async def upstream() -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_post("/hang", _hang)
    app.router.add_post("/ok", _ok)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    await runner.cleanup()


@pytest.fixture
async def transport() -> AsyncIterator[Transport]:
    made = Transport()
    yield made
    await made.aclose()


def _post(url: str) -> HttpRequest:
    return HttpRequest("POST", url, {"content-type": "application/json"}, b"{}")


def _deadlines(transport: Transport) -> Deadlines:
    return transport._deadlines[asyncio.get_running_loop()]


async def test_a_deadline_is_a_timeout_on_time_and_the_task_is_not_left_cancelled(
    upstream: str, transport: Transport
) -> None:
    started = time.monotonic()
    with pytest.raises(Timeout, match="did not answer in time"):
        await transport.send(_post(f"{upstream}/hang"), 0.3)
    took = time.monotonic() - started
    assert 0.3 <= took < 5.0
    task = asyncio.current_task()
    assert task is not None and task.cancelling() == 0  # the deadline's cancellation was taken back
    assert (await transport.send(_post(f"{upstream}/ok"), 5.0)).body == b"ok"  # the session still serves
    await asyncio.sleep(0)  # nothing else is cancelled later
    assert len(_deadlines(transport)) == 0


async def test_each_request_times_out_at_its_own_deadline(upstream: str, transport: Transport) -> None:
    """A later request with a shorter timeout sets the one timer earlier; the others keep theirs."""
    finished: dict[float, float] = {}
    started = time.monotonic()

    async def one(timeout: float) -> None:
        with pytest.raises(Timeout):
            await transport.send(_post(f"{upstream}/hang"), timeout)
        finished[timeout] = time.monotonic() - started

    slow = [asyncio.create_task(one(t)) for t in (1.2, 0.8)]
    await asyncio.sleep(0.05)
    fast = asyncio.create_task(one(0.2))
    await asyncio.gather(*slow, fast)
    assert sorted(finished, key=finished.__getitem__) == [0.2, 0.8, 1.2]
    for timeout, took in finished.items():
        assert timeout <= took + 0.05 < timeout + 3.0  # generous: catches a deadline missed, not jitter
    assert len(_deadlines(transport)) == 0


async def test_a_callers_cancellation_stays_a_cancellation(upstream: str, transport: Transport) -> None:
    request = asyncio.create_task(transport.send(_post(f"{upstream}/hang"), 30.0))
    await asyncio.sleep(0.2)
    request.cancel()
    with pytest.raises(asyncio.CancelledError):
        await request
    assert len(_deadlines(transport)) == 0


async def test_a_caller_cancelling_as_the_deadline_passes_wins(upstream: str, transport: Transport) -> None:
    """Both cancel the task in the same turn of the loop: the caller's cancellation is what it gets."""
    request = asyncio.create_task(transport.send(_post(f"{upstream}/hang"), 0.2))
    loop = asyncio.get_running_loop()
    await asyncio.sleep(0.05)
    deadlines = _deadlines(transport)
    # Cancel in the same turn as the deadline's timer fires (in either order), before the task runs again.
    fired: list[bool] = []

    def cancel() -> None:
        fired.append(request.cancel())

    loop.call_at(deadlines._timer_at, cancel)
    with pytest.raises(asyncio.CancelledError):
        await request
    assert fired == [True]  # the caller's cancel reached a task still in its request


async def test_finished_requests_leave_no_timer_behind(upstream: str, transport: Transport) -> None:
    """Under steady traffic the one timer is set once, not per request."""
    loop = asyncio.get_running_loop()
    await transport.send(_post(f"{upstream}/ok"), 30.0)
    deadlines = _deadlines(transport)
    armed = deadlines._timer
    for _ in range(200):
        assert (await transport.send(_post(f"{upstream}/ok"), 30.0)).body == b"ok"
    assert deadlines._timer is armed  # every later deadline fell after the armed one
    assert len(deadlines) == 0
    scheduled = [h for h in getattr(loop, "_scheduled", []) if not h.cancelled()]
    assert len(scheduled) < 20  # not one per request


async def test_a_swallowed_cancellation_is_taken_back() -> None:
    """A request that catches its deadline's cancellation itself still leaves the task uncancelled."""
    deadlines = Deadlines(asyncio.get_running_loop())
    task = asyncio.current_task()
    assert task is not None
    deadlines.add(task, 0.05)
    try:
        try:
            await asyncio.sleep(5)
        except asyncio.CancelledError:
            pass  # a library that swallows it
    finally:
        deadlines.discard(task)
    assert task.cancelling() == 0
    await asyncio.sleep(0.01)  # and no cancellation is still pending for it


async def test_a_deadline_fires_for_every_task_past_it_at_once() -> None:
    deadlines = Deadlines(asyncio.get_running_loop())
    cancelled: list[int] = []

    async def wait(n: int, timeout: float) -> None:
        task = asyncio.current_task()
        assert task is not None
        deadlines.add(task, timeout)
        try:
            await asyncio.sleep(5)
        except asyncio.CancelledError:
            assert deadlines.passed(task, 0)
            cancelled.append(n)
        finally:
            deadlines.discard(task)

    await asyncio.gather(*(wait(n, 0.1) for n in range(50)), wait(50, 0.3))
    assert sorted(cancelled[:50]) == list(range(50)) and cancelled[50] == 50
    assert len(deadlines) == 0
