"""The parent process of ``keywheel serve --workers N``: uvicorn's multiprocess supervisor with
keywheel's reload and the shared metrics directory.

- **Reload restarts the workers one at a time.**  SIGHUP to the parent (or ``POST /admin/reload``
  to any worker, which validates the new configuration and then sends SIGHUP to the parent: see
  :func:`ask_supervisor_to_restart`) first reads the configuration in the parent; one that fails
  to load is refused whole (its problems are logged, the workers stay).  Otherwise, for each
  worker in turn: start its replacement, wait until it serves, then SIGTERM the old one and wait
  for its drain (the gateway lets its requests finish, :meth:`keywheel.gateway.app.Gateway.drain`).
  So N workers serve throughout, and a request never meets a closed door: the listening socket
  is one, shared by all of them.  A replacement that does not come up aborts the restart; the
  old workers stay.
- **Metrics of all workers.**  The parent makes a private directory (``KEYWHEEL_METRICS_DIR``
  in the workers' environment); each worker writes its counts there (:mod:`keywheel.ops.metrics`,
  :class:`~keywheel.ops.metrics.SharedCounts`), and a scrape sums every worker's file, the
  files of workers that were restarted included (counters never go down over a reload).  The
  directory is removed when the parent stops.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import tempfile
from collections.abc import Callable
from socket import socket

from uvicorn import Config
from uvicorn.supervisors.multiprocess import Multiprocess, Process

from keywheel.config import Settings
from keywheel.errors import ConfigError

log = logging.getLogger("keywheel.gateway")

#: Set by the parent in its workers' environment: its PID (a worker signals only its own parent).
SUPERVISOR_ENV = "KEYWHEEL_SUPERVISOR_PID"
#: The directory where the workers write their metric counts.
METRICS_DIR_ENV = "KEYWHEEL_METRICS_DIR"


def supervised() -> bool:
    """Whether this process is a worker of a ``keywheel serve --workers N`` parent that is alive."""
    return os.environ.get(SUPERVISOR_ENV) == str(os.getppid())


def ask_supervisor_to_restart() -> None:
    """Ask the parent for a rolling restart of the workers (its SIGHUP)."""
    os.kill(os.getppid(), signal.SIGHUP)


class Supervisor(Multiprocess):
    """uvicorn's :class:`~uvicorn.supervisors.multiprocess.Multiprocess`, whose SIGHUP first
    validates the configuration and then replaces the workers one at a time, each draining."""

    def __init__(self, config: Config, sockets: list[socket], source: Callable[[], Settings]) -> None:
        super().__init__(config, sockets)
        self.source = source
        self.metrics_dir = tempfile.mkdtemp(prefix="keywheel-metrics-")  # mode 0700: ours only
        os.environ[SUPERVISOR_ENV] = str(os.getpid())
        os.environ[METRICS_DIR_ENV] = self.metrics_dir
        for stop in (signal.SIGINT, signal.SIGTERM):  # a stop during a rolling restart ends it at once
            signal.signal(stop, self._on_stop)

    def _on_stop(self, sig: int, _frame: object) -> None:
        self.signal_queue.append(sig)
        self.should_exit.set()

    def run(self) -> None:
        try:
            super().run()
        finally:
            shutil.rmtree(self.metrics_dir, ignore_errors=True)

    def handle_hup(self) -> None:
        log.info("SIGHUP: reading the configuration again, then restarting the workers one at a time")
        try:
            self.source()
        except ConfigError as err:
            for name, why in err.problems.items():
                log.error("reload refused, the workers keep the running configuration: %s: %s", name, why)
            return
        self.restart_all()

    def restart_all(self) -> None:
        """Replace each worker: its replacement first, serving, then the old one drained."""
        for index, old in enumerate(list(self.processes)):
            if self.should_exit.is_set():
                return
            new = Process(self.config, self.sockets)
            new.start()
            if not new.wait_until_ready(self.config.timeout_worker_healthcheck, self.should_exit):
                new.kill()
                new.join()
                if self.should_exit.is_set():
                    return
                log.error(
                    "reload: the new worker [%s] did not come up; the running workers stay (restart aborted)",
                    new.pid,
                )
                return
            old.terminate()  # SIGTERM: it stops accepting, drains its requests, and exits
            old.join()
            self.processes[index] = new
            count = len(self.processes)
            log.info("reload: worker [%s] replaced by [%s] (%d of %d)", old.pid, new.pid, index + 1, count)
        log.info("reload: every worker runs the configuration read anew")
