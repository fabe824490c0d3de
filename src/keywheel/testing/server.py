"""The programmable fake upstream: a real HTTP server on loopback that speaks
the Anthropic, Gemini and OpenAI/OpenRouter dialects and can be told, per key,
how to misbehave.

It runs its own asyncio loop in a daemon thread, so sync tests, asyncio tests
and the CLI demo all drive it the same way.  It must never be pointed at, or
forward to, a real provider, and it never echoes a key in any answer.

::

    with FakeUpstream() as fake:
        fake.set("k1", "rate_limit", retry_after=2, times=1)
        client = openai.OpenAI(base_url=fake.openai_base_url, api_key="k1")
"""

from __future__ import annotations

import asyncio
import socket
import threading
from types import TracebackType

from aiohttp import web

from keywheel.testing._openai import KeyCredit
from keywheel.testing.app import FakeApp
from keywheel.testing.behaviours import Behaviour
from keywheel.testing.state import FakeState, RecordedRequest

SHUTDOWN_TIMEOUT = 0.5


class FakeUpstream:
    """A fake LLM provider on ``127.0.0.1:<free port>``.  Thread-safe.

    ``window=(limit, seconds)`` makes it enforce a sliding window per key, as a real provider
    does: over it, a 429 with the exact retry time (see :class:`FakeState`); such requests are
    in the log with ``over_window`` set."""

    def __init__(self, *, window: tuple[int, float] | None = None) -> None:
        if window is not None and (window[0] < 1 or window[1] <= 0):
            raise ValueError(f"window=(limit, seconds) needs limit >= 1 and seconds > 0, got {window!r}")
        self._state = FakeState(window)
        self._app = FakeApp(self._state)
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._port: int | None = None

    # -- lifecycle ---------------------------------------------------------------------------------------------------

    def start(self) -> FakeUpstream:
        """Bind a free loopback port and return once the server accepts requests."""
        if self._thread is not None:
            raise RuntimeError("FakeUpstream is already running")
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        sock.listen(512)
        sock.setblocking(False)
        ready = threading.Event()
        failure: list[BaseException] = []
        self._app.closing = False
        thread = threading.Thread(
            target=self._run, args=(sock, ready, failure), name="keywheel-fake-upstream", daemon=True
        )
        thread.start()
        ready.wait()
        if failure:
            thread.join()
            sock.close()
            raise RuntimeError("FakeUpstream failed to start") from failure[0]
        self._port = sock.getsockname()[1]
        self._thread = thread
        return self

    def stop(self) -> None:
        """Stop serving; pending hangs and streams are cut.  Records are kept."""
        thread, loop, stop = self._thread, self._loop, self._stop
        if thread is None or loop is None or stop is None:
            return
        self._app.closing = True
        loop.call_soon_threadsafe(stop.set)
        thread.join(timeout=10)
        self._thread = self._loop = self._stop = None
        self._port = None

    def __enter__(self) -> FakeUpstream:
        return self if self._thread is not None else self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def _run(self, sock: socket.socket, ready: threading.Event, failure: list[BaseException]) -> None:
        try:
            asyncio.run(self._serve(sock, ready))
        except BaseException as exc:  # reported to start() if it happened before ready
            if not ready.is_set():
                failure.append(exc)
                ready.set()
            else:
                raise

    async def _serve(self, sock: socket.socket, ready: threading.Event) -> None:
        runner = web.AppRunner(self._app.build(), access_log=None, shutdown_timeout=SHUTDOWN_TIMEOUT)
        await runner.setup()
        try:
            await web.SockSite(runner, sock).start()
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            ready.set()
            await self._stop.wait()
        finally:
            await runner.cleanup()

    # -- addresses ---------------------------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        if self._port is None:
            raise RuntimeError("FakeUpstream is not running: call start() or use it as a context manager")
        return f"http://127.0.0.1:{self._port}"

    @property
    def anthropic_base_url(self) -> str:
        return self.url  # the SDK appends /v1/messages

    @property
    def gemini_base_url(self) -> str:
        return self.url  # the SDK appends /{api_version}/models/{model}:generateContent

    @property
    def openrouter_base_url(self) -> str:
        return self.url + "/api/v1"  # the SDK appends /chat/completions

    @property
    def openai_base_url(self) -> str:
        return self.url + "/v1"

    # -- programming -------------------------------------------------------------------------------------------------

    def set(self, key: str, kind: str, *, times: int | None = None, **params: object) -> None:
        """How to answer requests carrying ``key``.

        ``times=None`` makes ``kind`` the key's permanent behaviour (dropping any
        queued temporary ones); ``times=N`` queues ``kind`` for the next N
        requests, after which earlier-queued and then the permanent behaviour
        apply again.  Raises ``ValueError`` for an unknown kind or parameter.
        """
        if times is not None and (isinstance(times, bool) or not isinstance(times, int) or times < 0):
            raise ValueError(f"times must be a non-negative int or None, not {times!r}")
        self._state.set(key, Behaviour.build(kind, params), times)

    def set_credit(
        self,
        key: str,
        *,
        limit: float | None = None,
        usage: float = 0.0,
        usage_daily: float | None = None,
        is_free_tier: bool = False,
        label: str | None = None,
        limit_reset: str | None = None,
        limit_remaining: float | None = None,
        usage_weekly: float | None = None,
        usage_monthly: float | None = None,
        free_used: int = 0,
        free_limit: int | None = None,
    ) -> None:
        """What OpenRouter's ``GET /api/v1/key`` reports for ``key`` (``limit=None``: unlimited;
        ``limit_remaining=None``: ``limit - usage``; ``label=None``: part of the key, as OpenRouter's)."""
        credit = KeyCredit(
            limit=limit,
            usage=usage,
            usage_daily=usage_daily,
            is_free_tier=is_free_tier,
            label=label,
            limit_reset=limit_reset,
            limit_remaining=limit_remaining,
            usage_weekly=usage_weekly,
            usage_monthly=usage_monthly,
            free_used=free_used,
            free_limit=free_limit,
        )
        self._state.set_credit(key, credit)

    def reset(self) -> None:
        """Every key back to "ok" with default credit; requests and disconnects forgotten."""
        self._state.reset()

    # -- observing ---------------------------------------------------------------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request received, in arrival order (a copy)."""
        return self._state.requests

    @property
    def disconnects(self) -> list[tuple[str, float]]:
        """``(key, time.monotonic())`` for each client that left before its answer was complete."""
        return self._state.disconnects

    def count(self, key: str) -> int:
        """How many requests carried ``key``."""
        return self._state.count(key)

    def times(self, key: str) -> list[float]:
        """``time.monotonic()`` arrival times of the requests carrying ``key``."""
        return self._state.times(key)
