"""The caller's body on its way upstream: passed through when the upstream speaks the caller's
dialect, translated otherwise.

Pass-through is lenient: only the model and the stream flag are read (the dialect's ``peek``),
and the caller's bytes go on unchanged when neither changes.  Otherwise the body is encoded again
with the new model, from an exact parse when the fast one lost an integer beyond 64 bits.  The
dialect's full parse (validation, translation) runs only for a target of another dialect.
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any

import orjson

from keywheel.calls import Target
from keywheel.errors import BadRequest
from keywheel.gateway.dialects import Dialect
from keywheel.gateway.dialects.base import InboundRequest, check_depth, unencodable
from keywheel.gateway.http import HttpError
from keywheel.providers.base import HttpRequest
from keywheel.router import RequestBuilder
from keywheel.secrets import ApiKey

log = logging.getLogger("keywheel.gateway")


# Client headers that travel with a pass-through body: they change what the body means.
FORWARDED = {"anthropic": (b"anthropic-beta",)}


_HEADER_VALUE = re.compile(rb"[A-Za-z0-9._,= -]{1,512}")


def forwarded(dialect: Dialect, headers: dict[bytes, bytes]) -> dict[str, str]:
    names = FORWARDED.get(dialect.name, ())
    out: dict[str, str] = {}
    for name in names:
        value = headers.get(name)
        if value is not None:
            # It reaches a keyed upstream request: only the characters its values use, bounded.
            if not _HEADER_VALUE.fullmatch(value):
                raise HttpError(400, f"header {name.decode()}: invalid value (letters, digits, . _ , = - only)")
            out[name.decode()] = value.decode("ascii")
    return out


def loads(raw: bytes) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"request body is not valid JSON: {exc}", status=400) from None


def lost_ints(encoded: bytes) -> bool:
    """Whether orjson's encoding of a body it parsed holds a float of 19 digits or more (``…e+18`` and up).

    orjson reads an integer beyond 64 bits as a float, which it writes with an exponent: where
    there is none, no integer was lost.  A true float that large (or such text in a string) only
    costs the exact re-encoding, never a wrong answer.  The search is for ``+`` (memchr-fast; rare
    in JSON text), then the ``<digit>e`` before it.
    """
    at = encoded.find(b"+", 2)
    while at >= 0:
        if encoded[at - 1] == 101 and 48 <= encoded[at - 2] <= 57:  # <digit>e+
            end = start = at + 1
            while end < len(encoded) and 48 <= encoded[end] <= 57:
                end += 1
            if end > start and int(encoded[start:end]) >= 18:
                return True
        at = encoded.find(b"+", at + 1)
    return False


class Request:
    """The caller's body: the raw bytes, their fast parse, and (only when needed) more.

    A pass-through sends ``raw`` unchanged when neither model nor stream flag changes; else
    it re-encodes the body with the new model, from an exact parse when the fast one lost an
    integer.  The dialect's full parse runs only when some target needs a translation.
    """

    __slots__ = ("dialect", "raw", "body", "path_model", "model", "defaults", "_exact", "_inbound")

    def __init__(
        self,
        dialect: Dialect,
        raw: bytes,
        body: dict[str, Any],
        path_model: str | None,
        model: str,
        defaults: dict[str, Any] | None = None,
    ) -> None:
        self.dialect, self.raw, self.body, self.path_model, self.model = dialect, raw, body, path_model, model
        self.defaults = defaults  # fields the full parse may take as given when absent (count_tokens: max_tokens)
        self._exact: dict[str, Any] | None = None
        self._inbound: InboundRequest | None = None

    def inbound(self) -> InboundRequest:
        """The full parse, for translation; raises the 400 naming the first bad field."""
        if self._inbound is None:
            body = {**self.defaults, **self.body} if self.defaults else self.body
            check_depth(body)  # translation recurses, and writes the body again: refuse what it cannot
            self._inbound = self.dialect.parse_request(body, self.path_model)
        return self._inbound

    def include_usage(self) -> bool:
        return self._inbound.include_usage if self._inbound is not None else False

    def exact(self) -> dict[str, Any]:
        """The body parsed by the stdlib, which keeps integers beyond 64 bits (when :func:`lost_ints` says so)."""
        if self._exact is None:
            self._exact = json.loads(self.raw)
        return self._exact

    def usable(self, targets: list[Target]) -> list[Target]:
        """``targets`` without those that would need a translation this request cannot have.

        A target of the caller's own dialect takes the body as it is, so a request that only
        it can serve still goes there; with none such, the translation's 400 names the field.
        """
        same = self.dialect.name
        if all(t.speaks(same) for t in targets):
            return targets
        try:
            self.inbound().check_translatable()
        except BadRequest as exc:
            passthrough = [t for t in targets if t.speaks(same)]
            if not passthrough:
                raise
            log.debug("only pass-through targets can take this request: %s", exc.message)
            return passthrough
        return targets


def unchanged(dialect: str, body: dict[str, Any], model: str, stream: bool) -> bool:
    """Whether a pass-through may send the caller's bytes as they are (what each adapter would rewrite)."""
    if dialect == "gemini":
        return "model" not in body  # the model lives in the URL, the stream flag in the method
    if body.get("model") != model or body.get("stream", False) is not stream:
        return False
    return dialect != "openai" or not stream or "stream_options" in body


def builder(dialect: Dialect, request: Request, forwarded: dict[str, str]) -> RequestBuilder:
    """Pass the body through when the upstream speaks the caller's dialect; translate otherwise."""
    same = dialect.name

    def build(target: Target, key: ApiKey, stream: bool) -> HttpRequest:
        adapter = target.adapter
        if target.speaks(same):
            if unchanged(same, request.body, target.model, stream):
                http = adapter.build_raw_request(target.endpoint, key, EMPTY, target.model, stream=stream)
                http.body = request.raw
            else:
                try:
                    http = adapter.build_raw_request(target.endpoint, key, request.body, target.model, stream=stream)
                except TypeError:  # orjson.JSONEncodeError: nested deeper than the encoder writes
                    check_depth(request.body)  # the 400 naming the field
                    raise BadRequest("body: cannot be encoded as JSON again", status=400) from None
                if http.body is not None and lost_ints(http.body):
                    http = adapter.build_raw_request(target.endpoint, key, request.exact(), target.model, stream=stream)
            if forwarded:
                http.headers.update(forwarded)
            return http
        try:
            return adapter.build_request(target.endpoint, key, request.inbound().request, target.model, stream=stream)
        except TypeError:  # orjson.JSONEncodeError: a value the encoder cannot write
            where = unencodable(request.body, "")
            what = f"{where}: " if where else ""
            raise BadRequest(f"{what}value cannot be encoded as JSON (integers are limited to 64 bits)") from None

    return build


EMPTY: dict[str, Any] = {}
