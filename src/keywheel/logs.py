"""Logging set-up shared by the CLI and the gateway's worker processes."""

from __future__ import annotations

import logging

from keywheel.secrets import install_log_filter


def configure_logging(level: str) -> None:
    """Log to stderr through handlers that strip every piece of every key (and any ``?key=``)."""
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    install_log_filter(handlers=logging.root.handlers)
