"""Defect 7: a gateway key in ``?key=`` is accepted on the Gemini routes only, and no
query string (nor a forged line) ever reaches a log."""

from __future__ import annotations

import http.client
import json
import logging

import httpx

from keywheel.secrets import RedactingFilter
from keywheel.testing import FakeUpstream
from tests.gateway.conftest import GatewayFactory
from tests.security.conftest import ADMIN_KEY, GATEWAY_KEY

HELLO = [{"role": "user", "content": "hello"}]
CONTENTS = {"contents": [{"role": "user", "parts": [{"text": "hello"}]}]}


def test_query_key_only_on_gemini_routes_and_never_logged(serve: GatewayFactory, fake: FakeUpstream) -> None:
    served = serve("--log-level", "DEBUG")
    url = served.url
    q = {"key": GATEWAY_KEY}
    # Not a Gemini route: the key in the URL is not a key.
    openai = httpx.post(url + "/v1/chat/completions", params=q, json={"model": "auto", "messages": HELLO})
    assert openai.status_code == 401, openai.text
    assert openai.json()["error"]["code"] == "invalid_api_key"
    anthropic = httpx.post(url + "/v1/messages", params=q, json={"model": "x", "max_tokens": 5, "messages": HELLO})
    assert anthropic.status_code == 401 and anthropic.json()["type"] == "error"
    assert httpx.get(url + "/v1/models", params=q).status_code == 401
    # Nor is the admin key on admin routes.
    assert httpx.get(url + "/status", params={"key": ADMIN_KEY}).status_code == 401
    assert httpx.get(url + "/status", headers={"authorization": f"Bearer {ADMIN_KEY}"}).status_code == 200
    assert fake.requests == []
    # The Gemini routes follow Google's REST convention (also with alt=sse, as the SDK sends it).
    gemini = httpx.post(url + "/v1beta/models/gemini-2.5-flash:generateContent", params=q, json=CONTENTS)
    assert gemini.status_code == 200, gemini.text
    stream = httpx.post(
        url + "/v1beta/models/gemini-2.5-flash:streamGenerateContent", params={**q, "alt": "sse"}, json=CONTENTS
    )
    assert stream.status_code == 200 and "data:" in stream.text
    assert httpx.get(url + "/v1beta/models", params=q).status_code == 200
    wrong = httpx.post(url + "/v1beta/models/gemini-2.5-flash:generateContent", params={"key": "nope"}, json=CONTENTS)
    assert wrong.status_code == 401
    # Percent-encoded: what the Gemini SDK sends for a key with reserved characters.
    assert httpx.post(url + "/v1beta/models/gemini-2.5-flash:generateContent?key=test%2Dgateway-key-1",
                      json=CONTENTS).status_code == 200  # fmt: skip
    served.stop()
    log = served.log()
    assert "POST /v1beta/models/gemini-2.5-flash:generateContent 200" in log  # the access log is there …
    assert "?" not in "".join(line for line in log.splitlines() if "keywheel.access" in line)
    assert "key=" not in log and "alt=sse" not in log and "nope" not in log  # … with no query string
    assert GATEWAY_KEY not in log and ADMIN_KEY not in log


def test_a_forged_log_line_in_the_path_is_escaped(serve: GatewayFactory) -> None:
    served = serve()
    host, port = served.url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    conn.request(
        "GET", "/nothing%0A2026-01-01%20INFO%20keywheel.access:%20forged", headers={"authorization": "Bearer x"}
    )
    resp = conn.getresponse()
    assert resp.status in (401, 404)
    json.loads(resp.read())
    conn.close()
    served.stop()
    lines = served.log().splitlines()
    assert not any(line.startswith("2026-01-01 INFO keywheel.access: forged") for line in lines)
    assert any("/nothing\\n2026-01-01" in line for line in lines)


def test_uvicorn_access_records_lose_their_query_string() -> None:
    """Should anyone turn uvicorn's access log on, the filter keeps its tuple but drops the query."""
    record = logging.LogRecord(
        "uvicorn.access", logging.INFO, __file__, 1, '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:5", "POST", "/v1beta/models/m:generateContent?key=secret-value&alt=sse", "1.1", 200), None,
    )  # fmt: skip
    assert RedactingFilter().filter(record)
    assert record.getMessage() == '127.0.0.1:5 - "POST /v1beta/models/m:generateContent HTTP/1.1" 200'


def test_any_key_query_value_in_a_log_message_is_blanked() -> None:
    record = logging.LogRecord("aiohttp.client", logging.DEBUG, __file__, 1, "GET %s", ("/x?alt=sse&key=abc",), None)
    RedactingFilter().filter(record)
    assert record.getMessage() == "GET /x?alt=sse&key=[redacted]"


def test_the_one_forwarded_client_header_is_checked(serve: GatewayFactory, fake: FakeUpstream) -> None:
    served = serve()
    url = served.url + "/v1/messages"
    body = {"model": "anthropic/claude-sonnet-4-6", "max_tokens": 5, "messages": HELLO}
    headers = {"x-api-key": GATEWAY_KEY, "x-keywheel-fallback": "off"}
    bad = httpx.post(url, json=body, headers={**headers, "anthropic-beta": "x" * 600})
    assert bad.status_code == 400 and "anthropic-beta" in bad.json()["error"]["message"]
    bad = httpx.post(url, json=body, headers={**headers, "anthropic-beta": "a;b=%0d"})
    assert bad.status_code == 400 and bad.json()["type"] == "error"
    assert fake.requests == []
    beta = "prompt-caching-2024-07-31,interleaved-thinking-2025-05-14"
    good = httpx.post(url, json=body, headers={**headers, "anthropic-beta": beta})
    assert good.status_code == 200, good.text
    assert [r.headers.get("anthropic-beta") for r in fake.requests] == [beta]


def test_a_record_quoting_client_text_stays_one_line() -> None:
    message = "attempt failed: [gemini HTTP 400] Invalid value 'x\n2026-01-01 INFO keywheel.access: forged'"
    record = logging.LogRecord("keywheel.router", logging.INFO, __file__, 1, "%s", (message,), None)
    RedactingFilter().filter(record)
    assert "\n" not in record.getMessage() and "x\\n2026-01-01" in record.getMessage()
