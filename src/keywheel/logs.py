"""Logging set-up shared by the CLI and the gateway's worker processes.

Two formats (``KEYWHEEL_LOG_FORMAT``):

- ``text`` (default): ``2026-01-01 12:00:00,123 INFO keywheel.access: POST /v1/messages 200 ...``;
- ``json``: every record (keywheel's, uvicorn's, any library's) as one JSON object per line:
  ``{"ts": "2026-01-01T12:00:00.123Z", "level": "INFO", "logger": "keywheel.access",
  "msg": "...", ...}``, plus the record's structured fields when it has some (the access log's
  request id, dialect, model, ...; a key-state change's key, state, reason, until), and
  ``"exc"`` with the traceback text when there is one.

Either way the handlers carry the redacting filter (:class:`keywheel.secrets.RedactingFilter`),
which strips every piece of every key from the message and traceback before the formatter
sees them; the JSON formatter passes the structured fields' text through the same redaction
whenever the message needed it (see :class:`JsonFormatter`).
"""

from __future__ import annotations

import logging
import time
from typing import Any

import orjson

from keywheel.secrets import install_log_filter, redact_everywhere

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
FORMATS = ("text", "json")
#: The attribute of a log record that holds its structured fields (``extra={FIELDS: {...}}``).
FIELDS = "keywheel"


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line (JSON escapes every control character).

    Structured fields (``extra={FIELDS: {...}}``) hold only values that the record's message
    also shows verbatim, with its arguments: the redacting filter, which redacts the message,
    drops the arguments when it found a key piece there, and only then are the fields
    redacted one by one (on the hot path of the access log, the message's redaction is the
    only one)."""

    _second = -1
    _stamp = ""

    def format(self, record: logging.LogRecord) -> str:
        seconds = int(record.created)
        if seconds != self._second:  # one strftime a second
            self._second, self._stamp = seconds, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
        line: dict[str, Any] = {
            "ts": f"{self._stamp}.{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        fields = getattr(record, FIELDS, None)
        if isinstance(fields, dict):
            redact = not record.args  # no arguments left: the filter changed the message (or it had none)
            for name, value in fields.items():
                line.setdefault(name, redact_everywhere(value) if redact and isinstance(value, str) else value)
        if record.exc_info and not record.exc_text:
            record.exc_text = redact_everywhere(self.formatException(record.exc_info))
        if record.exc_text:
            line["exc"] = record.exc_text
        if record.stack_info:
            line["stack"] = record.stack_info
        return orjson.dumps(line, default=str).decode()


def formatter(fmt: str) -> logging.Formatter:
    """The formatter of ``fmt`` (``text`` or ``json``; anything else is text)."""
    return JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT)


def configure_logging(level: str, fmt: str = "text") -> None:
    """Log to stderr through handlers that strip every piece of every key (and any ``?key=``),
    in ``fmt`` (``text`` or ``json``)."""
    logging.basicConfig(level=level.upper(), format=TEXT_FORMAT)
    install_log_filter(handlers=logging.root.handlers)
    use_format(fmt)


def use_format(fmt: str) -> None:
    """Switch the root handlers to ``fmt`` (once the configuration says which)."""
    for handler in logging.root.handlers:
        handler.setFormatter(formatter(fmt))
