"""The router over a transport stub: no sockets, the attempt loop alone.

The stub answers each upstream request from a script per key (status, headers, body) and
records what was asked; keys live in a real :class:`MemoryStore`.  The socket-level
behaviour of the same rules is covered by tests/test_wheel.py and tests/gateway/.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Mapping
from contextlib import AbstractAsyncContextManager

import orjson
import pytest

from keywheel.calls import RetryPolicy, Served
from keywheel.config import Settings, settings_from_env
from keywheel.errors import AllProvidersFailed, BadRequest, NoKeyAvailable, UpstreamError
from keywheel.providers.base import HttpRequest
from keywheel.router import Router, _Call, translated
from keywheel.state.memory import MemoryStore
from keywheel.state.rules import BreakerPolicy
from keywheel.transport import HttpResponse, HttpStream
from keywheel.types import ChatRequest, Completion, Message, TextPart

OK_BODY = orjson.dumps(
    {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "model": "m",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "4"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
    }
)
Answer = tuple[int, dict[str, str], bytes]


class StubTransport:
    """Answers from ``script[key]`` (a list used up front to back; then 200), records every request."""

    def __init__(self, script: Mapping[str, list[Answer]] | None = None) -> None:
        self.script = {k: list(v) for k, v in (script or {}).items()}
        self.asked: list[str] = []  # the key of each request

    def _answer(self, request: HttpRequest) -> Answer:
        auth = request.headers.get("authorization", "")
        key = auth.removeprefix("Bearer ")
        self.asked.append(key)
        queue = self.script.get(key)
        return queue.pop(0) if queue else (200, {"content-type": "application/json"}, OK_BODY)

    async def send(self, request: HttpRequest, timeout: float, max_bytes: int | None = None) -> HttpResponse:
        status, headers, body = self._answer(request)
        return HttpResponse(status, headers, body)

    def stream(
        self, request: HttpRequest, timeout: float, idle_timeout: float
    ) -> AbstractAsyncContextManager[HttpStream]:
        raise AssertionError("these tests make no streaming request")


def settings(**extra: str) -> Settings:
    env = {
        "OPENROUTER_API_KEY_1": "test-openrouter-key-1",
        "OPENROUTER_API_KEY_2": "test-openrouter-key-2",
        "OPENROUTER_BASE_URL": "http://127.0.0.1:9/api/v1",  # never connected to: the stub answers
        "ENABLE_GROQ": "true",
        "GROQ_BASE_URL": "http://127.0.0.1:9/openai/v1",
        "GROQ_MODEL": "test-model",
        "GROQ_API_KEY_1": "test-groq-key-1",
        "AI_PROVIDER": "openrouter",
        "FALLBACK_ORDER": "groq",
        "KEYWHEEL_MAX_WAIT": "0",
    }
    env.update(extra)
    return settings_from_env(env)


def router(stub: StubTransport, cfg: Settings, breaker: BreakerPolicy | None = None) -> Router:
    pools = {
        name: MemoryStore(name, p.keys, breaker=breaker or BreakerPolicy())
        for name, p in cfg.providers.items()
        if p.enabled
    }
    fast = RetryPolicy(provider_attempts=cfg.provider_attempts, backoff_base=0.001, backoff_cap=0.002)
    return Router(cfg, pools, stub, rng=random.Random(7), retry=fast)


REQUEST = ChatRequest([Message("user", [TextPart("What is 2+2?")])])


def call(r: Router) -> tuple[str, list[str]]:
    async def go() -> tuple[str, list[str]]:
        completion, _, served = await r.complete(r.chain(), translated(REQUEST))
        return completion.text, [f"{a.provider}:{a.outcome}" for a in served.attempts]

    return asyncio.run(go())


def limited(seconds: float) -> Answer:
    body = b'{"error": {"message": "rate limited", "code": 429}}'
    return (429, {"retry-after": f"{seconds:g}", "content-type": "application/json"}, body)


def failing(status: int, message: str = "boom") -> Answer:
    return (status, {"content-type": "application/json"}, orjson.dumps({"error": {"message": message}}))


def test_a_key_fault_rotates_to_the_next_key_at_once() -> None:
    stub = StubTransport({"test-openrouter-key-1": [limited(30)]})
    text, attempts = call(router(stub, settings()))
    assert text == "4"
    assert attempts == ["openrouter:RateLimited", "openrouter:ok"]
    assert stub.asked == ["test-openrouter-key-1", "test-openrouter-key-2"]


def test_provider_faults_retry_then_fail_over() -> None:
    stub = StubTransport({"test-openrouter-key-1": [failing(500)], "test-openrouter-key-2": [failing(503)]})
    text, attempts = call(router(stub, settings(KEYWHEEL_PROVIDER_ATTEMPTS="2")))
    assert text == "4"
    assert attempts == ["openrouter:ServerError", "openrouter:Overloaded", "groq:ok"]
    assert stub.asked == ["test-openrouter-key-1", "test-openrouter-key-2", "test-groq-key-1"]


def test_a_request_fault_returns_at_once_without_failover() -> None:
    stub = StubTransport({"test-openrouter-key-1": [failing(400, "messages: bad")]})
    with pytest.raises(BadRequest) as caught:
        call(router(stub, settings()))
    assert stub.asked == ["test-openrouter-key-1"]
    assert [a.outcome for a in caught.value.attempts] == ["BadRequest"]


def test_waits_for_a_resting_key_within_max_wait() -> None:
    cfg = settings(
        OPENROUTER_API_KEY_2="", ENABLE_GROQ="false", FALLBACK_ORDER="", KEYWHEEL_MAX_WAIT="5"
    )  # one key, one provider
    stub = StubTransport({"test-openrouter-key-1": [limited(0.05)]})
    text, attempts = call(router(stub, cfg))
    assert text == "4" and attempts == ["openrouter:RateLimited", "openrouter:ok"]
    assert stub.asked == ["test-openrouter-key-1"] * 2


def test_a_rest_beyond_max_wait_is_no_key_available_with_the_time() -> None:
    cfg = settings(OPENROUTER_API_KEY_2="", ENABLE_GROQ="false", FALLBACK_ORDER="", KEYWHEEL_MAX_WAIT="1")
    stub = StubTransport({"test-openrouter-key-1": [limited(30)]})
    with pytest.raises(NoKeyAvailable) as caught:
        call(router(stub, cfg))
    assert caught.value.retry_after is not None and 29 < caught.value.retry_after <= 30
    assert stub.asked == ["test-openrouter-key-1"]


def test_an_open_breaker_is_skipped_without_a_request() -> None:
    stub = StubTransport({"test-openrouter-key-1": [failing(500)]})
    r = router(stub, settings(KEYWHEEL_PROVIDER_ATTEMPTS="2"), BreakerPolicy(failures=1, cooloff=60.0))
    assert call(r)[1] == ["openrouter:ServerError", "groq:ok"]  # the fault opened it: no retry there
    assert call(r)[1] == ["groq:ok"]  # skipped: no request to openrouter at all
    assert stub.asked == ["test-openrouter-key-1", "test-groq-key-1", "test-groq-key-1"]


def test_every_provider_failing_is_all_providers_failed_listing_the_tries() -> None:
    stub = StubTransport(
        {k: [failing(500)] * 2 for k in ("test-openrouter-key-1", "test-openrouter-key-2", "test-groq-key-1")}
    )
    with pytest.raises(AllProvidersFailed) as caught:
        call(router(stub, settings(KEYWHEEL_PROVIDER_ATTEMPTS="2")))
    assert [a.provider for a in caught.value.attempts] == ["openrouter", "openrouter", "groq", "groq"]


def test_retry_policy_delays_double_to_the_cap_with_jitter() -> None:
    policy = RetryPolicy(backoff_base=0.2, backoff_cap=2.0, jitter=0.5)

    class Fixed(random.Random):
        def __init__(self, value: float) -> None:
            super().__init__()
            self.value = value

        def random(self) -> float:
            return self.value

    assert [policy.delay(n, Fixed(1.0)) for n in (1, 2, 3, 4, 5, 6)] == pytest.approx([0.2, 0.4, 0.8, 1.6, 2.0, 2.0])
    assert policy.delay(1, Fixed(0.0)) == pytest.approx(0.1)  # jitter takes off up to half


# --- complete()'s first try: made without execute()'s frames, it must act exactly as execute() ---

TOO_LONG = failing(400, "This model's maximum context length is 8192 tokens")
ALL_KEYS = ("test-openrouter-key-1", "test-openrouter-key-2", "test-groq-key-1")
FIRST_TRIES: dict[str, dict[str, list[Answer]]] = {
    "ok": {},
    "key fault": {"test-openrouter-key-1": [limited(30)]},
    "invalid key": {"test-openrouter-key-1": [failing(401, "invalid api key")]},
    "provider fault, retried": {"test-openrouter-key-1": [failing(500)]},
    "provider faults, failed over": {"test-openrouter-key-1": [failing(500)], "test-openrouter-key-2": [failing(503)]},
    "request fault": {"test-openrouter-key-1": [failing(400, "messages: bad")]},
    "too long, to a larger window": {"test-openrouter-key-1": [TOO_LONG]},
    "in-band error": {"test-openrouter-key-1": [(200, {}, b'{"error": {"message": "upstream", "code": 502}}')]},
    "everything fails": {k: [failing(500)] * 3 for k in ALL_KEYS},
}


def _run(r: Router, general: bool) -> tuple[object, ...]:
    """One call through complete() (its fast first try) or the general loop alone."""

    async def go() -> tuple[Completion, bytes, Served]:
        targets = r.chain()
        if general:  # what complete() did before its fast path: every try through execute()
            call = _Call(asyncio.get_running_loop().time() + r.settings.timeout)
            return await r._complete(targets, translated(REQUEST), call)
        return await r.complete(targets, translated(REQUEST))

    try:
        completion, _, served = asyncio.run(go())
        outcome: object = (completion.text, served.target.provider.name, served.key.fingerprint)
        tries = served.attempts
    except UpstreamError as exc:
        outcome, tries = type(exc).__name__, exc.attempts
    except AllProvidersFailed as exc:
        outcome, tries = type(exc).__name__, exc.attempts
    snaps = {name: pool.snapshot_nowait() for name, pool in r.pools.items()}  # type: ignore[attr-defined]
    fields = ("key", "state", "requests", "successes", "failures", "in_flight")
    keys = {name: [[k[f] for f in fields] for k in snap["keys"]] for name, snap in snaps.items()}
    breakers = {name: snap["breaker"]["state"] for name, snap in snaps.items()}
    return outcome, [(a.provider, a.key, a.outcome, a.status) for a in tries], keys, breakers


@pytest.mark.parametrize("case", list(FIRST_TRIES))
def test_the_fast_first_try_acts_as_the_general_loop(case: str) -> None:
    cfg = settings(KEYWHEEL_PROVIDER_ATTEMPTS="2", GROQ_CONTEXT_WINDOW="1000000", OPENROUTER_CONTEXT_WINDOW="8192")
    fast_stub, general_stub = StubTransport(FIRST_TRIES[case]), StubTransport(FIRST_TRIES[case])
    fast = _run(router(fast_stub, cfg, BreakerPolicy(failures=2)), general=False)
    general = _run(router(general_stub, cfg, BreakerPolicy(failures=2)), general=True)
    assert fast == general
    assert fast_stub.asked == general_stub.asked
    assert fast[1], "every case makes at least one try"


def test_a_call_cancelled_in_its_first_try_frees_the_key_and_counts_nothing() -> None:
    class Hanging(StubTransport):
        async def send(self, request: HttpRequest, timeout: float, max_bytes: int | None = None) -> HttpResponse:
            self._answer(request)
            await asyncio.sleep(3600)
            raise AssertionError("never answered")

    stub = Hanging()
    r = router(stub, settings())

    async def go() -> None:
        task = asyncio.create_task(r.complete(r.chain(), translated(REQUEST)))
        while not stub.asked:
            await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(go())
    (first, second) = r.pools["openrouter"].snapshot_nowait()["keys"]  # type: ignore[attr-defined]
    assert stub.asked == ["test-openrouter-key-1"]
    assert (first["in_flight"], first["successes"], first["failures"]) == (0, 0, {})
    assert second["requests"] == 0


@pytest.mark.parametrize("provider", ["nope", "gemini"])  # never configured; configured but not enabled
def test_a_provider_not_enabled_is_a_bad_request_naming_the_enabled_ones(provider: str) -> None:
    r = router(StubTransport(), settings())
    with pytest.raises(
        BadRequest, match=rf"provider '{provider}' is not configured or not enabled \(enabled: openrouter, groq\)"
    ):
        r.chain(provider)
