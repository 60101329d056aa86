"""Refinery, super.ai and Gravity under injected service faults: the whole pipeline, every record once, no leaks.

The same fault mix as the ABS test (5xx, 429 bursts with ``Retry-After``, responses lost after
the work was done, downloads cut off half way, slow answers) on each service's emulator, with a
share of records failing at the service too. Each kind of fault must have been injected; the run
must succeed with every extracted record exactly once, the remote operations created must stay
bounded, and neither the API key nor a presigned signature nor the S3 credentials may reach the
task logs or the metadata DB.
"""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, closing, contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.reliability.test_pipeline_faults import assert_no_leaks
from tests.support import admin, batchcode_connection, emulator, run_pipeline, sqlite_warehouse

RECORDS = 1_200
CHUNK = 200
FAULTS = {
    "fault_5xx_rate": 0.1,
    "fault_429_rate": 0.05,
    "fault_429_burst": 2,
    "fault_retry_after": 1,
    "fault_lost_response_rate": 0.08,
    "fault_truncate_rate": 0.3,
    "fault_slow_rate": 0.05,
    "fault_slow_seconds": 2.5,
    "seed": 7,
}
CREATED = {"refinery": "jobs_created", "superai": "batches_created", "gravity": "jobs_created"}


@contextmanager
def faulty_service(service: str, api_key: str, stack: ExitStack) -> Iterator[tuple[Any, list[str]]]:
    """The service's emulator with faults and partial failures; ``batchcode_default`` with a fresh key."""
    extra: dict[str, Any] = {"max_attempts": 10, "read_timeout": 1.5, "backoff_max": 2}
    overrides: dict[str, Any] = {**FAULTS, "api_keys": {api_key: "fault-tenant"}, "record_failure_rate": 0.05}
    secrets = [api_key]
    if service == "refinery":
        from tests.s3 import s3_sandbox

        s3 = stack.enter_context(s3_sandbox())
        overrides["s3_endpoint_url"] = s3.endpoint_url
        extra.update(manifest_location=f"s3://{s3.bucket}/manifests", storage_conn_id=s3.conn_id)
        secrets.append(s3.secret_access_key)
    if service == "superai":
        extra["app_uuid"] = str(uuid.uuid4())
    server = stack.enter_context(emulator(service, **overrides))
    stack.enter_context(batchcode_connection(server, secret=api_key, **extra))
    yield server, secrets


@pytest.mark.parametrize("service", ["refinery", "superai", "gravity"])
def test_each_service_survives_every_kind_of_fault(
    airflow_db: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str], service: str
) -> None:
    path = sqlite_warehouse(tmp_path, RECORDS, messy=False)
    api_key = f"key-{uuid.uuid4().hex}"
    with ExitStack() as stack, faulty_service(service, api_key, stack) as (server, secrets):
        dag_run = run_pipeline(tmp_path, BATCHCODE_TEST_CHUNK=str(CHUNK), BATCHCODE_TEST_RETRIES="3")
        stats = admin(server, "stats")
    log = capfd.readouterr()
    with closing(sqlite3.connect(path)) as conn:
        rows = conn.execute("SELECT position, code_status, error, operation_id FROM coded_responses").fetchall()
    created = sum(stats[CREATED[service]].values())
    injected = stats["faults"]
    print(f"\n[{service} faults] records in {RECORDS}, rows out {len(rows)}, operations {created}, faults {injected}")
    assert dag_run.state == "success"
    assert sorted(r[0] for r in rows) == list(range(1, RECORDS + 1)), "every record exactly once"
    chunks = RECORDS // CHUNK
    assert len({r[3] for r in rows}) == chunks
    assert chunks <= created <= chunks + injected.get("lost_response", 0), "operations stay bounded"
    for kind in ("5xx", "429", "lost_response", "slow"):
        assert injected.get(kind, 0) >= 1, f"no {kind} fault was injected"
    errors = [r for r in rows if r[1] == "error"]
    assert errors and all(r[2] for r in errors), "records failed by the service are reported with a reason"
    assert_no_leaks(log.out + log.err, airflow_db, secrets)
