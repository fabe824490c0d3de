"""Provider adapters, one per wire format, in an explicit registry.

:data:`ADAPTERS` maps a dialect ("anthropic", "gemini", "openai") to its
stateless adapter.  Adding a provider is one module implementing
:class:`~keywheel.providers.base.Adapter` and one line here.  The registry is
read-only: nothing registers adapters at run time.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from keywheel.providers.anthropic import AnthropicAdapter
from keywheel.providers.base import Adapter, Endpoint, HttpRequest, StreamParser
from keywheel.providers.gemini import GeminiAdapter
from keywheel.providers.openai_compat import OpenAICompatAdapter

__all__ = ["ADAPTERS", "Adapter", "Endpoint", "HttpRequest", "StreamParser", "get_adapter"]

ADAPTERS: Mapping[str, Adapter] = MappingProxyType(
    {
        "anthropic": AnthropicAdapter(),
        "gemini": GeminiAdapter(),
        "openai": OpenAICompatAdapter(),
    }
)


def get_adapter(dialect: str) -> Adapter:
    """The adapter for ``dialect``; ``ValueError`` naming the known dialects if there is none."""
    try:
        return ADAPTERS[dialect]
    except KeyError:
        known = ", ".join(sorted(ADAPTERS))
        raise ValueError(f"unknown provider dialect {dialect!r}; expected one of: {known}") from None
