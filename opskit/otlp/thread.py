"""A worker process's export thread: runs one export every interval, on demand, and once at stop.

Started in the process that serves (never in a preloading master: a thread does not survive
``fork``, and one forked mid-export would leave its locks held), by its component's
:meth:`~opskit.component.Component.process_started`: at lifespan startup, or at the first request
of a server without lifespan. After a fork the child's middleware calls it again, and the child
starts its own.
"""

from __future__ import annotations

import logging
import os
import threading
import weakref
from collections.abc import Callable

from ..throttle import ThrottledLog

__all__ = ["ExportThread"]

log = logging.getLogger("opskit.otlp")


class ExportThread:
    """Calls ``export(stopping)`` every ``interval`` seconds (and when :meth:`wake` is called) on a daemon thread.

    ``export`` must not raise; if it does, the error is logged at a bounded rate and the thread
    goes on. :meth:`stop` runs a last export, so what was gathered leaves before the process exits.
    """

    def __init__(self, name: str, interval: float, export: Callable[[threading.Event], None]) -> None:
        self.name = name
        self.interval = interval
        self._export = export
        self._log = ThrottledLog(log, 60.0)
        self._reset()
        _threads.add(self)

    def _reset(self) -> None:
        self.stopping = threading.Event()  # also ends an export's retry backoff
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.running = False

    def start(self) -> None:
        """Start the thread in this process, once (a no-op when it runs or was stopped)."""
        with self._lock:
            if self.running or self.stopping.is_set():
                return
            self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
            self._thread.start()
            self.running = True

    def wake(self) -> None:
        """Export now instead of at the end of the interval."""
        self._wake.set()

    def _run(self) -> None:
        while not self.stopping.is_set():
            self._wake.wait(self.interval)
            self._wake.clear()
            if self.stopping.is_set():
                break
            self._once()
        self._once()

    def _once(self) -> None:
        try:
            self._export(self.stopping)
        except Exception:  # the thread must outlive any bug of one export
            if self._log.allow("export:error") is not None:
                log.warning("%s: an export raised", self.name, exc_info=True)

    def stop(self, timeout: float = 10.0) -> None:
        """Run a last export and stop the thread; waits at most ``timeout`` seconds for it.

        Blocks: call it off the event loop. A thread that never started exports nothing (nothing
        was served). A second call does nothing.
        """
        with self._lock:
            if self.stopping.is_set():
                return
            thread, was_running = self._thread, self.running
            self.stopping.set()
            self._wake.set()
        if thread is not None and was_running and thread is not threading.current_thread():
            thread.join(timeout)

    def _after_fork(self) -> None:
        self._reset()


_threads: weakref.WeakSet[ExportThread] = weakref.WeakSet()


def _reset_after_fork() -> None:
    for thread in list(_threads):
        thread._after_fork()


os.register_at_fork(after_in_child=_reset_after_fork)
