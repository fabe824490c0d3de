"""The gateway's inbound dialects: OpenAI chat completions, OpenAI Responses, Anthropic and Gemini
wire formats to canonical types and back.

Pure translation, no I/O.  :data:`DIALECTS` maps each dialect's ``name`` (the
same word as the upstream adapters' ``dialect``; no upstream speaks ``responses``,
so it is always translated) to its stateless instance.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from keywheel.gateway.dialects.anthropic import AnthropicDialect
from keywheel.gateway.dialects.base import Dialect, ErrorAnswer, InboundRequest, Problem, StreamRenderer, problem_of
from keywheel.gateway.dialects.gemini import GeminiDialect
from keywheel.gateway.dialects.openai import OpenAIDialect
from keywheel.gateway.dialects.responses import ResponsesDialect

__all__ = [
    "DIALECTS",
    "AnthropicDialect",
    "Dialect",
    "ErrorAnswer",
    "GeminiDialect",
    "InboundRequest",
    "OpenAIDialect",
    "Problem",
    "ResponsesDialect",
    "StreamRenderer",
    "problem_of",
]

DIALECTS: Mapping[str, Dialect] = MappingProxyType(
    {d.name: d for d in (OpenAIDialect(), AnthropicDialect(), GeminiDialect(), ResponsesDialect())}
)
