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

import asyncio
import contextlib
import logging
import os
import sys
import time
from typing import Any, TextIO

import orjson

from keywheel.secrets import install_log_filter, log_filter, redact_everywhere

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
#: The JSON lines' ``ts`` to the second (UTC; milliseconds and ``Z`` follow).
JSON_TIME = "%Y-%m-%dT%H:%M:%S"
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
            self._second, self._stamp = seconds, time.strftime(JSON_TIME, time.gmtime(seconds))
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
    in ``fmt`` (``text`` or ``json``).  Like :func:`logging.basicConfig`, it leaves a root logger
    that has handlers already as it is (but for the redacting filter and the format)."""
    root = logging.root
    if not root.handlers:
        root.addHandler(LineHandler(sys.stderr))
        root.setLevel(level.upper())
    install_log_filter(handlers=root.handlers)
    use_format(fmt)


def use_format(fmt: str) -> None:
    """Switch the root handlers to ``fmt`` (once the configuration says which)."""
    for handler in logging.root.handlers:
        handler.setFormatter(formatter(fmt))
        if isinstance(handler, LineHandler):
            handler.use(fmt)


# ------------------------------------------------------------ lines without records

#: A turn of the event loop writes at most this many direct lines at once (and holds no more).
MAX_PENDING = 64
_MILLIS = tuple(f"{n:03d}" for n in range(1000))


class LineHandler(logging.StreamHandler[TextIO]):
    """The stderr handler :func:`configure_logging` installs.

    Besides records, it takes ready-made lines (:meth:`line`) from a caller that has redacted
    them itself — the gateway's access log, one line per request: no :class:`logging.LogRecord`,
    no filter pass, no formatter call.  Such lines are written as its formatter would write a record
    of theirs (same text or JSON line), and batched: one write per turn of the event loop (or at
    once, outside a loop), before any record that comes after them."""

    def __init__(self, stream: TextIO) -> None:
        super().__init__(stream)
        self._pending: list[str] = []
        self.text = True  # the text format (else JSON, whose lines carry structured fields)
        self._own: logging.Formatter | None = None
        self._second = -1
        self._stamp = ""
        self._fd = _fileno(stream)
        self._encoding = getattr(stream, "encoding", None) or "utf-8"

    def use(self, fmt: str) -> None:
        self._own, self._second = self.formatter, -1
        self.text = fmt != "json"

    def line(self, name: str, message: str, fields: dict[str, Any] | None) -> None:
        """Write ``message`` (already redacted) as an INFO record of logger ``name`` would be written,
        with ``fields`` as its structured fields in the JSON format."""
        now = time.time()
        seconds = int(now)
        if seconds != self._second:  # one strftime a second
            self._tick(seconds)
        millis = _MILLIS[int((now - seconds) * 1000)]
        if self.text:
            text = f"{self._stamp},{millis} INFO {name}: {message}{self.terminator}"
        else:
            line = {"ts": f"{self._stamp}.{millis}Z", "level": "INFO", "logger": name, "msg": message}
            for key, value in (fields or {}).items():
                line.setdefault(key, value)
            text = orjson.dumps(line, default=str).decode() + self.terminator
        with self.lock:  # type: ignore[union-attr]  # made by Handler.__init__
            pending = self._pending
            pending.append(text)
            loop = asyncio._get_running_loop()
            if loop is None or len(pending) >= MAX_PENDING:
                self._write_pending()
            elif len(pending) == 1:
                loop.call_soon(self._write_later)

    def _tick(self, seconds: int) -> None:
        self._second = seconds
        if self.text:
            self._stamp = time.strftime(self.default_time, time.localtime(seconds))
        else:
            self._stamp = time.strftime(JSON_TIME, time.gmtime(seconds))

    def _write_later(self) -> None:
        with self.lock:  # type: ignore[union-attr]
            self._write_pending()

    default_time = logging.Formatter.default_time_format

    def _write_pending(self) -> None:
        if not self._pending:
            return
        text = "".join(self._pending)
        self._pending.clear()
        try:
            if self._fd is None:
                self.stream.write(text)
                return
            # Straight to the file descriptor: the stream's own buffer is empty (records are
            # flushed as they are written), and its layers cost more than the line.
            data = text.encode(self._encoding, "backslashreplace")
            while data:
                data = data[os.write(self._fd, data) :]
        except (OSError, ValueError):  # a closed or broken stderr: as logging does, never raise
            return

    def setStream(self, stream: TextIO) -> TextIO | None:  # noqa: N802 — logging's name
        self.flush()
        old = super().setStream(stream)
        self._fd, self._encoding = _fileno(stream), getattr(stream, "encoding", None) or "utf-8"
        return old

    def emit(self, record: logging.LogRecord) -> None:
        if self._pending:  # under the handler's lock (Handler.handle holds it)
            self._write_pending()
        super().emit(record)

    def flush(self) -> None:
        with self.lock:  # type: ignore[union-attr]
            self._write_pending()
            if self.stream and hasattr(self.stream, "flush"):  # as StreamHandler.flush
                with contextlib.suppress(OSError, ValueError):  # closed: nothing to flush
                    self.stream.flush()


_ONLY_OURS: list[Any] = [log_filter()]


def _fileno(stream: TextIO) -> int | None:
    """The file descriptor under a text stream, when writing to it directly keeps its lines whole
    and in order (a blocking descriptor); else ``None``."""
    try:
        fd = stream.fileno()
        stream.flush()
        return fd if os.get_blocking(fd) else None
    except (AttributeError, OSError, ValueError):  # no descriptor (StringIO, a test's capture), or closed
        return None


def line_handler(logger: logging.Logger) -> LineHandler | None:
    """The handler an INFO record of ``logger`` would reach, when it is a :class:`LineHandler`
    taking lines and the record would meet nothing else on its way (no other handler, no filter
    but keywheel's redacting one, no level that drops it): then a line may go to it directly.
    (Checked on every call, in a few comparisons: a handler or filter added later counts at once.)"""
    node: logging.Logger | None = logger
    found: LineHandler | None = None
    while node is not None:
        if node.filters and node.filters != _ONLY_OURS:
            return None
        handlers = node.handlers
        if handlers:
            if found is not None or len(handlers) != 1:
                return None
            handler = handlers[0]
            if (
                not isinstance(handler, LineHandler)
                or handler.level > logging.INFO
                or handler.formatter is not handler._own  # a formatter set by someone else: records only
                or handler._own is None
                or (handler.filters and handler.filters != _ONLY_OURS)
            ):
                return None
            found = handler
        if not node.propagate:
            break
        node = node.parent
    return found
