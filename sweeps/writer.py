"""MLflow writes off the driver's scheduling path: one background thread, in order, retried through
outages, so a tracking server that restarts delays the records and never the trials."""
from __future__ import annotations

import logging
import os
import queue
import threading
import time
from typing import Callable

from mlflow.exceptions import MlflowException

logger = logging.getLogger(__name__)

# How long the writer keeps retrying while the tracking store is unreachable (seconds).
RETRY_ENV = "QRLORA_TRACKING_RETRY_S"
DEFAULT_RETRY_S = 1800.0
MAX_DELAY_S = 30.0
# MLflow error codes that mean "try again later"; anything else (a bad request) fails at once.
TRANSIENT_CODES = {"INTERNAL_ERROR", "TEMPORARILY_UNAVAILABLE", "REQUEST_LIMIT_EXCEEDED", "RESOURCE_EXHAUSTED"}


def transient(error: Exception) -> bool:
    return not isinstance(error, MlflowException) or error.error_code in TRANSIENT_CODES


class RecordWriter:
    """Runs submitted writes one at a time on a daemon thread.

    A write that fails with a transient error is retried (1 s, 2 s, ... at most 30 s apart) until it
    succeeds or the store has been unreachable for `retry_s` without a single success; then it is
    given up and listed in `failures`; while the outage lasts, each later write is tried once.
    """

    def __init__(self, retry_s: float | None = None, first_delay_s: float = 1.0) -> None:
        self.retry_s = float(os.environ.get(RETRY_ENV, DEFAULT_RETRY_S)) if retry_s is None else retry_s
        self.first_delay_s = first_delay_s
        self.failures: list[str] = []
        self._queue: queue.Queue = queue.Queue()
        self._outage_since: float | None = None
        self._thread = threading.Thread(target=self._work, name="mlflow-writer", daemon=True)
        self._thread.start()

    def submit(self, what: str, write: Callable[[], None]) -> None:
        self._queue.put((what, write))

    def flush(self) -> None:
        """Wait until every submitted write is done or given up."""
        self._queue.join()

    def close(self) -> None:
        self.flush()
        self._queue.put(None)
        self._thread.join()

    def _work(self) -> None:
        while (item := self._queue.get()) is not None:
            try:
                self._write(*item)
            finally:
                self._queue.task_done()
        self._queue.task_done()

    def _write(self, what: str, write: Callable[[], None]) -> None:
        delay = self.first_delay_s
        while True:
            try:
                write()
            except Exception as error:  # noqa: BLE001 - whatever the store raises, the sweep goes on
                message = f"{what}: {str(error).splitlines()[0][:300] if str(error) else type(error).__name__}"
                if not transient(error):
                    logger.warning("MLflow write rejected, not retried: %s", message)
                    self.failures.append(message)
                    return
                now = time.monotonic()
                if self._outage_since is None:
                    self._outage_since = now
                    logger.warning("MLflow write failed (%s); retrying for up to %.0f s", message, self.retry_s)
                if now - self._outage_since + delay > self.retry_s:
                    self.failures.append(message)
                    return
                time.sleep(delay)
                delay = min(2 * delay, MAX_DELAY_S)
            else:
                if self._outage_since is not None:
                    logger.warning("MLflow reachable again after %.0f s", time.monotonic() - self._outage_since)
                self._outage_since = None
                return
