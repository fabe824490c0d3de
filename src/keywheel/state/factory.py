"""Which store keeps the keys' state (``KEYWHEEL_STATE``), and building it.

``KEYWHEEL_STATE`` is one of:

- ``memory`` — this process's memory, forgotten at exit (the library's default);
- ``sqlite:///path`` — a file that survives restarts, for one process (``keywheel serve``'s
  default: ``sqlite:///./.keywheel/state.db``).  The path follows the three slashes:
  ``sqlite:///./state.db`` and ``sqlite:///state.db`` are relative to the working directory,
  ``sqlite:////var/lib/keywheel/state.db`` is absolute;
- ``redis://host:port/db`` or ``rediss://…`` (TLS) — one pool shared by many processes.

:func:`parse_state` reads the text (a :class:`~keywheel.errors.ConfigError` naming
``KEYWHEEL_STATE`` otherwise); :func:`build_stores` makes the per-provider stores of a wheel.
Never imports :mod:`keywheel.config` (which validates with :func:`parse_state`).
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol
from urllib.parse import urlsplit, urlunsplit

from keywheel.errors import ConfigError
from keywheel.secrets import ApiKey
from keywheel.state.base import KeyStore
from keywheel.state.memory import MemoryStore
from keywheel.state.rules import BreakerPolicy
from keywheel.state.sqlite import SqliteStore
from keywheel.state.sqlite_file import DEFAULT_RETENTION, StateFile
from keywheel.state.windows import Quota

VARIABLE = "KEYWHEEL_STATE"
#: ``keywheel serve``'s store when ``KEYWHEEL_STATE`` is not set.
SERVE_DEFAULT = "sqlite:///./.keywheel/state.db"
LIBRARY_DEFAULT = "memory"
_FORMS = "memory, sqlite:///path (sqlite:////absolute/path) or redis://host:port/db"


@dataclass(frozen=True, slots=True)
class StateSpec:
    """A parsed ``KEYWHEEL_STATE``."""

    kind: Literal["memory", "sqlite", "redis"]
    path: Path | None = None  # sqlite: the file, as given (relative to the working directory)
    url: str = ""  # redis: the URL as given (it may hold a password: see ``public``)
    public: str = "memory"  # what may be shown: the password of a redis URL masked
    secrets: tuple[str, ...] = field(default=())  # a redis URL's password, for redaction


def parse_state(text: str) -> StateSpec:
    """Read a ``KEYWHEEL_STATE`` value; a :class:`ConfigError` naming the variable when it is none of the forms."""
    raw = text.strip()
    if raw.lower() == "memory":
        return StateSpec("memory")
    scheme = raw.partition(":")[0].lower()
    if scheme == "sqlite":
        return _sqlite(raw)
    if scheme in ("redis", "rediss"):
        return _redis(raw)
    raise ConfigError({VARIABLE: f"expected {_FORMS}, got {_shown(raw)!r}"})


def _sqlite(raw: str) -> StateSpec:
    if not raw.lower().startswith("sqlite:///"):
        raise ConfigError(
            {VARIABLE: f"a SQLite state is sqlite:///relative/path or sqlite:////absolute/path, got {raw!r}"}
        )
    path = raw[len("sqlite:///") :]
    if not path or path.endswith("/") or "\0" in path:
        raise ConfigError({VARIABLE: f"sqlite:/// needs a file path after the three slashes, got {raw!r}"})
    return StateSpec("sqlite", path=Path(os.path.expanduser(path)), public=raw)


def _redis(raw: str) -> StateSpec:
    parts = urlsplit(raw)
    problem = ""
    try:
        parts.port  # noqa: B018 — raises ValueError when it is not a port number
    except ValueError:
        problem = "its port is not a number"
    if not parts.hostname:
        problem = "it names no host"
    elif parts.path not in ("", "/") and not re.fullmatch(r"/\d+", parts.path):
        problem = f"the database must be a number (/0), got {parts.path!r}"
    # A lone user part (rediss://secret@host) is shown masked too: many write the password there.
    secret = parts.password or (
        parts.username if "@" in parts.netloc and ":" not in parts.netloc.rpartition("@")[0] else None
    )
    secrets = (secret,) if secret else ()
    public = raw
    if secret:
        userinfo = f"{parts.username or ''}:***" if parts.password else "***"
        host = parts.netloc.rpartition("@")[2]
        public = urlunsplit((parts.scheme, f"{userinfo}@{host}", parts.path, parts.query, parts.fragment))
    if problem:
        raise ConfigError({VARIABLE: f"a Redis state is redis://host:port/db: {problem}, in {public!r}"})
    return StateSpec("redis", url=raw, public=public, secrets=secrets)


def _shown(raw: str) -> str:
    """A wrong value, shown without a password it might carry (``scheme://user:secret@host``)."""
    return re.sub(r"(//[^/@:]*:)[^/@]*@", r"\1***@", raw)[:200]


_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_retention(text: str | None) -> float:
    """``KEYWHEEL_STATE_RETENTION`` in seconds: ``30d``, ``12h``, ``90m``, ``3600s``; a bare number is days."""
    if text is None or not text.strip():
        return DEFAULT_RETENTION
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", text.lower())
    if match is None or float(match[1]) <= 0:
        why = f"expected a duration such as 30d, 12h or 90m (a bare number is days), got {text!r}"
        raise ConfigError({"KEYWHEEL_STATE_RETENTION": why})
    return float(match[1]) * _UNITS[match[2] or "d"]


# ------------------------------------------------------------------ building


class _Provider(Protocol):
    @property
    def keys(self) -> Sequence[ApiKey]: ...
    @property
    def quota(self) -> Quota: ...
    @property
    def enabled(self) -> bool: ...


class StoreSettings(Protocol):
    """What :func:`build_stores` reads of :class:`keywheel.config.Settings`."""

    @property
    def state(self) -> str: ...
    @property
    def state_retention(self) -> float: ...
    @property
    def redis_prefix(self) -> str: ...
    @property
    def redis_fallback(self) -> str: ...
    @property
    def providers(self) -> Mapping[str, _Provider]: ...


@dataclass(slots=True)
class Stores:
    """A wheel's key stores (one per enabled provider), what they keep open, and how to make the
    store of a provider that a reload adds (:meth:`make`)."""

    pools: dict[str, KeyStore]
    file: StateFile | None = None
    make: Callable[[str, Sequence[ApiKey], Quota], KeyStore] | None = None

    def flush(self) -> None:
        """Write what is queued (the SQLite counters) now."""
        if self.file is not None:
            self.file.flush()

    def close(self) -> None:
        """Flush and close the state file, if any (idempotent)."""
        if self.file is not None:
            self.file.close()


def build_stores(
    settings: StoreSettings,
    *,
    breaker: BreakerPolicy | None = None,
    redact: Callable[[str], str] = str,
    clock: Callable[[], float] = time.time,
) -> Stores:
    """The stores of every enabled provider, as ``settings.state`` says.  ``redact`` strips key
    pieces from the reasons a persistent store writes; ``clock`` is wall-clock epoch seconds."""
    spec = parse_state(settings.state)
    enabled = {name: cfg for name, cfg in settings.providers.items() if cfg.enabled}
    make: Callable[[str, Sequence[ApiKey], Quota], KeyStore]
    if spec.kind == "redis":
        # Imported here: redis-py costs ~0.1 s of start-up that memory and SQLite users never need
        # (no cycle: neither module imports this one).
        from keywheel.state.fallback import SharedStore
        from keywheel.state.redis import RedisStore

        def make(name: str, keys: Sequence[ApiKey], quota: Quota) -> KeyStore:
            url, prefix = spec.url, settings.redis_prefix
            shared = RedisStore(name, keys, url=url, prefix=prefix, breaker=breaker, quota=quota)
            return SharedStore(shared, fallback=settings.redis_fallback)

        return Stores({name: make(name, cfg.keys, cfg.quota) for name, cfg in enabled.items()}, make=make)
    if spec.kind == "memory":

        def make(name: str, keys: Sequence[ApiKey], quota: Quota) -> KeyStore:
            return MemoryStore(name, keys, clock=clock, breaker=breaker, quota=quota)

        return Stores({name: make(name, cfg.keys, cfg.quota) for name, cfg in enabled.items()}, make=make)
    assert spec.path is not None
    file = StateFile(spec.path, retention=settings.state_retention, clock=clock)
    try:
        file.retire({file.key_id(key) for cfg in settings.providers.values() for key in cfg.keys})
        file.purge()

        def make(name: str, keys: Sequence[ApiKey], quota: Quota) -> KeyStore:
            return SqliteStore(name, keys, file=file, redact=redact, clock=clock, breaker=breaker, quota=quota)

        pools = {name: make(name, cfg.keys, cfg.quota) for name, cfg in enabled.items()}
    except BaseException:
        file.close()
        raise
    file.start()
    return Stores(pools, file, make)
