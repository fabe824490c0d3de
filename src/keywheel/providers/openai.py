"""OpenAI itself: the OpenAI wire format at api.openai.com; on only when asked for (``ENABLE_OPENAI``)."""

from __future__ import annotations

from keywheel.providers.base import Provider
from keywheel.providers.openai_compat import ADAPTER

PROVIDER = Provider(
    "openai",
    ADAPTER,
    base_url="https://api.openai.com/v1",
    model="gpt-4.1-mini",
    key_prefix="sk-",
    on_by_default=False,
    families=("gpt-", "o1", "o3"),
)
