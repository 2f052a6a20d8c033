"""The background MLflow writer's retry policy, on writes that fail the way a store does: only outages
are retried, each write until its own deadline; anything else fails that write at once."""
import http.server
import logging
import os
import sqlite3
import threading
import time

import botocore.exceptions
import mlflow
import optuna
import pytest
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE, TEMPORARILY_UNAVAILABLE

from conftest import free_port
from sweeps.writer import RecordWriter, transient


def flaky(failures: int, error: Exception, log: list):
    """A write that raises `error` `failures` times, then records its success."""
    attempts = []

    def write():
        attempts.append(1)
        if len(attempts) <= failures:
            raise error
        log.append(threading.current_thread().name)
    return write, attempts


def client_error(uri: str) -> Exception:
    """What a real MLflow client raises for a write to `uri` (MLflow's own HTTP retries off)."""
    os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "0"
    try:
        mlflow.MlflowClient(uri).set_tag("0" * 32, "key", "value")
    except Exception as error:  # noqa: BLE001
        return error
    finally:
        del os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"]
    raise AssertionError(f"a write to {uri} succeeded")


@pytest.fixture(scope="module")
def refused() -> Exception:
    """Connection refused: MlflowException(INTERNAL_ERROR) with requests' ConnectionError as its context."""
    return client_error(f"http://127.0.0.1:{free_port()}")


def answering(status: int, body: str) -> http.server.ThreadingHTTPServer:
    """A loopback HTTP server that answers every request with `status` and `body`."""
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body.encode())

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def server_error(status: int, body: str = "{}") -> Exception:
    server = answering(status, body)
    try:
        return client_error(f"http://127.0.0.1:{server.server_address[1]}")
    finally:
        server.shutdown()


def test_transient_failures_are_retried_in_order_off_the_calling_thread(refused):
    log = []
    writer = RecordWriter(retry_s=60, first_delay_s=0.01)
    first, first_attempts = flaky(3, refused, log)
    second, second_attempts = flaky(0, None, log)
    writer.submit("first", first)
    writer.submit("second", second)
    writer.close()
    assert (len(first_attempts), len(second_attempts)) == (4, 1)
    assert log == ["mlflow-writer", "mlflow-writer"] and writer.failures == []


def test_a_bad_request_is_given_up_at_once_and_the_next_write_still_runs():
    log = []
    writer = RecordWriter(retry_s=60, first_delay_s=0.01)
    bad, bad_attempts = flaky(99, MlflowException("bad param", error_code=INVALID_PARAMETER_VALUE), log)
    good, _ = flaky(0, None, log)
    writer.submit("bad", bad)
    writer.submit("good", good)
    writer.close()
    assert len(bad_attempts) == 1 and writer.failures == ["bad: bad param"] and log == ["mlflow-writer"]


def test_a_programming_error_fails_its_write_at_once_with_its_traceback_and_the_queue_goes_on(caplog):
    """A deterministic error (here one that would pass on a second try) is not an outage: one attempt,
    counted, traceback logged, and the next write runs at once."""
    log = []
    writer = RecordWriter(retry_s=60, first_delay_s=0.01)
    bug, bug_attempts = flaky(1, RuntimeError("a bug in the record"), log)
    good, good_attempts = flaky(0, None, log)
    with caplog.at_level(logging.ERROR, logger="sweeps.writer"):
        writer.submit("bug", bug)
        writer.submit("good", good)
        writer.close()
    assert (len(bug_attempts), len(good_attempts)) == (1, 1)
    assert writer.failures == ["bug: a bug in the record"] and writer.rejected == 1 and log == ["mlflow-writer"]
    (record,) = [record for record in caplog.records if record.exc_info]
    assert record.exc_info[0] is RuntimeError and "bug" in record.getMessage()


def test_only_outages_count_as_transient(refused):
    """Classified on what the libraries really raise: MLflow's client against a refused port and a loopback
    server answering 429/500/503 (MLflow wraps each into MlflowException(INTERNAL_ERROR) over the requests
    error), a locked sqlite store (TEMPORARILY_UNAVAILABLE over SQLAlchemy's OperationalError), S3."""
    locked = MlflowException("database is locked", error_code=TEMPORARILY_UNAVAILABLE)
    locked.__cause__ = sqlite3.OperationalError("database is locked")

    def s3_error(code: str, status: int) -> botocore.exceptions.ClientError:
        return botocore.exceptions.ClientError(
            {"Error": {"Code": code, "Message": code}, "ResponseMetadata": {"HTTPStatusCode": status}}, "PutObject")

    outages = {"refused": refused, "429": server_error(429), "500": server_error(500, "oops"),
               "503": server_error(503, '{"error_code": "TEMPORARILY_UNAVAILABLE", "message": "busy"}'),
               "sqlite locked": locked, "timeout": TimeoutError("timed out"), "S3 SlowDown": s3_error("SlowDown", 503),
               "S3 unreachable": botocore.exceptions.EndpointConnectionError(endpoint_url="http://127.0.0.1:1")}
    faults = {"400": server_error(400, '{"error_code": "INVALID_PARAMETER_VALUE", "message": "bad"}'),
              "RuntimeError": RuntimeError("bug"), "ValueError": ValueError("nan"), "KeyError": KeyError("run"),
              "optuna": optuna.exceptions.StorageInternalError("bad trial"),
              "S3 AccessDenied": s3_error("AccessDenied", 403),
              "MlflowException INTERNAL_ERROR": MlflowException("an error inside the local store")}
    assert {name: transient(error) for name, error in {**outages, **faults}.items()} == \
        {**dict.fromkeys(outages, True), **dict.fromkeys(faults, False)}


def test_each_write_has_its_own_deadline(refused):
    """A write that waited in the queue past its deadline (behind a slow one) is tried once; one submitted
    later gets a whole window of its own, whatever failed before it."""
    log = []
    writer = RecordWriter(retry_s=1.0, first_delay_s=0.01)
    writer.submit("slow", lambda: time.sleep(1.5))
    late, late_attempts = flaky(2, refused, log)
    writer.submit("late", late)
    writer.flush()
    fresh, fresh_attempts = flaky(2, refused, log)
    writer.submit("fresh", fresh)
    writer.close()
    assert (len(late_attempts), len(fresh_attempts)) == (1, 3)
    assert len(writer.failures) == 1 and writer.failures[0].startswith("late: API request to") and log == ["mlflow-writer"]


def test_an_outage_longer_than_the_window_gives_up_then_each_later_write_is_tried_once():
    log = []
    writer = RecordWriter(retry_s=0.2, first_delay_s=0.05)
    down = ConnectionError("connection refused")
    first, first_attempts = flaky(99, down, log)
    second, second_attempts = flaky(99, down, log)
    back, back_attempts = flaky(0, None, log)
    for name, write in (("first", first), ("second", second), ("back", back)):
        writer.submit(name, write)
    writer.close()
    assert len(first_attempts) > 1 and len(second_attempts) == 1 and len(back_attempts) == 1
    assert writer.failures == ["first: connection refused", "second: connection refused"]
    assert log == ["mlflow-writer"]
