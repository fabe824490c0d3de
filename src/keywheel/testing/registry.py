"""The fake upstream's dialect registry: a route's name to the dialect that serves it."""

from __future__ import annotations

from keywheel.testing._anthropic import AnthropicDialect
from keywheel.testing._gemini import GeminiDialect
from keywheel.testing._openai import OpenAIDialect
from keywheel.testing.dialects import Dialect


def dialect_for(name: str) -> Dialect:
    """The dialect serving a route: "anthropic", "gemini", "openai" or "openrouter"."""
    if name == "anthropic":
        return AnthropicDialect()
    if name == "gemini":
        return GeminiDialect()
    if name in ("openai", "openrouter"):
        return OpenAIDialect(openrouter=name == "openrouter")
    raise ValueError(f"unknown dialect {name!r}")
