"""The Gravity client, emulator and normaliser together over real HTTP on loopback."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from typing import Any

import pytest
import requests

from airflow_batchcode.emulator.coding_model import load_models
from airflow_batchcode.emulator.server import EmulatorServer
from airflow_batchcode.exceptions import (
    AuthenticationError,
    BatchCodeError,
    ConflictError,
    NotFoundError,
    UnexpectedResponseError,
)
from airflow_batchcode.normalise.gravity import coded, usage
from airflow_batchcode.services.base import Operation, OperationState
from airflow_batchcode.services.gravity import AsyncGravityClient, ColumnMapping, GravityClient, GravitySettings
from airflow_batchcode.services.http.retry import RetryPolicy
from airflow_batchcode.services.http.settings import HttpSettings
from airflow_batchcode.services.registry import ServiceConfig, build_client
from tests.support import SIGNATURE_MARKERS, admin, emulator, jsonl_manifest, wait_terminal

FAST = RetryPolicy(max_attempts=5, backoff_base=0.02, backoff_max=0.1)
TITLES = [
    ("software developer", "writing code and unit tests"),
    ("Paramedic", "responding to medical emergencies"),
    ("registered nurse", "caring for patients, giving medication"),
    ("chef", 'cooking meals, "running" the kitchen'),
    ("truck driver", "driving heavy trucks\ninterstate"),
    ("primary school teacher", "teaching children"),
    ("electrician", "installing wiring"),
    ("accountant", "preparing tax returns"),
    ("worker", "various"),
    ("", ""),
    ("plumber", "fixing pipes"),
    ("retail sales assistant", "serving customers"),
]
RECORDS = [
    {"recordId": f"r{index}", "occp_text": title, "tasks_text": tasks}
    for index, (title, tasks) in enumerate(TITLES * 3)
]


def gravity(
    server: EmulatorServer, key: str = "demo-key", secrets: list[str] | None = None, **kw: Any
) -> GravityClient:
    http = HttpSettings(retry=FAST, read_timeout=10.0)
    settings = GravitySettings(server.base_url, key, rate_limit=0, http=http, **kw)
    return GravityClient(settings, on_secret=secrets.append if secrets is not None else None)


def run_job(client: GravityClient, records: list[dict[str, Any]], name: str) -> tuple[Operation, bytes, dict[str, Any]]:
    target = client.create_operation("anzsco", manifest=jsonl_manifest(records), name=name)
    operation = wait_terminal(client, target.operation_id)
    out, meta = io.BytesIO(), io.BytesIO()
    client.download_results(target.operation_id, "anzsco", out, meta)
    return operation, out.getvalue(), json.loads(meta.getvalue())


def api(server: EmulatorServer, method: str, path: str, key: str | None = "demo-key", **kw: Any) -> requests.Response:
    headers = {"X-Api-Key": key} if key else {}
    return requests.request(method, server.base_url + path, headers=headers, timeout=10, **kw)


def test_create_poll_download_normalise_with_partial_failures() -> None:
    # The job finishes when the test moves the emulator's clock, not after a real pause it could race.
    with emulator("gravity", processing_delay=60, record_failure_rate=0.3) as server, gravity(server) as client:
        target = client.create_operation("anzsco", manifest=jsonl_manifest(RECORDS), name="chunk-e2e")
        assert target.upload_url == ""
        first = client.get_operation(target.operation_id, "anzsco")
        assert first.state is OperationState.IN_PROGRESS and first.raw_status == "incomplete"
        assert first.progress["billedUsage"] == len(RECORDS), "billed at creation"
        admin(server, "clock", {"advance": 61})
        operation = wait_terminal(client, target.operation_id)
        assert operation.state is OperationState.COMPLETE and operation.progress["processingTimeMS"] >= 60_000
        assert client.results_available(operation)
        out, meta = io.BytesIO(), io.BytesIO()
        written, meta_bytes = client.download_results(target.operation_id, "anzsco", out, meta)
        assert written == len(out.getvalue()) and meta_bytes == len(meta.getvalue())
        metadata = json.loads(meta.getvalue())
        assert metadata["job"]["id"] == target.operation_id and metadata["request"]["name"] == "chunk-e2e"
        results = list(coded(io.BytesIO(out.getvalue()), metadata, len(RECORDS)))
    assert [r.record_id for r in results] == [r["recordId"] for r in RECORDS]
    statuses = [r.code_status for r in results]
    assert statuses.count("successful") >= 10
    failed = [r.error for r in results if r.code_status == "error"]
    assert failed.count("job_title and duties are both empty") == 3
    assert "The model could not score this record" in failed, "record_failure_rate gives partial failures"
    assert statuses[:12] == statuses[12:24] == statuses[24:], "the same record always fails the same way"
    model = load_models()["anzsco"][-1]
    for record, result in zip(RECORDS, results, strict=True):
        if result.code_status == "error":
            continue
        outcome = model.code(record["occp_text"], record["tasks_text"])
        assert result.code_status == outcome.status
        if outcome.result is not None:
            assert (result.code_category, result.code_label) == (outcome.result.category, outcome.result.label)
            assert result.code_confidence == outcome.result.confidence
    assert usage(metadata) == {"billed_usage_dollars": len(RECORDS) / 1000, "billed_units": float(len(RECORDS))}


def test_a_job_is_already_complete_when_the_post_returns_and_the_registry_builds_the_client() -> None:
    with emulator("gravity", processing_delay=0) as server:
        config = ServiceConfig(
            service="gravity", base_url=server.base_url, password="demo-key", extra={"rate_limit": 0}
        )
        client = build_client(config)
        try:
            target = client.create_operation("anzsco", manifest=jsonl_manifest(RECORDS[:3]), name="instant")
            operation = client.get_operation(target.operation_id, "anzsco")
            assert operation.state is OperationState.COMPLETE
            out = io.BytesIO()
            client.download_results(target.operation_id, "anzsco", out)
        finally:
            client.close()
    lines = out.getvalue().decode().splitlines()
    assert lines[0] == "line,record_id,job_title,duties,code,label,confidence,error"
    assert lines[1].startswith("0,r0,software developer,")


def test_version_and_output_mapping_from_the_settings_reach_the_normaliser() -> None:
    mapping = (ColumnMapping("code", "occupation_code", ""), ColumnMapping("error", "problem", None))
    with emulator("gravity", processing_delay=0) as server, gravity(server, output_mapping=mapping) as client:
        operation, output, metadata = run_job(client, RECORDS[:10], "mapped")
        assert operation.state is OperationState.COMPLETE
        assert output.startswith(b"line,record_id,job_title,duties,occupation_code,label,confidence,problem\r\n")
        results = list(coded(io.BytesIO(output), metadata, 10))
        assert results[0].code_status == "successful" and results[0].code_category
        assert results[9].error == "job_title and duties are both empty"
        older = client.create_operation("anzsco", "1.0.0", manifest=jsonl_manifest(RECORDS[:2]), name="old-model")
        assert client.get_operation(older.operation_id, "anzsco").state is OperationState.COMPLETE
        with pytest.raises(NotFoundError, match="Project version '9.9.9' was not found"):
            client.create_operation("anzsco", "9.9.9", manifest=jsonl_manifest(RECORDS[:2]), name="no-such-version")
        raw = api(
            server,
            "POST",
            "/api/v1/jobs",
            files={"data": (None, json.dumps({"mimeType": "text/csv", "version": "9"})), "file": ("a.csv", b"x\n1\n")},
        )
        assert raw.status_code == 200 and raw.json()["isError"] is True and raw.json()["data"] is None


def test_re_creating_under_the_same_name_re_attaches_unless_the_job_failed() -> None:
    with emulator("gravity", processing_delay=0) as server, gravity(server) as client:
        first = client.create_operation("anzsco", manifest=jsonl_manifest(RECORDS[:4]), name="chunk-a")
        again = client.create_operation("anzsco", manifest=jsonl_manifest(RECORDS[:4]), name="chunk-a")
        assert again.operation_id == first.operation_id
        other = client.create_operation("anzsco", manifest=jsonl_manifest(RECORDS[:4]), name="chunk-b")
        assert other.operation_id != first.operation_id
        with gravity(server, mapping=()) as unmapped:
            broken = unmapped.create_operation("anzsco", manifest=jsonl_manifest(RECORDS[:4]), name="chunk-c")
            failed = unmapped.get_operation(broken.operation_id, "anzsco")
        assert failed.state is OperationState.FAILED and "job_title, duties" in (failed.error or "")
        assert failed.progress["billedUsage"] == 0
        retried = client.create_operation("anzsco", manifest=jsonl_manifest(RECORDS[:4]), name="chunk-c")
        assert retried.operation_id != broken.operation_id
        assert client.get_operation(retried.operation_id, "anzsco").state is OperationState.COMPLETE
        assert admin(server, "stats")["jobs_created"] == {"demo-tenant": 4}


def test_a_lost_post_answer_is_resolved_by_name_without_a_second_job() -> None:
    with emulator(
        "gravity", processing_delay=0, fault_lost_response_rate=1.0, fault_only="^POST /api/v1/jobs$"
    ) as server:
        with gravity(server) as client:
            target = client.create_operation("anzsco", manifest=jsonl_manifest(RECORDS[:5]), name="lost-answer")
            assert client.get_operation(target.operation_id, "anzsco").state is OperationState.COMPLETE
        stats = admin(server, "stats")
    assert stats["jobs_created"] == {"demo-tenant": 1}
    assert stats["faults"]["lost_response"] == 1


def test_server_errors_and_throttling_are_retried() -> None:
    with emulator(
        "gravity", processing_delay=0, seed=3, fault_5xx_rate=0.3, fault_429_rate=0.1, fault_retry_after=0
    ) as server:
        with gravity(server) as client:
            for index in range(3):
                _, output, metadata = run_job(client, RECORDS[:6], f"flaky-{index}")
                assert len(list(coded(io.BytesIO(output), metadata, 6))) == 6
        stats = admin(server, "stats")
    assert stats["faults"].get("5xx", 0) + stats["faults"].get("429", 0) > 0
    assert sum(stats["jobs_created"].values()) == 3


def test_truncated_downloads_are_resumed_to_the_exact_file() -> None:
    with emulator("gravity", processing_delay=0) as server, gravity(server) as client:
        _, expected, _ = run_job(client, RECORDS, "whole")
        admin(server, "faults", {"truncate_rate": 0.5, "seed": 1})
        job_id = client.find_job("whole")["id"]  # type: ignore[index]
        for _ in range(3):
            out = io.BytesIO()
            client.download_results(job_id, "anzsco", out)
            assert out.getvalue() == expected
        assert admin(server, "stats")["faults"]["truncate"] > 0


def test_rename_and_latest_newest_first_for_this_tenant_only() -> None:
    with emulator("gravity", processing_delay=0) as server, gravity(server) as client:
        with gravity(server, key="other-key") as other:
            other.create_operation("anzsco", manifest=jsonl_manifest(RECORDS[:1]), name="theirs")
        ids = [
            client.create_operation("anzsco", manifest=jsonl_manifest(RECORDS[:2]), name=f"job-{i}").operation_id
            for i in range(3)
        ]
        renamed = client.rename_job(ids[0], "renamed first")
        assert renamed["name"] == "renamed first" and renamed["inputFileName"] == "job-0.csv"
        assert renamed["billedUsage"] == 2, "renaming does not bill"
        latest = client.latest_jobs()
        assert [job["id"] for job in latest] == ids[::-1]
        assert [job["name"] for job in latest] == ["job-2", "job-1", "renamed first"]
        assert client.get_job(ids[0])["lastUpdatedUtc"] >= client.get_job(ids[0])["createdDateUtc"]
        bad = api(server, "PUT", f"/api/v1/jobs/{ids[0]}", json={"name": ""})
        assert bad.status_code == 400 and bad.json()["isError"] is True


def test_an_expired_result_link_is_replaced_by_a_fresh_one(monkeypatch: pytest.MonkeyPatch) -> None:
    with emulator("gravity", processing_delay=0, url_ttl=60) as server, gravity(server) as client:
        _, expected, _ = run_job(client, RECORDS[:6], "expiring")
        job_id = client.find_job("expiring")["id"]  # type: ignore[index]
        stale = client.result_link(job_id)
        admin(server, "clock", {"advance": 61})
        expired = requests.get(stale, timeout=5)
        assert expired.status_code == 403 and b"Request has expired" in expired.content
        links = iter([stale])
        fresh = client.result_link
        monkeypatch.setattr(client, "result_link", lambda jid: next(links, None) or fresh(jid))
        out = io.BytesIO()
        assert client.download_results(job_id, "anzsco", out)[0] == len(expected)
        assert out.getvalue() == expected


def test_result_links_are_ranged_and_signed_for_get_only() -> None:
    with emulator("gravity", processing_delay=0) as server, gravity(server) as client:
        _, expected, _ = run_job(client, RECORDS[:6], "ranges")
        link = client.result_link(client.find_job("ranges")["id"])  # type: ignore[index]
        assert "AWSAccessKeyId=" in link and "Expires=" in link and "Signature=" in link
        part = requests.get(link, headers={"Range": "bytes=5-9"}, timeout=5)
        assert part.status_code == 206 and part.content == expected[5:10]
        assert part.headers["Content-Range"] == f"bytes 5-9/{len(expected)}"
        assert requests.head(link, timeout=5).status_code == 403, "a GET signature is not valid for HEAD, as on S3"
        tampered = link.replace("Signature=", "Signature=x")
        assert requests.get(tampered, timeout=5).status_code == 403


def test_outputs_are_deleted_after_retention() -> None:
    with emulator("gravity", processing_delay=0, retention=100) as server, gravity(server) as client:
        target = client.create_operation("anzsco", manifest=jsonl_manifest(RECORDS[:3]), name="old")
        operation = client.get_operation(target.operation_id, "anzsco")
        assert client.results_available(operation)
        admin(server, "clock", {"advance": 101})
        assert client.get_operation(target.operation_id, "anzsco").state is OperationState.COMPLETE
        assert not client.results_available(operation)
        with pytest.raises(NotFoundError, match="Output file is gone") as caught:
            client.download_results(target.operation_id, "anzsco", io.BytesIO())
        assert target.operation_id in str(caught.value) and "no longer available" in str(caught.value)


def test_a_result_link_before_completion_is_an_error_inside_a_200() -> None:
    with emulator("gravity", processing_delay=30) as server, gravity(server) as client:
        target = client.create_operation("anzsco", manifest=jsonl_manifest(RECORDS[:3]), name="slow")
        raw = api(server, "GET", f"/api/v1/jobs/result-link/{target.operation_id}")
        assert raw.status_code == 200
        assert raw.json() == {"data": None, "isError": True, "errorMessage": raw.json()["errorMessage"]}
        with pytest.raises(ConflictError, match="not complete") as caught:
            client.result_link(target.operation_id)
        assert target.operation_id in str(caught.value)
        operation = client.get_operation(target.operation_id, "anzsco")
        assert not client.results_available(operation)
        with pytest.raises(UnexpectedResponseError, match="in_progress .*not complete"):
            client.download_results(target.operation_id, "anzsco", io.BytesIO())


def test_a_bad_key_is_refused_with_the_envelope_and_creates_nothing() -> None:
    with emulator("gravity", processing_delay=0) as server, gravity(server, key="not-a-key-123456") as client:
        with pytest.raises(AuthenticationError, match="Invalid API key"):
            client.create_operation("anzsco", manifest=jsonl_manifest(RECORDS[:2]), name="nope")
        with pytest.raises(AuthenticationError):
            client.get_operation("59015703-de7f-4e92-9451-6b08210fbb16", "anzsco")
        missing = api(server, "GET", "/api/v1/jobs/latest", key=None)
        assert missing.status_code == 401
        assert missing.json() == {"data": None, "isError": True, "errorMessage": missing.json()["errorMessage"]}
        assert "X-Api-Key" in missing.json()["errorMessage"]
        assert admin(server, "stats")["jobs_created"] == {}


def test_another_tenants_job_is_a_404() -> None:
    with emulator("gravity", processing_delay=0) as server, gravity(server) as client:
        target = client.create_operation("anzsco", manifest=jsonl_manifest(RECORDS[:2]), name="mine")
        with gravity(server, key="other-key") as other:
            for call in (
                lambda: other.get_operation(target.operation_id, "anzsco"),
                lambda: other.result_link(target.operation_id),
                lambda: other.rename_job(target.operation_id, "stolen"),
            ):
                with pytest.raises(NotFoundError) as caught:
                    call()
                assert caught.value.status_code == 404 and target.operation_id in str(caught.value)
            assert other.latest_jobs() == []
            assert other.find_job("mine") is None
        assert client.get_job(target.operation_id)["name"] == "mine"


def test_the_async_client_reads_status_without_blocking() -> None:
    with emulator("gravity", processing_delay=60) as server, gravity(server) as client:
        target = client.create_operation("anzsco", manifest=jsonl_manifest(RECORDS[:3]), name="async")
        settings = client.settings

        async def poll() -> list[Operation]:
            async_client = AsyncGravityClient(settings)
            try:
                seen = [await async_client.get_operation(target.operation_id, "anzsco")]
                admin(server, "clock", {"advance": 61})  # the job finishes now, not after a real pause
                while not seen[-1].state.is_terminal():
                    await asyncio.sleep(0.05)
                    seen.append(await async_client.get_operation(target.operation_id, "anzsco"))
                with pytest.raises(NotFoundError):
                    await async_client.get_operation("59015703-de7f-4e92-9451-6b08210fbb16", "anzsco")
                return seen
            finally:
                await async_client.aclose()

        seen = asyncio.run(poll())
    assert seen[0].state is OperationState.IN_PROGRESS
    assert seen[-1].state is OperationState.COMPLETE and seen[-1].progress["recordCount"] == 3


def _submit(server: EmulatorServer, data: Any, file: bytes | None = b"a,b\r\n1,2\r\n") -> requests.Response:
    files: dict[str, Any] = {}
    if data is not None:
        files["data"] = (None, data if isinstance(data, str) else json.dumps(data), "application/json")
    if file is not None:
        files["file"] = ("in.csv", file, "text/csv")
    return api(server, "POST", "/api/v1/jobs", files=files)


def test_the_emulator_checks_submissions() -> None:
    with emulator("gravity", processing_delay=0, max_upload_bytes=4096) as server:
        not_multipart = api(server, "POST", "/api/v1/jobs", json={"mimeType": "text/csv"})
        assert not_multipart.status_code == 400 and not_multipart.json()["isError"] is True
        for data, file, message in (
            (None, b"x", "data part is missing"),
            ({"mimeType": "text/csv"}, None, "file part is missing"),
            ("{not json", b"x", "not valid JSON"),
            ({"name": "x"}, b"x", "mimeType is required"),
            ({"mimeType": "text/csv", "mapping": [{"source": "a"}]}, b"x", "mapping[0]"),
        ):
            answer = _submit(server, data, file)
            assert answer.status_code == 400 and message in answer.json()["errorMessage"], message
        too_big = _submit(server, {"mimeType": "text/csv"}, b"x" * 5000)
        assert too_big.status_code == 413 and too_big.json()["isError"] is True
        json_input = _submit(server, {"mimeType": "application/json", "name": "j"}, b"[]")
        job = json_input.json()["data"]
        assert json_input.status_code == 200 and job["status"] == "error" and job["billedUsage"] == 0
        assert "Unsupported mimeType" in job["errorMessage"]
        mapped = _submit(
            server,
            {"mimeType": "text/csv; header=present", "mapping": [{"source": "t", "destination": "job_title"}]},
            b"t,duties\r\nnurse,caring\r\n",
        ).json()["data"]
        assert mapped["status"] == "success" and mapped["name"] == "in.csv" and mapped["recordCount"] == 1
        assert admin(server, "stats")["uploads"] == {"refused": 7, "accepted": 2}
        paths = requests.get(server.base_url + "/openapi.json", timeout=5).json()["paths"]
        assert {
            "/api/v1/jobs",
            "/api/v1/jobs/latest",
            "/api/v1/jobs/{job_id}",
            "/api/v1/jobs/result-link/{job_id}",
        } <= set(paths)
        bad_fault = requests.post(server.base_url + "/_emulator/faults", json={"5xx_rate": 2}, timeout=5)
        assert bad_fault.status_code == 400 and bad_fault.json()["isError"] is True


def test_no_secret_reaches_an_exception_or_a_log(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="airflow_batchcode")
    secrets: list[str] = []
    errors: list[BatchCodeError] = []
    with emulator("gravity", processing_delay=0, url_ttl=60, retention=120, fault_5xx_rate=0.2, seed=5) as server:
        with gravity(server, secrets=secrets) as client:
            _, _, _ = run_job(client, RECORDS[:4], "secret-scan")
            job_id = client.find_job("secret-scan")["id"]  # type: ignore[index]
            stale = client.result_link(job_id)
            admin(server, "clock", {"advance": 61})
            try:
                client._http.download(stale, io.BytesIO(), what="stale download", read_error=lambda *a: None)
            except BatchCodeError as exc:
                errors.append(exc)
            admin(server, "clock", {"advance": 61})
            for call in (
                lambda: client.download_results(job_id, "anzsco", io.BytesIO()),
                lambda: client.get_operation("59015703-de7f-4e92-9451-6b08210fbb16", "anzsco"),
            ):
                try:
                    call()
                except BatchCodeError as exc:
                    errors.append(exc)
        with gravity(server, key="wrong-key-abcdef", secrets=secrets) as intruder:
            try:
                intruder.latest_jobs()
            except BatchCodeError as exc:
                errors.append(exc)
    assert len(errors) == 4
    assert "demo-key" in secrets and "wrong-key-abcdef" in secrets
    assert any("Signature=" in s for s in secrets), "result links are reported as secrets"
    texts = [str(e) for e in errors] + [repr(e) for e in errors] + [caplog.text]
    for text in texts:
        for secret in secrets:
            assert secret not in text
        for marker in SIGNATURE_MARKERS:
            assert marker not in text
