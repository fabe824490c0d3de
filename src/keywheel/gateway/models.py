"""``GET …/models`` and ``GET …/models/{id}``: the model list in the dialect the caller's SDK parses.

``/v1/models`` serves all three SDKs, told apart as they authenticate; ``/v1beta/models`` and
``/models`` are Gemini's.  The list is ``auto`` and each provider's configured model; one model
by id is a listed one, or any name the gateway would route (an unknown provider prefix is a 404).
"""

from __future__ import annotations

from collections.abc import Callable

import orjson

from keywheel.config import Settings
from keywheel.gateway.dialects import DIALECTS, Dialect
from keywheel.gateway.http import Scope, Send, allow, respond

Resolve = Callable[[str], tuple[str | None, str | None]]  # Gateway.resolve_model: name -> (provider, model)


async def model_info(
    settings: Settings, resolve: Resolve, scope: Scope, method: str, path: str, headers: dict[bytes, bytes], send: Send
) -> int:
    """The model list (``…/models``), or one model (``…/models/{id}``: openai/anthropic
    ``models.retrieve``, google-genai ``models.get``), in the dialect the caller parses."""
    allow(method, "GET")
    if path in ("/v1/models", "/v1beta/models", "/models"):
        listing = models_dialect(scope, path, headers)
        await respond(send, 200, orjson.dumps(listing.render_models(models(settings))))
        return 200
    base, _, name = path.partition("/models/")
    listing = models_dialect(scope, base + "/models", headers)
    rendered = listing.render_models([model_entry(settings, resolve, name)])
    entries = rendered.get("data") or rendered.get("models") or [{}]
    await respond(send, 200, orjson.dumps(entries[0]))
    return 200


def models(settings: Settings) -> list[tuple[str, str]]:
    """``(model id as clients name it, provider)``: ``auto``, then each provider's configured model."""
    listed = [(f"{name}/{settings.providers[name].model}", name) for name in settings.chain]
    listed.insert(0, ("auto", "keywheel"))
    return listed


def model_entry(settings: Settings, resolve: Resolve, name: str) -> tuple[str, str]:
    """One model by the name a client asks for: a listed one, or any name the gateway would route."""
    name = name.removeprefix("models/")
    for entry in models(settings):
        if entry[0] == name:
            return entry
    provider, _ = resolve(name)  # an unknown provider prefix is a 404
    return name, provider or "keywheel"


def models_dialect(scope: Scope, path: str, headers: dict[bytes, bytes]) -> Dialect:
    """The shape of a model list the caller's SDK parses: ``/v1/models`` serves all three.

    Told apart as the SDKs authenticate: google-genai by ``x-goog-api-key`` (or ``?key=``,
    or its ``x-goog-api-client`` / user agent), the anthropic SDK by ``anthropic-version``
    (or ``x-api-key``), anything else (``Authorization: Bearer``) is OpenAI.
    """
    if path != "/v1/models":
        return DIALECTS["gemini"]
    agent = headers.get(b"user-agent", b"")
    query: bytes = scope.get("query_string", b"")
    if (
        b"x-goog-api-key" in headers
        or b"x-goog-api-client" in headers
        or b"google-genai" in agent
        or query.startswith(b"key=")
        or b"&key=" in query
    ):
        return DIALECTS["gemini"]
    if b"anthropic-version" in headers or b"x-api-key" in headers:
        return DIALECTS["anthropic"]
    return DIALECTS["openai"]
