"""Model names that reach an upstream URL or request: checked, bounded, encoded.

A model name comes from the caller, so it is hostile.  Every provider URL is its
base URL plus a fixed endpoint; the only caller text that ever goes into a URL
path is a Gemini model name, and it goes in as ONE path segment after a
``models/`` or ``tunedModels/`` collection of our own choosing.  So a model name
can never climb out of the base URL's path (``..``), add a segment (``/``,
``%2F``), start a query or fragment (``?``, ``#``) or smuggle control characters.

:func:`check_model` holds for every provider (the model also travels in bodies and
error texts); :func:`gemini_model_path` adds the path rules.  Both raise a
:class:`~keywheel.errors.BadRequest` naming the ``model`` field, before any
upstream request.
"""

from __future__ import annotations

import re
from functools import lru_cache
from urllib.parse import quote

from keywheel.errors import BadRequest

__all__ = ["MODEL_LIMIT", "SEGMENT_LIMIT", "check_model", "gemini_model_path"]

MODEL_LIMIT = 256
SEGMENT_LIMIT = 128
# What model ids use across providers: "gemini-2.5-flash", "openai/gpt-4o-mini",
# "meta-llama/llama-3.1-8b-instruct:free", "@cf/meta/llama-3", "hf.co/org/m:Q4_K_M", "~anthropic/x".
_MODEL = re.compile(r"[A-Za-z0-9@~][A-Za-z0-9._:@/+~-]*")
# One segment of a Gemini model path: "gemini-2.5-flash", "gemini-exp-1206", "my-tuned-model-123".
_SEGMENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_COLLECTIONS = ("models", "tunedModels")


def _shown(model: str) -> str:
    return repr(model if len(model) <= 80 else model[:80] + "…")


def invalid(model: str, why: str) -> BadRequest:
    return BadRequest(f"model: invalid model name {_shown(model)}: {why}", status=400)


def check_model(model: str, dialect: str | None = None) -> str:
    """``model`` if it can be a model id at all (and, for ``dialect="gemini"``, a Gemini path)."""
    if len(model) > MODEL_LIMIT:
        raise invalid(model, f"longer than {MODEL_LIMIT} characters")
    if not _MODEL.fullmatch(model):
        raise invalid(model, "model names are letters, digits and . _ - : @ / + ~ only")
    if ".." in model or "//" in model or model.endswith("/"):
        raise invalid(model, "'..', '//' and a trailing '/' are not allowed")
    if dialect == "gemini":
        gemini_model_path(model)
    return model


@lru_cache(maxsize=256)  # on every Gemini request: the few models in use cost one lookup
def gemini_model_path(model: str) -> str:
    """``models/{name}`` or ``tunedModels/{name}``, ``name`` checked and encoded as one segment.

    Accepted forms: ``name``, ``models/name``, ``tunedModels/name``."""
    collection, sep, name = model.partition("/")
    if not sep:
        collection, name = "models", model
    elif collection not in _COLLECTIONS:
        raise invalid(model, "a Gemini model is 'name', 'models/name' or 'tunedModels/name'")
    if len(name) > SEGMENT_LIMIT:
        raise invalid(model, f"a Gemini model name is at most {SEGMENT_LIMIT} characters")
    if not _SEGMENT.fullmatch(name) or ".." in name:
        raise invalid(model, "a Gemini model name is letters, digits, '.', '_' and '-' (one path segment)")
    return f"{collection}/{quote(name, safe='')}"
