"""MLflow writes off the driver's scheduling path: one background thread, in order, retried through
outages, so a tracking server that restarts delays the records and never the trials."""
from __future__ import annotations

import logging
import os
import queue
import sqlite3
import threading
import time
from typing import Callable, Iterator

import requests
import urllib3
from mlflow.exceptions import MlflowException, RestException

logger = logging.getLogger(__name__)

# How long the writer keeps retrying one write through an outage, from when it was submitted (seconds).
RETRY_ENV = "QRLORA_TRACKING_RETRY_S"
DEFAULT_RETRY_S = 1800.0
MAX_DELAY_S = 30.0
# MLflow error codes that mean "try again later": a locked or unreachable database in the store
# (SQLAlchemy's OperationalError becomes TEMPORARILY_UNAVAILABLE) and rate limits.
TRANSIENT_CODES = {"TEMPORARILY_UNAVAILABLE", "REQUEST_LIMIT_EXCEEDED", "RESOURCE_EXHAUSTED"}
# HTTP statuses worth retrying besides every 5xx (MLflow's own client retries the same ones).
TRANSIENT_STATUSES = {408, 429}
# Network failures as the libraries under MLflow raise them. MLflow's REST client wraps a refused
# connection, a read timeout or "too many 503 responses" into MlflowException(INTERNAL_ERROR) and keeps
# the requests exception as its cause or context.
NETWORK_ERRORS: tuple[type[BaseException], ...] = (
    ConnectionError, TimeoutError, requests.exceptions.ConnectionError, requests.exceptions.Timeout,
    requests.exceptions.RetryError, urllib3.exceptions.MaxRetryError, urllib3.exceptions.ProtocolError,
    urllib3.exceptions.TimeoutError)
try:  # artifacts on S3
    import botocore.exceptions
    NETWORK_ERRORS += (botocore.exceptions.ConnectionError, botocore.exceptions.HTTPClientError)
except ImportError:  # pragma: no cover - boto3 is optional
    pass


def transient(error: BaseException) -> bool:
    """Whether a failed write met an outage (retry it) rather than a fault that repeats (a bug, a bad
    request, access denied: fail it at once)."""
    for cause in _chain(error):
        if isinstance(cause, NETWORK_ERRORS):
            return True
        status = _http_status(cause)
        if status is not None and (status in TRANSIENT_STATUSES or status >= 500):
            return True
        if isinstance(cause, MlflowException) and cause.error_code in TRANSIENT_CODES:
            return True
        if isinstance(cause, sqlite3.OperationalError) and "locked" in str(cause):
            return True
    return False


def _chain(error: BaseException) -> Iterator[BaseException]:
    """The error and everything it was raised from or while handling."""
    seen, pending = set(), [error]
    while pending:
        current = pending.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        pending += [current.__cause__, current.__context__]


def _http_status(error: BaseException) -> int | None:
    """The HTTP status of a failed response: a REST error from the tracking server, an artifact upload
    (requests), or S3 (botocore)."""
    if isinstance(error, RestException):
        return error.get_http_status_code()
    response = getattr(error, "response", None)
    if isinstance(response, requests.Response):
        return response.status_code
    if isinstance(response, dict):  # botocore.exceptions.ClientError
        return response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return None


class RecordWriter:
    """Runs submitted writes one at a time on a daemon thread.

    A write that meets an outage (`transient`) is retried (1 s, 2 s, ... at most 30 s apart) until it
    succeeds or `retry_s` have passed since it was submitted; then it is given up. Each write has its
    own deadline, so the writes queued behind a long outage are each tried at least once and the queue
    drains `retry_s` after the last submission at the latest. Any other error fails its write at once
    (traceback logged) and the next write goes on. Failed writes are listed in `failures`.
    """

    def __init__(self, retry_s: float | None = None, first_delay_s: float = 1.0) -> None:
        self.retry_s = float(os.environ.get(RETRY_ENV, DEFAULT_RETRY_S)) if retry_s is None else retry_s
        self.first_delay_s = first_delay_s
        self.failures: list[str] = []
        self.rejected = 0  # failures that were not outages, never retried
        self._queue: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._work, name="mlflow-writer", daemon=True)
        self._thread.start()

    def submit(self, what: str, write: Callable[[], None]) -> None:
        self._queue.put((what, write, time.monotonic() + self.retry_s))

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

    def _write(self, what: str, write: Callable[[], None], deadline: float) -> None:
        delay, failed_at = self.first_delay_s, None
        while True:
            try:
                write()
            except Exception as error:  # noqa: BLE001 - whatever the store raises, the sweep goes on
                message = f"{what}: {str(error).splitlines()[0][:300] if str(error) else type(error).__name__}"
                if not transient(error):
                    logger.error("MLflow write failed and is not retried (not an outage): %s", what, exc_info=error)
                    self.failures.append(message)
                    self.rejected += 1
                    return
                now = time.monotonic()
                if now + delay > deadline:
                    logger.warning("MLflow write given up (%s): unreachable until its deadline", message)
                    self.failures.append(message)
                    return
                if failed_at is None:
                    failed_at = now
                    logger.warning("MLflow write failed (%s); retrying for up to %.0f s", message, deadline - now)
                time.sleep(delay)
                delay = min(2 * delay, MAX_DELAY_S)
            else:
                if failed_at is not None:
                    logger.warning("MLflow reachable again after %.0f s", time.monotonic() - failed_at)
                return
