"""The HTTP gateway: OpenAI-, Anthropic- and Gemini-compatible endpoints over the key pools."""

from __future__ import annotations

import os

from keywheel.client import Wheel
from keywheel.gateway.app import Gateway


def app_from_env() -> Gateway:
    """ASGI app factory for ``uvicorn --factory`` (and ``keywheel serve --workers N``)."""
    level = os.environ.get("KEYWHEEL_LOG_LEVEL")
    if level:  # a worker process of `keywheel serve`: log as the parent does, key pieces redacted
        from keywheel.cli import configure_logging

        configure_logging(level)
    return Gateway(Wheel.from_env(env_file=os.environ.get("KEYWHEEL_ENV_FILE") or None))


__all__ = ["Gateway", "app_from_env"]
