"""The fake upstream's shared state: per-key behaviour scripts, OpenRouter credit
figures, and the record of requests and disconnects.

Touched from the test's thread(s) and from the server's event loop thread, so
every access goes through one ``threading.Lock``.  The lock is only ever held
for a few dictionary/list operations — never across an ``await``.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

from keywheel.testing._openai import KeyCredit
from keywheel.testing.behaviours import OK, Behaviour, BehaviourTable
from keywheel.testing.dialects import DialectName, Incoming


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    """One request as the fake received it (header names lower-case)."""

    dialect: DialectName
    method: str
    path: str
    query: dict[str, str]
    key: str | None
    headers: dict[str, str]
    body: Any
    stream: bool
    at: float  # time.monotonic() on arrival
    seq: int = 0  # 1-based arrival number; the ``n`` in "Reply {n} from fake …"
    over_window: bool = False  # answered 429 by the fake's own per-key window (``FakeUpstream(window=…)``)


class FakeState:
    """Everything the fake remembers.  Thread-safe.

    ``window=(limit, seconds)``: every key may make ``limit`` requests in any ``seconds`` (sliding,
    counted at arrival, as a real provider does); one more is answered 429 with the time until the
    oldest leaves the window as its retry time, and is not counted."""

    def __init__(self, window: tuple[int, float] | None = None) -> None:
        self.window = window
        self._admitted: dict[str, deque[float]] = {}  # per key: arrival times inside the window
        self._lock = threading.Lock()
        self._behaviours = BehaviourTable()
        self._credits: dict[str, KeyCredit] = {}
        self._requests: list[RecordedRequest] = []
        self._disconnects: list[tuple[str, float]] = []
        self._seq = 0  # never reset, so reply texts stay unique for the fake's lifetime

    # -- written by the server ---------------------------------------------------------------------------------------

    def admit(
        self, dialect: DialectName, incoming: Incoming, key: str | None, stream: bool
    ) -> tuple[RecordedRequest, Behaviour]:
        """Record an arriving request and take the behaviour its key has next."""
        at = time.monotonic()
        with self._lock:
            self._seq += 1
            over = self._over_window(key, at)
            record = RecordedRequest(
                dialect=dialect,
                method=incoming.method,
                path=incoming.path,
                query=dict(incoming.query),
                key=key,
                headers=dict(incoming.headers),
                body=incoming.body,
                stream=stream,
                at=at,
                seq=self._seq,
                over_window=over is not None,
            )
            self._requests.append(record)
            if over is not None:
                return record, Behaviour.build("rate_limit", {"retry_after": over})
            behaviour = self._behaviours.take(key) if key is not None else OK
        return record, behaviour

    def _over_window(self, key: str | None, at: float) -> float | None:
        """Seconds until ``key`` may send again if this arrival is over its window, else None
        (and the arrival counts).  Holds the lock."""
        if self.window is None or key is None:
            return None
        limit, seconds = self.window
        times = self._admitted.setdefault(key, deque())
        while times and times[0] <= at - seconds:
            times.popleft()
        if len(times) >= limit:
            return round(times[0] + seconds - at, 3)
        times.append(at)
        return None

    def record_disconnect(self, key: str) -> None:
        at = time.monotonic()
        with self._lock:
            self._disconnects.append((key, at))

    def credit(self, key: str) -> KeyCredit:
        with self._lock:
            return self._credits.get(key, KeyCredit())

    # -- written by tests --------------------------------------------------------------------------------------------

    def set(self, key: str, behaviour: Behaviour, times: int | None) -> None:
        with self._lock:
            self._behaviours.set(key, behaviour, times)

    def set_credit(self, key: str, credit: KeyCredit) -> None:
        with self._lock:
            self._credits[key] = credit

    def reset(self) -> None:
        with self._lock:
            self._behaviours.clear()
            self._credits.clear()
            self._requests.clear()
            self._disconnects.clear()
            self._admitted.clear()

    # -- read by tests -----------------------------------------------------------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    @property
    def disconnects(self) -> list[tuple[str, float]]:
        with self._lock:
            return list(self._disconnects)

    def times(self, key: str) -> list[float]:
        with self._lock:
            return [r.at for r in self._requests if r.key == key]

    def count(self, key: str) -> int:
        with self._lock:
            return sum(1 for r in self._requests if r.key == key)
