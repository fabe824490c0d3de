"""Micro-benchmark: the gateway's per-request body work on a pass-through, before and after lenient pass-through.

``old``: orjson parse, the dialect's full ``parse_request``, re-encode with the model set (what every
request paid before).  ``new``: orjson parse, ``peek`` (model, stream flag), then either the caller's
bytes as they are (model unchanged: ``new-same``) or a re-encode after the exact-integer check
(model rewritten, e.g. ``auto``: ``new-rewrite``); ``new-bigint``: a rewrite of a body holding a 30-digit
integer (re-encoded from the stdlib's exact parse).  ``python bench/passthrough.py``; µs per request.
"""

from __future__ import annotations

import functools
import json
import random
import timeit
from typing import Any

import orjson

from keywheel.gateway.dialects import DIALECTS
from keywheel.gateway.passthrough import lost_ints as _lost_ints
from keywheel.gateway.passthrough import unchanged as _unchanged
from keywheel.providers._common import dumps


def claude_code_like(turns: int) -> dict[str, Any]:
    """A Claude Code-shaped body: long system prompt, tools, a conversation with tool calls."""
    rng = random.Random(1)
    words = ["the", "file", "src/app.py", "line", "123", "def", "return", "2026-11-30", "{", "}", "0x1f", "ok"]
    text = " ".join(rng.choice(words) for _ in range(40_000))
    schema = {"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]}
    tools = [{"name": f"Tool{i}", "description": text[:1500], "input_schema": schema} for i in range(20)]
    messages: list[dict[str, Any]] = [{"role": "user", "content": [{"type": "text", "text": text[:3000]}]}]
    messages.append({"role": "system", "content": [], "output_config": {"effort": "medium"}})
    for i in range(turns):
        call = {"type": "tool_use", "id": f"toolu_{i}", "name": "Tool1", "input": {"path": f"/tmp/{i}"}}
        messages.append({"role": "assistant", "content": [{"type": "text", "text": text[i * 50 : i * 50 + 200]}, call]})
        result = {"type": "tool_result", "tool_use_id": f"toolu_{i}", "content": text[i * 90 : i * 90 + 1500]}
        messages.append({"role": "user", "content": [result]})
    system = [{"type": "text", "text": text[:20_000]}]
    return {
        "model": "claude-sonnet-4-6",
        "max_tokens": 32_000,
        "stream": True,
        "system": system,
        "messages": messages,
        "tools": tools,
        "metadata": {"user_id": "u" * 64},
    }


def old(raw: bytes, model: str) -> bytes:
    body = orjson.loads(raw)
    DIALECTS["anthropic"].parse_request(body)
    return dumps({**body, "model": model, "stream": True})


def new(raw: bytes, model: str) -> bytes:
    body = orjson.loads(raw)
    DIALECTS["anthropic"].peek(body)
    if _unchanged("anthropic", body, model, True):
        return raw
    out = dumps({**body, "model": model, "stream": True})
    if _lost_ints(out):
        out = dumps({**json.loads(raw), "model": model, "stream": True})
    return out


def main() -> None:
    small = orjson.dumps(
        {
            "model": "claude-sonnet-4-6",
            "max_tokens": 100,
            "stream": True,
            "messages": [{"role": "user", "content": "hi"}],
        }
    )
    for label, raw in (
        ("small", small),
        ("claude-code 10 turns", orjson.dumps(claude_code_like(10))),
        ("claude-code 60 turns", orjson.dumps(claude_code_like(60))),
    ):
        n = max(20, int(2_000_000 / len(raw)))
        row = [f"{label} ({len(raw) / 1000:.0f} kB):"]
        big = raw[:-1] + b',"n":123456789012345678901234567890}'
        for name, fn, model, body in (
            ("old", old, "claude-sonnet-4-6", raw),
            ("new-same", new, "claude-sonnet-4-6", raw),
            ("new-rewrite", new, "claude-haiku-4-5", raw),
            ("new-bigint", new, "claude-haiku-4-5", big),
        ):
            runs = timeit.repeat(functools.partial(fn, body, model), number=n, repeat=5)
            row.append(f"{name} {min(runs) / n * 1e6:.1f} µs")
        print("  ".join(row))


if __name__ == "__main__":
    main()
