"""The status page: ``GET /status.html``, and ``GET /`` for a browser (a request that accepts HTML).

One HTML file (``static/status.html``) with its style and a little vanilla JavaScript inline.  It
holds no data and loads without auth: it asks for the admin key, keeps it in ``sessionStorage``
(this tab only; never a cookie, which any page on the same host could make the browser send) and
sends it as ``Authorization: Bearer`` to the admin JSON routes, which answer every datum.  It
renders with ``textContent`` and DOM nodes only, never markup built from data.

Served with a strict Content-Security-Policy: nothing but the page's own inline script and style
(allowed by their SHA-256, computed here from the file), ``fetch`` to this origin only, no frames,
no forms posting anywhere, no plugins.
"""

from __future__ import annotations

import base64
import hashlib
import re
from functools import cache
from importlib import resources

from keywheel.gateway.http import Send, allow


@cache
def page() -> tuple[bytes, list[tuple[bytes, bytes]]]:
    """The page's bytes and its response headers (the CSP naming the hashes of its inline parts)."""
    html = resources.files("keywheel.gateway").joinpath("static/status.html").read_bytes()
    text = html.decode()
    hashes = {
        kind: " ".join(f"'sha256-{_digest(body)}'" for body in re.findall(rf"<{kind}>(.*?)</{kind}>", text, re.S))
        for kind in ("script", "style")
    }
    csp = (
        f"default-src 'none'; script-src {hashes['script']}; style-src {hashes['style']}; "
        "connect-src 'self'; img-src 'self' data:; form-action 'none'; frame-ancestors 'none'; base-uri 'none'"
    )
    headers = [
        (b"content-type", b"text/html; charset=utf-8"),
        (b"content-length", b"%d" % len(html)),
        (b"content-security-policy", csp.encode()),
        (b"x-content-type-options", b"nosniff"),
        (b"x-frame-options", b"DENY"),
        (b"referrer-policy", b"no-referrer"),
        (b"cache-control", b"no-store"),
    ]
    return html, headers


def _digest(body: str) -> str:
    return base64.b64encode(hashlib.sha256(body.encode()).digest()).decode()


def wants_page(headers: dict[bytes, bytes]) -> bool:
    """Whether a ``GET /`` comes from a browser (it accepts HTML): the page; others get the landing."""
    return b"text/html" in headers.get(b"accept", b"")


async def status_page(method: str, send: Send) -> int:
    """``GET``/``HEAD`` the status page."""
    allow(method, "GET", "HEAD")
    body, headers = page()
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body if method == "GET" else b""})
    return 200
