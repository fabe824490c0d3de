"""``Wheel``: the public library API.

One async core (:class:`~keywheel.router.Router`); the sync methods are a thin
shell that runs the same coroutines on one background event loop owned by the
wheel, so they work from any number of plain threads at once.  Never call a
sync method from inside that loop's own callbacks.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import threading
import time
import weakref
from collections.abc import AsyncGenerator, Awaitable, Callable, Coroutine, Iterator, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, TypeVar

import aiohttp

from keywheel.calls import Target, chat_response, redactor_for
from keywheel.config import Settings, load_env, settings_from_env
from keywheel.messages import from_openai, openai_wire, tool_choice_from_openai, tools_from_openai
from keywheel.observe import Observer, Subscriber, key_changes, watch_keys
from keywheel.providers import get_adapter
from keywheel.providers.base import HttpRequest
from keywheel.providers.openai_compat import body_request, plain_body
from keywheel.router import RequestBuilder, Router, token_estimate, translated
from keywheel.secrets import ApiKey, Redactor
from keywheel.state.base import KeyStore, LocalStore
from keywheel.state.factory import build_stores
from keywheel.state.memory import MemoryStore
from keywheel.state.rules import BreakerPolicy
from keywheel.status import Credit, Status, provider_status
from keywheel.stream import EventStream
from keywheel.transport import Transport
from keywheel.types import ChatRequest, ChatResponse, StreamEvent

log = logging.getLogger("keywheel")
T = TypeVar("T")


class _LoopThread:
    """A daemon thread running one event loop, started on first use."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def loop(self) -> asyncio.AbstractEventLoop:
        loop = self._loop
        if loop is not None:
            return loop
        with self._lock:
            if self._loop is None:
                new = asyncio.new_event_loop()
                ready = threading.Event()

                def run() -> None:
                    asyncio.set_event_loop(new)
                    new.call_soon(ready.set)
                    new.run_forever()

                self._thread = threading.Thread(target=run, name="keywheel-loop", daemon=True)
                self._thread.start()
                ready.wait()
                self._loop = new
            return self._loop

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop()).result()

    def serves(self, loop: asyncio.AbstractEventLoop) -> bool:
        """Whether ``loop`` is still this thread's loop (not closed, not replaced since)."""
        return self._loop is loop

    def close(self, final: Coroutine[Any, Any, None] | None = None) -> None:
        with self._lock:
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
        if loop is None or thread is None:
            if final is not None:
                final.close()
            return
        if final is not None:
            asyncio.run_coroutine_threadsafe(final, loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()


class Wheel:
    """Many keys, many providers, one door.

    >>> wheel = Wheel.from_env()
    >>> wheel.chat([{"role": "user", "content": "Hello"}]).text
    """

    def __init__(self, settings: Settings, *, transport: Transport | None = None) -> None:
        self.settings = settings
        redactor = redactor_for(settings)
        # KEYWHEEL_STATE: memory, a SQLite file (opened and locked here; closed by close()), or Redis.
        self.stores = build_stores(settings, breaker=_breaker_policy(settings), redact=redactor.redact)
        self.pools: dict[str, KeyStore] = self.stores.pools
        self.transport = transport or Transport()
        self.observer = Observer()
        self.router = Router(settings, self.pools, self.transport, observer=self.observer, redactor=redactor)
        self._portal = _LoopThread()
        self._streams: weakref.WeakSet[AsyncGenerator[StreamEvent, None]] = weakref.WeakSet()  # open sync streams
        self.redactor = self.router.redactor  # strips key pieces from error texts, status and logs
        self.credits: dict[str, Credit] = {}  # fingerprint -> the latest credit reading (keywheel.ops.credits)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, env_file: str | os.PathLike[str] | None = None) -> Wheel:
        """Configure from variables.

        - ``Wheel.from_env()``: the process environment over ``./.env`` (if present);
        - ``Wheel.from_env(mapping)``: exactly that mapping — no file is read;
        - ``env_file=path``: that file (which must exist), under ``env`` or the process environment.
        """
        return cls(settings_from_env(load_env(env, env_file)))

    # ---------------------------------------------------------------- requests

    @staticmethod
    def request(
        messages: Sequence[Mapping[str, Any]],
        *,
        system: str | None = None,
        max_tokens: int | None = None,
        temperature: float | None = None,
        tools: Sequence[Mapping[str, Any]] | None = None,
        tool_choice: Any = None,
        **extra: Any,
    ) -> ChatRequest:
        """Build a canonical request from OpenAI-style messages and tools."""
        inline_system, msgs = from_openai(messages)
        if system is not None and inline_system is not None:
            system = f"{system}\n\n{inline_system}"
        return ChatRequest(
            messages=msgs,
            system=system if system is not None else inline_system,
            max_tokens=max_tokens,
            temperature=temperature,
            tools=tools_from_openai(tools),
            tool_choice=tool_choice_from_openai(tool_choice),
            extra=extra,
        )

    async def achat(
        self,
        messages: Sequence[Mapping[str, Any]],
        *,
        model: str | None = None,
        system: str | None = None,
        max_tokens: int | None = None,
        temperature: float | None = None,
        tools: Sequence[Mapping[str, Any]] | None = None,
        tool_choice: Any = None,
        provider: str | None = None,
        fallback: bool = True,
        **extra: Any,
    ) -> ChatResponse:
        """One chat completion: rotates keys, rests limited ones, fails over across providers.

        ``model`` applies to the first provider (``provider``, default AI_PROVIDER);
        fallbacks use their own configured models.  ``fallback=False`` stays on that
        provider.  ``tools`` are OpenAI-style; ``extra`` fields go into the upstream
        body as they are (e.g. ``top_k`` for OpenRouter).
        """
        # The pass-through: messages the OpenAI request builder would send back unchanged skip the
        # canonical types on their way to an OpenAI-dialect upstream (same body, same answer).
        wire = openai_wire(messages) if system is None and tools is None and tool_choice is None else None
        if wire is None:
            request = self.request(
                messages,
                system=system,
                max_tokens=max_tokens,
                temperature=temperature,
                tools=tools,
                tool_choice=tool_choice,
                **extra,
            )
            return await self.acomplete(request, model=model, provider=provider, fallback=fallback)
        targets = self.router.chain(provider, model, fallback=fallback)
        completion, _, served = await self.router.complete(targets, _passthrough(wire, max_tokens, temperature, extra))
        return chat_response(completion, served)

    async def acomplete(
        self, request: ChatRequest, *, model: str | None = None, provider: str | None = None, fallback: bool = True
    ) -> ChatResponse:
        targets = self.router.chain(provider, model, fallback=fallback)
        completion, _, served = await self.router.complete(targets, translated(request), tokens=token_estimate(request))
        return chat_response(completion, served)

    def chat(self, messages: Sequence[Mapping[str, Any]], **kwargs: Any) -> ChatResponse:
        """Sync :meth:`achat`; safe from many threads at once."""
        return self._portal.run(self.achat(messages, **kwargs))

    async def open_stream(
        self, request: ChatRequest, *, model: str | None = None, provider: str | None = None, fallback: bool = True
    ) -> EventStream:
        """Open a stream (failing over until a first event arrives); iterate it for events."""
        targets = self.router.chain(provider, model, fallback=fallback)
        return await self.router.open_stream(targets, translated(request), tokens=token_estimate(request))

    async def astream(
        self,
        messages: Sequence[Mapping[str, Any]],
        *,
        model: str | None = None,
        provider: str | None = None,
        fallback: bool = True,
        **options: Any,
    ) -> AsyncGenerator[StreamEvent, None]:
        """Stream events: ``TextDelta``, ``ToolCallDelta``, and a final ``StreamEnd``."""
        request = self.request(messages, **options)
        stream = await self.open_stream(request, model=model, provider=provider, fallback=fallback)
        events = stream.__aiter__()
        try:
            async for event in events:
                yield event
        finally:
            await events.aclose()
            await stream.aclose()

    def stream(self, messages: Sequence[Mapping[str, Any]], **kwargs: Any) -> Iterator[StreamEvent]:
        """Sync :meth:`astream`: events are pulled one by one from the wheel's loop.

        A stream left open is closed by :meth:`close` (its key freed, its connection dropped);
        a stream collected or finalized after that, or at interpreter exit, needs no loop."""
        agen = self.astream(messages, **kwargs)
        portal = self._portal
        loop = portal.loop()
        self._streams.add(agen)
        try:
            while True:
                if not portal.serves(loop):
                    return  # the wheel was closed: close() has closed this stream too
                try:
                    yield portal.run(_next(agen))
                except StopAsyncIteration:
                    return
        finally:
            self._streams.discard(agen)
            # Never start a loop here: after close() (or at interpreter exit, when the loop's
            # daemon thread can no longer run) waiting for one would hang the process.
            if portal.serves(loop) and not sys.is_finalizing():
                portal.run(agen.aclose())

    # ----------------------------------------------------------------- status

    def snapshot(self) -> Status:
        """Typed status: providers in chain order; each key by fingerprint with its state, rest and counters.

        Reasons and last errors quote upstream (and operator) text: they are redacted, so no
        piece of a key is in any value."""
        local = self._local_pools()
        if local is None:
            return self._portal.run(self.asnapshot())
        return self._status({name: local[name].snapshot_nowait() for name in self.settings.chain})

    async def asnapshot(self) -> Status:
        """:meth:`snapshot` for any store (a shared one is asked over the network)."""
        return self._status({name: await self.pools[name].snapshot() for name in self.settings.chain})

    def _status(self, snapshots: Mapping[str, Mapping[str, Any]]) -> Status:
        now = time.time()
        settings = self.settings
        providers = tuple(
            provider_status(
                snapshots[name],
                dialect=settings.providers[name].dialect,
                model=settings.providers[name].model,
                enabled=settings.providers[name].enabled,
                primary=name == settings.primary,
                redact=self.redactor.redact,
                now=now,
                credits=self.credits,
            )
            for name in settings.chain
        )
        return Status(settings.primary, tuple(settings.chain), providers, now)

    def _local_pools(self) -> dict[str, LocalStore] | None:
        """The pools, when every one lives in this process (their calls need no await); else None."""
        local = {n: p for n, p in self.pools.items() if isinstance(p, LocalStore)}
        return local if len(local) == len(self.pools) else None

    def status(self) -> dict[str, Any]:
        """:meth:`snapshot` as JSON: the ``/status`` body."""
        return self.snapshot().to_json()

    def _pool_of(self, fingerprint: str) -> KeyStore:
        provider = fingerprint.split("#", 1)[0]
        pool = self.pools.get(provider)
        if pool is None:
            raise KeyError(f"no enabled provider {provider!r} for key {fingerprint!r}")
        return pool

    def disable_key(self, fingerprint: str, reason: str = "disabled by operator") -> None:
        pool = self._pool_of(fingerprint)
        if not isinstance(pool, MemoryStore):
            return self._portal.run(self.adisable_key(fingerprint, reason))
        self._key_action(pool, lambda: pool.disable_nowait(fingerprint, self.redactor.redact(reason)[:300]))

    def enable_key(self, fingerprint: str) -> None:
        pool = self._pool_of(fingerprint)
        if not isinstance(pool, MemoryStore):
            return self._portal.run(self.aenable_key(fingerprint))
        self._key_action(pool, lambda: pool.enable_nowait(fingerprint))

    def remove_key(self, fingerprint: str) -> None:
        pool = self._pool_of(fingerprint)
        if not isinstance(pool, MemoryStore):
            return self._portal.run(self.aremove_key(fingerprint))
        self._key_action(pool, lambda: pool.remove_nowait(fingerprint))

    def _key_action(self, pool: MemoryStore, action: Callable[[], None]) -> None:
        watch_keys(self.observer, pool, action, self.redactor.redact, time.time())

    async def adisable_key(self, fingerprint: str, reason: str = "disabled by operator") -> None:
        """:meth:`disable_key` for any store (on a shared one, every replica honours it at its next pick)."""
        pool = self._pool_of(fingerprint)
        await self._akey_action(pool, lambda: pool.disable(fingerprint, self.redactor.redact(reason)[:300]))

    async def aenable_key(self, fingerprint: str) -> None:
        pool = self._pool_of(fingerprint)
        await self._akey_action(pool, lambda: pool.enable(fingerprint))

    async def aremove_key(self, fingerprint: str) -> None:
        pool = self._pool_of(fingerprint)
        await self._akey_action(pool, lambda: pool.remove(fingerprint))

    async def _akey_action(self, pool: KeyStore, action: Callable[[], Awaitable[None]]) -> None:
        """Run an operator's action and emit a key-state event for each key it changed."""
        if not self.observer.key_states:
            await action()
            return
        redact = self.redactor.redact
        before = provider_status(await pool.snapshot(), dialect="", model="", redact=redact, now=time.time())
        await action()
        after = provider_status(await pool.snapshot(), dialect="", model="", redact=redact, now=time.time())
        for event in key_changes(before, after):
            self.observer.emit(event)

    # ---------------------------------------------------------------- events

    def subscribe(self, fn: Subscriber, *kinds: type[Any]) -> Callable[[], None]:
        """Call ``fn(event)`` for each event (:mod:`keywheel.observe`) of ``kinds`` (default: all):
        ``AttemptFinished``, ``RequestFinished`` (gateway requests), ``KeyStateChanged``.
        ``fn`` runs inline on the wheel's loop: keep it quick.  Returns the unsubscribe."""
        return self.observer.subscribe(fn, *kinds)

    def add_key(self, provider: str, key: str) -> str:
        """Add a key to an enabled provider's pool; returns its fingerprint."""
        pool = self.pools.get(provider)
        if pool is not None and not isinstance(pool, MemoryStore):
            return self._portal.run(self.aadd_key(provider, key))
        if pool is None:
            raise KeyError(f"provider {provider!r} is not enabled")
        api_key = self._new_key(provider, key, pool.keys_nowait())
        pool.add_nowait(api_key)
        self.settings.providers[provider].keys.append(api_key)
        return api_key.fingerprint

    async def aadd_key(self, provider: str, key: str) -> str:
        """:meth:`add_key` for any store (a shared pool: this process serves the key from now on)."""
        pool = self.pools.get(provider)
        if pool is None:
            raise KeyError(f"provider {provider!r} is not enabled")
        api_key = self._new_key(provider, key, await pool.keys())
        await pool.add(api_key)
        self.settings.providers[provider].keys.append(api_key)
        return api_key.fingerprint

    def _new_key(self, provider: str, key: str, present: list[ApiKey]) -> ApiKey:
        cfg = self.settings.providers[provider]
        api_key = ApiKey(key, provider, f"added{len(present) + 1}", auth=get_adapter(cfg.dialect).key_auth)
        if api_key in present:
            raise ValueError(f"that key is already in {provider} as {present[present.index(api_key)]}")
        self.redactor.add(key)  # before any request can use it
        return api_key

    def reload(self, settings: Settings) -> Reloaded:
        """:meth:`areload` from synchronous code (the library; the gateway awaits :meth:`areload`)."""
        local = self._local_pools()
        if local is not None and len(local) == len(self.pools):
            return _run_now(self.areload(settings))  # in-process stores: it never waits
        return self._portal.run(self.areload(settings))

    async def areload(self, settings: Settings) -> Reloaded:
        """Swap in ``settings`` (a configuration read again): new calls use it at once.

        Calls in flight finish on the router they started with (the old configuration).
        A key that stays (same provider and value) keeps its state and counters under its
        old fingerprint; a removed key leaves its pool at once (no new request gets it); an
        added key joins its provider's rotation.  A provider that appears gets a fresh pool
        (of the same kind of state), one that goes is dropped.  Keys added at run time
        (:meth:`add_key`) that the new configuration does not name are removed too: the
        configuration is the truth.  Every secret of the old configuration stays known to the
        redactor.  On in-process stores (memory, SQLite) nothing in it waits, so on the
        gateway's loop the swap is atomic; a shared store (Redis) is asked over the network
        key by key, and the router is swapped at the end."""
        pools: dict[str, KeyStore] = {}
        added: list[str] = []
        removed: list[str] = []
        kept = 0
        for name, cfg in settings.providers.items():
            if not cfg.enabled:
                continue
            pool = self.pools.get(name)
            if pool is None:
                assert self.stores.make is not None
                pools[name] = self.stores.make(name, cfg.keys, cfg.quota)
                added += [k.fingerprint for k in cfg.keys]
                continue
            present = {k: k for k in await pool.keys()}
            wanted = set(cfg.keys)
            for key in present:
                if key not in wanted:
                    await pool.remove(key.fingerprint)
                    removed.append(key.fingerprint)
            keys: list[ApiKey] = []
            for key in cfg.keys:
                if key in present:
                    keys.append(present[key])  # the same object: its fingerprint, state and counters stay
                    kept += 1
                else:
                    await pool.add(key)
                    keys.append(key)
                    added.append(key.fingerprint)
            cfg.keys = keys
            pools[name] = pool
        for name, pool in self.pools.items():
            if name not in pools:
                removed += [k.fingerprint for k in await pool.keys()]
        redactor = self.redactor
        public = Redactor.for_settings((), [(c.name, c.base_url, c.model) for c in settings.providers.values()])
        redactor.update(redactor.secrets() + settings.secrets(), redactor.public() + public.public())
        router = Router(settings, pools, self.transport, redactor=self.redactor, observer=self.observer)
        self.settings, self.pools, self.router = settings, pools, router
        self.stores.pools = pools
        return Reloaded(added, removed, kept, list(settings.chain))

    def asgi_app(self) -> Any:
        """This wheel as an ASGI app speaking the OpenAI, Anthropic and Gemini dialects.

        Mount it in-process, e.g. ``openai.AsyncOpenAI(base_url="http://kw/v1",
        http_client=httpx2.AsyncClient(transport=httpx2.ASGITransport(app)))`` (the openai and anthropic
        SDKs run on httpx2; plain httpx works the same way for other clients).
        """
        from keywheel.gateway.app import Gateway

        return Gateway(self)

    def secrets(self) -> list[str]:
        """Every secret this wheel holds or held (for log redaction and leak tests)."""
        return self.redactor.secrets()

    # ---------------------------------------------------------------- closing

    async def aclose(self) -> None:
        await self.transport.aclose()
        await _close_pools(self.pools)  # a shared store's connections
        self.stores.close()  # the key state: counters flushed, the file closed

    def close(self) -> None:
        """Close everything: the sync API's loop and its connections, and the connections the
        async API opened on any other loop, so ``with Wheel.from_env() as wheel:`` around
        ``await wheel.achat(...)`` leaves no "Unclosed client session" behind; and the key
        state's file (counters flushed)."""
        self._portal.close(self._close_on_loop())
        _close_sessions_now(self.transport)
        self.stores.close()

    async def _close_on_loop(self) -> None:
        """On the sync API's loop: close the sync streams left open, then the connections."""
        for agen in list(self._streams):
            try:
                await agen.aclose()
            except Exception:  # noqa: BLE001 — closing anyway; the stream's own error is of no use now
                log.debug("an open stream failed while closing", exc_info=True)
        self._streams.clear()
        await self.transport.aclose()
        await _close_pools(self.pools)

    def __enter__(self) -> Wheel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> Wheel:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()
        self.close()


@dataclass(frozen=True, slots=True)
class Reloaded:
    """What :meth:`Wheel.reload` changed: keys by fingerprint, and the new chain."""

    added: list[str]
    removed: list[str]
    kept: int
    chain: list[str]

    def to_json(self) -> dict[str, Any]:
        return {"reloaded": True, "added": self.added, "removed": self.removed, "kept": self.kept, "chain": self.chain}


def _run_now(coro: Coroutine[Any, Any, T]) -> T:
    """The result of ``coro``, which must finish without waiting (it awaits only in-process stores)."""
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    coro.close()
    raise RuntimeError("a reload on in-process stores waited: use areload() on the wheel's loop")


def _close_sessions_now(transport: Transport) -> None:
    """Close, without awaiting, the connection pools left on other event loops.

    ``ClientSession.close`` is a coroutine, which a sync ``__exit__`` inside a running loop
    cannot await; closing the connector drops its connections at once and marks the session
    closed.  A pool on a loop running in another thread is closed from that loop's thread."""
    for loop, session in transport.sessions():
        connector = session.connector
        if session.closed or connector is None:
            continue
        if loop.is_running() and asyncio._get_running_loop() is not loop:
            loop.call_soon_threadsafe(_close_connector, connector)
        else:
            _close_connector(connector)


def _close_connector(connector: aiohttp.BaseConnector) -> None:
    connector._close()  # noqa: SLF001 — the synchronous part of BaseConnector.close()


async def _close_pools(pools: Mapping[str, KeyStore]) -> None:
    """Close the connections a shared store opened on the running loop."""
    for pool in pools.values():
        close = getattr(pool, "aclose", None)
        if close is not None:
            await close()


def _passthrough(
    wire: list[dict[str, Any]], max_tokens: int | None, temperature: float | None, extra: dict[str, Any]
) -> RequestBuilder:
    """Each attempt's request for messages in OpenAI wire form (:func:`keywheel.messages.openai_wire`):
    the body as the OpenAI request builder would write it for an OpenAI-dialect target, translated
    through the canonical request (made on first need) for any other."""
    canonical: list[RequestBuilder] = []

    def build(target: Target, key: ApiKey, stream: bool) -> HttpRequest:
        if target.provider.speaks("openai"):  # Target.speaks() without its extra call
            body = plain_body(wire, target.model, max_tokens, temperature, extra, stream=stream)
            return body_request(target.endpoint, key, body)
        if not canonical:
            canonical.append(translated(Wheel.request(wire, max_tokens=max_tokens, temperature=temperature, **extra)))
        return canonical[0](target, key, stream)

    return build


def _breaker_policy(settings: Settings) -> BreakerPolicy:
    # A trial that has not answered within an attempt's timeout is presumed lost.
    return BreakerPolicy(
        settings.breaker_failures, settings.breaker_cooloff, settings.breaker_cooloff_max, settings.attempt_timeout
    )


async def _next(agen: AsyncGenerator[StreamEvent, None]) -> StreamEvent:
    return await agen.__anext__()
