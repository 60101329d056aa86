"""The Refinery client, object store and normaliser against the Refinery emulator and a real S3 endpoint (moto).

Each test drives real HTTP on loopback: the client stages the converted manifest in S3 through the
Airflow ``aws`` connection, the emulator reads it with the credentials sent in the job, codes it,
and serves (or delivers) the results, which the normaliser joins back to manifest lines.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import Iterator
from contextlib import closing
from typing import Any

import pytest
import requests

from airflow_batchcode.emulator.server import EmulatorServer
from airflow_batchcode.exceptions import (
    AuthenticationError,
    BatchCodeError,
    ConfigurationError,
    ConflictError,
    CreateOutcomeUnknownError,
    NotFoundError,
    OperationFailedError,
    QuotaExceededError,
)
from airflow_batchcode.hooks.object_store import object_store_for
from airflow_batchcode.normalise import Coded, reader_for
from airflow_batchcode.services.base import Operation, OperationState
from airflow_batchcode.services.refinery import AsyncRefineryClient, RefineryClient, RefinerySettings
from airflow_batchcode.services.registry import ServiceConfig, build_async_client, build_client
from tests.s3 import S3Sandbox, s3_sandbox
from tests.support import admin, emulator, jsonl_manifest, wait_terminal

RECORDS: list[dict[str, Any]] = [
    {"recordId": "r1", "occp_text": "software developer", "tasks_text": "writing code and unit tests"},
    {"recordId": "r2", "occp_text": "Paramedic", "tasks_text": "responding to medical emergencies"},
    {"occp_text": "Brickie", "tasks_text": ""},
    {"recordId": "r4", "occp_text": "worker", "tasks_text": "various"},
    {"recordId": "r5", "occp_text": "truck driver", "tasks_text": "driving a semi trailer, 100% safe & sound"},
    {"recordId": "r6", "occp_text": "retail sales assistant", "tasks_text": "serving customers"},
    {"recordId": "r7", "occp_text": "nurse", "tasks_text": "caring for patients"},
    {"recordId": "r8", "occp_text": "office clerk", "tasks_text": "filing, typing #1 priority"},
] * 5


@pytest.fixture(scope="module")
def storage() -> Iterator[S3Sandbox]:
    """One S3 endpoint that checks signatures, a bucket and the ``refinery_s3`` aws connection."""
    with s3_sandbox("refinery_s3", check_credentials=True) as sandbox:
        yield sandbox


@pytest.fixture
def secrets() -> list[str]:
    return []


def extras(storage: S3Sandbox, **more: Any) -> dict[str, Any]:
    return {
        "manifest_location": f"s3://{storage.bucket}/manifests",
        "storage_conn_id": storage.conn_id,
        "backoff_base": 0.02,
        "backoff_max": 0.2,
        "export_wait_base": 0.05,
        **more,
    }


def client_for(
    server: EmulatorServer, storage: S3Sandbox, secrets: list[str], *, key: str = "demo-key", **more: Any
) -> RefineryClient:
    extra = extras(storage, **more)
    config = ServiceConfig("refinery", server.base_url, password=key, extra=extra, object_store=object_store_for(extra))
    client = build_client(config, on_secret=secrets.append)
    assert isinstance(client, RefineryClient)
    return client


def refinery(storage: S3Sandbox, **overrides: Any) -> Any:
    return emulator(service="refinery", s3_endpoint_url=storage.endpoint_url, **overrides)


def run_job(
    client: RefineryClient, records: list[dict[str, Any]], *, name: str | None = None, topic: str = "anzsco"
) -> tuple[str, bytes, dict[str, Any], list[Coded]]:
    target = client.create_operation(topic, manifest=jsonl_manifest(records), name=name)
    assert target.upload_url == ""
    done = wait_terminal(client, target.operation_id)
    assert done.state is OperationState.COMPLETE, done.describe()
    out, meta = io.BytesIO(), io.BytesIO()
    sizes = client.download_results(target.operation_id, topic, out, meta)
    assert sizes == (len(out.getvalue()), len(meta.getvalue()))
    metadata = json.loads(meta.getvalue())
    coded_reader, _ = reader_for("refinery")
    rows = list(coded_reader(io.BytesIO(out.getvalue()), metadata, len(records)))
    return target.operation_id, out.getvalue(), metadata, rows


def post_job(server: EmulatorServer, body: dict[str, Any], key: str = "demo-key") -> requests.Response:
    return requests.post(f"{server.base_url}/v1/jobs", json=body, headers={"Authorization": f"Bearer {key}"}, timeout=5)


def direct_body(storage: S3Sandbox, key: str, **changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "manifest_url": f"s3://{storage.bucket}/{key}",
        "label_spec": {"question": "Which major group of ANZSCO?", "options": ["1 Managers", "2 Professionals"]},
        "consensus_threshold": 3,
        "task_type": "text_classification",
        "credentials": {
            "access_key_id": storage.access_key_id,
            "secret_access_key": storage.secret_access_key,
            "region": storage.region,
        },
    }
    body.update(changes)
    return body


def test_a_job_runs_end_to_end_and_joins_back_in_manifest_order(storage: S3Sandbox, secrets: list[str]) -> None:
    with refinery(storage) as server, client_for(server, storage, secrets) as client:
        job_id, raw, metadata, rows = run_job(client, RECORDS, name="chunk-0001")
        stats = admin(server, "stats")
    staged = storage.read("manifests/chunk-0001.jsonl").decode().splitlines()
    assert len(staged) == len(RECORDS)
    first = json.loads(staged[0])
    assert first["metadata"] == {"line": 0, "record_id": "r1"}
    assert first["data_url"] == f"s3://{storage.bucket}/manifests/chunk-0001.record-0.json", "an object beside it"
    assert json.loads(storage.read("manifests/chunk-0001.record-0.json")) == {
        "occp_text": "software developer",
        "tasks_text": "writing code and unit tests",
    }
    assert json.loads(staged[2])["metadata"] == {"line": 2, "record_id": None}

    export_lines = [json.loads(line)["metadata"]["line"] for line in raw.splitlines()]
    assert sorted(export_lines) == list(range(len(RECORDS)))
    assert export_lines != sorted(export_lines), "the emulator shuffles its export"

    assert len(rows) == len(RECORDS)
    assert [r.record_id for r in rows[:8]] == ["r1", "r2", None, "r4", "r5", "r6", "r7", "r8"]
    by_text = {rec["occp_text"]: row for rec, row in zip(RECORDS, rows, strict=True)}
    assert by_text["software developer"].code_status == "successful"
    assert by_text["software developer"].code_category == "2"
    assert by_text["software developer"].code_label == "Professionals"
    assert by_text["truck driver"].code_category == "7"
    assert all(r.item_id and r.item_id.startswith("task_") for r in rows)
    successful = [r for r in rows if r.code_status == "successful"]
    assert successful and all(r.agreement and 0 < r.agreement <= 1 for r in successful)
    assert all(json.loads(r.details or "{}")["worker_count"] >= 3 for r in rows)
    assert {r.code_status for r in rows} <= {"successful", "unsuccessful"}

    assert metadata["job"]["job_id"] == job_id and metadata["job"]["status"] == "completed"
    assert metadata["job"]["total_tasks"] == len(RECORDS) and metadata["job"]["tasks_failed"] == 0
    assert metadata["label_spec"]["question"] == "Which major group of ANZSCO does this job belong to?"
    assert len(metadata["label_spec"]["options"]) == 8 and metadata["results"] == "export"
    assert "credentials" not in json.dumps(metadata)
    assert stats["jobs_created"] == {"demo-tenant": 1} and stats["manifests_read"] == {"demo-tenant": 1}
    assert storage.secret_access_key in secrets and "demo-key" in secrets


def test_status_reports_progress_and_the_async_client_agrees(storage: S3Sandbox, secrets: list[str]) -> None:
    with refinery(storage, processing_delay=1.0) as server, client_for(server, storage, secrets) as client:
        target = client.create_operation("osca", manifest=jsonl_manifest(RECORDS[:4]))
        first = client.get_operation(target.operation_id, "osca")
        assert first.state is OperationState.IN_PROGRESS and first.raw_status in ("accepted", "processing")
        assert set(first.progress) == {"progress_percent", "tasks_done", "tasks_failed", "total_tasks"}
        done = wait_terminal(client, target.operation_id)
        assert done.raw_status == "completed"
        assert done.progress == {"progress_percent": 100.0, "tasks_done": 4, "tasks_failed": 0, "total_tasks": 4}
        assert "progress_percent=100.0" in done.describe()

        extra = extras(storage)
        config = ServiceConfig("refinery", server.base_url, password="demo-key", extra=extra)

        async def status() -> Operation:
            async_client = build_async_client(config)
            assert isinstance(async_client, AsyncRefineryClient)
            try:
                return await async_client.get_operation(target.operation_id, "osca")
            finally:
                await async_client.aclose()

        assert asyncio.run(status()) == done


def test_partial_failures_become_error_rows_and_usage(storage: S3Sandbox, secrets: list[str]) -> None:
    with refinery(storage, record_failure_rate=0.3) as server, client_for(server, storage, secrets) as client:
        _, _, metadata, rows = run_job(client, RECORDS)
    errors = [r for r in rows if r.code_status == "error"]
    assert 0 < len(errors) < len(RECORDS)
    assert all(r.error == "no worker could complete the task" and r.item_id for r in errors)
    _, usage = reader_for("refinery")
    assert usage(metadata) == {"tasks_failed": float(len(errors))}
    assert metadata["job"]["tasks_done"] == len(RECORDS) - len(errors)


def test_bad_manifest_lines_fail_their_tasks_not_the_job(storage: S3Sandbox, secrets: list[str]) -> None:
    lines = [
        {"data_url": "data:application/json,%7B%22occp_text%22%3A%22chef%22%2C%22tasks_text%22%3A%22%22%7D"},
        "not json at all",
        {"metadata": {"line": 2}},
        {"data_url": "https://cdn.example.com/1.json", "metadata": {"line": 3}},
        {"data_url": "data:text/plain;base64,cGx1bWJlcg==", "metadata": {"line": 4}},
        {"data_url": "data:application/json,%7Bnope", "metadata": {"line": 5}},
    ]
    text = "\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines) + "\n"
    storage.client().put_object(Bucket=storage.bucket, Key="hand/bad.jsonl", Body=text.encode())
    with refinery(storage) as server, client_for(server, storage, secrets) as client:
        answer = post_job(server, direct_body(storage, "hand/bad.jsonl"))
        assert answer.status_code == 202
        job_id = answer.json()["job_id"]
        done = wait_terminal(client, job_id)
        out = io.BytesIO()
        client.download_results(job_id, "anzsco", out)
    assert done.state is OperationState.COMPLETE
    assert done.progress["total_tasks"] == 6 and done.progress["tasks_failed"] == 4
    errors = sorted(json.loads(line).get("error") or "" for line in out.getvalue().splitlines())
    assert errors == sorted(
        [
            "",
            "",
            "manifest line 2 is not a JSON object",
            "data_url is required",
            "data_url could not be fetched: the emulator only reads data: URLs and objects on its S3 endpoint",
            "data_url content must be a JSON object with string occp_text and tasks_text",
        ]
    )


def test_a_bad_api_key_and_another_tenants_job(storage: S3Sandbox, secrets: list[str]) -> None:
    with refinery(storage) as server:
        with client_for(server, storage, secrets) as client:
            target = client.create_operation("anzsco", manifest=jsonl_manifest(RECORDS[:2]))
        with client_for(server, storage, secrets, key="wrong-api-key-123") as stranger:
            with pytest.raises(AuthenticationError) as bad_key:
                stranger.create_operation("anzsco", manifest=jsonl_manifest(RECORDS[:2]))
            with pytest.raises(AuthenticationError):
                stranger.get_operation(target.operation_id, "anzsco")
        with client_for(server, storage, secrets, key="other-key") as other:
            with pytest.raises(NotFoundError) as not_mine:
                other.get_operation(target.operation_id, "anzsco")
            with pytest.raises(NotFoundError):
                other.download_results(target.operation_id, "anzsco", io.BytesIO())
    assert "HTTP 401" in str(bad_key.value) and "invalid API key" in str(bad_key.value)
    assert "wrong-api-key-123" not in str(bad_key.value)
    assert target.operation_id in str(not_mine.value) and "another account" in str(not_mine.value)


def test_export_conflicts_until_the_job_completes(storage: S3Sandbox, secrets: list[str]) -> None:
    with (
        refinery(storage, processing_delay=30.0) as server,
        client_for(server, storage, secrets, export_wait_attempts=2) as client,
    ):
        target = client.create_operation("anzsco", manifest=jsonl_manifest(RECORDS[:3]))
        raw = requests.get(
            f"{server.base_url}/v1/jobs/{target.operation_id}/export",
            headers={"Authorization": "Bearer demo-key"},
            timeout=5,
        )
        assert raw.status_code == 409 and raw.json() == {"error": "job is not completed yet"}
        assert not client.results_available(client.get_operation(target.operation_id, "anzsco"))
        with pytest.raises(ConflictError) as caught:
            client.download_results(target.operation_id, "anzsco", io.BytesIO())
        assert target.operation_id in str(caught.value) and "not completed yet" in str(caught.value)
        admin(server, "clock", {"advance": 31})
        done = wait_terminal(client, target.operation_id)
        assert client.results_available(done)
        out = io.BytesIO(b"stale bytes")
        out.seek(0, io.SEEK_END)
        written, _ = client.download_results(target.operation_id, "anzsco", out)
    assert len(out.getvalue()) == len(b"stale bytes") + written
    assert len(out.getvalue()[len(b"stale bytes") :].splitlines()) == 3


def test_exports_expire_after_retention(storage: S3Sandbox, secrets: list[str]) -> None:
    with refinery(storage, retention=60) as server, client_for(server, storage, secrets) as client:
        target = client.create_operation("anzsco", manifest=jsonl_manifest(RECORDS[:2]))
        done = wait_terminal(client, target.operation_id)
        ranged = requests.get(
            f"{server.base_url}/v1/jobs/{target.operation_id}/export",
            headers={"Authorization": "Bearer demo-key", "Range": "bytes=0-9"},
            timeout=5,
        )
        assert ranged.status_code == 206 and len(ranged.content) == 10
        assert ranged.headers["Content-Type"] == "application/x-ndjson"
        assert client.results_available(done)
        admin(server, "clock", {"advance": 61})
        assert not client.results_available(done)
        with pytest.raises(NotFoundError) as caught:
            client.download_results(target.operation_id, "anzsco", io.BytesIO())
    assert "export expired" in str(caught.value)


def test_delivery_writes_results_to_the_bucket_and_the_client_reads_them_there(
    storage: S3Sandbox, secrets: list[str]
) -> None:
    results_bucket = storage.new_bucket("results")
    with (
        refinery(storage) as server,
        client_for(server, storage, secrets, delivery_bucket=results_bucket) as client,
    ):
        job_id, raw, metadata, rows = run_job(client, RECORDS[:8])
        assert client.results_available(client.get_operation(job_id, "anzsco"))
        stats = admin(server, "stats")
    key = f"refinery/{job_id}/results.jsonl"
    assert storage.keys("refinery/", bucket=results_bucket) == [key]
    assert raw == storage.read(key, bucket=results_bucket)
    assert metadata["results"] == f"s3://{results_bucket}/{key}"
    assert metadata["job"]["delivery"] == {"type": "s3", "bucket": results_bucket}
    assert stats["exports"] == {} and stats["deliveries"] == {"demo-tenant": 1}
    assert [r.record_id for r in rows] == ["r1", "r2", None, "r4", "r5", "r6", "r7", "r8"]


def test_unreadable_manifests_fail_the_job_with_a_clear_reason(storage: S3Sandbox, secrets: list[str]) -> None:
    storage.client().put_object(Bucket=storage.bucket, Key="hand/ok.jsonl", Body=b'{"data_url": "data:,x"}\n')
    wrong = direct_body(storage, "hand/ok.jsonl")
    wrong["credentials"] = {**wrong["credentials"], "secret_access_key": "not-the-right-secret"}
    cases = {
        "wrong key": (wrong, "access denied with the supplied credentials"),
        "missing": (direct_body(storage, "hand/missing.jsonl"), "no such object or bucket"),
        "gcs": (
            direct_body(
                storage,
                "x",
                manifest_url="gs://bucket/manifest.jsonl",
                credentials={"service_account_json": '{"type": "service_account"}'},
            ),
            "GCS not reachable from the emulator",
        ),
    }
    with refinery(storage) as server, client_for(server, storage, secrets) as client:
        for name, (body, reason) in cases.items():
            answer = post_job(server, body)
            assert answer.status_code == 202, name
            job_id = answer.json()["job_id"]
            failed = wait_terminal(client, job_id)
            assert failed.state is OperationState.FAILED and reason in (failed.error or ""), name
            assert "not-the-right-secret" not in json.dumps(client.job(job_id))
            with pytest.raises(OperationFailedError) as caught:
                client.download_results(job_id, "anzsco", io.BytesIO())
            assert job_id in str(caught.value) and reason in str(caught.value)
            conflict = requests.get(
                f"{server.base_url}/v1/jobs/{job_id}/export", headers={"Authorization": "Bearer demo-key"}, timeout=5
            )
            assert conflict.status_code == 409 and conflict.json()["error"].startswith("job failed")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"manifest_url": "ftp://bucket/key"}, "manifest_url"),
        ({"manifest_url": "https://example.com/manifest.jsonl"}, "manifest_url"),
        ({"label_spec": {"question": "Animal?", "options": ["cat"]}}, "label_spec.options"),
        ({"label_spec": {"options": ["cat", "dog"]}}, "label_spec.question"),
        ({"consensus_threshold": 11}, "consensus_threshold"),
        ({"consensus_threshold": True}, "consensus_threshold"),
        ({"credentials": None}, "credentials"),
        ({"delivery": {"type": "gcs", "bucket": "b"}}, "delivery"),
        ({"callback_url": "javascript:alert(1)"}, "callback_url"),
    ],
)
def test_the_emulator_validates_job_bodies(storage: S3Sandbox, change: dict[str, Any], message: str) -> None:
    with refinery(storage) as server:
        answer = post_job(server, direct_body(storage, "k", **change))
        assert answer.status_code == 400
        assert message in answer.json()["error"]
        assert set(answer.json()) == {"error"}
        assert admin(server, "stats")["jobs_created"] == {}


def test_https_s3_manifest_urls_are_accepted(storage: S3Sandbox, secrets: list[str]) -> None:
    storage.client().put_object(
        Bucket=storage.bucket, Key="hand/one.jsonl", Body=b'{"data_url": "data:text/plain,nurse"}\n'
    )
    with refinery(storage) as server, client_for(server, storage, secrets) as client:
        for url in (
            f"https://{storage.bucket}.s3.amazonaws.com/hand/one.jsonl",
            f"https://s3.ap-southeast-2.amazonaws.com/{storage.bucket}/hand/one.jsonl",
        ):
            answer = post_job(server, direct_body(storage, "x", manifest_url=url))
            assert answer.status_code == 202
            assert wait_terminal(client, answer.json()["job_id"]).state is OperationState.COMPLETE


def test_quota_exhaustion_is_a_403_the_client_does_not_retry(storage: S3Sandbox, secrets: list[str]) -> None:
    with refinery(storage, daily_quota=2) as server, client_for(server, storage, secrets) as client:
        target = client.create_operation("anzsco", manifest=jsonl_manifest(RECORDS[:1]))
        client.get_operation(target.operation_id, "anzsco")
        with pytest.raises(QuotaExceededError) as caught:
            client.get_operation(target.operation_id, "anzsco")
        stats = admin(server, "stats")
    assert caught.value.status_code == 403 and "quota" in str(caught.value)
    assert stats["requests"]["GET /v1/jobs/{job_id}"] == 2


def test_faults_on_status_and_export_are_retried(storage: S3Sandbox, secrets: list[str]) -> None:
    with refinery(storage) as server, client_for(server, storage, secrets, max_attempts=8) as client:
        target = client.create_operation("anzsco", manifest=jsonl_manifest(RECORDS[:8]))
        wait_terminal(client, target.operation_id)
        admin(server, "faults", {"5xx_rate": 0.3, "lost_response_rate": 0.3, "only": "GET /v1/jobs", "seed": 7})
        for _ in range(5):
            out = io.BytesIO()
            written, _ = client.download_results(target.operation_id, "anzsco", out)
            assert written == len(out.getvalue()) and len(out.getvalue().splitlines()) == 8
        injected = admin(server, "stats")["faults"]
    assert injected.get("5xx", 0) + injected.get("lost_response", 0) > 0


@pytest.mark.parametrize("fault", ["5xx_rate", "lost_response_rate"])
def test_create_is_tried_once_and_a_lost_answer_names_the_manifest(
    storage: S3Sandbox, secrets: list[str], fault: str
) -> None:
    with refinery(storage) as server, client_for(server, storage, secrets, max_attempts=5) as client:
        admin(server, "faults", {fault: 1.0, "only": "^POST /v1/jobs$"})
        with pytest.raises(CreateOutcomeUnknownError) as caught:
            client.create_operation("anzsco", manifest=jsonl_manifest(RECORDS[:2]), name="chunk-7")
        stats = admin(server, "stats")
    injected = {"5xx_rate": "5xx", "lost_response_rate": "lost_response"}[fault]
    assert stats["faults"] == {injected: 1}, "one try: a second could start a second paid job"
    assert stats["jobs_created"] == ({} if fault == "5xx_rate" else {"demo-tenant": 1})
    message = str(caught.value)
    assert f"s3://{storage.bucket}/" in message and "chunk-7.jsonl" in message
    assert "before running the task again" in message
    assert not any(s in message for s in secrets)


def test_a_create_refused_with_429_is_tried_again_after_retry_after(storage: S3Sandbox, secrets: list[str]) -> None:
    """A 429 means the service did not take the request: the create waits and tries again (a 5xx does not)."""
    with refinery(storage) as server, client_for(server, storage, secrets, max_attempts=5) as client:
        # seed 1: the first try draws a burst of two 429s, the third try draws no fault
        faults = {"429_rate": 0.5, "429_burst": 2, "retry_after": 0, "only": "^POST /v1/jobs$", "seed": 1}
        admin(server, "faults", faults)
        target = client.create_operation("anzsco", manifest=jsonl_manifest(RECORDS[:2]), name="chunk-8")
        stats = admin(server, "stats")
    assert target.operation_id
    assert stats["faults"] == {"429": 2} and stats["jobs_created"] == {"demo-tenant": 1}


def test_secrets_stay_out_of_errors_reprs_logs_and_job_objects(
    storage: S3Sandbox, secrets: list[str], capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    texts: list[str] = []
    with refinery(storage) as server:
        with client_for(server, storage, secrets, max_attempts=10) as client:
            admin(server, "faults", {"5xx_rate": 1.0, "only": "^POST /v1/jobs$", "seed": 3})
            with pytest.raises(CreateOutcomeUnknownError) as lost:
                client.create_operation("anzsco", manifest=jsonl_manifest(RECORDS[:2]))
            texts.append(str(lost.value))
            admin(server, "faults", {"5xx_rate": 0.5, "only": "^GET /v1/jobs", "seed": 3})
            target = client.create_operation("anzsco", manifest=jsonl_manifest(RECORDS[:2]))
            texts += [
                repr(client),
                repr(client.settings),
                repr(client.object_store),
                json.dumps(client.job(target.operation_id)),
            ]
            operation = wait_terminal(client, target.operation_id)
            texts.append(repr(operation))
        for key, call in (
            ("wrong-api-key-123", lambda c: c.get_operation(target.operation_id, "anzsco")),
            ("other-key", lambda c: c.download_results(target.operation_id, "anzsco", io.BytesIO())),
            ("demo-key", lambda c: c.get_operation("job_does_not_exist", "anzsco")),
        ):
            with client_for(server, storage, secrets, key=key) as probe, pytest.raises(BatchCodeError) as caught:
                call(probe)
            texts.append(str(caught.value))
        bad = extras(storage, manifest_location="s3://no-such-bucket-here/x")
        config = ServiceConfig(
            "refinery", server.base_url, password="demo-key", extra=bad, object_store=object_store_for(bad)
        )
        with closing(build_client(config)) as unstaged, pytest.raises(BatchCodeError) as caught:
            unstaged.create_operation("anzsco", manifest=jsonl_manifest(RECORDS[:1]))
        texts.append(str(caught.value))
        texts.append(repr(config))
        assert admin(server, "stats")["faults"].get("5xx", 0) > 0
    console = capsys.readouterr()
    logged = caplog.text + console.out + console.err  # Airflow's structlog may write to the console directly
    assert "retrying" in logged
    texts.append(logged)
    leaked = [
        s
        for s in ("wrong-api-key-123", "demo-key", "other-key", storage.secret_access_key)
        if any(s in t for t in texts)
    ]
    assert leaked == []
    assert "no-such-bucket-here" in texts[-3]


def test_settings_come_from_the_connection_extras(storage: S3Sandbox) -> None:
    with refinery(storage) as server:
        config = ServiceConfig(
            "refinery",
            server.base_url,
            password="demo-key",
            extra=extras(storage, consensus_threshold="5", label_options='["1 Managers", "8 Labourers"]'),
        )
        settings = RefinerySettings.from_config(config)
    assert settings.consensus_threshold == 5 and settings.label_options == ("1 Managers", "8 Labourers")


def test_temporary_credentials_are_passed_on_or_refused_clearly(
    storage: S3Sandbox, secrets: list[str], caplog: pytest.LogCaptureFixture
) -> None:
    from airflow_batchcode.services.base import StagedInput

    staged = StagedInput(
        url=f"s3://{storage.bucket}/manifests/x.jsonl",
        credentials={
            "access_key_id": "AKIAEXAMPLE",
            "secret_access_key": "s",
            "session_token": "FwoGZXIvYXdzEXAMPLETOKEN",
        },
    )
    with refinery(storage) as server:
        with client_for(server, storage, secrets) as passing:
            body = passing.job_request("anzsco", staged)
        assert body["credentials"]["session_token"] == "FwoGZXIvYXdzEXAMPLETOKEN"
        assert "temporary (a session token)" in caplog.text and "FwoGZXIvYXdzEXAMPLETOKEN" not in caplog.text
        with client_for(server, storage, secrets, session_credentials="refuse") as refusing:
            with pytest.raises(ConfigurationError, match="temporary AWS credentials"):
                refusing.job_request("anzsco", staged)
            without = StagedInput(url=staged.url, credentials={"access_key_id": "A", "secret_access_key": "s"})
            assert "session_token" not in refusing.job_request("anzsco", without)["credentials"]
        with pytest.raises(ConfigurationError, match="session_credentials must be one of"):
            client_for(server, storage, secrets, session_credentials="maybe")


def test_an_absent_delivered_object_falls_back_to_the_export(storage: S3Sandbox, secrets: list[str]) -> None:
    results_bucket = storage.new_bucket("gone")
    with (
        refinery(storage) as server,
        client_for(server, storage, secrets, delivery_bucket=results_bucket) as client,
    ):
        target = client.create_operation("anzsco", manifest=jsonl_manifest(RECORDS[:4]))
        done = wait_terminal(client, target.operation_id)
        key = f"refinery/{target.operation_id}/results.jsonl"
        delivered = storage.read(key, bucket=results_bucket)
        storage.client().delete_object(Bucket=results_bucket, Key=key)
        assert client.results_available(done), "the export still serves the results"
        out, meta = io.BytesIO(), io.BytesIO()
        client.download_results(target.operation_id, "anzsco", out, meta)
        stats = admin(server, "stats")
    assert out.getvalue() == delivered
    assert json.loads(meta.getvalue())["results"] == "export"
    assert stats["exports"] == {"demo-tenant": 2}, "the availability check and the download"
