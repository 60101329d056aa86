"""The reusable pipeline end to end through ``dag.test()`` on Refinery, super.ai and Gravity emulators.

The same DAG and operators as for ABS; each service takes its input with the create call, and
some records fail at the service (``record_failure_rate``): those come out as per-record errors,
every extracted record exactly once, one remote operation per chunk. Each emulator's injected faults
come in that service's documented error shape, which its client reads.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from contextlib import ExitStack, closing, contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.support import admin, batchcode_connection, emulator, run_pipeline, sqlite_warehouse

RECORDS = 300
CHUNK = 40
FAILURE_RATE = 0.1


@contextmanager
def service_connection(service: str, stack: ExitStack) -> Iterator[Any]:
    """An emulator of ``service`` with partial failures, and ``batchcode_default`` pointing at it."""
    extra: dict[str, Any] = {}
    overrides: dict[str, Any] = {"record_failure_rate": FAILURE_RATE, "processing_delay": 0.5}
    if service == "refinery":
        from tests.s3 import s3_sandbox

        s3 = stack.enter_context(s3_sandbox())
        overrides["s3_endpoint_url"] = s3.endpoint_url
        extra.update(manifest_location=f"s3://{s3.bucket}/manifests", storage_conn_id=s3.conn_id)
    if service == "superai":
        extra["app_uuid"] = "0b7e3a2c-5d1f-4e8a-9c6b-2f4d8e1a7b3c"
    server = stack.enter_context(emulator(service, **overrides))
    stack.enter_context(batchcode_connection(server, **extra))
    yield server


def summary_of(dag_run: Any) -> dict[str, Any]:
    """The ``summary`` task's return value."""
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    query = XComModel.get_many(run_id=dag_run.run_id, dag_ids=dag_run.dag_id, task_ids="summary", key="return_value")
    with create_session() as session:
        value = session.scalars(query).first()
        assert value is not None
        result: dict[str, Any] = XComModel.deserialize_value(value)
        return result


@pytest.mark.parametrize("extract", ["dbapi", "arrow"])
@pytest.mark.parametrize("service", ["refinery", "superai", "gravity"])
def test_each_service_codes_every_record_once_with_partial_failures_per_record(
    airflow_db: Path, tmp_path: Path, service: str, extract: str
) -> None:
    """On the default path and with ``columnar=True`` (the UTF-8 rules as Arrow expressions)."""
    columnar = "1" if extract == "arrow" else "0"
    path = sqlite_warehouse(tmp_path, RECORDS)
    with ExitStack() as stack, service_connection(service, stack) as server:
        dag_run = run_pipeline(tmp_path, BATCHCODE_TEST_CHUNK=str(CHUNK), BATCHCODE_TEST_COLUMNAR=columnar)
        stats = admin(server, "stats")
        latest = gravity_jobs_through_the_hook() if service == "gravity" else []
    assert dag_run.state == "success"
    with closing(sqlite3.connect(path)) as conn:
        total = conn.execute("SELECT count(*) FROM survey_responses").fetchone()[0]
        rows = conn.execute(
            "SELECT record_id, position, code_status, code_category, code_label, error, service, item_id, "
            "agreement, details, operation_id, occp_text, tasks_text FROM coded_responses ORDER BY position"
        ).fetchall()
    assert [r[1] for r in rows] == list(range(1, total + 1)), "every record exactly once"
    assert {r[6] for r in rows if r[10]} == {service}
    operations = {r[10] for r in rows if r[10]}
    created = json.dumps(stats)
    distinct = len({(r[11], r[12]) for r in rows if r[10]})  # each distinct text is sent once
    assert len(operations) == -(-distinct // CHUNK) >= 3, f"one remote operation per chunk of {CHUNK} ({created[:300]})"
    by_status: dict[str, list[tuple[Any, ...]]] = {}
    for row in rows:
        by_status.setdefault(row[2], []).append(row)
    sent = [r for r in rows if r[10]]
    service_errors = [r for r in by_status.get("error", []) if r[10]]
    assert 0 < len(service_errors) < 0.3 * len(sent), "some records fail at the service, not the run"
    assert all(r[5] for r in service_errors), "each failure says why"
    assert len(by_status["successful"]) > 0.5 * len(sent)
    assert all(r[0] and r[11] is not None for r in sent), "record ids and texts joined back"
    coded = by_status["successful"]
    if service == "refinery":
        assert all(r[3] in "12345678" and r[8] is not None and 0 < r[8] <= 1 for r in coded)
        assert all(r[7] for r in coded), "task ids kept"
    if service == "superai":
        assert all(r[7] for r in sent if r[2] != "error" or "job" in (r[5] or "").lower())
        assert all(len(r[3]) >= 1 for r in coded)
    summary = summary_of(dag_run)
    assert summary["service"] == service and summary["records"] == total
    if service == "gravity":
        assert summary["usage"]["billed_usage_dollars"] > 0
        assert operations <= {job["id"] for job in latest}
        assert all(job["name"].startswith("pipeline_test__") for job in latest[1:])
        assert latest[0]["name"] == "renamed by the hook"


def gravity_jobs_through_the_hook() -> list[dict[str, Any]]:
    """Rename the newest Gravity job and list the latest ones, through ``BatchCodeHook``."""
    from airflow_batchcode.hooks.batchcode import BatchCodeHook

    hook = BatchCodeHook()
    try:
        newest = hook.latest_jobs()[0]
        assert hook.rename_job(newest["id"], "renamed by the hook")["name"] == "renamed by the hook"
        return hook.latest_jobs()
    finally:
        hook.close()


@pytest.mark.parametrize(
    ("service", "shape"),
    [
        ("refinery", lambda message: {"error": message}),
        ("superai", lambda message: {"message": message}),
        ("gravity", lambda message: {"data": None, "isError": True, "errorMessage": message}),
    ],
)
def test_injected_errors_have_each_services_documented_shape_and_its_client_reads_them(
    service: str, shape: Any
) -> None:
    import requests

    from airflow_batchcode.exceptions import RateLimitedError, ServerError
    from airflow_batchcode.services.registry import ServiceConfig, build_client

    app_uuid = "0b7e3a2c-5d1f-4e8a-9c6b-2f4d8e1a7b3c"
    cases = (
        (1.0, 0.0, 500, "Error performing request", ServerError),
        (0.0, 1.0, 429, "Too Many Requests", RateLimitedError),
    )
    for rate_5xx, rate_429, status, message, error in cases:
        with emulator(service, fault_5xx_rate=rate_5xx, fault_429_rate=rate_429, fault_retry_after=0) as server:
            path = {"refinery": "/v1/jobs/job_1", "superai": f"/v1/apps/{app_uuid}/batches/b-1"}.get(
                service, "/api/v1/jobs/job-1"
            )
            raw = requests.get(server.base_url + path, timeout=5)
            assert (raw.status_code, raw.json()) == (status, shape(message))
            extra = {"rate_limit": 0, "max_attempts": 1, "app_uuid": app_uuid}
            client = build_client(ServiceConfig(service, server.base_url, password="demo-key", extra=extra))
            try:
                with pytest.raises(error) as caught:
                    client.get_operation("job_1", "anzsco")
            finally:
                client.close()
            assert caught.value.status_code == status and caught.value.service_message == message
