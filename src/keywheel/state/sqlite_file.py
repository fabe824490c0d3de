"""The SQLite file behind :class:`keywheel.state.sqlite.SqliteStore`: schema, lock, decisions, counters.

One file holds every provider's key states, provider states and per-key daily counters.  It is
opened by one process at a time (an exclusive ``flock`` on ``<file>.lock``, held while open), in
WAL mode with ``synchronous=NORMAL``: a commit is in the WAL before it returns, so it survives the
process being killed (only a power cut may lose the last ones).

- **Decisions** (a key disabled, resting, enabled, added, removed; a provider throttled or its
  breaker opened) are committed synchronously by :meth:`StateFile.save`, while the store still
  holds its lock: no key is selected on a decision that is not on disk.  They are rare.
- **Counters** are appended to an in-memory queue (:meth:`StateFile.count`, no I/O) and written
  behind by a flusher thread every :data:`FLUSH_INTERVAL` seconds, in transactions of at most
  :data:`BATCH_EVENTS` requests; :meth:`StateFile.close` flushes the rest.

Never holds key material: a key is a row under :func:`keywheel.state.base.key_id` (a keyed hash
with this file's own random salt, in the ``meta`` table); reasons come redacted from the store.
Never holds its lock across anything but SQLite calls.

Schema changes go by version (``PRAGMA user_version``): :data:`MIGRATIONS` ``[n]`` takes a file
from version ``n`` to ``n + 1``; a file of a newer version than this code knows is refused.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import logging
import os
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from keywheel.errors import ConfigError
from keywheel.secrets import ApiKey
from keywheel.state.base import key_id
from keywheel.state.rules import CLOSED_BREAKER, HALF_OPEN, NEVER, OPEN, Breaker, KeyState, ProviderState

log = logging.getLogger("keywheel.state")

#: Seconds between two writes of the counters: a crash loses at most about this much of them.
FLUSH_INTERVAL = 0.5
#: Requests' counters aggregated into one write transaction, at most.
BATCH_EVENTS = 5000
#: Seconds between two purges of what is older than the retention.
PURGE_INTERVAL = 3600.0
#: ``KEYWHEEL_STATE_RETENTION``'s default: how long a removed key's state and any day's counters stay.
DEFAULT_RETENTION = 30 * 86400.0
VARIABLE = "KEYWHEEL_STATE"
SEVERAL = "SQLite state serves one process; for several (--workers, replicas) use KEYWHEEL_STATE=redis://host:port/db"


def _run(db: sqlite3.Connection, script: str) -> None:
    """Each statement of ``script`` (``executescript`` would commit the migration's transaction)."""
    for statement in script.split(";"):
        if statement.strip():
            db.execute(statement)


def _v1(db: sqlite3.Connection) -> None:
    _run(
        db,
        """
        CREATE TABLE meta (name TEXT PRIMARY KEY, value BLOB NOT NULL);
        CREATE TABLE keys (
            id TEXT PRIMARY KEY,            -- key_id(key, salt): never the key
            provider TEXT NOT NULL,
            state TEXT NOT NULL,            -- active | cooling | disabled
            until REAL NOT NULL,            -- cooling: wall-clock epoch seconds it comes back
            reason TEXT NOT NULL,           -- redacted
            cause TEXT NOT NULL,
            backoff REAL NOT NULL,
            last_rate_limited REAL,         -- NULL: never
            updated REAL NOT NULL,
            removed_at REAL                 -- gone from the configuration since then: purged after the retention
        );
        CREATE TABLE providers (
            name TEXT PRIMARY KEY,
            throttled_until REAL NOT NULL,
            breaker_state TEXT NOT NULL,
            breaker_failures INTEGER NOT NULL,
            breaker_until REAL NOT NULL,
            breaker_cooloff REAL NOT NULL
        );
        CREATE TABLE counters (
            key TEXT NOT NULL, day TEXT NOT NULL,   -- UTC date
            requests INTEGER NOT NULL, successes INTEGER NOT NULL,
            tokens_in INTEGER NOT NULL, tokens_out INTEGER NOT NULL, latency_ms REAL NOT NULL,
            PRIMARY KEY (key, day)
        ) WITHOUT ROWID;
        CREATE TABLE failures (
            key TEXT NOT NULL, day TEXT NOT NULL, kind TEXT NOT NULL, count INTEGER NOT NULL,
            PRIMARY KEY (key, day, kind)
        ) WITHOUT ROWID;
        """,
    )


Migration = Callable[[sqlite3.Connection], None]
#: ``MIGRATIONS[n]`` takes a file from schema version ``n`` to ``n + 1`` (0: a new, empty file).
MIGRATIONS: tuple[Migration, ...] = (_v1,)
SCHEMA_VERSION = len(MIGRATIONS)


@dataclass(slots=True)
class DayCount:
    """One key's counters of one UTC day."""

    requests: int = 0
    successes: int = 0
    failures: dict[str, int] = field(default_factory=dict)
    tokens_in: int = 0
    tokens_out: int = 0
    latency_ms: float = 0.0


@dataclass(slots=True)
class Restored:
    """What a provider's store finds in the file at start: its state, its keys' states (by key id,
    without fingerprints), and their counters of the day."""

    provider: ProviderState | None
    keys: dict[str, KeyState]
    today: dict[str, DayCount]


# One finished request, as queued for the flusher: (key id, epoch, failure kind or None, latency, tokens in, out).
Event = tuple[str, float, str | None, float, int, int]


def day_of(epoch: float) -> str:
    """The UTC date of ``epoch``, as the counters are kept."""
    return time.strftime("%Y-%m-%d", time.gmtime(epoch))


class StateFile:
    """An open state file (see the module).  Thread-safe; :meth:`close` is idempotent."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        retention: float = DEFAULT_RETENTION,
        clock: Callable[[], float] = time.time,
        migrations: Sequence[Migration] = MIGRATIONS,
    ) -> None:
        self.path = Path(path)
        self.retention = retention
        self._clock = clock
        self._lock = threading.Lock()
        self._events: deque[Event] = deque()
        #: Queue one finished request's counters (no I/O: the flusher writes them).
        self.count: Callable[[Event], None] = self._events.append
        self._stop = threading.Event()
        self._flusher: threading.Thread | None = None
        self._closed = self._closing = False
        self._lock_fd = _take_lock(self.path)
        try:
            self._db = _connect(self.path)
            try:
                migrate(self._db, self.path, migrations)
                self._salt = self._salt_of()
            except BaseException:
                self._db.close()
                raise
        except BaseException:
            os.close(self._lock_fd)
            raise
        self._purged = 0.0
        atexit.register(self.close)

    # ------------------------------------------------------------------ keys

    def key_id(self, key: ApiKey) -> str:
        return key_id(key, self._salt)

    def _salt_of(self) -> bytes:
        with self._transaction() as db:
            row = db.execute("SELECT value FROM meta WHERE name = 'salt'").fetchone()
            if row is not None:
                return bytes(row[0])
            salt = os.urandom(32)
            db.execute("INSERT INTO meta (name, value) VALUES ('salt', ?)", (salt,))
            return salt

    def retire(self, configured: set[str]) -> None:
        """Mark every key not in ``configured`` (ids of every configured key) as removed from the
        configuration, from now: it is purged once the retention has passed."""
        now = self._clock()
        with self._transaction() as db:
            ids = [row[0] for row in db.execute("SELECT id FROM keys WHERE removed_at IS NULL")]
            gone = [(now, kid) for kid in ids if kid not in configured]
            db.executemany("UPDATE keys SET removed_at = ? WHERE id = ?", gone)
        if gone:
            log.info("key state: %d key(s) no longer configured; their history is kept until purged", len(gone))

    def purge(self) -> None:
        """Delete the keys removed longer than the retention ago, and the counters of days older."""
        now = self._clock()
        self._purged = now
        horizon = now - self.retention
        with self._transaction() as db:
            gone = db.execute("DELETE FROM keys WHERE removed_at IS NOT NULL AND removed_at < ?", (horizon,)).rowcount
            day = day_of(horizon)
            for table in ("counters", "failures"):
                db.execute(f"DELETE FROM {table} WHERE day < ? OR key NOT IN (SELECT id FROM keys)", (day,))
        if gone:
            log.info("key state: purged %d key(s) removed from the configuration over the retention ago", gone)

    def restore(self, provider: str, ids: Sequence[str]) -> Restored:
        """The saved state of ``provider`` and of its keys ``ids``.  A key without a row starts fresh
        (a row is made for it); so does one that was removed from the configuration and is back."""
        now = self._clock()
        today = day_of(now)
        keys: dict[str, KeyState] = {}
        counts: dict[str, DayCount] = {}
        with self._transaction() as db:
            row = db.execute("SELECT * FROM providers WHERE name = ?", (provider,)).fetchone()
            for kid in ids:
                saved = db.execute("SELECT * FROM keys WHERE id = ?", (kid,)).fetchone()
                if saved is None or saved["removed_at"] is not None:
                    _upsert(db, kid, provider, KeyState(), None, now)
                else:
                    keys[kid] = _key_state(saved)
                counts[kid] = _day_count(db, kid, today)
        return Restored(_provider_state(row) if row is not None else None, keys, counts)

    # ------------------------------------------------------------- decisions

    def save(
        self, provider: str, keys: Sequence[tuple[str, KeyState, bool]], state: ProviderState | None = None
    ) -> None:
        """Commit a decision: ``keys`` as ``(id, state, removed)``, and the provider's ``state`` if given."""
        now = self._clock()
        try:
            with self._transaction() as db:
                for kid, key, removed in keys:
                    _upsert(db, kid, provider, key, now if removed else None, now)
                if state is not None:
                    b = state.breaker
                    db.execute(
                        "INSERT OR REPLACE INTO providers VALUES (?, ?, ?, ?, ?, ?)",
                        (provider, state.throttled_until, b.state, b.failures, b.until, b.cooloff),
                    )
        except _Closed:
            log.warning("key state of %s not saved: the wheel was closed (%s)", provider, self.path)
        except sqlite3.Error as exc:
            # The decision stands in memory; only its survival of a restart is lost.
            log.error("key state of %s not saved to %s: %s", provider, self.path, exc)

    # -------------------------------------------------------------- counters

    def start(self) -> None:
        """Start the flusher thread (idempotent)."""
        if self._flusher is None and not self._closed:
            self._flusher = threading.Thread(target=self._flush_loop, name="keywheel-state", daemon=True)
            self._flusher.start()

    def _flush_loop(self) -> None:
        while not self._stop.wait(FLUSH_INTERVAL):
            try:
                self.flush()
                if self._clock() - self._purged >= PURGE_INTERVAL:
                    self.purge()
            except (sqlite3.Error, _Closed) as exc:
                log.error("key counters not written to %s: %s", self.path, exc)

    def flush(self) -> int:
        """Write the queued counters, :data:`BATCH_EVENTS` requests per transaction; how many were written."""
        written = 0
        events = self._events
        while events:
            batch: list[Event] = []
            take = events.popleft
            try:
                while len(batch) < BATCH_EVENTS:
                    batch.append(take())
            except IndexError:
                pass
            self._write(batch)
            written += len(batch)
        return written

    def _write(self, batch: list[Event]) -> None:
        rows: dict[tuple[str, str], list[float]] = {}
        failures: dict[tuple[str, str, str], int] = {}
        days: dict[int, str] = {}
        for kid, at, kind, latency, tokens_in, tokens_out in batch:
            number = int(at // 86400)
            day = days.get(number)
            if day is None:
                day = days[number] = day_of(at)
            row = rows.get((kid, day))
            if row is None:
                row = rows[(kid, day)] = [0, 0, 0, 0, 0.0]
            row[0] += 1
            if kind is None:
                row[1] += 1
            else:
                failures[(kid, day, kind)] = failures.get((kid, day, kind), 0) + 1
            row[2] += tokens_in
            row[3] += tokens_out
            row[4] += latency
        with self._transaction() as db:
            db.executemany(
                "INSERT INTO counters VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (key, day) DO UPDATE SET "
                "requests = requests + excluded.requests, successes = successes + excluded.successes, "
                "tokens_in = tokens_in + excluded.tokens_in, tokens_out = tokens_out + excluded.tokens_out, "
                "latency_ms = latency_ms + excluded.latency_ms",
                [(kid, day, *row) for (kid, day), row in rows.items()],
            )
            db.executemany(
                "INSERT INTO failures VALUES (?, ?, ?, ?) ON CONFLICT (key, day, kind) DO UPDATE SET "
                "count = count + excluded.count",
                [(*where, n) for where, n in failures.items()],
            )

    # ---------------------------------------------------------------- closing

    def close(self) -> None:
        """Stop the flusher, write the queued counters, close the file and let go of its lock."""
        with self._lock:
            if self._closing:
                return
            self._closing = True
        self._stop.set()
        if self._flusher is not None and self._flusher is not threading.current_thread():
            self._flusher.join(timeout=10)
        try:
            self.flush()
        except (sqlite3.Error, _Closed) as exc:
            log.error("key counters not written to %s: %s", self.path, exc)
        with self._lock:
            self._closed = True
            self._db.close()
            os.close(self._lock_fd)
        atexit.unregister(self.close)

    @property
    def closed(self) -> bool:
        return self._closed

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            if self._closed:
                raise _Closed(f"{self.path} is closed")
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")


class _Closed(Exception):
    """The file was closed (the wheel was closed) and something still reported."""


# ------------------------------------------------------------------ opening


def _take_lock(path: Path) -> int:
    """The exclusive lock of ``path`` for this process (the fd to keep open), or a ConfigError."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(f"{path}.lock", os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise ConfigError({VARIABLE: f"cannot create the state file {str(path)!r}: {exc.strerror or exc}"}) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
        os.close(fd)
        who = f"process {holder}" if holder.isdigit() else "another process"
        raise ConfigError(
            {VARIABLE: f"the state file {str(path)!r} is in use by {who} (another keywheel). {SEVERAL}"}
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, str(os.getpid()).encode(), 0)
    return fd


def _connect(path: Path) -> sqlite3.Connection:
    try:
        if not path.exists():
            os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))  # the WAL and shm files take its mode
        db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    except (OSError, sqlite3.Error) as exc:
        raise ConfigError({VARIABLE: f"cannot open the state file {str(path)!r}: {exc}"}) from None
    db.row_factory = sqlite3.Row
    try:
        db.execute("PRAGMA journal_mode = WAL")
        db.execute("PRAGMA synchronous = NORMAL")
        db.execute("PRAGMA busy_timeout = 5000")
    except sqlite3.DatabaseError as exc:
        db.close()
        raise ConfigError({VARIABLE: f"{str(path)!r} is not a keywheel state file ({exc})"}) from None
    return db


def migrate(db: sqlite3.Connection, path: Path, migrations: Sequence[Migration] = MIGRATIONS) -> int:
    """Bring the file to the newest schema version ``migrations`` know, one version per
    transaction; the version it is at.  A ConfigError for a newer file, or one that is not ours."""
    version = int(db.execute("PRAGMA user_version").fetchone()[0])
    newest = len(migrations)
    if version > newest:
        raise ConfigError(
            {
                VARIABLE: f"the state file {str(path)!r} has schema version {version}, newer than this keywheel "
                f"knows ({newest}): upgrade keywheel, or point KEYWHEEL_STATE at another file"
            }
        )
    if version == 0 and db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]:
        raise ConfigError({VARIABLE: f"{str(path)!r} is an SQLite file of something else, not a keywheel state file"})
    for step in range(version, newest):
        db.execute("BEGIN IMMEDIATE")
        try:
            migrations[step](db)
            db.execute(f"PRAGMA user_version = {step + 1}")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
        if step:
            log.info("key state: %s migrated to schema version %d", path, step + 1)
    return newest


# ------------------------------------------------------------------ rows


def _upsert(db: sqlite3.Connection, kid: str, provider: str, key: KeyState, removed: float | None, now: float) -> None:
    last = None if key.last_rate_limited == NEVER else key.last_rate_limited
    db.execute(
        "INSERT OR REPLACE INTO keys VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (kid, provider, key.state, key.until, key.reason, key.cause, key.backoff, last, now, removed),
    )


def _key_state(row: sqlite3.Row) -> KeyState:
    last = row["last_rate_limited"]
    return KeyState(
        state=row["state"],
        until=row["until"],
        reason=row["reason"],
        cause=row["cause"],
        backoff=row["backoff"],
        last_rate_limited=NEVER if last is None else last,
    )


def _provider_state(row: sqlite3.Row) -> ProviderState:
    state, failures, cooloff = row["breaker_state"], row["breaker_failures"], row["breaker_cooloff"]
    breaker = CLOSED_BREAKER
    if state == OPEN:
        breaker = Breaker(OPEN, failures, row["breaker_until"], cooloff)
    elif state == HALF_OPEN:
        # Its trial went with the process that ran it: the next request is the trial.
        breaker = Breaker(OPEN, failures, 0.0, cooloff)
    return ProviderState(row["throttled_until"], breaker)


def _day_count(db: sqlite3.Connection, kid: str, day: str) -> DayCount:
    count = DayCount()
    row = db.execute(
        "SELECT requests, successes, tokens_in, tokens_out, latency_ms FROM counters WHERE key = ? AND day = ?",
        (kid, day),
    ).fetchone()
    if row is not None:
        count.requests, count.successes, count.tokens_in, count.tokens_out, count.latency_ms = tuple(row)
    for kind, n in db.execute("SELECT kind, count FROM failures WHERE key = ? AND day = ?", (kid, day)):
        count.failures[kind] = n
    return count
