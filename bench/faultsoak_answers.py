"""The fault soak's requests and how each answer is judged (see faultsoak.py)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import orjson

from keywheel.testing.dialects import QUICK_BROWN_FOX

GATEWAY_KEY = "test-gateway-key-soak"
MODELS = {"gemini": "gemini-2.5-flash", "openrouter": "openai/gpt-4o-mini", "anthropic": "claude-sonnet-4-5"}
ALLOWED_5XX = {502, 503, 504}
REPLY = re.compile(r"Reply (\d+) from fake (anthropic|gemini|openai): " + re.escape(QUICK_BROWN_FOX))
FAKE_DIALECTS = ("anthropic", "gemini", "openai")

# --- What is sent ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Shape:
    name: str
    dialect: str  # the caller's: openai | anthropic | gemini
    stream: bool
    path: str
    headers: dict[str, str]
    body: bytes


def _json(obj: object) -> bytes:
    return orjson.dumps(obj)


def shapes(base: str) -> list[Shape]:
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 2+2?"}]
    user = [{"role": "user", "content": "What is 2+2?"}]
    openai_h = {"Authorization": f"Bearer {GATEWAY_KEY}", "Content-Type": "application/json"}
    anthropic_h = {"x-api-key": GATEWAY_KEY, "anthropic-version": "2023-06-01", "Content-Type": "application/json"}
    gemini_h = {"x-goog-api-key": GATEWAY_KEY, "Content-Type": "application/json"}

    def openai(model: str, stream: bool) -> bytes:
        return _json({"model": model, "max_tokens": 64, "messages": messages, "stream": stream})

    def anthropic(model: str, stream: bool) -> bytes:
        return _json({"model": model, "max_tokens": 64, "system": "Be brief.", "messages": user, "stream": stream})

    gemini_body = _json(
        {
            "contents": [{"role": "user", "parts": [{"text": "What is 2+2?"}]}],
            "systemInstruction": {"parts": [{"text": "Be brief."}]},
            "generationConfig": {"maxOutputTokens": 64},
        }
    )
    chat, msgs, gem = f"{base}/v1/chat/completions", f"{base}/v1/messages", f"{base}/v1beta/models/gemini-2.5-flash:"
    router, claude = "openrouter/openai/gpt-4o-mini", MODELS["anthropic"]
    return [
        Shape("openai auto (gemini first)", "openai", False, chat, openai_h, openai("auto", False)),
        Shape("openai auto, stream", "openai", True, chat, openai_h, openai("auto", True)),
        Shape("openai → openrouter", "openai", False, chat, openai_h, openai(router, False)),
        Shape("openai → openrouter, stream", "openai", True, chat, openai_h, openai(router, True)),
        Shape("anthropic → anthropic", "anthropic", False, msgs, anthropic_h, anthropic(claude, False)),
        Shape("anthropic → anthropic, stream", "anthropic", True, msgs, anthropic_h, anthropic(claude, True)),
        Shape("anthropic → openrouter, stream", "anthropic", True, msgs, anthropic_h, anthropic(router, True)),
        Shape("gemini → gemini", "gemini", False, gem + "generateContent", gemini_h, gemini_body),
        Shape("gemini → gemini, stream", "gemini", True, gem + "streamGenerateContent?alt=sse", gemini_h, gemini_body),
        Shape("openai → anthropic, stream", "openai", True, chat, openai_h, openai("anthropic/" + claude, True)),
    ]


# --- How an answer is judged -----------------------------------------------------------------------


def is_reply(text: str) -> bool:
    return REPLY.fullmatch(text) is not None


def is_reply_prefix(text: str) -> bool:
    """``text`` is the start of one fake reply (what a stream cut mid-way may have carried)."""
    if not text:
        return True
    number = re.match(r"Reply (\d+)", text)
    n = number.group(1) if number else "0"
    return any(f"Reply {n} from fake {d}: {QUICK_BROWN_FOX}".startswith(text) for d in FAKE_DIALECTS)


def error_shaped(dialect: str, status: int, body: bytes) -> bool:
    """JSON in the caller's dialect's error shape (what its SDK needs to raise its own error)."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        return False
    if not isinstance(doc, dict) or not isinstance(doc.get("error"), dict):
        return False
    error = doc["error"]
    if not isinstance(error.get("message"), str):
        return False
    if dialect == "anthropic":
        return doc.get("type") == "error" and isinstance(error.get("type"), str)
    if dialect == "gemini":
        return error.get("code") == status and isinstance(error.get("status"), str)
    return True


def _sse_events(body: bytes) -> list[tuple[str | None, bytes]]:
    events: list[tuple[str | None, bytes]] = []
    for block in body.replace(b"\r\n", b"\n").split(b"\n\n"):
        name, data = None, []
        for line in block.split(b"\n"):
            if line.startswith(b"event:"):
                name = line[6:].strip().decode(errors="replace")
            elif line.startswith(b"data:"):
                data.append(line[5:].strip())
        if data or name:
            events.append((name, b"\n".join(data)))
    return events


def _text_of(dialect: str, doc: Any) -> str:
    """The reply text of a whole (non-streamed) answer."""
    if dialect == "openai":
        return str(doc["choices"][0]["message"]["content"])
    if dialect == "anthropic":
        return "".join(b["text"] for b in doc["content"] if b.get("type") == "text")
    return "".join(p.get("text", "") for p in doc["candidates"][0]["content"]["parts"])


def judge_stream(dialect: str, body: bytes) -> tuple[str, str]:
    """("ok" | "inband_error" | "malformed", detail) for a 200 event stream."""
    text: list[str] = []
    finished = errored = False
    after_end = 0  # events after the end or the error: neither may be followed by more content
    for name, data in _sse_events(body):
        if finished or errored:
            after_end += data not in (b"[DONE]", b"")
            continue
        if dialect == "openai":
            if data == b"[DONE]":
                finished = True
                continue
            if not data:
                continue
            doc = orjson.loads(data)
            if "error" in doc:
                errored = True
                continue
            for choice in doc.get("choices") or []:
                text.append((choice.get("delta") or {}).get("content") or "")
        elif dialect == "anthropic":
            if name == "error":
                errored = True
            elif name == "message_stop":
                finished = True
            elif name == "content_block_delta":
                delta = orjson.loads(data)["delta"]
                text.append(delta.get("text", "") if delta.get("type") == "text_delta" else "")
        else:
            doc = orjson.loads(data)
            if "error" in doc:
                errored = True
                continue
            candidate = doc["candidates"][0]
            text.extend(p.get("text", "") for p in (candidate.get("content") or {}).get("parts", []))
            finished = "finishReason" in candidate
    whole = "".join(text)
    if after_end:
        return "malformed", f"{after_end} event(s) after the end of the stream: {body[-300:]!r}"
    if finished and not errored:
        return ("ok", "") if is_reply(whole) else ("malformed", f"stream text {whole[:200]!r}")
    if errored:
        return ("inband_error", "") if is_reply_prefix(whole) else ("malformed", f"text before error {whole[:200]!r}")
    return "malformed", f"stream with neither end nor error ({len(body)} bytes): {body[-300:]!r}"


def judge(shape: Shape, status: int, headers: Any, body: bytes) -> tuple[str, str]:
    """The outcome of one answer and, when it is an anomaly, what was wrong."""
    dialect = shape.dialect
    try:
        if status == 200:
            if shape.stream:
                if not headers.get("content-type", "").startswith("text/event-stream"):
                    return "malformed", f"200 stream with content-type {headers.get('content-type')!r}"
                return judge_stream(dialect, body)
            text = _text_of(dialect, orjson.loads(body))
            return ("ok", "") if is_reply(text) else ("malformed", f"200 text {text[:200]!r}")
    except (orjson.JSONDecodeError, KeyError, IndexError, TypeError, AttributeError) as exc:
        return "malformed", f"200 {type(exc).__name__}: {body[:300]!r}"
    if not error_shaped(dialect, status, body):
        return "malformed", f"{status} not a {dialect} error: {body[:300]!r}"
    if status >= 500 and status not in ALLOWED_5XX and not (status == 529 and dialect == "anthropic"):
        return "bad_5xx", f"{status}: {body[:300]!r}"
    if status == 429 and "retry-after" not in headers:
        return "malformed", f"429 without retry-after: {body[:300]!r}"
    return f"http_{status}", ""
