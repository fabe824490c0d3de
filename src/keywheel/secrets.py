"""API keys as a type that cannot be printed.

An :class:`ApiKey`'s ``repr``, ``str`` and ``format`` all show only its
fingerprint, ``gemini#2 …9f3a``: the provider, the key's position in the
configuration (``GEMINI_API_KEY_2``) and four hex digits of a SHA-256 of the key,
so no character of the key itself is ever shown.  The raw value is reachable
only through :meth:`ApiKey.reveal`, which adapters call when building headers.

:class:`Redactor` removes pieces of keys from text that leaves the process
(upstream error texts, status, log records); :class:`RedactingFilter` applies
every live redactor to log records.
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
import weakref
from collections.abc import Iterable


class ApiKey:
    __slots__ = ("_value", "provider", "label", "fingerprint", "auth")

    def __init__(self, value: str, provider: str, label: str, *, auth: str = "key") -> None:
        self._value = value
        self.provider = provider
        self.label = label  # "1", "2", "token", ... — where it came from
        digest = hashlib.sha256(value.encode()).hexdigest()[:4]
        self.fingerprint = f"{provider}#{label} …{digest}"
        # "key": the provider's own key header; "bearer": Authorization: Bearer
        self.auth = auth

    def reveal(self) -> str:
        """The raw key.  Only for building an upstream request."""
        return self._value

    def __repr__(self) -> str:
        return f"ApiKey({self.fingerprint})"

    def __str__(self) -> str:
        return self.fingerprint

    def __format__(self, spec: str) -> str:
        return format(self.fingerprint, spec)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ApiKey) and other._value == self._value and other.provider == self.provider

    def __hash__(self) -> int:
        return hash((self.provider, self._value))

    def __reduce__(self) -> tuple[object, ...]:
        # Pickling would write the key out; refuse rather than leak.
        raise TypeError("ApiKey cannot be pickled")


# ------------------------------------------------------------------ redaction

#: How long a piece of a key must be to be redacted wherever it appears.
GRAM = 8
# The pre-check: every 8-character window holds a whole 6-gram starting at a multiple of 3.
_PRE, _STRIDE = 6, 3
_REDACTED = "[redacted]"

_WINDOWS: dict[int, tuple[slice, ...]] = {}


def _windows(n: int) -> tuple[slice, ...]:
    """The pre-check's windows of a text of length ``n``: the slices of ``_PRE`` characters at
    every multiple of ``_STRIDE`` (cached for the lengths log lines and error texts have)."""
    windows = _WINDOWS.get(n)
    if windows is None:
        windows = tuple(slice(i, i + _PRE) for i in range(0, n - _PRE + 1, _STRIDE))
        if n <= 4096:
            _WINDOWS[n] = windows
    return windows


#: Public key prefixes: they say which provider a key is for, and nothing more.
KNOWN_PREFIXES = (
    "sk-or-v1-",
    "sk-ant-api03-",
    "sk-ant-admin01-",
    "sk-ant-oat01-",
    "sk-ant-",
    "sk-proj-",
    "sk-svcacct-",
    "sk-admin-",
    "sk-",
    "AIza",
    "gsk_",
    "xai-",
    "pplx-",
    "nvapi-",
    "hf_",
    "r8_",
    "fw_",
    "csk-",
)
_QUERY_KEY = re.compile(r"([?&](?:key|api_key|apikey)=)[^&#\s\"']*", re.IGNORECASE)


def _grams(text: str, n: int) -> set[str]:
    return {text[i : i + n] for i in range(len(text) - n + 1)}


class Redactor:
    """Replaces every piece of 8 or more characters of any secret it holds by ``[redacted]``.

    Providers quote parts of a bad key in their error messages ("Incorrect API key
    provided: sk-ant-…XYZ"), so an exact match is not enough.  A piece that also
    occurs in public configuration text (provider names, base URLs, model names,
    well-known key prefixes such as ``sk-or-v1-``, and the ``test-<provider>-key-``
    form of the test fakes) is exempt: otherwise a key like ``test-openrouter-key-1``
    would blank every provider name.

    The 8-grams are computed once per change of the key set.  :meth:`redact` scans
    the text once; an aligned pre-check (every 8-character window contains a 6-gram
    of itself that starts at a multiple of 3) lets a clean text through in ``len/3``
    set lookups.
    Meant for error paths: upstream error texts, log records, status output.
    """

    def __init__(self, secrets: Iterable[str] = (), public: Iterable[str] = ()) -> None:
        self._lock = threading.Lock()
        self._secrets: list[str] = []
        self._public: list[str] = []
        self._grams: frozenset[str] = frozenset()
        self._quads: frozenset[str] = frozenset()
        self._short: tuple[str, ...] = ()
        self.update(secrets, public)

    def update(self, secrets: Iterable[str], public: Iterable[str] | None = None) -> None:
        """Replace the secret set (and, if given, the public text) and rebuild the tables."""
        with self._lock:
            self._secrets = [s for s in dict.fromkeys(secrets) if s]
            if public is not None:
                self._public = [p for p in public if p]
            self._rebuild()

    def add(self, secret: str) -> None:
        with self._lock:
            if secret and secret not in self._secrets:
                self._secrets.append(secret)
                self._rebuild()

    def remove(self, secret: str) -> None:
        with self._lock:
            if secret in self._secrets:
                self._secrets.remove(secret)
                self._rebuild()

    def secrets(self) -> list[str]:
        return list(self._secrets)

    def public(self) -> list[str]:
        """The public text whose pieces are never redacted."""
        return list(self._public)

    @classmethod
    def for_settings(cls, secrets: Iterable[str], providers: Iterable[tuple[str, str, str]]) -> Redactor:
        """A redactor for ``secrets`` whose public text is each ``(name, base_url, model)``."""
        public: list[str] = []
        for name, base_url, model in providers:
            public += [name, base_url, model, f"test-{name}-key-", f"test-{name}-token-", f"test-{name}-"]
        return cls(secrets, public)

    def _rebuild(self) -> None:
        public_texts = list(self._public) + list(KNOWN_PREFIXES)
        public: set[str] = set()
        for text in public_texts:
            public |= _grams(text, GRAM)
        grams: set[str] = set()
        short: list[str] = []
        for secret in self._secrets:
            if len(secret) < GRAM:
                if len(secret) >= 4:
                    short.append(secret)  # too short for pieces: only the whole key
                continue
            grams |= _grams(secret, GRAM) - public
        quads: set[str] = set()
        for gram in grams:
            quads |= _grams(gram, _PRE)
        # Publish whole tables at once: readers never take the lock.
        self._grams, self._quads, self._short = frozenset(grams), frozenset(quads), tuple(short)

    def hits(self, text: str) -> bool:
        """Whether ``text`` holds any redactable piece of a secret."""
        return self.redact(text) is not text

    def redact(self, text: str) -> str:
        """``text`` with every secret piece replaced; the very same object when there is none."""
        for secret in self._short:
            if secret in text:
                text = text.replace(secret, _REDACTED)
        grams, quads = self._grams, self._quads
        n = len(text)
        if not grams or n < GRAM:
            return text
        if quads.isdisjoint(map(text.__getitem__, _windows(n))):
            return text  # the pre-check, all in C: no window of the text holds a piece
        spans: list[tuple[int, int]] = []
        start = end = -1
        for i in range(n - GRAM + 1):
            if text[i : i + GRAM] in grams:
                if i <= end:
                    end = i + GRAM
                else:
                    if end >= 0:
                        spans.append((start, end))
                    start, end = i, i + GRAM
        if end < 0:
            return text
        spans.append((start, end))
        out: list[str] = []
        last = 0
        for s, e in spans:
            out.append(text[last:s])
            out.append(_REDACTED)
            last = e
        out.append(text[last:])
        return "".join(out)

    def redact_bytes(self, data: bytes) -> bytes:
        text = data.decode("utf-8", "surrogateescape")
        redacted = self.redact(text)
        return data if redacted is text else redacted.encode("utf-8", "surrogateescape")


# Every live redactor in the process: the log filter applies them all.
# (A tuple of weak references, replaced whole on every change: every log record walks it, and a
# WeakSet's guarded iteration cost more than the redaction of a clean line.)
_LIVE: tuple[weakref.ref[Redactor], ...] = ()


def _forget(ref: weakref.ref[Redactor]) -> None:
    global _LIVE
    _LIVE = tuple(r for r in _LIVE if r is not ref)


def register(redactor: Redactor) -> Redactor:
    """Make ``redactor`` apply to every record that passes a :class:`RedactingFilter`."""
    global _LIVE
    if not any(r() is redactor for r in _LIVE):
        _LIVE = (*_LIVE, weakref.ref(redactor, _forget))
    install_log_filter()
    return redactor


def redact_everywhere(text: str) -> str:
    """``text`` through every registered redactor, and with any ``?key=`` query value blanked."""
    for ref in _LIVE:
        redactor = ref()
        if redactor is not None:
            text = redactor.redact(text)
    if "key=" in text:
        text = _QUERY_KEY.sub(r"\1[redacted]", text)
    return text


class RedactingFilter(logging.Filter):
    """A logging filter that redacts key pieces from a record's message, exception and stack text.

    On a logger it sees the records made by that logger; on a handler, every
    record the handler writes (whichever logger made it).  ``keywheel serve``
    puts one on the root handlers; :func:`install_log_filter` puts one on every
    ``keywheel`` logger.  Never drops a record.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name == "uvicorn.access" and isinstance(record.args, tuple) and len(record.args) >= 3:
            # uvicorn's access formatter unpacks args: keep the tuple, drop the query string.
            args = list(record.args)
            args[2] = str(args[2]).split("?", 1)[0]
            record.args = tuple(redact_everywhere(a) if isinstance(a, str) else a for a in args)
            return True
        seen = record.__dict__.get("_keywheel_redacted")
        if seen is not None and seen[0] is record.msg and seen[1] is record.args:
            return True  # this filter passed it already (on its logger, now on a handler), unchanged since
        try:
            message = record.getMessage()
        except Exception:  # a broken format string: let the handler report it
            return True
        clean = redact_everywhere(message)
        if "\n" in clean or "\r" in clean:
            # Upstream texts may quote what a client sent: one record, one line, no forged lines.
            clean = clean.replace("\r", "\\r").replace("\n", "\\n")
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact_everywhere(record.exc_text)
        if record.stack_info:
            record.stack_info = redact_everywhere(record.stack_info)
        mark_redacted(record)
        return True


_FILTER = RedactingFilter()


def log_filter() -> RedactingFilter:
    """The redacting filter :func:`install_log_filter` puts on loggers and handlers."""
    return _FILTER


def mark_redacted(record: logging.LogRecord) -> None:
    """Tell the redacting filter that ``record``'s message holds no key piece: its maker has
    redacted what needed it (only what a client sent, say), and the filter passes it as it is."""
    record.__dict__["_keywheel_redacted"] = (record.msg, record.args)


def install_log_filter(*, handlers: Iterable[logging.Handler] = ()) -> None:
    """Put the redacting filter on every ``keywheel`` logger that exists (idempotent), and on ``handlers``.

    Loggers are made at import time, so calling this after keywheel's modules are
    imported covers all of them.  The gateway also installs it on the root handlers.
    """
    loggers: list[logging.Logger] = [logging.getLogger("keywheel"), logging.getLogger("uvicorn.access")]
    for name, logger in list(logging.root.manager.loggerDict.items()):
        if name.startswith("keywheel.") and isinstance(logger, logging.Logger):
            loggers.append(logger)
    for target in [*loggers, *handlers]:
        if _FILTER not in target.filters:
            target.addFilter(_FILTER)
