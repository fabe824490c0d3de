"""Deadlines for the upstream requests of one event loop, kept with one timer for them all.

An attempt's timeout almost never fires, yet a timer per request (aiohttp's ``total`` timeout, or
``asyncio.timeout``) costs about as much as the rest of keywheel's bookkeeping for the request:
a timer handle made, pushed on the loop's heap, cancelled and swept away, and a timer context
entered on every read (about 27 k instructions a request, measured with ``bench/calls.py``).
Here a request costs two dictionary operations.  The one timer is set for the earliest deadline
in flight; when it fires, it cancels every task past its deadline and sets itself for the next.
Requests that finish first are simply forgotten, so under steady traffic the timer fires about
once per timeout, and each deadline is kept to the millisecond.

A task cancelled for its deadline is told apart from one cancelled by its caller as
``asyncio.timeout`` does it: by its count of cancellation requests (``Task.cancelling``).
"""

from __future__ import annotations

import asyncio
import math
from typing import Any

# A timer may fire this much before its time (the loop's clock resolution, libuv's millisecond):
# a deadline that close is due.
_EARLY = 0.001


class Deadlines:
    """The deadlines of one loop's requests (only that loop's thread uses it)."""

    __slots__ = ("_loop", "_due", "_passed", "_timer", "_timer_at")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._due: dict[asyncio.Task[Any], float] = {}  # task -> its deadline, on the loop's clock
        self._passed: set[asyncio.Task[Any]] = set()  # cancelled for their deadline, not yet told
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = math.inf

    def add(self, task: asyncio.Task[Any], timeout: float) -> None:
        """Cancel ``task`` if it is still in its request ``timeout`` seconds from now."""
        due = self._loop.time() + timeout
        self._due[task] = due
        if due < self._timer_at:
            self._set_timer(due)

    def discard(self, task: asyncio.Task[Any]) -> None:
        """``task``'s request is over (its deadline forgotten; a cancellation for it that never
        reached the task is taken back)."""
        if self._due.pop(task, None) is None and task in self._passed:
            self._passed.discard(task)
            task.uncancel()

    def passed(self, task: asyncio.Task[Any], cancelling: int) -> bool:
        """Whether the ``CancelledError`` ``task`` got is its deadline's alone (``cancelling``: its
        count of cancellation requests when the request began).  Then the cancellation is taken
        back and the caller raises a timeout instead; else it is someone else's, to propagate."""
        if task not in self._passed:
            return False
        self._passed.discard(task)
        return task.uncancel() <= cancelling

    def __len__(self) -> int:
        return len(self._due)

    def _set_timer(self, at: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer, self._timer_at = self._loop.call_at(at, self._fire), at

    def _fire(self) -> None:
        self._timer, self._timer_at = None, math.inf
        now = self._loop.time() + _EARLY
        due = self._due
        late = [task for task, at in due.items() if at <= now]
        for task in late:
            del due[task]
            self._passed.add(task)
            task.cancel()
        if due:
            self._set_timer(min(due.values()))
