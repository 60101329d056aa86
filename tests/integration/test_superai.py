"""The super.ai client, emulator and normaliser together, over real HTTP on loopback."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from typing import Any

import pytest
import requests

from airflow_batchcode.emulator.server import EmulatorServer
from airflow_batchcode.exceptions import (
    AuthenticationError,
    BatchCodeError,
    ConfigurationError,
    ConflictError,
    NotFoundError,
    TransportError,
    UnexpectedResponseError,
)
from airflow_batchcode.normalise import superai as normalise
from airflow_batchcode.services.base import Operation, OperationState
from airflow_batchcode.services.http.retry import RetryPolicy
from airflow_batchcode.services.http.settings import HttpSettings
from airflow_batchcode.services.superai import AsyncSuperAiClient, SuperAiClient, SuperAiSettings
from tests.support import admin, batchcode_connection, emulator, jsonl_manifest, wait_terminal

APP = "5f0c2a9e-7d41-4b8e-a3c6-91e2f4b7d058"
FAST = RetryPolicy(max_attempts=5, backoff_base=0.02, backoff_max=0.2)
RECORDS = [
    {"recordId": "1", "occp_text": "software developer", "tasks_text": "writing code and unit tests"},
    {"recordId": "2", "occp_text": "", "tasks_text": "helping out"},
    {"recordId": "3", "occp_text": "Paramedic", "tasks_text": "responding to medical emergencies"},
    {"occp_text": "worker", "tasks_text": "various"},
    {"recordId": "5", "occp_text": "Brickie", "tasks_text": ""},
    {"recordId": "6", "occp_text": "nurse", "tasks_text": "caring for patients"},
    {"recordId": "7", "occp_text": "chef", "tasks_text": "cooking meals"},
]


def settings(server: EmulatorServer, key: str = "demo-key", **overrides: Any) -> SuperAiSettings:
    values: dict[str, Any] = {"rate_limit": 0, "http": HttpSettings(retry=FAST, read_timeout=10.0)}
    return SuperAiSettings(server.base_url, key, overrides.pop("app_uuid", APP), **{**values, **overrides})


def client_for(server: EmulatorServer, key: str = "demo-key", on_secret: Any = None, **kw: Any) -> SuperAiClient:
    return SuperAiClient(settings(server, key, **kw), on_secret=on_secret)


def run(
    client: SuperAiClient, records: list[dict[str, Any]], topic: str = "anzsco"
) -> tuple[str, bytes, dict[str, Any]]:
    target = client.create_operation(topic, manifest=jsonl_manifest(records), name="chunk-0001")
    assert target.upload_url == ""
    operation = wait_terminal(client, target.operation_id)
    assert operation.state is OperationState.COMPLETE, operation.describe()
    assert client.results_available(operation)
    out, meta = io.BytesIO(), io.BytesIO()
    sizes = client.download_results(target.operation_id, topic, out, meta)
    assert sizes == (len(out.getvalue()), len(meta.getvalue()))
    return target.operation_id, out.getvalue(), json.loads(meta.getvalue())


def test_end_to_end_with_invalid_inputs_and_failed_jobs_gives_one_row_per_line() -> None:
    with emulator("superai", record_failure_rate=0.3) as server, client_for(server, page_size=2) as client:
        batch_id, raw, metadata = run(client, RECORDS)
        stats = admin(server, "stats")
    rows = list(normalise.coded(io.BytesIO(raw), metadata, len(RECORDS)))
    assert len(rows) == len(RECORDS)
    assert metadata["batch_id"] == batch_id and metadata["batch_processed"] is True
    assert metadata["valid_count"] == 6 and metadata["invalid_index"] == 1
    assert metadata["errors_with_filename"] == ["1, job_title is required"]
    assert rows[1].code_status == "error" and rows[1].error == "super.ai rejected the input: job_title is required"
    assert metadata["batchcode"]["job_states"] == {"FAILED": 3, "COMPLETED": 3}
    # record_failure_rate picks inputs by a hash of their text and line: lines 0, 2 and 3 fail
    assert [r.record_id for r in rows] == ["1", None, "3", None, "5", "6", "7"]
    for row in (rows[0], rows[2], rows[3]):
        assert row.code_status == "error" and row.item_id and json.loads(row.details or "") == {"job_state": "FAILED"}
        assert row.error == f"super.ai job {row.item_id} ended FAILED: The data program could not process this input"
    assert (rows[4].code_status, rows[4].code_category) == ("successful", "331111")
    assert all(r.code_status in ("successful", "unsuccessful") and r.item_id for r in rows[4:])
    assert len({r.item_id for r in rows if r.item_id}) == 6
    assert normalise.usage(metadata) == {"invalid_inputs": 1.0, "jobs": 6.0}
    assert stats["batches_created"] == {"demo-tenant": 1} and stats["jobs_created"] == {"demo-tenant": 6}
    assert stats["invalid_inputs"] == {"demo-tenant": 1}


def test_codes_match_the_coding_model_for_both_topics_and_every_job_is_listed_once() -> None:
    records = [{"recordId": str(i), "occp_text": "chef", "tasks_text": f"cooking meal {i}"} for i in range(23)]
    with emulator("superai") as server, client_for(server, page_size=5) as client:
        _, raw, metadata = run(client, records, topic="osca")
        _, anzsco_raw, _ = run(client, RECORDS[:1])
    lines = [json.loads(line) for line in raw.splitlines()]
    assert [line["input"]["line"] for line in lines] == list(range(23))
    assert len({line["job_id"] for line in lines}) == 23 and metadata["batchcode"]["jobs_listed"] == 23
    assert all(line["state"] == "COMPLETED" and line["response"]["code"] for line in lines)
    assert json.loads(anzsco_raw)["response"]["code"] == "261313"


def test_sync_and_async_status_agree_while_running_and_when_done() -> None:
    with emulator("superai", processing_delay=20) as server, client_for(server) as client:
        target = client.create_operation("anzsco", manifest=jsonl_manifest(RECORDS[:3]))

        async def status() -> Operation:
            async_client = AsyncSuperAiClient(settings(server))
            try:
                return await async_client.get_operation(target.operation_id, "anzsco")
            finally:
                await async_client.aclose()

        early = asyncio.run(status())
        assert early.state is OperationState.IN_PROGRESS and early.raw_status == "ingesting"
        admin(server, "clock", {"advance": 12})
        running = asyncio.run(status())
        assert running == client.get_operation(target.operation_id, "anzsco")
        assert running.state is OperationState.IN_PROGRESS and running.raw_status == "IN_PROGRESS"
        assert running.progress["jobs_pending"] == 2 and running.progress["invalid"] == 1
        admin(server, "clock", {"advance": 8})
        done = asyncio.run(status())
        assert done == client.get_operation(target.operation_id, "anzsco")
        assert done.state is OperationState.COMPLETE and done.progress["jobs_settled"] == 2
        requests_made = admin(server, "stats")["requests"]
    assert requests_made["GET /v1/apps/{app_uuid}/jobs"] >= 2, "the documented app-wide job list"
    assert "GET /v1/apps/{app_uuid}/batches/{batch_id}/jobs" not in requests_made


def test_a_batch_without_a_valid_input_fails_with_the_services_message() -> None:
    bad = [{"occp_text": "", "tasks_text": "x"}, {"occp_text": "", "tasks_text": "y"}]
    with emulator("superai") as server, client_for(server) as client:
        target = client.create_operation("anzsco", manifest=jsonl_manifest(bad))
        operation = wait_terminal(client, target.operation_id)
        with pytest.raises(UnexpectedResponseError, match="is failed, not complete"):
            client.download_results(target.operation_id, "anzsco", io.BytesIO())
    assert operation.state is OperationState.FAILED and operation.error == "job_title is required"
    assert operation.progress["invalid"] == 2


def test_an_inputs_file_url_batch_fails_as_in_the_seed() -> None:
    with emulator("superai") as server, client_for(server) as client:
        url = f"{server.base_url}/v1/apps/{APP}/jobs"
        body = {"inputsFileUrl": "https://cdn.super.ai/non_existing_file.pdf"}
        created = requests.post(url, json=body, headers={"API-KEY": "demo-key"}, timeout=5)
        assert created.status_code == 202
        operation = wait_terminal(client, created.json()["batch_id"])
        batch = client.get_batch(created.json()["batch_id"])
    assert operation.state is OperationState.FAILED and "maximum retries exceeded" in (operation.error or "")
    assert normalise.split_error(batch.errors[0])[0] == "https://cdn.super.ai/non_existing_file.pdf"


def test_bad_and_missing_keys_are_refused_without_revealing_the_key() -> None:
    with emulator("superai") as server, client_for(server, key="wrong-key-0123456789") as client:
        with pytest.raises(AuthenticationError) as info:
            client.create_operation("anzsco", manifest=jsonl_manifest(RECORDS[:1]))
        assert "Invalid API key" in str(info.value) and "wrong-key-0123456789" not in str(info.value)
        with pytest.raises(AuthenticationError, match="connection's password"):
            client.get_operation("a1b2c3", "anzsco")
        missing = requests.get(f"{server.base_url}/v1/apps/{APP}/batches/x", timeout=5)
        assert missing.status_code == 401 and "API-KEY" in missing.json()["message"]


def test_another_tenants_batch_and_jobs_are_not_found() -> None:
    with emulator("superai") as server, client_for(server) as mine, client_for(server, key="other-key") as theirs:
        target = mine.create_operation("anzsco", manifest=jsonl_manifest(RECORDS[:2]))
        wait_terminal(mine, target.operation_id)
        job_id = mine.list_jobs(target.operation_id).jobs[0]["id"]
        with pytest.raises(NotFoundError, match="Batch not found") as info:
            theirs.get_operation(target.operation_id, "anzsco")
        assert info.value.operation_id == target.operation_id and "app_uuid" in str(info.value)
        with pytest.raises(NotFoundError, match="Job not found"):
            theirs.get_job(job_id)
        with pytest.raises(NotFoundError):
            theirs.get_job_response(job_id)
        other_app = client_for(server, app_uuid="00000000-0000-4000-8000-000000000000")
        with pytest.raises(NotFoundError, match="Batch not found"):
            other_app.get_batch(target.operation_id)
        other_app.close()

        async def async_status() -> None:
            async_client = AsyncSuperAiClient(settings(server, "other-key"))
            try:
                await async_client.get_operation(target.operation_id, "anzsco")
            finally:
                await async_client.aclose()

        with pytest.raises(NotFoundError, match="Batch not found"):
            asyncio.run(async_status())


def test_jobs_can_be_cancelled_while_live_and_responses_expire_after_retention() -> None:
    with emulator("superai", processing_delay=30, retention=600) as server, client_for(server) as client:
        target = client.create_operation("anzsco", manifest=jsonl_manifest(RECORDS[2:5]))
        admin(server, "clock", {"advance": 10})
        first = client.list_jobs(target.operation_id).jobs[0]
        assert first["state"] == "SCHEDULED"
        assert client.cancel_job(first["id"])["state"] == "CANCELED"
        with pytest.raises(ConflictError, match="only SCHEDULED, IN_PROGRESS or SUSPENDED"):
            client.cancel_job(first["id"])
        with pytest.raises(ConflictError, match="no response"):
            client.get_job_response(first["id"])
        admin(server, "clock", {"advance": 25})
        operation = client.get_operation(target.operation_id, "anzsco")
        assert operation.state is OperationState.COMPLETE
        out, meta = io.BytesIO(), io.BytesIO()
        client.download_results(target.operation_id, "anzsco", out, meta)
        rows = list(normalise.coded(out, json.loads(meta.getvalue()), 3))
        assert rows[0].code_status == "error" and "CANCELED" in (rows[0].error or "")
        assert client.get_job(first["id"])["state"] == "CANCELED"
        admin(server, "clock", {"advance": 601})
        assert not client.results_available(client.get_operation(target.operation_id, "anzsco"))
        with pytest.raises(NotFoundError, match="keeps job responses for a limited time") as info:
            client.download_results(target.operation_id, "anzsco", io.BytesIO())
        assert info.value.operation_id == target.operation_id


def test_cancel_batch_cancels_every_live_job() -> None:
    with emulator("superai", processing_delay=30) as server, client_for(server, page_size=2) as client:
        target = client.create_operation("anzsco", manifest=jsonl_manifest(RECORDS))
        admin(server, "clock", {"advance": 10})
        assert client.cancel_batch(target.operation_id) == 6
        assert client.get_operation(target.operation_id, "anzsco").state is OperationState.COMPLETE


def test_the_emulator_keeps_the_documented_limits_and_error_shape() -> None:
    with emulator("superai") as server:
        url = f"{server.base_url}/v1/apps/{APP}/jobs"
        key = {"API-KEY": "demo-key"}
        big = {"inputs": [{"job_title": "x" * 200, "duties": "y" * 90}] * 15_000}
        too_large = requests.post(url, json=big, headers=key, timeout=10)
        assert too_large.status_code == 413
        assert too_large.json()["message"].startswith("Inputs size exceeds the maximum size allowed: ")
        assert too_large.json()["message"].endswith("> 4 MB")
        for body, fragment in (
            ({}, "exactly one of inputs and inputsFileUrl"),
            ({"inputs": []}, "non-empty list"),
            ({"inputs": [{}], "tags": [1]}, "tags"),
        ):
            refused = requests.post(url, json=body, headers=key, timeout=5)
            assert refused.status_code == 400 and fragment in refused.json()["message"]
        assert requests.post(f"{server.base_url}/v1/apps/not-a-uuid/jobs", json={}, headers=key, timeout=5).json() == {
            "message": "App not found"
        }
        mixed = [{"job_title": "chef"}, "text", {"job_title": "a" * 301}, {"job_title": "b", "topic": "isco"}]
        batch_id = requests.post(url, json={"inputs": mixed}, headers=key, timeout=5).json()["batch_id"]
        admin(server, "clock", {"advance": 1})
        batch = requests.get(f"{server.base_url}/v1/apps/{APP}/batches/{batch_id}", headers=key, timeout=5).json()
        assert batch["batch_total"] == 4 and batch["valid_count"] == 1 and batch["invalid_index"] == 1
        assert batch["errors_with_filename"][0] == "1, Input must be a JSON object"
        assert "301 > 300" in batch["errors_with_filename"][1] and "isco" in batch["errors_with_filename"][2]
        jobs_url = f"{server.base_url}/v1/apps/{APP}/jobs"
        wrong = requests.get(jobs_url, params={"statusIn": "DONE"}, headers=key, timeout=5)
        assert wrong.status_code == 400 and "Unknown job state" in wrong.json()["message"]
        assert requests.get(jobs_url, params={"size": 0}, headers=key, timeout=5).status_code == 400
        assert requests.get(jobs_url, params={"size": 501}, headers=key, timeout=5).status_code == 400
        listed = requests.get(jobs_url, params={"statusIn": "COMPLETED,FAILED"}, headers=key, timeout=5).json()
        assert listed["total"] == 1 and listed["pages"] == 1 and listed["jobs"][0]["input"]["job_title"] == "chef"
        assert listed["jobs"][0]["batchId"] == batch_id
        invented = requests.get(f"{server.base_url}/v1/apps/{APP}/batches/{batch_id}/jobs", headers=key, timeout=5)
        assert (invented.status_code, set(invented.json())) == (501, {"message"}), "no invented route"


def test_a_chunk_over_four_megabytes_is_refused_before_sending() -> None:
    records = [{"occp_text": "x" * 150, "tasks_text": "y" * 150} for _ in range(12_000)]
    with emulator("superai") as server, client_for(server) as client:
        with pytest.raises(ConfigurationError, match="set chunk_records to"):
            client.create_operation("anzsco", manifest=jsonl_manifest(records))
        assert admin(server, "stats")["batches_created"] == {}


def test_server_errors_on_create_are_retried_but_a_lost_answer_is_not() -> None:
    with emulator("superai", fault_5xx_rate=1.0, fault_only=r"^POST /v1/apps/") as server:
        with client_for(server) as client:
            with pytest.raises(BatchCodeError, match="service error"):
                client.create_operation("anzsco", manifest=jsonl_manifest(RECORDS[:1]))
            assert admin(server, "stats")["faults"]["5xx"] == FAST.max_attempts
            admin(server, "faults", {"fault_5xx_rate": 0.5, "seed": 3})
            client.create_operation("anzsco", manifest=jsonl_manifest(RECORDS[:1]))
            assert admin(server, "stats")["batches_created"] == {"demo-tenant": 1}
            admin(server, "faults", {"fault_5xx_rate": 0.0, "fault_lost_response_rate": 1.0})
            with pytest.raises(TransportError, match="may have been created all the same") as info:
                client.create_operation("anzsco", manifest=jsonl_manifest(RECORDS[:1]), name="chunk-7")
            assert "batchcode_name='chunk-7'" in str(info.value)
            assert admin(server, "stats")["batches_created"] == {"demo-tenant": 2}


def test_polling_and_downloading_survive_injected_faults() -> None:
    faults = {"fault_5xx_rate": 0.2, "fault_429_rate": 0.1, "fault_retry_after": 0, "fault_lost_response_rate": 0.1}
    with emulator("superai", seed=11, fault_only=r"^GET ", **faults) as server:
        with client_for(server, page_size=3) as client:
            _, raw, _ = run(client, RECORDS)
        injected = admin(server, "stats")["faults"]
    assert len(raw.splitlines()) == 6 and sum(injected.values()) >= 2


def test_secrets_never_reach_exceptions_or_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    seen: list[str] = []
    errors: list[str] = []
    callback = "https://hooks.example.org/done?token=cb-secret-42"
    with emulator("superai", fault_5xx_rate=0.3, seed=5) as server:
        with client_for(server, on_secret=seen.append, callback_url=callback) as client:
            run(client, RECORDS[:2])
            for call in (
                lambda: client.get_operation("no-such-batch", "anzsco"),
                lambda: client.get_job("no-such-job"),
                lambda: client.get_job_response("no-such-job"),
            ):
                with pytest.raises(BatchCodeError) as info:
                    call()
                errors.append(str(info.value))
        with client_for(server, key="other-key-secret-99", on_secret=seen.append) as stranger:
            with pytest.raises(BatchCodeError) as info:
                stranger.get_operation("no-such-batch", "anzsco")
            errors.append(str(info.value))
            errors.append(repr(stranger.settings))
    assert "demo-key" in seen and callback in seen and "other-key-secret-99" in seen
    text = "\n".join(errors + [r.getMessage() for r in caplog.records])
    for secret in seen:
        assert secret not in text


def test_the_hook_builds_the_client_from_an_airflow_connection() -> None:
    from airflow_batchcode.hooks.batchcode import BatchCodeHook

    with emulator("superai") as server, batchcode_connection(server, "superai_test", app_uuid=APP):
        hook = BatchCodeHook("superai_test")
        try:
            client = hook.client
            assert isinstance(client, SuperAiClient) and client.settings.app_uuid == APP
            target = client.create_operation("anzsco", manifest=jsonl_manifest(RECORDS[:1]), name="hooked")
            assert wait_terminal(client, target.operation_id).state is OperationState.COMPLETE
        finally:
            hook.close()
    with emulator("superai") as server, batchcode_connection(server, "superai_bad"):
        with pytest.raises(ConfigurationError, match="'app_uuid'"):
            BatchCodeHook("superai_bad").client  # noqa: B018
