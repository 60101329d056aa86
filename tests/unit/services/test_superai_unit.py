"""Unit tests of the super.ai client's pure parts: settings, the create body, response parsing, status mapping."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest

from airflow_batchcode.exceptions import (
    AuthenticationError,
    ConfigurationError,
    NotFoundError,
    UnexpectedResponseError,
)
from airflow_batchcode.services.base import OperationState
from airflow_batchcode.services.registry import ServiceConfig, build_async_client, build_client
from airflow_batchcode.services.superai import (
    MAX_INLINE_BYTES,
    AsyncSuperAiClient,
    Batch,
    JobsPage,
    SuperAiClient,
    SuperAiSettings,
    batch_errors,
    batch_operation,
    output_line,
    parse_batch,
    parse_create,
    parse_jobs_page,
    write_create_body,
)
from airflow_batchcode.services.superai.batches import of_batch

APP = "0b6f4a52-3c1d-4e8f-9a7b-2c5d6e7f8a9b"
KEY = "sk-live-abcdef0123456789"
SEED_ERROR = (
    '"https://cdn.super.ai/non_existing_file.pdf","Error occurred while fetching the document:'
    'https://cdn.super.ai/non_existing_file.pdf, maximum retries exceeded."'
)


def settings(**overrides: Any) -> SuperAiSettings:
    values: dict[str, Any] = {"base_url": "https://api.super.ai/v1", "api_key": KEY, "app_uuid": APP}
    return SuperAiSettings(**{**values, **overrides})


def manifest(records: list[dict[str, Any]], *, blank_lines: bool = False) -> io.BytesIO:
    lines = [json.dumps(r) for r in records]
    if blank_lines:
        lines.insert(1, "")
    return io.BytesIO(("\n".join(lines) + "\n").encode())


def build(records: list[dict[str, Any]], **kwargs: Any) -> tuple[int, dict[str, Any]]:
    sink = io.BytesIO()
    options: dict[str, Any] = {"topic": "anzsco", "metadata": {"batchcode_name": "c1"}, "tags": ["t"], **kwargs}
    count = write_create_body(manifest(records), sink, **options)
    return count, json.loads(sink.getvalue())


def batch(**fields: Any) -> Batch:
    body = {"batch_processed": True, "batch_total": 3, "valid_count": 3, "total_processed": 3, **fields}
    return parse_batch(body, "b-1")


# --- settings ---------------------------------------------------------------------------------


def test_settings_need_an_app_uuid_naming_the_extra_and_an_api_key() -> None:
    with pytest.raises(ConfigurationError, match="extra 'app_uuid'"):
        settings(app_uuid="")
    with pytest.raises(ConfigurationError, match="API key"):
        settings(api_key="")
    with pytest.raises(ConfigurationError, match="app_uuid"):
        settings(app_uuid="../../admin")
    with pytest.raises(ConfigurationError, match="page_size"):
        settings(page_size=501)


@pytest.mark.parametrize(
    "base",
    ["https://api.super.ai", "https://api.super.ai/", "https://api.super.ai/v1", "https://api.super.ai/v1/"],
)
def test_base_url_is_accepted_with_or_without_v1(base: str) -> None:
    assert settings(base_url=base).api_root == "https://api.super.ai/v1"


def test_plain_http_is_refused_except_to_loopback() -> None:
    with pytest.raises(UnexpectedResponseError, match="only https"):
        settings(base_url="http://api.super.ai")
    assert settings(base_url="http://127.0.0.1:8080").api_root == "http://127.0.0.1:8080/v1"


def test_settings_from_a_connection_and_secrets_stay_out_of_reprs() -> None:
    config = ServiceConfig(
        service="superai",
        base_url="https://api.super.ai",
        password=KEY,
        extra={"app_uuid": APP, "tags": "nightly, survey", "page_size": "50", "callback_url": "https://h/cb?token=zz9"},
    )
    built = SuperAiSettings.from_config(config)
    assert built.tags == ("nightly", "survey") and built.page_size == 50 and built.app_uuid == APP
    assert KEY not in repr(built) and "zz9" not in repr(built) and KEY not in repr(config)
    with pytest.raises(ConfigurationError, match="'app_uuid'"):
        SuperAiSettings.from_config(ServiceConfig(service="superai", base_url="https://api.super.ai", password=KEY))
    with pytest.raises(ConfigurationError, match="'tags'"):
        SuperAiSettings.from_config(
            ServiceConfig("superai", "https://x", password=KEY, extra={"app_uuid": APP, "tags": 3})
        )


def test_the_registry_builds_both_clients_and_every_secret_is_reported() -> None:
    seen: list[str] = []
    config = ServiceConfig(
        "superai", "https://api.super.ai", password=KEY, extra={"app_uuid": APP, "callback_url": "https://h/cb?t=1"}
    )
    client = build_client(config, seen.append)
    async_client = build_async_client(config, seen.append)
    try:
        assert isinstance(client, SuperAiClient) and isinstance(async_client, AsyncSuperAiClient)
        assert client.input_with_create and client.output_name == "output.jsonl" and client.service == "superai"
        assert KEY in seen and "https://h/cb?t=1" in seen
        assert KEY not in repr(client) and KEY not in repr(client.settings)
    finally:
        client.close()


def test_error_messages_never_echo_the_api_key() -> None:
    client = SuperAiClient(settings())
    try:
        body = json.dumps({"message": f"key {KEY} is revoked"}).encode()
        assert client._read_error(403, body, "application/json") == "key <redacted> is revoked"
        refused = client._explain(AuthenticationError("x", status_code=403, service_message="no"), "b-1")
        assert isinstance(refused, AuthenticationError) and "connection's password" in str(refused)
        missing = client._explain(NotFoundError("x", status_code=404), "b-1")
        assert "app_uuid" in str(missing) and "b-1" in str(missing) and APP in str(missing)
    finally:
        client.close()


def test_upload_is_a_no_op_and_create_needs_the_manifest() -> None:
    client = SuperAiClient(settings())
    try:
        with pytest.raises(ConfigurationError, match="pass the manifest"):
            client.create_operation("anzsco")
    finally:
        client.close()


# --- the create body --------------------------------------------------------------------------


def test_inputs_carry_line_numbers_record_ids_and_topic() -> None:
    records = [
        {"recordId": "r1", "occp_text": "chef", "tasks_text": "cooking"},
        {"occp_text": "nurse", "tasks_text": ""},
        {"recordId": "r3", "occp_text": "", "tasks_text": "digging"},
    ]
    sink = io.BytesIO()
    count = write_create_body(
        manifest(records, blank_lines=True),
        sink,
        topic="osca",
        metadata={"batchcode_name": "abc", "topic": "osca"},
        tags=["airflow-batchcode", "topic:osca"],
        callback_url="https://example.org/hook",
    )
    body = json.loads(sink.getvalue())
    assert count == 3
    assert body["inputs"] == [
        {"line": 0, "record_id": "r1", "job_title": "chef", "duties": "cooking", "topic": "osca"},
        {"line": 1, "record_id": None, "job_title": "nurse", "duties": "", "topic": "osca"},
        {"line": 2, "record_id": "r3", "job_title": "", "duties": "digging", "topic": "osca"},
    ]
    assert body["metadata"] == {"batchcode_name": "abc", "topic": "osca"}
    assert body["tags"] == ["airflow-batchcode", "topic:osca"] and body["callbackUrl"] == "https://example.org/hook"


def test_a_manifest_path_is_read_too(tmp_path: Path) -> None:
    path = tmp_path / "chunk.jsonl"
    path.write_bytes(manifest([{"occp_text": "a", "tasks_text": "b"}]).getvalue())
    sink = io.BytesIO()
    assert write_create_body(path, sink, topic="anzsco", metadata={}, tags=[]) == 1
    assert "callbackUrl" not in json.loads(sink.getvalue())


def test_a_body_over_the_limit_says_how_many_records_fit() -> None:
    records = [{"occp_text": "x" * 100, "tasks_text": "y" * 100} for _ in range(10)]
    _, body = build(records[:1])
    one = len(json.dumps(body["inputs"][0], separators=(",", ":")))
    with pytest.raises(ConfigurationError, match=r"Only the first 3 records fit: set chunk_records to 3 or fewer"):
        build(records, limit=4 * one + 60)


def test_the_default_limit_is_four_megabytes() -> None:
    records = [{"recordId": str(i), "occp_text": "x" * 150, "tasks_text": "y" * 150} for i in range(13_000)]
    with pytest.raises(ConfigurationError, match=r"4,000,000 bytes.*chunk_records to (\d+)") as info:
        build(records)
    fit = int(str(info.value).rsplit("chunk_records to ", 1)[1].split()[0])
    assert 10_000 < fit < 11_000
    count, body = build(records[:fit])
    assert count == fit and len(json.dumps(body, separators=(",", ":"))) <= MAX_INLINE_BYTES


@pytest.mark.parametrize(
    ("line", "match"),
    [("not json", "line 1"), ('{"occp_text": "a"}', "line 1"), ("[1, 2]", "line 1")],
)
def test_a_line_that_is_not_a_record_is_refused_by_number(line: str, match: str) -> None:
    source = io.BytesIO(b'{"occp_text": "a", "tasks_text": ""}\n' + line.encode() + b"\n")
    with pytest.raises(ConfigurationError, match=match):
        write_create_body(source, io.BytesIO(), topic="anzsco", metadata={}, tags=[])


def test_an_empty_manifest_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="no records"):
        write_create_body(io.BytesIO(b"\n\n"), io.BytesIO(), topic="anzsco", metadata={}, tags=[])


# --- responses --------------------------------------------------------------------------------


def test_create_response_batch_id_in_either_spelling() -> None:
    assert parse_create({"batch_id": "a1b2", "message": "ok"}) == "a1b2"
    assert parse_create({"batchId": "c3"}) == "c3"
    with pytest.raises(UnexpectedResponseError, match="no batch_id"):
        parse_create({"message": "received"})
    with pytest.raises(UnexpectedResponseError, match="not a JSON object"):
        parse_create(["a"])
    with pytest.raises(UnexpectedResponseError, match="batch_id"):
        parse_create({"batch_id": "../x"})


def test_batch_errors_are_read_under_both_spellings() -> None:
    assert batch_errors({"errors_with_filename": ["1, bad"]}) == ["1, bad"]
    assert batch_errors({"errors_with_file": [SEED_ERROR]}) == [SEED_ERROR]
    assert batch_errors({"errors_with_filename": None, "errors_with_file": ["2, x"]}) == ["2, x"]
    assert batch_errors({}) == []


def test_batch_object_fields_are_checked() -> None:
    with pytest.raises(UnexpectedResponseError, match="batch_processed is missing"):
        parse_batch({"batch_total": 1}, "b-1")
    with pytest.raises(UnexpectedResponseError, match="valid_count"):
        parse_batch({"batch_processed": True, "valid_count": -1}, "b-1")
    with pytest.raises(UnexpectedResponseError, match="not a JSON object"):
        parse_batch("done", "b-1")
    lenient = parse_batch({"batch_processed": "true", "batch_total": "4", "valid_count": None}, "b-1")
    assert lenient.processed and lenient.batch_total == 4 and lenient.valid_count == 0


def test_ingesting_batches_are_in_progress() -> None:
    operation = batch_operation(parse_batch({"batch_processed": False, "batch_total": 6}, "b-1"), None)
    assert operation.state is OperationState.IN_PROGRESS and operation.raw_status == "ingesting"
    assert operation.progress["batch_total"] == 6


@pytest.mark.parametrize("spelling", ["errors_with_filename", "errors_with_file"])
def test_a_batch_without_valid_inputs_failed_with_the_services_message(spelling: str) -> None:
    seed = {"batch_total": 6, "invalid_index": 0, "total_processed": 0, "valid_count": 0, spelling: [SEED_ERROR]}
    operation = batch_operation(batch(**seed, error_message="string"), None)
    assert operation.state is OperationState.FAILED and operation.error == "string"
    assert operation.progress["invalid"] == 6
    no_message = batch_operation(batch(**seed), None)
    assert no_message.state is OperationState.FAILED and "maximum retries exceeded" in (no_message.error or "")


def test_live_jobs_keep_the_batch_in_progress_and_settled_ones_complete_it() -> None:
    live = JobsPage(jobs=[{"id": "j1", "state": "SUSPENDED"}], pages=2, total=2)
    running = batch_operation(batch(batch_total=4, errors_with_filename=["3, job_title is required"]), live)
    assert running.state is OperationState.IN_PROGRESS and running.raw_status == "SUSPENDED"
    assert running.progress == {
        "batch_total": 4,
        "total_processed": 3,
        "valid_count": 3,
        "invalid": 1,
        "jobs_pending": 2,
        "jobs_settled": 1,
    }
    done = batch_operation(batch(), JobsPage(jobs=[], pages=0, total=0))
    assert done.state is OperationState.COMPLETE and done.error is None
    assert "complete" in done.describe()


def test_without_total_the_pages_of_a_one_job_query_count_the_live_jobs() -> None:
    page = parse_jobs_page({"jobs": [{"id": 7, "state": "scheduled"}], "pages": 5}, "b-1")
    assert page.jobs[0]["id"] == "7" and page.jobs[0]["state"] == "SCHEDULED" and page.total is None
    assert batch_operation(batch(valid_count=9), page).progress["jobs_pending"] == 5


def test_job_pages_are_checked() -> None:
    with pytest.raises(UnexpectedResponseError, match="no list of jobs"):
        parse_jobs_page({"items": []}, "b-1")
    with pytest.raises(UnexpectedResponseError, match="job 0 of the page is not an object"):
        parse_jobs_page({"jobs": ["j1"]}, "b-1")
    with pytest.raises(UnexpectedResponseError, match="no state"):
        parse_jobs_page({"jobs": [{"id": "j1"}]}, "b-1")
    with pytest.raises(UnexpectedResponseError, match="job id"):
        parse_jobs_page({"jobs": [{"id": "a/b", "state": "COMPLETED"}]}, "b-1")
    assert parse_jobs_page({"jobs": [], "pages": 0, "totalElements": 0}, "b-1").total == 0


def test_a_job_list_without_batch_ids_is_refused_rather_than_read_as_no_live_jobs() -> None:
    unowned = parse_jobs_page({"jobs": [{"uuid": "j1", "state": "IN_PROGRESS"}], "pages": 1}, "b-1")
    with pytest.raises(UnexpectedResponseError, match="gives no batchId .* on its 1 jobs"):
        of_batch(unowned, "b-1")
    mixed = parse_jobs_page(
        {"jobs": [{"uuid": "j1", "state": "SCHEDULED", "batchId": "b-2"}, {"uuid": "j2", "state": "SCHEDULED"}]},
        "b-1",
    )
    assert of_batch(mixed, "b-1") == [] and of_batch(parse_jobs_page({"jobs": []}, "b-1"), "b-1") == []


def test_output_lines_carry_the_job_its_input_and_response() -> None:
    job = {"id": "j1", "state": "COMPLETED", "input": {"line": 4, "record_id": "r4", "job_title": "chef"}}
    line = json.loads(output_line(job, {"code": "351311"}))
    assert line == {
        "job_id": "j1",
        "state": "COMPLETED",
        "input": {"line": 4, "record_id": "r4"},
        "response": {"code": "351311"},
        "error": None,
    }
    failed = json.loads(output_line({"id": "j2", "state": "FAILED", "input_index": 2, "error": "boom"}, None))
    assert failed["input"] == {"line": 2, "record_id": None} and failed["error"] == "boom"
    with pytest.raises(UnexpectedResponseError, match="j3"):
        output_line({"id": "j3", "state": "FAILED"}, None)
