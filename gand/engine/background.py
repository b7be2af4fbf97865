"""Writing off the step: the loop copies what it must write (its state for a checkpoint, the
generated images for a sample grid) to host memory and goes on training while a background
thread serialises, renders, hashes, writes and records it.

Bounded to one write in flight per writer: the next checkpoint waits for the previous one, so at
most one host copy of the state exists besides the live one. An error in the background (a full
disk, a lost lease) is raised in the training thread — at its next step, next checkpoint or at
the end — so the job fails, or stops writing, exactly as it did when the write was synchronous.
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Any, Callable, Optional

log = logging.getLogger("gand.engine")


class BackgroundWriter:
    """Runs `write(step, host_copy)` in a background thread, one call at a time, and notes how
    long each took as the metric `timing` (e.g. ckpt_write_ms).

    The thread is started with the first write and kept until `close()`: handing it one is a
    queue put, so the loop never waits for a thread to be scheduled.
    """

    def __init__(self, write: Callable[[int, Any], None], name: str, timing: str):
        self._write = write
        self._name, self._timing = name, timing
        self._thread: Optional[threading.Thread] = None
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._idle = threading.Event()
        self._idle.set()
        self._error: Optional[BaseException] = None
        self._rows: list[tuple[int, str, float]] = []
        self._lock = threading.Lock()
        self._settle: Optional[Callable[[], None]] = None

    def start(self, step: int, state: Any, settle: Optional[Callable[[], None]] = None) -> None:
        """Writes `state` (a host copy nobody else changes) in the background.

        `settle`, if given, is called in the caller's thread before it waits for this write:
        the write may need something from that thread first (gand.engine.snapshot's release).
        """
        self.wait()  # never two in flight (the caller waited already; this makes it a rule)
        self._settle = settle
        if self._thread is None:
            self._thread = threading.Thread(target=self._serve, name=self._name,
                                            daemon=True)
            self._thread.start()
        self._idle.clear()
        self._queue.put((step, state))

    def _serve(self) -> None:
        while (item := self._queue.get()) is not None:
            step, state = item
            del item
            t0 = time.perf_counter()
            try:
                self._write(step, state)
                self.note(step, self._timing, (time.perf_counter() - t0) * 1000)
            except BaseException as e:  # handed to the training thread, which decides
                self._error = e
            finally:
                del state  # the host copy is freed now, not when the next one arrives
                self._idle.set()

    def wait(self) -> None:
        """Blocks until the write in flight is done; raises its error here, if it had one."""
        self._run_settle()
        self._idle.wait()
        self.check()

    def _run_settle(self) -> None:
        settle, self._settle = self._settle, None
        if settle is not None:
            settle()

    def check(self) -> None:
        """Raises the error of a finished background write, without waiting for one in flight
        (cheap enough for every step: an attribute read)."""
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def drain(self) -> None:
        """Waits for the write in flight while another error is on its way out: the write's
        own error is logged, not raised, so the first error is the one reported."""
        try:
            self.wait()
        except BaseException as e:
            log.warning("%s failed as well: %s: %s", self._name, type(e).__name__, e)

    def close(self) -> None:
        """Ends the thread once the write in flight is done (its error stays to be raised)."""
        self._run_settle()
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
            self._thread = None

    def note(self, step: int, key: str, value: float) -> None:
        """A timing row for the next metric flush (either thread may add one)."""
        with self._lock:
            self._rows.append((step, key, value))

    def take_rows(self) -> list[tuple[int, str, float]]:
        with self._lock:
            rows, self._rows = self._rows, []
        return rows
