"""OpenRouter: the OpenAI wire format (:mod:`keywheel.providers.openai_compat`) at openrouter.ai."""

from __future__ import annotations

from keywheel.providers.base import Provider
from keywheel.providers.openai_compat import ADAPTER

PROVIDER = Provider(
    "openrouter",
    ADAPTER,
    base_url="https://openrouter.ai/api/v1",
    model="openai/gpt-4o-mini",
    key_prefix="sk-or-",
    # OpenRouter's app attribution headers (optional).
    env_headers=(("OPENROUTER_APP_URL", "HTTP-Referer"), ("OPENROUTER_APP_TITLE", "X-OpenRouter-Title")),
)
