"""The background MLflow writer's retry policy, on writes that fail the way a store does."""
import threading

from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

from sweeps.writer import RecordWriter


def flaky(failures: int, error: Exception, log: list):
    """A write that raises `error` `failures` times, then records its success."""
    attempts = []

    def write():
        attempts.append(1)
        if len(attempts) <= failures:
            raise error
        log.append(threading.current_thread().name)
    return write, attempts


def test_transient_failures_are_retried_in_order_off_the_calling_thread():
    log = []
    writer = RecordWriter(retry_s=60, first_delay_s=0.01)
    first, first_attempts = flaky(3, MlflowException("API request failed: connection refused"), log)
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
