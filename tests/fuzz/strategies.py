"""Hypothesis strategies: each inbound dialect's request bodies, mostly valid with hostile
mutations, and raw hostile HTTP.

A body is built from a valid skeleton whose leaves are sometimes hostile (wrong types, 64+-bit
and negative integers, floats, surrogates, NULs, very long strings, unknown roles and block
types, empty lists, model names that try to steer a URL), then 0–3 mutations replace, delete or
wrap any value at any depth.  JSON is written by :func:`encode`, which can emit what Python's
``json`` cannot be asked for (raw nesting thousands deep, lone surrogates as invalid UTF-8).

Adding a dialect is one strategy returning :class:`Case` and one line in ``BODY_STRATEGIES``.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from hypothesis import strategies as st

from tests.gateway.conftest import GATEWAY_KEY


@dataclass(frozen=True)
class Raw:
    """JSON text inserted as is."""

    text: str


@dataclass
class Case:
    dialect: str
    target: str
    body: bytes
    headers: list[tuple[str, str]] = field(default_factory=list)
    model: Any = None  # the model the caller asked for, for the upstream-path check

    def __repr__(self) -> str:
        body = self.body if len(self.body) < 600 else self.body[:600] + b"..."
        return f"Case({self.dialect}, POST {self.target[:300]!r}, headers={self.headers!r}, body={body!r})"


def encode(value: Any, ascii_only: bool = True) -> str:
    if isinstance(value, Raw):
        return value.text
    if isinstance(value, dict):
        items = (f"{json.dumps(str(k), ensure_ascii=ascii_only)}:{encode(v, ascii_only)}" for k, v in value.items())
        return "{" + ",".join(items) + "}"
    if isinstance(value, list):
        return "[" + ",".join(encode(v, ascii_only) for v in value) + "]"
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, int):
        return str(value)  # any size
    if isinstance(value, float):
        return json.dumps(value)  # inf becomes Infinity: not JSON, which is a fine hostile input too
    return json.dumps(value, ensure_ascii=ascii_only)


def to_bytes(value: Any, ascii_only: bool) -> bytes:
    # Non-ASCII output keeps lone surrogates as (invalid) UTF-8 bytes: another hostile input.
    return encode(value, ascii_only).encode("utf-8", "surrogatepass")


# ------------------------------------------------------------------------------------- leaves

# Hypothesis favours the ends of a range and "simple" branches, so plain one_of() would pick the
# hostile branch far more often than its share: choose from a list with the rare case mid-list.
_RARELY = [False] * 5 + [True] + [False] * 5


@st.composite
def _sometimes(draw: st.DrawFn, usual: st.SearchStrategy[Any], rare: st.SearchStrategy[Any]) -> Any:
    return draw(rare) if draw(st.sampled_from(_RARELY)) else draw(usual)


SPECIAL_STRINGS = [
    "",
    " ",
    "\x00",
    "a\x00b",
    "\ud800",
    "\udfff",
    "\ud83d\ude00",
    "\u202e\u0000\uffff",
    "\ufeff",
    "\r\n\r\n",
    "null",
    "../../../etc/passwd",
    "%2F%2e%2e%00",
    "x" * 70_000,
]
HUGE_INTS = [2**63 - 1, 2**63, 2**64, 2**64 + 1, -(2**63) - 1, 10**30, -(10**30), 2**200, -1, 0]
ODD_FLOATS = [1e30, -1e30, 1e308, 1.5, -0.0, 5e-324, 1e19, 4096.0, float("inf")]

texts = _sometimes(st.text(max_size=24), st.sampled_from(SPECIAL_STRINGS))
short_texts = st.text(max_size=8)
ints = _sometimes(st.integers(1, 4096), st.one_of(st.sampled_from(HUGE_INTS), st.integers()))
numbers = _sometimes(
    st.floats(0, 2), st.one_of(st.sampled_from(ODD_FLOATS), st.integers(-2, 5), st.sampled_from(HUGE_INTS))
)
# Depths around the JSON encoder's limit (254), the gateway's (200) and the decoder's (1024).
_DEPTHS = st.one_of(st.integers(2, 50), st.sampled_from([199, 200, 201, 254, 255, 300, 1000, 1023, 1024, 1100, 3000]))
deep = st.one_of(
    _DEPTHS.map(lambda d: Raw("[" * d + "]" * d)),
    _DEPTHS.map(lambda d: Raw('{"a":' * d + "1" + "}" * d)),
)
scalars = st.one_of(st.none(), st.booleans(), ints, numbers, texts)
hostile = st.one_of(
    scalars,
    st.lists(scalars, max_size=3),
    st.dictionaries(short_texts, scalars, max_size=3),
    deep,
    st.just([]),
    st.just({}),
)


ASCII_ONLY = st.sampled_from([True, True, False, True, True])  # False: raw UTF-8, lone surrogates as invalid bytes


def maybe(valid: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Mostly ``valid``, sometimes anything at all."""
    return _sometimes(valid, hostile)


# --------------------------------------------------------------------------------- model names

GOOD_MODELS = [
    "auto",
    "gemini/gemini-2.5-flash",
    "gemini-2.5-flash",
    "gemini/models/gemini-2.5-flash",
    "gemini/tunedModels/my-model-1",
    "openrouter/openai/gpt-4o-mini",
    "anthropic/claude-sonnet-4",
    "claude-sonnet-4",
    "gpt-4o-mini",
]
HOSTILE_MODELS = [
    "gemini/x/../../v1beta/models/EVIL",
    "gemini/x/../../../../v1beta/models/EVIL",
    "gemini/..",
    "gemini/../x",
    "gemini/a%2F..%2F..%2Fb",
    "gemini/%2e%2e/%2e%2e/x",
    "gemini/a?key=x",
    "gemini/a?alt=json&x=",
    "gemini/a#frag",
    "gemini/a\x00b",
    "gemini/a\r\nx-evil: 1",
    "gemini/a b",
    "gemini/" + "a" * 10_000,
    "gemini/a:streamGenerateContent",
    "gemini/",
    "gemini//x",
    "gemini/\\..\\x",
    "gemini/é\ud800",
    "unknown/x",
    "/",
    "//",
    "../x",
    "",
    "gemini-../../x",
]
models = _sometimes(
    st.sampled_from(GOOD_MODELS),
    st.one_of(
        st.sampled_from(HOSTILE_MODELS),
        st.text(alphabet="ab./%?#:\\\x00 -2eEF", max_size=14).map(lambda s: "gemini/" + s),
        st.text(max_size=10),
    ),
)
model_values = maybe(models)


def fallback_headers() -> st.SearchStrategy[list[tuple[str, str]]]:
    # ``off`` makes a path-steering model name visible: no failover hides it behind another provider.
    return st.sampled_from([[], [("x-keywheel-fallback", "off")]])


# -------------------------------------------------------------------------------------- mutation


def _slots(value: Any, out: list[tuple[Any, Any]]) -> None:
    if isinstance(value, dict):
        for key in list(value):
            out.append((value, key))
            _slots(value[key], out)
    elif isinstance(value, list):
        for i in range(len(value)):
            out.append((value, i))
            _slots(value[i], out)


@st.composite
def mutated(draw: st.DrawFn, skeleton: st.SearchStrategy[Any]) -> Any:
    """A body from ``skeleton``, then 0–3 mutations anywhere in it."""
    body = copy.deepcopy(draw(skeleton))  # st.just() hands out one shared object: never mutate it
    for _ in range(draw(st.sampled_from([0, 1, 0, 2, 0, 3, 0, 1]))):
        slots: list[tuple[Any, Any]] = []
        _slots(body, slots)
        if not slots:
            break
        container, key = slots[draw(st.integers(0, len(slots) - 1))]
        action = draw(st.sampled_from(["replace", "replace", "delete", "wrap", "add"]))
        if action == "replace":
            container[key] = draw(hostile)
        elif action == "delete":
            del container[key]
        elif action == "wrap":
            container[key] = [container[key]]
        elif isinstance(container, dict):
            container[draw(short_texts)] = draw(hostile)
        else:
            container.append(draw(hostile))
    if draw(st.integers(0, 19)) == 13:  # not 0: Hypothesis favours boundary values
        body = copy.deepcopy(draw(hostile))  # the whole body of the wrong type
    return body


def _case(dialect: str, target: str, body: Any, headers: list[tuple[str, str]], model: Any, ascii_only: bool) -> Case:
    headers = [("content-type", "application/json"), *headers]
    return Case(dialect, target, to_bytes(body, ascii_only), headers, model)


# ------------------------------------------------------------------------------------- OpenAI

_openai_part = st.one_of(
    st.fixed_dictionaries({"type": st.just("text"), "text": maybe(texts)}),
    st.fixed_dictionaries(
        {
            "type": st.just("image_url"),
            "image_url": st.fixed_dictionaries(
                {"url": st.sampled_from(["https://example.com/a.png", "data:image/png;base64,AAAA", "data:,", "x"])}
            ),
        }
    ),
    st.fixed_dictionaries({"type": st.sampled_from(["input_audio", "file", "refusal", "video", "TEXT", ""])}),
)
_openai_call = st.fixed_dictionaries(
    {
        "id": maybe(short_texts),
        "type": st.just("function"),
        "function": st.fixed_dictionaries(
            {"name": maybe(short_texts), "arguments": st.one_of(st.just("{}"), st.just('{"a": 1}'), texts, hostile)}
        ),
    },
    optional={"extra": maybe(st.just({"thoughtSignature": "c2ln"}))},  # keywheel's carrier for provider fields
)
_openai_message = _sometimes(
    st.one_of(
        st.fixed_dictionaries(
            {"role": st.just("user"), "content": st.one_of(texts, st.lists(_openai_part, max_size=3))}
        ),
        st.fixed_dictionaries({"role": st.sampled_from(["system", "developer"]), "content": maybe(texts)}),
        st.fixed_dictionaries(
            {"role": st.just("assistant"), "content": maybe(texts)},
            optional={"tool_calls": st.lists(_openai_call, max_size=2)},
        ),
        st.fixed_dictionaries({"role": st.just("tool"), "tool_call_id": maybe(short_texts), "content": maybe(texts)}),
    ),
    st.fixed_dictionaries({"role": st.sampled_from(["bot", "function", "", "USER"]), "content": texts}),
)
_openai_tool = st.fixed_dictionaries(
    {
        "type": st.just("function"),
        "function": st.fixed_dictionaries(
            {"name": maybe(short_texts)},
            optional={"description": texts, "parameters": maybe(st.just({"type": "object", "properties": {}}))},
        ),
    }
)
_openai_body = st.fixed_dictionaries(
    {"model": model_values, "messages": st.lists(_openai_message, min_size=1, max_size=4)},
    optional={
        "max_tokens": ints,
        "max_completion_tokens": ints,
        "temperature": numbers,
        "top_p": numbers,
        "stop": st.one_of(texts, st.lists(texts, max_size=3)),
        "stream": maybe(st.booleans()),
        "stream_options": maybe(st.fixed_dictionaries({"include_usage": maybe(st.booleans())})),
        "tools": st.lists(_openai_tool, max_size=2),
        "tool_choice": st.one_of(
            st.sampled_from(["auto", "none", "required", "bogus"]),
            st.fixed_dictionaries({"type": st.just("function"), "function": st.fixed_dictionaries({"name": texts})}),
        ),
        "n": ints,
        "user": texts,
        "x_unknown": hostile,
    },
)


@st.composite
def openai_cases(draw: st.DrawFn) -> Case:
    body = draw(mutated(_openai_body))
    headers = [("authorization", f"Bearer {GATEWAY_KEY}"), *draw(fallback_headers())]
    model = body.get("model") if isinstance(body, dict) else None
    return _case("openai", "/v1/chat/completions", body, headers, model, draw(ASCII_ONLY))


# ---------------------------------------------------------------------------------- Anthropic

_image_source = st.one_of(
    st.fixed_dictionaries(
        {"type": st.just("base64"), "media_type": maybe(st.just("image/png")), "data": maybe(st.just("AAAA"))}
    ),
    st.fixed_dictionaries({"type": st.just("url"), "url": maybe(st.just("https://example.com/a.png"))}),
    st.fixed_dictionaries({"type": st.sampled_from(["file", "text", "bogus"]), "file_id": short_texts}),
)
_anthropic_block = st.one_of(
    st.fixed_dictionaries({"type": st.just("text"), "text": maybe(texts)}),
    st.fixed_dictionaries({"type": st.just("image"), "source": maybe(_image_source)}),
    st.fixed_dictionaries(
        {
            "type": st.just("tool_use"),
            "id": maybe(short_texts),
            "name": maybe(short_texts),
            "input": maybe(st.dictionaries(short_texts, scalars, max_size=2)),
        }
    ),
    st.fixed_dictionaries(
        {
            "type": st.just("tool_result"),
            "tool_use_id": maybe(short_texts),
            "content": maybe(
                st.one_of(texts, st.lists(st.fixed_dictionaries({"type": st.just("text"), "text": texts}), max_size=2))
            ),
        },
        optional={"is_error": maybe(st.booleans())},
    ),
    st.fixed_dictionaries({"type": st.just("thinking"), "thinking": texts, "signature": short_texts}),
    st.fixed_dictionaries({"type": st.just("redacted_thinking"), "data": short_texts}),
    st.fixed_dictionaries({"type": st.just("document"), "source": _image_source}),
    st.fixed_dictionaries({"type": st.sampled_from(["server_tool_use", "web_search_tool_result", "bogus", ""])}),
)
_anthropic_message = st.fixed_dictionaries(
    {
        "role": _sometimes(st.sampled_from(["user", "assistant"]), st.sampled_from(["system", "model", "", "USER"])),
        "content": st.one_of(texts, st.lists(_anthropic_block, max_size=3)),
    }
)
_anthropic_tool = st.one_of(
    st.fixed_dictionaries(
        {"name": maybe(short_texts), "input_schema": maybe(st.just({"type": "object", "properties": {}}))},
        optional={"description": maybe(texts)},
    ),
    st.fixed_dictionaries({"type": st.just("web_search_20250305"), "name": st.just("web_search")}),
)
_anthropic_body = st.fixed_dictionaries(
    {"model": model_values, "max_tokens": ints, "messages": st.lists(_anthropic_message, min_size=1, max_size=4)},
    optional={
        "system": st.one_of(texts, st.lists(st.fixed_dictionaries({"type": st.just("text"), "text": texts}))),
        "tools": st.lists(_anthropic_tool, max_size=2),
        "tool_choice": st.fixed_dictionaries(
            {"type": st.sampled_from(["auto", "any", "none", "tool", "bogus"])}, optional={"name": texts}
        ),
        "stream": maybe(st.booleans()),
        "stop_sequences": st.lists(texts, max_size=2),
        "temperature": numbers,
        "top_p": numbers,
        "top_k": ints,
        "metadata": st.fixed_dictionaries({"user_id": texts}),
        "thinking": st.fixed_dictionaries({"type": st.just("enabled"), "budget_tokens": ints}),
    },
)


@st.composite
def anthropic_cases(draw: st.DrawFn) -> Case:
    body = draw(mutated(_anthropic_body))
    auth = draw(st.sampled_from([("x-api-key", GATEWAY_KEY), ("authorization", f"Bearer {GATEWAY_KEY}")]))
    headers = [auth, ("anthropic-version", "2023-06-01"), *draw(fallback_headers())]
    model = body.get("model") if isinstance(body, dict) else None
    return _case("anthropic", "/v1/messages", body, headers, model, draw(ASCII_ONLY))


# ------------------------------------------------------------------------------------- Gemini

_gemini_part = st.one_of(
    st.fixed_dictionaries({"text": maybe(texts)}),
    st.fixed_dictionaries({"text": texts, "thought": st.just(True)}),
    st.fixed_dictionaries(
        {
            "inlineData": st.fixed_dictionaries(
                {"mimeType": maybe(st.sampled_from(["image/png", "application/pdf", ""])), "data": maybe(texts)}
            )
        }
    ),
    st.fixed_dictionaries({"inline_data": st.fixed_dictionaries({"mime_type": texts, "data": texts})}),
    st.fixed_dictionaries(
        {"fileData": st.fixed_dictionaries({"mimeType": maybe(short_texts), "fileUri": maybe(texts)})}
    ),
    st.fixed_dictionaries(
        {
            "functionCall": st.fixed_dictionaries(
                {"name": maybe(short_texts)}, optional={"args": maybe(st.just({"a": 1})), "id": short_texts}
            )
        }
    ),
    st.fixed_dictionaries(
        {
            "functionResponse": st.fixed_dictionaries(
                {"name": maybe(short_texts)}, optional={"response": maybe(st.just({"result": "ok"}))}
            )
        }
    ),
    st.fixed_dictionaries({"executableCode": st.just({"language": "PYTHON", "code": "1"})}),
    st.just({}),
    st.fixed_dictionaries({"unknownPart": scalars}),
)
_gemini_content = st.fixed_dictionaries(
    {"parts": st.lists(_gemini_part, min_size=1, max_size=3)},
    optional={"role": _sometimes(st.sampled_from(["user", "model"]), st.sampled_from(["system", "assistant", ""]))},
)
_gemini_schema = st.one_of(
    st.just({"type": "OBJECT", "properties": {"a": {"type": "STRING", "nullable": True}}}),
    st.fixed_dictionaries({"type": maybe(st.just("OBJECT")), "properties": maybe(st.just({"x": {}}))}),
    st.just({"type": "ARRAY", "items": {"anyOf": [{"type": "STRING"}, {"type": "INTEGER"}]}}),
)
_gemini_body = st.fixed_dictionaries(
    {"contents": st.lists(_gemini_content, min_size=1, max_size=4)},
    optional={
        "systemInstruction": st.fixed_dictionaries(
            {"parts": st.lists(st.fixed_dictionaries({"text": maybe(texts)}), max_size=2)}
        ),
        "generationConfig": st.fixed_dictionaries(
            {},
            optional={
                "maxOutputTokens": ints,
                "temperature": numbers,
                "topP": numbers,
                "stopSequences": st.lists(texts, max_size=2),
                "candidateCount": ints,
            },
        ),
        "tools": st.lists(
            st.one_of(
                st.fixed_dictionaries(
                    {
                        "functionDeclarations": st.lists(
                            st.fixed_dictionaries(
                                {"name": maybe(short_texts)},
                                optional={"description": texts, "parameters": maybe(_gemini_schema)},
                            ),
                            max_size=2,
                        )
                    }
                ),
                st.just({"googleSearch": {}}),
            ),
            max_size=2,
        ),
        "toolConfig": st.fixed_dictionaries(
            {
                "functionCallingConfig": st.fixed_dictionaries(
                    {"mode": maybe(st.sampled_from(["AUTO", "ANY", "NONE", "VALIDATED", "bogus"]))},
                    optional={"allowedFunctionNames": st.lists(short_texts, max_size=2)},
                )
            }
        ),
        "safetySettings": st.lists(st.just({"category": "HARM_CATEGORY_HARASSMENT", "threshold": "BLOCK_NONE"})),
    },
)


@st.composite
def gemini_cases(draw: st.DrawFn) -> Case:
    body = draw(mutated(_gemini_body))
    model = draw(models)
    # The model rides in the path: encoded as one segment, or with its slashes and dots left raw
    # (a raw socket sends them as they are, where an HTTP client would normalise them).
    safe = draw(st.sampled_from(["", "/.:"]))
    spelled = quote(model.encode("utf-8", "surrogatepass"), safe=safe)
    prefix = draw(st.sampled_from(["/v1beta/models/", "/v1beta/models/", "/v1/models/"]))
    method = draw(st.sampled_from([":generateContent", ":streamGenerateContent?alt=sse"]))
    auth = draw(st.sampled_from(["header", "query"]))
    target = prefix + spelled + method
    headers = [*draw(fallback_headers())]
    if auth == "header":
        headers.append(("x-goog-api-key", GATEWAY_KEY))
    else:
        target += ("&" if "?" in target else "?") + "key=" + GATEWAY_KEY
    return _case("gemini", target, body, headers, model, draw(ASCII_ONLY))


#: One entry per inbound dialect: its request-body cases.  (OpenAI Responses: one strategy, one line.)
BODY_STRATEGIES: dict[str, st.SearchStrategy[Case]] = {
    "openai": openai_cases(),
    "anthropic": anthropic_cases(),
    "gemini": gemini_cases(),
}
