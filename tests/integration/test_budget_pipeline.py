"""The request budget end to end: the pipeline through ``dag.test()`` against an ABS emulator with a
scaled-down quota (25 requests per 30 s window) never runs the account out of quota, waits for the
next window when someone else spent it, and survives its shared Redis budget going away."""

from __future__ import annotations

import logging
import re
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.integration.test_pipeline_services import summary_of
from tests.support import admin, batchcode_connection, emulator, output, run_pipeline, sqlite_warehouse
from tests.tcp_proxy import TcpProxy

QUOTA, WINDOW = 25, 30.0
RECORDS, CHUNK = 50, "10"
REDIS = ("127.0.0.1", 6379)


def limit_exceeded(server: object) -> int:
    """How often the emulator answered 429 "Limit Exceeded"."""
    return int(admin(server, "stats")["throttled"].get("daily_quota", 0))  # type: ignore[arg-type]


def spend_quota(base_url: str) -> int:
    """Spend the window's quota as another user of the account would; return the requests made."""
    token = requests.post(
        f"{base_url}/oauth2/token",
        auth=("demo-client", "demo-secret"),
        data={"grant_type": "client_credentials"},
        timeout=5,
    ).json()["access_token"]
    spent = 0
    while requests.get(f"{base_url}/v1/topics", headers={"Authorization": token}, timeout=5).status_code == 200:
        spent += 1
    return spent


def start_of_window(margin: float = 3.0) -> None:
    """Sleep until a fresh quota window has just started, so a test's steps land in one window."""
    into = time.time() % WINDOW
    if into > margin:
        time.sleep(WINDOW - into + 0.2)


@pytest.fixture
def redis_prefix() -> Iterator[str]:
    """A unique Redis key prefix, every key under it deleted afterwards."""
    import redis

    prefix = f"batchcode-test:{uuid.uuid4().hex}"
    client = redis.Redis(*REDIS)
    try:
        client.ping()
    except redis.RedisError:
        pytest.skip("no Redis at 127.0.0.1:6379")
    yield prefix
    for key in client.scan_iter(f"{prefix}:*"):
        client.delete(key)
    client.close()


def run_with_quota(tmp_path: Path, **extra: object) -> tuple[object, int]:
    warehouse = sqlite_warehouse(tmp_path, RECORDS, messy=False)
    dag_run = run_pipeline(tmp_path, BATCHCODE_TEST_CHUNK=CHUNK, BATCHCODE_TEST_POLL="1")
    return dag_run, len(output(lambda: sqlite3.connect(warehouse)))


def test_a_scaled_down_quota_is_never_exceeded(airflow_db: Path, tmp_path: Path) -> None:
    overrides = {"daily_quota": QUOTA, "quota_window": WINDOW, "processing_delay": 40, "processing_workers": 5}
    with emulator(**overrides) as server, batchcode_connection(server, daily_quota=QUOTA, quota_window=WINDOW):
        dag_run, rows = run_with_quota(tmp_path)
        assert limit_exceeded(server) == 0
        served = admin(server, "stats")["requests"]
    assert dag_run.state == "success"
    assert rows == RECORDS
    requests_ = summary_of(dag_run)["requests"]
    api_calls = sum(count for route, count in served.items() if " /v1/" in route)  # not tokens, storage or admin
    assert requests_["used"] == api_calls, "the summary counts every API request of the run"
    assert 0 <= requests_["left_in_window"] <= QUOTA and requests_["window_resets"].endswith("UTC")


def test_a_quota_spent_by_someone_else_is_waited_out(
    airflow_db: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    overrides = {"daily_quota": QUOTA, "quota_window": WINDOW, "processing_delay": 1, "processing_workers": 5}
    with emulator(**overrides) as server, batchcode_connection(server, daily_quota=QUOTA, quota_window=WINDOW):
        start_of_window()
        assert spend_quota(server.base_url) == QUOTA
        reset = (time.time() // WINDOW + 1) * WINDOW
        with caplog.at_level(logging.WARNING, logger="airflow_batchcode.services"):
            dag_run, rows = run_with_quota(tmp_path)
        refused = limit_exceeded(server)
    assert dag_run.state == "success"
    assert rows == RECORDS
    assert refused >= 2, "our first call met the spent quota (the other user's last call was refused too)"
    assert time.time() >= reset, "the run waited for the next window"
    logged = caplog.text + "".join(capfd.readouterr())  # task logs may go to the console, not to caplog
    assert re.search(r"every call waits for the quota window to reset at 20\d\d-\d\d-\d\d \d\d:\d\d:\d\d UTC", logged)


def test_a_redis_budget_that_goes_away_falls_back_to_the_process(
    airflow_db: Path,
    tmp_path: Path,
    redis_prefix: str,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    overrides = {"daily_quota": QUOTA, "quota_window": WINDOW, "processing_delay": 8, "processing_workers": 5}
    with TcpProxy(*REDIS) as proxy:
        url = f"redis://127.0.0.1:{proxy.port}/0"
        with (
            emulator(**overrides) as server,
            batchcode_connection(
                server, daily_quota=QUOTA, quota_window=WINDOW, budget_url=url, budget_prefix=redis_prefix
            ),
        ):
            threading.Timer(4.0, proxy.stop).start()
            with caplog.at_level(logging.WARNING, logger="airflow_batchcode.services"):
                dag_run, rows = run_with_quota(tmp_path)
            refused = limit_exceeded(server)
        assert proxy.connections > 0, "the budget was kept in Redis before it went away"
    assert dag_run.state == "success"
    assert rows == RECORDS
    assert refused == 0, "the process carried on from the shared count"
    assert "The shared request budget is unreachable" in caplog.text + "".join(capfd.readouterr())
