"""Hostile HTTP/1.1 as bytes: heads, methods, headers, framing, paths and query strings that an
HTTP client library would refuse or normalise, for sending over a raw socket.

Each case is classified the way the server's own parser (httptools, which uvicorn uses) sees
it, so the test knows whose answer to expect: a head that does not parse is answered (if at all)
by the HTTP server before any dialect is known; a head that parses is keywheel's to answer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import httptools
from hypothesis import strategies as st

from tests.fuzz.strategies import _sometimes
from tests.gateway.conftest import GATEWAY_KEY

HELLO_OPENAI = b'{"model":"auto","messages":[{"role":"user","content":"hi"}]}'
HELLO_ANTHROPIC = b'{"model":"auto","max_tokens":16,"messages":[{"role":"user","content":"hi"}]}'
HELLO_GEMINI = b'{"contents":[{"parts":[{"text":"hi"}]}]}'

ROUTES = [
    ("/v1/chat/completions", HELLO_OPENAI),
    ("/v1/messages", HELLO_ANTHROPIC),
    ("/v1beta/models/gemini-2.5-flash:generateContent", HELLO_GEMINI),
    ("/v1beta/models/gemini-2.5-flash:streamGenerateContent", HELLO_GEMINI),
    ("/v1/models/gemini-2.5-flash:generateContent", HELLO_GEMINI),
    ("/v1/models", b""),
    ("/v1beta/models", b""),
    ("/health", b""),
    ("/status", b""),
    ("/admin/keys/disable", b'{"key":"gemini#1 ...0000"}'),
    ("/v1/messages/count_tokens", HELLO_ANTHROPIC),
]
ODD_PATHS = [
    "/v1/../v1/messages",
    "/v1/chat/../messages",
    "/../../etc/passwd",
    "/v1/%6Dessages",
    "/v1/chat%2Fcompletions",
    "/v1/messages%00",
    "/v1/messages/",
    "//v1/messages",
    "/%ff%fe%00",
    "/v1beta/models/%2e%2e%2f%2e%2e%2fx:generateContent",
    "/v1beta/models/:generateContent",
    "/v1beta/models/a:",
    "/v1beta/models/a:bogus",
    "/v1beta/models/a:generateContent/extra",
    "/v1beta/models/a/../../b:generateContent",
    "/v1/models/x:generateContent:streamGenerateContent",
    "/v1beta/",
    "/v1beta/models/" + "m" * 9000 + ":generateContent",
    "/" + "a" * 60_000,
    "*",
    "http://evil.example/v1/chat/completions",
    "v1/messages",
    "/v1/messages#frag",
    "/\u00e9",
]
QUERIES = [
    "",
    "?key=",
    "?key=" + GATEWAY_KEY,
    "?key=wrong-key",
    "?alt=sse",
    "?alt=sse&key=",
    "?key=&key=" + GATEWAY_KEY,
    "?&&&",
    "?=",
    "?key",
    "?key=%00",
    "?" + "a=b&" * 2000,
    "?%ff=%fe",
]
METHODS = ["PUT", "DELETE", "OPTIONS", "HEAD", "PATCH", "TRACE", "CONNECT", "FOO", "get", "P0ST", "", "M" * 300]
VERSIONS = ["HTTP/1.0", "HTTP/2.0", "HTTP/0.9", "HTTP/1.1 extra", "http/1.1", "HTTP/1.x", "", "HTTP/11"]
CONTENT_LENGTHS = ["-1", "99999999999999999999", "abc", "+5", " 5", "5 5", "0x10", "", "1e3"]


@dataclass
class RawCase:
    raw: bytes
    note: list[str] = field(default_factory=list)

    def __repr__(self) -> str:
        raw = self.raw if len(self.raw) < 800 else self.raw[:800] + b"..."
        return f"RawCase({self.note}, {raw!r})"


def _chunked(body: bytes, style: str) -> bytes:
    if style == "bad-hex":
        return b"zz\r\n" + body + b"\r\n0\r\n\r\n"
    if style == "no-terminator":
        return b"%x\r\n" % len(body) + body + b"\r\n"
    if style == "extension":
        return b"%x;name=value\r\n" % len(body) + body + b"\r\n0\r\n\r\n"
    if style == "trailer":
        return b"%x\r\n" % len(body) + body + b"\r\n0\r\nx-trailer: 1\r\n\r\n"
    if style == "oversized":
        return b"ffffffffffffffff\r\n" + body + b"\r\n0\r\n\r\n"
    pieces = [body[i : i + 7] for i in range(0, len(body), 7)]
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"


HEADER_MUTATIONS = [
    "dup-cl-same",
    "dup-cl-diff",
    "odd-cl",
    "short-cl",
    "long-cl",
    "chunked",
    "chunked-odd",
    "te-and-cl",
    "huge-header",
    "many-headers",
    "bad-name",
    "bad-value",
    "obs-fold",
    "dup-auth",
    "no-auth",
    "wrong-auth",
    "anthropic-version",
    "expect-continue",
    "upgrade",
    "bare-lf",
    "garbage-body",
    "no-content-type",
    "body-withheld",
    "truncated",
]


@st.composite
def raw_http_cases(draw: st.DrawFn) -> RawCase:
    path, body = draw(st.sampled_from(ROUTES))
    note: list[str] = []
    if draw(st.sampled_from([False, True, False])):
        path = draw(st.sampled_from(ODD_PATHS))
        note.append("odd-path")
    query = draw(_sometimes(st.just(""), st.sampled_from(QUERIES)))
    method = draw(_sometimes(st.just("POST" if body else "GET"), st.sampled_from(METHODS)))
    version = draw(_sometimes(st.just("HTTP/1.1"), st.sampled_from(VERSIONS)))
    mutations = draw(st.lists(st.sampled_from(HEADER_MUTATIONS), max_size=3, unique=True))
    note += [m for m in (method, version) if m not in ("POST", "GET", "HTTP/1.1")] + mutations
    headers: list[tuple[str, str]] = [("host", "127.0.0.1"), ("content-type", "application/json")]
    auth = [("authorization", f"Bearer {GATEWAY_KEY}")]
    framing = [("content-length", str(len(body)))]
    eol = b"\r\n"
    for mutation in mutations:
        if mutation == "dup-cl-same":
            framing.append(("content-length", str(len(body))))
        elif mutation == "dup-cl-diff":
            framing.append(("content-length", str(len(body) + 1)))
        elif mutation == "odd-cl":
            framing = [("content-length", draw(st.sampled_from(CONTENT_LENGTHS)))]
        elif mutation == "short-cl" and body:
            framing = [("content-length", str(len(body) // 2))]
        elif mutation == "long-cl":
            framing = [("content-length", str(len(body) + 10))]  # the body never completes
        elif mutation in ("chunked", "chunked-odd"):
            style = (
                "even"
                if mutation == "chunked"
                else draw(st.sampled_from(["bad-hex", "no-terminator", "extension", "trailer", "oversized"]))
            )
            framing = [("transfer-encoding", "chunked")]
            body = _chunked(body, style)
            note.append(style)
        elif mutation == "te-and-cl":
            framing = [("content-length", str(len(body))), ("transfer-encoding", "chunked")]
        elif mutation == "huge-header":
            headers.append(("x-huge", "h" * draw(st.sampled_from([8_000, 70_000, 200_000]))))
        elif mutation == "many-headers":
            headers += [(f"x-h{i}", "v") for i in range(draw(st.sampled_from([150, 1_000])))]
        elif mutation == "bad-name":
            headers.append((draw(st.sampled_from(["x bad", "x:bad", "x\x00", "\u00e9", "", "x\x7f"])), "v"))
        elif mutation == "bad-value":
            headers.append(("x-bad", draw(st.sampled_from(["a\x00b", "a\x7fb", "\u00ff\u00fe", "a\rb", " "]))))
        elif mutation == "obs-fold":
            headers.append(("x-folded", "a\r\n  b"))
        elif mutation == "dup-auth":
            auth.append(("authorization", "Bearer wrong-key"))
        elif mutation == "no-auth":
            auth = []
        elif mutation == "wrong-auth":
            auth = [("x-api-key", "wrong"), ("x-goog-api-key", "")]
        elif mutation == "anthropic-version":
            headers.append(("anthropic-version", "2023-06-01"))
        elif mutation == "expect-continue":
            headers.append(("expect", "100-continue"))
        elif mutation == "upgrade":
            protocol = draw(st.sampled_from(["websocket", "h2c", "x", "websocket-handshake"]))
            headers += [("connection", "upgrade"), ("upgrade", protocol.removesuffix("-handshake"))]
            if protocol == "websocket-handshake":
                headers += [("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="), ("sec-websocket-version", "13")]
                note.append(protocol)
        elif mutation == "bare-lf":
            eol = b"\n"
        elif mutation == "garbage-body":
            body = draw(st.sampled_from([b"\xff\xfe", b"{", b"[]", b"null", b"\x00" * 10, b"{" * 5000]))
            if framing[0][0] == "content-length":
                framing = [("content-length", str(len(body)))]
        elif mutation == "no-content-type":
            headers = [h for h in headers if h[0] != "content-type"]
        elif mutation == "body-withheld":
            body = b""  # announced by content-length, never sent
    lines = [f"{method} {path}{query} {version}".rstrip(" ")]
    lines += [f"{k}: {v}" for k, v in [*headers, *auth, *framing]]
    if "upgrade" not in mutations:
        lines.append("connection: close")
    head = eol.join(line.encode("utf-8", "surrogatepass") for line in lines) + eol + eol
    raw = head + body
    if "truncated" in mutations:  # a request cut short anywhere: in the request line, a header, the body
        raw = raw[: draw(st.integers(1, max(1, len(raw) - 1)))]
    return RawCase(raw, note)


# ----------------------------------------------------------------------------- classification


@dataclass
class Parsed:
    """How the server's HTTP parser sees a raw request.

    ``state``: "malformed" (a parse error before the first request was complete), "upgrade",
    "incomplete-head", "incomplete-body" or "complete".
    """

    state: str
    url: str = ""
    method: str = ""
    headers: list[tuple[str, str]] = field(default_factory=list)
    trailing_error: bool = False  # the first request parsed; bytes after it did not
    body_bytes: int = 0  # of the first request's body


class _Watcher:
    def __init__(self) -> None:
        self.url = b""
        self.headers: list[tuple[str, str]] = []
        self.head_done = False
        self.done = False
        self.body_bytes = 0

    def on_url(self, url: bytes) -> None:
        if not self.head_done:
            self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        if not self.head_done:
            self.headers.append((name.decode("latin-1").lower(), value.decode("latin-1")))

    def on_body(self, body: bytes) -> None:
        if not self.done:
            self.body_bytes += len(body)

    def on_headers_complete(self) -> None:
        self.head_done = True

    def on_message_complete(self) -> None:
        self.done = True


def classify(raw: bytes) -> Parsed:
    watcher = _Watcher()
    parser: Any = httptools.HttpRequestParser(watcher)
    state = ""
    trailing = False
    try:
        parser.feed_data(raw)
    except httptools.HttpParserUpgrade:
        state = "upgrade"
    except httptools.HttpParserError:
        if watcher.done:
            trailing = True
        else:
            state = "malformed"
    method = ""
    if watcher.head_done:
        try:
            method = parser.get_method().decode("latin-1")
        except Exception:  # noqa: BLE001  (an unusual method the parser cannot name)
            method = ""
    if not state:
        if watcher.done:
            state = "complete"
        elif watcher.head_done:
            state = "incomplete-body"
        else:
            state = "incomplete-head"
    return Parsed(state, watcher.url.decode("latin-1"), method, watcher.headers, trailing, watcher.body_bytes)
