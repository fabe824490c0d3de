"""OpenRouter: the OpenAI wire format (:mod:`keywheel.providers.openai_compat`) at openrouter.ai.

Its key probe is ``GET {base}/key``: free, and it answers with the key's credit (limit,
remaining, reset, usage), read by :mod:`keywheel.ops.credits`.
"""

from __future__ import annotations

from keywheel.providers._common import merge_headers
from keywheel.providers.base import Endpoint, HttpRequest, Provider
from keywheel.providers.openai_compat import ADAPTER
from keywheel.secrets import ApiKey


def probe_request(endpoint: Endpoint, key: ApiKey) -> HttpRequest:
    """``GET {base}/key``: the key's own description and credit; costs nothing."""
    headers = merge_headers(endpoint.headers, {"Authorization": f"Bearer {key.reveal()}"})
    return HttpRequest("GET", endpoint.base_url.rstrip("/") + "/key", headers)


PROVIDER = Provider(
    "openrouter",
    ADAPTER,
    base_url="https://openrouter.ai/api/v1",
    model="openai/gpt-4o-mini",
    key_prefix="sk-or-",
    # OpenRouter's app attribution headers (optional).
    env_headers=(("OPENROUTER_APP_URL", "HTTP-Referer"), ("OPENROUTER_APP_TITLE", "X-OpenRouter-Title")),
    probe=probe_request,
    probe_reads_credit=True,
)
