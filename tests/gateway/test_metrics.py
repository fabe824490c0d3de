"""``GET /metrics`` of a real ``keywheel serve`` over the fake upstream: a known mix of requests
(ok, 429 with failover, 401, 5xx, a client without the gateway key), then the scrape read back
with prometheus-client's parser must count exactly that mix, hold no piece of any key, and be
guarded as the admin routes are (public when asked, gone when off)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

import anthropic
import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam
from prometheus_client.parser import text_string_to_metric_families

from keywheel.config import settings_from_env
from keywheel.testing import FakeUpstream
from tests.gateway.conftest import ADMIN_KEY, GATEWAY_KEY, GatewayFactory
from tests.helpers import fake_env, pieces, random_secret

ADMIN = {"authorization": f"Bearer {ADMIN_KEY}"}
OFF = {"x-keywheel-fallback": "off"}
MESSAGES: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hello"}]
CLAUDE_MESSAGES: list[anthropic.types.MessageParam] = [{"role": "user", "content": "hello"}]


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=30) as client:
        yield client


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    """Every sample of a scrape, by name and label set (prometheus-client's own parser)."""
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return out


def select(samples: Samples, name: str, **labels: str) -> dict[frozenset[tuple[str, str]], float]:
    """The samples called ``name`` whose labels include ``labels``."""
    want = set(labels.items())
    return {lab: v for (n, lab), v in samples.items() if n == name and want <= lab}


def only(samples: Samples, name: str, **labels: str) -> float:
    (value,) = select(samples, name, **labels).values()
    return value


def test_metrics_count_a_known_mix_exactly_and_hold_no_key(
    gateway: GatewayFactory, fake: FakeUpstream, http: httpx.Client
) -> None:
    keys = {f"{p.upper()}_API_KEY_{i}": random_secret() for p, n in (("gemini", 2), ("openrouter", 2)) for i in (1, 2)}
    keys["ANTHROPIC_API_KEY_1"] = random_secret()
    env = {
        "AI_PROVIDER": "gemini",
        "FALLBACK_ORDER": "anthropic,openrouter",
        "KEYWHEEL_PROVIDER_ATTEMPTS": "1",
        **keys,
    }
    served = gateway(gemini=0, openrouter=0, anthropic=0, **env)
    settings = settings_from_env(fake_env(fake, gemini=0, openrouter=0, anthropic=0, **env))
    model = {name: cfg.model for name, cfg in settings.providers.items()}
    g1, g2 = keys["GEMINI_API_KEY_1"], keys["GEMINI_API_KEY_2"]
    o1, o2 = keys["OPENROUTER_API_KEY_1"], keys["OPENROUTER_API_KEY_2"]
    a1 = keys["ANTHROPIC_API_KEY_1"]
    oai = openai.OpenAI(base_url=served.url + "/v1", api_key=GATEWAY_KEY, max_retries=0)
    claude = anthropic.Anthropic(base_url=served.url, api_key=GATEWAY_KEY, max_retries=0)

    # 0. no gateway key: 401 before any attempt.
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=served.url + "/v1", api_key="wrong", max_retries=0).chat.completions.create(
            model="auto", messages=MESSAGES
        )
    # 1. ok (OpenAI in, OpenRouter out) and 2. ok (Anthropic in, OpenRouter out): one attempt each.
    r1 = oai.chat.completions.create(model=f"openrouter/{model['openrouter']}", messages=MESSAGES, extra_headers=OFF)
    r2 = claude.messages.create(
        model=f"openrouter/{model['openrouter']}", max_tokens=16, messages=CLAUDE_MESSAGES, extra_headers=OFF
    )
    # 3. both Gemini keys 429, then the failover to Anthropic serves: three attempts.
    fake.set(g1, "rate_limit", retry_after=30.0, times=1)
    fake.set(g2, "rate_limit", retry_after=30.0, times=1)
    r3 = oai.chat.completions.with_raw_response.create(model="auto", messages=MESSAGES)
    assert r3.headers["x-keywheel-provider"] == "anthropic"
    assert [a.rsplit(" ", 1)[1] for a in r3.headers["x-keywheel-attempts"].split(", ")] == [
        "RateLimited",
        "RateLimited",
        "ok",
    ]
    # 4. both OpenRouter keys answer 401: two attempts, the call fails.
    fake.set(o1, "invalid", times=1)
    fake.set(o2, "invalid", times=1)
    with pytest.raises(openai.APIStatusError) as invalid:
        oai.chat.completions.create(model=f"openrouter/{model['openrouter']}", messages=MESSAGES, extra_headers=OFF)
    # 5. Anthropic answers 500 (one try of a provider, no fallback): one attempt, the call fails.
    fake.set(a1, "server_error", times=1)
    with pytest.raises(openai.APIStatusError) as broken:
        oai.chat.completions.create(model=model["anthropic"], messages=MESSAGES, extra_headers=OFF)

    assert http.get(served.url + "/metrics").status_code == 401  # the admin key's, as /status
    assert http.get(served.url + "/metrics", headers={"authorization": f"Bearer {GATEWAY_KEY}"}).status_code == 401
    scrape = http.get(served.url + "/metrics", headers=ADMIN)
    assert scrape.status_code == 200
    assert scrape.headers["content-type"].startswith("text/plain; version=0.0.4")
    samples = parse(scrape.text)

    # Requests, by dialect and status; attempts per request.
    requests = {
        (dict(lab)["dialect"], dict(lab)["status"]): v for lab, v in select(samples, "keywheel_requests_total").items()
    }
    statuses = [str(invalid.value.status_code), str(broken.value.status_code)]
    assert requests == Counter([("openai", "401"), ("openai", "200"), ("anthropic", "200"), ("openai", "200")]) + (
        Counter(("openai", s) for s in statuses)
    )
    assert only(samples, "keywheel_request_attempts_count") == 6
    assert only(samples, "keywheel_request_attempts_sum") == 0 + 1 + 1 + 3 + 2 + 1
    assert only(samples, "keywheel_request_attempts_bucket", le="0.0") == 1
    assert only(samples, "keywheel_request_attempts_bucket", le="1.0") == 4
    assert only(samples, "keywheel_request_attempts_bucket", le="2.0") == 5
    assert only(samples, "keywheel_request_attempts_bucket", le="+Inf") == 6

    # One duration observation per upstream attempt, by provider, model and error type.
    counts = {
        (d["gen_ai_provider_name"], d["gen_ai_request_model"], d["error_type"]): v
        for lab, v in select(samples, "gen_ai_client_operation_duration_seconds_count").items()
        for d in [dict(lab)]
    }
    assert counts == {
        ("openrouter", model["openrouter"], ""): 2,
        ("gemini", model["gemini"], "RateLimited"): 2,
        ("anthropic", model["anthropic"], ""): 1,
        ("openrouter", model["openrouter"], "KeyInvalid"): 2,
        ("anthropic", model["anthropic"], "ServerError"): 1,
    }
    assert all(
        dict(lab)["gen_ai_operation_name"] == "chat" for lab in select(samples, "gen_ai_client_token_usage_count")
    )
    for labels, count in select(samples, "gen_ai_client_operation_duration_seconds_count").items():
        inf = dict(labels) | {"le": "+Inf"}
        assert samples[("gen_ai_client_operation_duration_seconds_bucket", frozenset(inf.items()))] == count
        assert samples[("gen_ai_client_operation_duration_seconds_sum", labels)] > 0

    # Tokens: one input and one output observation per attempt that served, summing what the answers said.
    assert r1.usage is not None and r2.usage is not None
    r3_usage = r3.parse().usage
    assert r3_usage is not None
    served_in = r1.usage.prompt_tokens + r2.usage.input_tokens + r3_usage.prompt_tokens
    served_out = r1.usage.completion_tokens + r2.usage.output_tokens + r3_usage.completion_tokens
    for kind, total in (("input", served_in), ("output", served_out)):
        assert sum(select(samples, "gen_ai_client_token_usage_count", gen_ai_token_type=kind).values()) == 3
        assert sum(select(samples, "gen_ai_client_token_usage_sum", gen_ai_token_type=kind).values()) == total
    assert not select(samples, "gen_ai_client_token_usage_count", error_type="RateLimited")

    # Key gauges, read from the status at scrape time: OpenRouter's keys are out, and Gemini rests as
    # a whole (both its keys were limited at once: the provider is throttled, its keys stay active).
    states = {
        (d["provider"], d["state"]): v
        for lab, v in select(samples, "keywheel_key_state").items()
        for d in [dict(lab)]
        if v == 1
    }
    assert set(states) == {("gemini", "active"), ("openrouter", "disabled"), ("anthropic", "active")}
    assert sum(select(samples, "keywheel_key_state", state="disabled").values()) == 2
    assert sum(select(samples, "keywheel_key_state", state="active").values()) == 3
    assert len(select(samples, "keywheel_key_state")) == 5 * 3  # every key, every state
    assert all(v == 0 for v in select(samples, "keywheel_key_rest_seconds").values())
    assert 20 < only(samples, "keywheel_provider_throttled_seconds", provider="gemini") <= 30
    assert only(samples, "keywheel_provider_throttled_seconds", provider="anthropic") == 0
    assert not select(samples, "keywheel_probes_total")  # no key check ran

    # No piece of any key, anywhere in the scrape (labels name keys by fingerprint).
    for secret in keys.values():
        leaked = [p for p in pieces(secret) if p in scrape.text]
        assert not leaked, f"a key piece is in the scrape: {leaked[:1]}"


def test_metrics_public_when_asked_and_gone_when_off(gateway: GatewayFactory, http: httpx.Client) -> None:
    public = gateway(KEYWHEEL_METRICS_PUBLIC="true")
    answer = http.get(public.url + "/metrics")
    assert answer.status_code == 200 and "# TYPE keywheel_requests_total counter" in answer.text
    assert http.post(public.url + "/metrics").status_code == 405
    off = gateway(KEYWHEEL_METRICS="off", KEYWHEEL_METRICS_PUBLIC="true")
    for headers in ({}, ADMIN):
        gone = http.get(off.url + "/metrics", headers=headers)
        assert gone.status_code == 404 and "KEYWHEEL_METRICS=off" in gone.text
