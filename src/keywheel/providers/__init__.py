"""Providers, one module each, in an explicit registry.

:data:`PROVIDERS` maps a provider's name to its :class:`~keywheel.providers.base.Provider`:
wire format (adapter), default base URL and model, key shape, model families.  Adding a
provider is one module declaring ``PROVIDER`` and one line below; a provider with a new wire
format also brings its adapter (:class:`~keywheel.providers.base.Adapter`) in that module.
:data:`ADAPTERS` (dialect -> adapter) is derived from it.  Both are read-only: nothing
registers providers at run time.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from keywheel.providers import anthropic, gemini, openai, openrouter
from keywheel.providers.base import Adapter, Endpoint, HttpRequest, Provider, StreamParser

__all__ = ["ADAPTERS", "PROVIDERS", "Adapter", "Endpoint", "HttpRequest", "Provider", "StreamParser", "get_adapter"]

PROVIDERS: Mapping[str, Provider] = MappingProxyType(
    {
        p.name: p
        for p in (
            anthropic.PROVIDER,
            gemini.PROVIDER,
            openrouter.PROVIDER,
            openai.PROVIDER,
        )
    }
)

ADAPTERS: Mapping[str, Adapter] = MappingProxyType({p.adapter.dialect: p.adapter for p in PROVIDERS.values()})

#: (prefix, provider): a bare model name with the prefix goes to the provider ("claude-..." -> anthropic).
FAMILIES: tuple[tuple[str, str], ...] = tuple((f, p.name) for p in PROVIDERS.values() for f in p.families)


def get_adapter(dialect: str) -> Adapter:
    """The adapter for ``dialect``; ``ValueError`` naming the known dialects if there is none."""
    try:
        return ADAPTERS[dialect]
    except KeyError:
        known = ", ".join(sorted(ADAPTERS))
        raise ValueError(f"unknown provider dialect {dialect!r}; expected one of: {known}") from None
