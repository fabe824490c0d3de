"""Lenient pass-through and careful translation, with Claude Code 2.1's request shapes, over real sockets.

A body in the upstream's own dialect reaches it as the same JSON value (system turns inside
``messages``, unknown fields and block types, a 30-digit integer); across dialects the same body is
translated, the system turns joining the system prompt.  Also the paths clients use (``HEAD /``,
``/models/…`` without a version, model lists by caller) and ``count_tokens``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import openai
import pytest
from google import genai
from google.genai import types as gtypes

from keywheel.testing import FakeUpstream
from tests.gateway.conftest import ADMIN_KEY, GATEWAY_KEY, Served, start_gateway
from tests.helpers import fake_env

AUTH = {"authorization": f"Bearer {GATEWAY_KEY}"}
ANTHROPIC = {"x-api-key": GATEWAY_KEY, "anthropic-version": "2023-06-01", "content-type": "application/json"}
BIG = 123456789012345678901234567890  # orjson would read it as 1.2345678901234568e+29

# What Claude Code 2.1 sends, in miniature: system turns inside messages (one with text, one empty with
# a per-turn control field), a block type no dialect knows, unknown top-level fields, a 30-digit integer.
SHAPES = (
    b'{"model": "MODEL", "max_tokens": 64, "stream": STREAM,\n'
    b' "system": [{"type": "text", "text": "You are terse."}],\n'
    b' "messages": [\n'
    b'  {"role": "user", "content": [{"type": "text", "text": "hello"},'
    b' {"type": "future_block_v9", "payload": {"n": 123456789012345678901234567890}}]},\n'
    b'  {"role": "system", "content": [{"type": "text", "text": "Answer in French."}]},\n'
    b'  {"role": "system", "content": [], "output_config": {"effort": "medium"}},\n'
    b'  {"role": "user", "content": "and now?"}],\n'
    b' "metadata": {"user_id": "u-1", "counter": 123456789012345678901234567890},\n'
    b' "context_management": {"edits": []}, "float": 0.1}'
)


def shapes(model: str, stream: bool = False) -> bytes:
    return SHAPES.replace(b"MODEL", model.encode()).replace(b"STREAM", b"true" if stream else b"false")


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, fake_server: FakeUpstream) -> Iterator[Served]:
    env = fake_env(fake_server, AI_PROVIDER="anthropic", KEYWHEEL_GATEWAY_KEYS=GATEWAY_KEY)
    env["KEYWHEEL_ADMIN_KEY"] = ADMIN_KEY
    gateway = start_gateway(env, tmp_path_factory.mktemp("lenient") / "gateway.log")
    yield gateway
    gateway.stop()


@pytest.fixture
def http(fake: FakeUpstream) -> Iterator[httpx.Client]:  # noqa: ARG001  (``fake`` resets the record)
    with httpx.Client(timeout=30) as client:
        yield client


def answer_text(resp: httpx.Response) -> str:
    """The text of an Anthropic answer, whole or streamed."""
    if not resp.headers["content-type"].startswith("text/event-stream"):
        return "".join(b.get("text", "") for b in resp.json()["content"])
    events = [json.loads(line[6:]) for line in resp.text.splitlines() if line.startswith("data: ")]
    return "".join(e["delta"].get("text", "") for e in events if e["type"] == "content_block_delta")


def chats(fake: FakeUpstream) -> list[Any]:
    return [r for r in fake.requests if r.method == "POST"]


# ------------------------------------------------------------------ pass-through


@pytest.mark.parametrize(
    ("model", "stream"),
    [
        ("claude-sonnet-4-6", True),  # nothing changes: the caller's bytes go as they are
        ("auto", False),  # the model changes: re-encoded, from an exact parse
        ("anthropic/claude-haiku-4-5", True),
    ],
)
def test_claude_code_shapes_reach_anthropic_as_the_same_json_value(
    served: Served, fake: FakeUpstream, http: httpx.Client, model: str, stream: bool
) -> None:
    sent = shapes(model, stream)
    resp = http.post(served.url + "/v1/messages", content=sent, headers=ANTHROPIC)
    assert resp.status_code == 200, resp.text
    assert resp.headers["x-keywheel-provider"] == "anthropic"
    assert "from fake anthropic" in answer_text(resp)
    (record,) = chats(fake)
    assert record.path == "/v1/messages"
    expected = json.loads(sent)
    expected["model"] = model.removeprefix("anthropic/") if model != "auto" else "claude-sonnet-4-6"
    assert record.body == expected  # parsed exactly (stdlib) on both sides
    assert record.body["metadata"]["counter"] == BIG and isinstance(record.body["metadata"]["counter"], int)
    assert record.body["messages"][2] == {"role": "system", "content": [], "output_config": {"effort": "medium"}}


def test_other_dialects_pass_through_leniently(served: Served, fake: FakeUpstream, http: httpx.Client) -> None:
    body = (
        b'{"model": "openrouter/openai/gpt-4o-mini", "messages": [{"role": "critic", "content": "x",'
        b' "mood": 1}, {"role": "user", "content": [{"type": "hologram", "id": 123456789012345678901234567890}]}],'
        b' "n_big": 123456789012345678901234567890}'
    )
    resp = http.post(served.url + "/v1/chat/completions", content=body, headers={**AUTH, "x-keywheel-fallback": "off"})
    assert resp.status_code == 200, resp.text
    (record,) = chats(fake)
    expected = json.loads(body)
    expected["model"] = "openai/gpt-4o-mini"
    expected["stream"] = False
    assert record.body == expected
    gemini = (
        b'{"contents": [{"role": "user", "parts": [{"text": "hi"},'
        b' {"hologram": {"n": 123456789012345678901234567890}}]}]}'
    )
    url = served.url + "/v1beta/models/gemini-2.5-flash:generateContent"
    resp = http.post(url, content=gemini, headers={"x-goog-api-key": GATEWAY_KEY, "x-keywheel-fallback": "off"})
    assert resp.status_code == 200, resp.text
    assert chats(fake)[-1].body == json.loads(gemini)


# ------------------------------------------------------------------ translation


@pytest.mark.parametrize(("model", "upstream"), [("gemini/gemini-2.5-flash", "gemini"), ("openrouter/x/y", "openai")])
def test_claude_code_shapes_are_translated_with_system_turns_in_the_system_prompt(
    served: Served, fake: FakeUpstream, http: httpx.Client, model: str, upstream: str
) -> None:
    resp = http.post(served.url + "/v1/messages", content=shapes(model), headers=ANTHROPIC)
    assert resp.status_code == 200, resp.text
    answer = resp.json()
    assert f"from fake {upstream}" in answer["content"][0]["text"]
    assert answer["model"] == model.split("/", 1)[1]  # the model that served, not the caller's name for it
    (record,) = chats(fake)
    if upstream == "gemini":
        system = " ".join(p["text"] for p in record.body["systemInstruction"]["parts"])
        turns = record.body["contents"]
        texts = [p.get("text") for c in turns for p in c["parts"]]
    else:
        system = record.body["messages"][0]["content"]
        assert record.body["messages"][0]["role"] == "system"
        turns = record.body["messages"][1:]
        texts = [t for m in turns for t in ([m["content"]] if isinstance(m["content"], str) else m["content"])]
        texts = [t if isinstance(t, str) else t["text"] for t in texts]
    assert system.index("You are terse.") < system.index("Answer in French.")  # in conversation order
    assert texts == ["hello", "and now?"]  # the unknown block dropped, the empty system turn too
    assert "future_block" not in json.dumps(record.body) and "effort" not in json.dumps(record.body)


def test_translated_streams_name_the_model_that_served(served: Served, http: httpx.Client) -> None:
    client = anthropic.Anthropic(base_url=served.url, api_key=GATEWAY_KEY, max_retries=0)
    with client.messages.stream(
        model="gemini/gemini-2.5-flash", max_tokens=20, messages=[{"role": "user", "content": "hi"}]
    ) as stream:
        final = stream.get_final_message()
    assert final.model == "gemini-2.5-flash"
    oai = openai.OpenAI(base_url=served.url + "/v1", api_key=GATEWAY_KEY, max_retries=0)
    chunks = list(
        oai.chat.completions.create(
            model="gemini/gemini-2.5-flash", messages=[{"role": "user", "content": "hi"}], stream=True
        )
    )
    assert {c.model for c in chunks} == {"gemini-2.5-flash"}
    done = oai.chat.completions.create(model="auto", messages=[{"role": "user", "content": "hi"}])
    assert done.model == "claude-sonnet-4-6"  # translated from the chain's first provider
    passed = client.messages.create(model="auto", max_tokens=20, messages=[{"role": "user", "content": "hi"}])
    assert passed.model == "claude-sonnet-4-6"  # a pass-through: the upstream's own answer, for the model sent


def test_a_mixed_chain_skips_what_cannot_be_translated(served: Served, fake: FakeUpstream, http: httpx.Client) -> None:
    pdf = {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0="}}
    body = {"model": "gemini/gemini-2.5-flash", "max_tokens": 20, "messages": [{"role": "user", "content": [pdf]}]}
    # Gemini first, but a PDF does not translate: the chain's Anthropic provider takes the body as it is.
    resp = http.post(served.url + "/v1/messages", json=body, headers=ANTHROPIC)
    assert resp.status_code == 200, resp.text
    assert [r.dialect for r in chats(fake)] == ["anthropic"]
    assert chats(fake)[0].body["messages"] == body["messages"]
    # Without fallback, only Gemini: the translation's 400 names the field.
    resp = http.post(served.url + "/v1/messages", json=body, headers={**ANTHROPIC, "x-keywheel-fallback": "off"})
    assert resp.status_code == 400
    assert resp.json()["error"]["message"].startswith("messages[0].content[0]: a block of type 'document'")
    assert len(chats(fake)) == 1


# ------------------------------------------------------------------ paths


def test_root_answers_without_auth_and_holds_no_data(served: Served, http: httpx.Client) -> None:
    head = http.head(served.url + "/")
    assert head.status_code == 200 and head.content == b""
    page = http.get(served.url + "/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert b"keywheel" in page.content and b"test-" not in page.content and b"#1" not in page.content
    assert http.post(served.url + "/").status_code == 405


def test_gemini_paths_without_a_version_and_model_lists_by_caller(
    served: Served, fake: FakeUpstream, http: httpx.Client
) -> None:
    body = {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}
    resp = http.post(served.url + "/models/gemini-2.5-flash:generateContent", json=body, params={"key": GATEWAY_KEY})
    assert resp.status_code == 200, resp.text
    assert "from fake gemini" in resp.json()["candidates"][0]["content"]["parts"][0]["text"]
    assert chats(fake)[-1].path.endswith("/models/gemini-2.5-flash:generateContent")
    for version in ("v1beta", "v1"):
        client = genai.Client(
            api_key=GATEWAY_KEY, http_options=gtypes.HttpOptions(base_url=served.url, api_version=version)
        )
        names = [m.name for m in client.models.list()]
        assert "models/gemini/gemini-2.5-flash" in names and "models/auto" in names, (version, names)
    ids = [m.id for m in openai.OpenAI(base_url=served.url + "/v1", api_key=GATEWAY_KEY).models.list()]
    assert "anthropic/claude-sonnet-4-6" in ids
    listed = anthropic.Anthropic(base_url=served.url, api_key=GATEWAY_KEY).models.list()
    assert "anthropic/claude-sonnet-4-6" in [m.id for m in listed]
    # One model, as each SDK fetches it.
    assert client.models.get(model="gemini-2.5-flash").name == "models/gemini-2.5-flash"
    one = openai.OpenAI(base_url=served.url + "/v1", api_key=GATEWAY_KEY).models.retrieve("gemini/gemini-2.5-flash")
    assert one.id == "gemini/gemini-2.5-flash" and one.owned_by == "gemini"
    claude = anthropic.Anthropic(base_url=served.url, api_key=GATEWAY_KEY).models.retrieve("auto")
    assert claude.id == "auto" and claude.type == "model"
    assert http.get(served.url + "/v1/models/nope/x", headers=AUTH).status_code == 404


# ------------------------------------------------------------------ count_tokens


def test_count_tokens_by_where_the_model_routes(served: Served, fake: FakeUpstream, http: httpx.Client) -> None:
    url = served.url + "/v1/messages/count_tokens"
    body = {"system": "be brief", "messages": [{"role": "user", "content": "one two three"}]}
    resp = http.post(url, json={**body, "model": "claude-sonnet-4-6"}, headers=ANTHROPIC)
    assert resp.status_code == 200, resp.text
    assert "x-keywheel-estimate" not in resp.headers and resp.headers["x-keywheel-provider"] == "anthropic"
    anthropic_count = resp.json()["input_tokens"]
    record = chats(fake)[-1]
    assert record.path == "/v1/messages/count_tokens" and record.body == {**body, "model": "claude-sonnet-4-6"}

    resp = http.post(url, json={**body, "model": "gemini/gemini-2.5-flash"}, headers=ANTHROPIC)
    assert resp.status_code == 200, resp.text
    assert resp.headers["x-keywheel-provider"] == "gemini" and "x-keywheel-estimate" not in resp.headers
    assert chats(fake)[-1].path.endswith("/models/gemini-2.5-flash:countTokens")
    assert resp.json()["input_tokens"] == anthropic_count > 0  # the fake counts words the same in both

    before = len(fake.requests)
    resp = http.post(url, json={**body, "model": "openrouter/openai/gpt-4o-mini"}, headers=ANTHROPIC)
    assert resp.status_code == 200 and resp.headers["x-keywheel-estimate"] == "true"
    assert resp.json()["input_tokens"] > 0 and len(fake.requests) == before

    # Key rotation like any request: the first key rests, the second counts.
    fake.set("test-anthropic-key-1", "rate_limit", retry_after=30)
    fake.set("test-anthropic-key-2", "ok")
    for _ in range(2):
        resp = http.post(url, json={**body, "model": "claude-sonnet-4-6"}, headers=ANTHROPIC)
        assert resp.status_code == 200, resp.text
    assert resp.headers["x-keywheel-key"].startswith("anthropic#2")
    assert http.post(url, json=body, headers=ANTHROPIC).status_code == 400  # no model


def test_a_lost_integer_shows_in_orjsons_encoding() -> None:
    """orjson reads an integer beyond 64 bits as a float; its encoding then has an exponent of 18 or more."""
    import orjson

    from keywheel.gateway.passthrough import lost_ints as _lost_ints

    for lost in (BIG, 2**64, -(2**63) - 1):
        assert _lost_ints(orjson.dumps({"n": orjson.loads(str(lost))}))
    for kept in (2**64 - 1, -(2**63), 10**17, 0.5, 1e17, "a+b", "e+", "+"):
        assert not _lost_ints(orjson.dumps({"n": kept}))
