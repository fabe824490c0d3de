"""The ASGI app factory of ``keywheel serve --workers N``: a gateway over a wheel from the environment.

Apart from the package's ``__init__`` so that the gateway itself never imports :mod:`keywheel.client`
(which imports the gateway for :meth:`keywheel.Wheel.asgi_app`).
"""

from __future__ import annotations

import os

from keywheel.client import Wheel
from keywheel.config import config_source
from keywheel.gateway.app import Gateway
from keywheel.logs import configure_logging, use_format


def app_from_env() -> Gateway:
    """ASGI app factory for ``uvicorn --factory`` (and ``keywheel serve --workers N``)."""
    level = os.environ.get("KEYWHEEL_LOG_LEVEL")
    if level:  # a worker process of `keywheel serve`: log as the parent does, key pieces redacted
        configure_logging(level, os.environ.get("KEYWHEEL_LOG_FORMAT", "text").strip().lower())
    env_file = os.environ.get("KEYWHEEL_ENV_FILE") or None
    wheel = Wheel.from_env(env_file=env_file)
    if level:
        use_format(wheel.settings.log_format)  # as the configuration (a .env file, maybe) says
    return Gateway(wheel, config_source(env_file))
