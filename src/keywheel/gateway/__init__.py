"""The HTTP gateway: OpenAI-, Anthropic- and Gemini-compatible endpoints over the key pools.

``keywheel.gateway.factory.app_from_env`` builds one from the environment (``uvicorn --factory``).
"""

from __future__ import annotations

from keywheel.gateway.app import Gateway

__all__ = ["Gateway"]
