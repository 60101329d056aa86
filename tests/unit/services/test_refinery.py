"""Unit tests of the Refinery client's pieces: manifest conversion, settings, parsing, errors, secrets.

No network: requests that would leave the process are replaced by a recording stand-in.
"""

from __future__ import annotations

import io
import json
import logging
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any
from urllib.parse import unquote

import pytest

from airflow_batchcode.emulator.contract import ApiError
from airflow_batchcode.emulator.refinery_service import TaskCoder, decode_data_url, parse_manifest_url
from airflow_batchcode.exceptions import (
    AuthenticationError,
    ConfigurationError,
    NotFoundError,
    QuotaExceededError,
    ServerError,
    UnexpectedResponseError,
)
from airflow_batchcode.services.base import BatchCodeClient, ObjectStore, OperationState, StagedInput
from airflow_batchcode.services.catalogue import spec_for
from airflow_batchcode.services.refinery import (
    MAJOR_GROUPS,
    AsyncRefineryClient,
    RefineryClient,
    RefinerySettings,
    _translated,
    convert_manifest,
    data_url,
    job_path,
    parse_created,
    parse_job,
    poll_delay,
)
from airflow_batchcode.services.registry import ServiceConfig, build_client

API_KEY = "rk_live_0123456789abcdef"
SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"


class MemoryStore:
    """An in-memory :class:`ObjectStore` that records what it staged."""

    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}

    def stage(self, source: Any, name: str) -> StagedInput:
        data = source.read_bytes() if isinstance(source, Path) else source.read()
        url = f"s3://stage/manifests/{name}"
        self.objects[url] = data
        return StagedInput(
            url, {"access_key_id": "AKIDEXAMPLE", "secret_access_key": SECRET, "region": "ap-southeast-2"}
        )

    def put(self, name: str, data: bytes, content_type: str = "application/json") -> str:
        url = f"s3://stage/manifests/{name}"
        self.objects[url] = data
        return url

    @contextmanager
    def open(self, url: str) -> Any:
        if url not in self.objects:
            raise NotFoundError(f"reading {url}: no such object")
        yield io.BytesIO(self.objects[url])


def settings(**changes: Any) -> RefinerySettings:
    return RefinerySettings(**{"base_url": "https://api.asgrefinery.io", "api_key": API_KEY, **changes})


def canonical(*records: dict[str, Any]) -> io.BytesIO:
    return io.BytesIO(b"".join(json.dumps(r).encode() + b"\n" for r in records))


def test_data_urls_round_trip_through_the_emulators_decoder() -> None:
    tricky = ('chef, "head" 100% #1 & more?', "cooking; plating/serving + ordering =stock")
    url = data_url(*tricky)
    assert url.startswith("data:application/json;charset=utf-8,")
    assert " " not in url and "#" not in url and "," not in url.split(",", 1)[1]
    assert decode_data_url(url) == tricky
    assert decode_data_url("data:text/plain;base64,cGx1bWJlcg==") == ("plumber", "")
    for bad, reason in (
        ("ftp://x", r"data: or http\(s\)"),
        ("data:no-comma", "not a valid data: URL"),
        ("data:application/json;base64,@@@", "could not be decoded"),
        ("data:application/json,%5B1%5D", "JSON object"),
        ("https://cdn.example.com/1.jpg", "could not be fetched"),
    ):
        with pytest.raises(ValueError, match=reason):
            decode_data_url(bad)


def test_convert_manifest_numbers_lines_and_carries_record_ids(tmp_path: Path) -> None:
    source = canonical(
        {"recordId": "a", "occp_text": "nurse", "tasks_text": "caring"},
        {"occp_text": "chef", "tasks_text": ""},
        {"recordId": None, "occp_text": "", "tasks_text": "driving"},
    )
    sink = io.BytesIO()
    assert convert_manifest(source, sink) == 3
    lines = [json.loads(line) for line in sink.getvalue().splitlines()]
    assert [line["metadata"] for line in lines] == [
        {"line": 0, "record_id": "a"},
        {"line": 1, "record_id": None},
        {"line": 2, "record_id": None},
    ]
    assert json.loads(unquote(lines[0]["data_url"].split(",", 1)[1])) == {"occp_text": "nurse", "tasks_text": "caring"}
    path = tmp_path / "manifest.jsonl"
    path.write_bytes(canonical({"occp_text": "x", "tasks_text": "y"}).getvalue())
    assert convert_manifest(path, io.BytesIO()) == 1


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "empty"),
        (b'{"occp_text": "a", "tasks_text": "b"}\n\n', "line 1 is not a JSON object"),
        (b'{"occp_text": "a", "tasks_text": "b"}\n[1]\n', "line 1 is not a JSON object"),
        (b'{"occp_text": 1, "tasks_text": "b"}\n', "line 0 is not a canonical record"),
        (b'{"occp_text": "a", "tasks_text": "b", "recordId": 7}\n', "line 0 is not a canonical record"),
    ],
)
def test_convert_manifest_refuses_non_canonical_input(content: bytes, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        convert_manifest(io.BytesIO(content), io.BytesIO())


def test_settings_defaults_label_spec_and_repr() -> None:
    s = settings()
    assert (s.consensus_threshold, s.task_type, s.delivery_bucket, s.rate_limit) == (
        3,
        "text_classification",
        None,
        0.0,
    )
    assert s.label_spec("anzsco") == {
        "question": "Which major group of ANZSCO does this job belong to?",
        "options": list(MAJOR_GROUPS),
    }
    assert s.label_spec("osca")["question"] == "Which major group of OSCA does this job belong to?"
    assert s.label_spec("osca")["options"] == s.label_spec("anzsco")["options"]
    assert settings(label_question="Pick the {topic} group").label_spec("osca")["question"] == "Pick the OSCA group"
    assert API_KEY not in repr(s) and API_KEY not in s.limiter_key


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"consensus_threshold": 1}, "2 to 10"),
        ({"consensus_threshold": 11}, "2 to 10"),
        ({"consensus_threshold": 2.5}, "whole number"),
        ({"consensus_threshold": "many"}, "must be a number"),
        ({"label_options": ["only"]}, "at least two"),
        ({"label_options": ["a", "a"]}, "at least two distinct"),
        ({"label_options": "not json"}, "JSON list"),
        ({"label_options": [1, 2]}, "non-empty strings"),
        ({"delivery_bucket": "Bad_Bucket"}, "bucket name"),
        ({"delivery_key": "fixed.jsonl"}, "job_id"),
        ({"callback_url": "ftp://x"}, "callback_url"),
    ],
)
def test_settings_refuse_bad_extras(extra: dict[str, Any], message: str) -> None:
    config = ServiceConfig("refinery", "https://api.asgrefinery.io", password=API_KEY, extra=extra)
    with pytest.raises(ConfigurationError, match=message):
        RefinerySettings.from_config(config)


def test_settings_need_an_api_key_and_a_safe_origin() -> None:
    with pytest.raises(ConfigurationError, match="API key"):
        settings(api_key="")
    with pytest.raises(ConfigurationError, match="http"):
        settings(base_url="api.asgrefinery.io")
    with pytest.raises(UnexpectedResponseError, match="only https"):
        settings(base_url="http://api.asgrefinery.io")
    assert settings(base_url="http://127.0.0.1:9000").api_root == "http://127.0.0.1:9000"


@pytest.mark.parametrize(
    ("status", "state"),
    [
        ("accepted", OperationState.IN_PROGRESS),
        ("processing", OperationState.IN_PROGRESS),
        ("completed", OperationState.COMPLETE),
        ("failed", OperationState.FAILED),
    ],
)
def test_job_statuses_map_onto_operation_states(status: str, state: OperationState) -> None:
    body = {
        "job_id": "job_1",
        "status": status,
        "total_tasks": 10,
        "tasks_done": 4,
        "tasks_failed": 1,
        "progress_percent": 50.0,
        "created_at": "2026-04-09T10:00:00Z",
        "completed_at": None,
    }
    operation = parse_job(body, "job_1")
    assert operation.state is state and operation.raw_status == status
    assert operation.progress == {"progress_percent": 50.0, "tasks_done": 4, "tasks_failed": 1, "total_tasks": 10}
    assert (operation.error is not None) == (status == "failed")


def test_job_parsing_errors_are_clear() -> None:
    failed = parse_job({"job_id": "job_1", "status": "failed", "error": "manifest not found"}, "job_1")
    assert failed.error == "manifest not found"
    assert parse_job({"status": "failed"}, "job_1").error == "the service gave no reason"
    assert parse_job({"status": "completed", "tasks_done": True}, "job_1").progress == {}
    for body, message in (
        ({"job_id": "job_1", "status": "paused"}, "unknown status 'paused'"),
        ({"job_id": "job_1"}, "status is missing"),
        ({"job_id": "job_1", "status": 3}, "status is a number"),
        ({"job_id": "job_2", "status": "completed"}, "another job"),
        ([], "not a JSON object"),
    ):
        with pytest.raises(UnexpectedResponseError, match=message) as caught:
            parse_job(body, "job_1")
        assert "job_1" in str(caught.value)


def test_create_answers_and_job_ids_are_checked() -> None:
    target = parse_created({"job_id": "job_abc", "status": "accepted", "message": "Job accepted."})
    assert (target.operation_id, target.upload_url) == ("job_abc", "")
    for body, message in (({"status": "accepted"}, "job_id is missing"), ({"job_id": "../x"}, "plain identifier")):
        with pytest.raises(UnexpectedResponseError, match=message):
            parse_created(body)
    assert job_path("job_abc") == "/v1/jobs/job_abc"
    with pytest.raises(ConfigurationError):
        job_path("job/../../admin")


def test_error_statuses_get_refinery_meanings() -> None:
    quota = _translated(AuthenticationError("x", status_code=403, service_message="quota exhausted"), "job status")
    assert isinstance(quota, QuotaExceededError) and "quota is exhausted" in str(quota)
    key = _translated(AuthenticationError("x", status_code=401, operation_id="job_9"), "job status")
    assert type(key) is AuthenticationError and "API key" in str(key) and "job_9" in str(key)
    missing = _translated(NotFoundError("x", status_code=404, operation_id="job_9"), "job status")
    assert "another account" in str(missing) and "job_9" in str(missing)
    other = ServerError("x", status_code=500)
    assert _translated(other, "job status") is other


def test_poll_delays_follow_the_services_advice() -> None:
    assert [poll_delay(n) for n in range(6)] == [5.0, 10.0, 20.0, 40.0, 60.0, 60.0]
    assert poll_delay(0, 0.1) == 0.1


def test_create_needs_a_manifest_and_an_object_store() -> None:
    with RefineryClient(settings()) as client:
        with pytest.raises(ConfigurationError, match="manifest_location"):
            client.create_operation("anzsco", manifest=canonical({"occp_text": "a", "tasks_text": ""}))
        with pytest.raises(ConfigurationError, match="manifest="):
            client.create_operation("anzsco")
        with pytest.raises(ConfigurationError, match="create call"):
            client.upload_manifest(parse_created({"job_id": "job_1"}), io.BytesIO())
        with pytest.raises(ConfigurationError, match="manifest name"):
            RefineryClient(settings(), object_store=MemoryStore()).create_operation(
                "anzsco", manifest=canonical({"occp_text": "a", "tasks_text": ""}), name="../escape"
            )


def test_create_stages_the_manifest_and_posts_the_documented_body(monkeypatch: pytest.MonkeyPatch) -> None:
    store = MemoryStore()
    seen: list[str] = []
    sent: dict[str, Any] = {}
    client = RefineryClient(
        settings(delivery_bucket="results-bucket", callback_url="https://hooks.example.com/x", consensus_threshold=5),
        object_store=store,
        on_secret=seen.append,
    )

    class OneTry:
        """The one-try transport the create goes through (it is never retried)."""

        @staticmethod
        def api_json(method: str, url: str, *, what: str, **kwargs: Any) -> Any:
            sent.update(method=method, path=url.removeprefix("https://api.asgrefinery.io"), body=kwargs["json"])
            return {"job_id": "job_42", "status": "accepted", "message": "Job accepted."}

    client.__dict__["_once"] = OneTry()
    target = client.create_operation("osca", manifest=canonical({"occp_text": "chef", "tasks_text": ""}), name="c1")
    assert target.operation_id == "job_42"
    assert list(store.objects) == ["s3://stage/manifests/c1.record-0.json", "s3://stage/manifests/c1.jsonl"]
    assert json.loads(store.objects["s3://stage/manifests/c1.record-0.json"]) == {"occp_text": "chef", "tasks_text": ""}
    staged_line = json.loads(store.objects["s3://stage/manifests/c1.jsonl"])
    assert staged_line["data_url"] == "s3://stage/manifests/c1.record-0.json", "each record by its object's URL"
    body = sent["body"]
    assert (sent["method"], sent["path"]) == ("POST", "/v1/jobs")
    assert body["manifest_url"] == "s3://stage/manifests/c1.jsonl"
    assert body["label_spec"]["question"] == "Which major group of OSCA does this job belong to?"
    assert body["consensus_threshold"] == 5 and body["task_type"] == "text_classification"
    assert body["delivery"] == {"type": "s3", "bucket": "results-bucket"}
    assert body["callback_url"] == "https://hooks.example.com/x"
    assert body["credentials"]["secret_access_key"] == SECRET
    assert API_KEY in seen and SECRET in seen and "AKIDEXAMPLE" in seen and "ap-southeast-2" not in seen
    assert SECRET not in repr(client) and API_KEY not in repr(client)


def test_the_error_reader_strips_known_secrets() -> None:
    client = RefineryClient(settings())
    client._report_secret(SECRET)
    reader = client._read_error
    body = json.dumps({"error": f"bad key {API_KEY} or secret {SECRET}"}).encode()
    assert reader(400, body, "application/json") == "bad key <redacted> or secret <redacted>"
    assert reader(500, b'{"message": "Error performing request"}', "application/json") == "Error performing request"


def test_delivery_location_comes_from_the_job_or_the_connection() -> None:
    client = RefineryClient(settings(delivery_bucket="conn-bucket"))
    assert client.delivery_url({}, "job_1") == "s3://conn-bucket/refinery/job_1/results.jsonl"
    assert client.delivery_url({"delivery": None}, "job_1") is None
    assert client.delivery_url({"delivery": {"type": "s3", "bucket": "job-bucket"}}, "job_1") == (
        "s3://job-bucket/refinery/job_1/results.jsonl"
    )
    custom = RefineryClient(settings(delivery_key="out/{job_id}.jsonl"))
    assert custom.delivery_url({"delivery": {"bucket": "b-1"}}, "job_2") == "s3://b-1/out/job_2.jsonl"
    with pytest.raises(UnexpectedResponseError):
        client.delivery_url({"delivery": {"bucket": "Not A Bucket"}}, "job_1")


def test_delivered_results_are_copied_and_a_missing_object_falls_back_to_the_export(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    store = MemoryStore()
    store.objects["s3://b-1/refinery/job_1/results.jsonl"] = b'{"task_id": "t"}\n'
    client = RefineryClient(settings(delivery_bucket="b-1"), object_store=store)
    job = {"job_id": "job_1", "status": "completed", "tasks_failed": 0}
    monkeypatch.setattr(client, "job", lambda job_id: job)
    out, meta = io.BytesIO(), io.BytesIO()
    assert client.download_results("job_1", "anzsco", out, meta) == (17, len(meta.getvalue()))
    assert json.loads(meta.getvalue())["results"] == "s3://b-1/refinery/job_1/results.jsonl"
    monkeypatch.setattr(client, "job", lambda job_id: {**job, "job_id": job_id})
    exported: list[str] = []
    monkeypatch.setattr(client, "_download_export", lambda job_id, sink: exported.append(job_id) or sink.write(b"x\n"))
    meta = io.BytesIO()
    with caplog.at_level(logging.WARNING):
        assert client.download_results("job_2", "anzsco", io.BytesIO(), meta)[0] == 2
    assert exported == ["job_2"], "an absent delivered object falls back to the export"
    assert json.loads(meta.getvalue())["results"] == "export"
    assert "job_2" in caplog.text and "export instead" in caplog.text


def test_the_spec_and_registry_build_both_clients() -> None:
    config = ServiceConfig("refinery", "https://api.asgrefinery.io", password=API_KEY, object_store=MemoryStore())
    spec = spec_for("refinery")
    sync = spec.build_client(config, None)
    assert isinstance(sync, RefineryClient) and isinstance(sync, BatchCodeClient)
    assert sync.input_with_create and sync.output_name == "output.jsonl" and sync.service == "refinery"
    assert isinstance(sync.object_store, ObjectStore)
    assert isinstance(spec.build_async_client(config, None), AsyncRefineryClient)
    assert isinstance(build_client(config), RefineryClient)


@pytest.mark.parametrize(
    ("url", "where"),
    [
        ("s3://bucket-1/path/to/m.jsonl", ("s3", "bucket-1", "path/to/m.jsonl")),
        ("gs://bucket-1/m.jsonl", ("gs", "bucket-1", "m.jsonl")),
        ("https://my-bucket.s3.amazonaws.com/manifest.jsonl", ("s3", "my-bucket", "manifest.jsonl")),
        ("https://my-bucket.s3.us-west-2.amazonaws.com/a/b.jsonl", ("s3", "my-bucket", "a/b.jsonl")),
        ("https://s3.eu-west-1.amazonaws.com/my-bucket/a.jsonl", ("s3", "my-bucket", "a.jsonl")),
    ],
)
def test_emulator_reads_every_documented_manifest_url(url: str, where: tuple[str, str, str]) -> None:
    location = parse_manifest_url(url)
    assert (location.scheme, location.bucket, location.key) == where


@pytest.mark.parametrize("url", ["s3://bucket-1", "http://my-bucket.s3.amazonaws.com/m", "https://evil.com/m", 5, None])
def test_emulator_refuses_other_manifest_urls(url: Any) -> None:
    with pytest.raises(ApiError) as caught:
        parse_manifest_url(url)
    assert caught.value.status == 400


def test_emulator_labels_follow_the_coding_model_and_the_threshold() -> None:
    from airflow_batchcode.emulator.coding_model import load_models
    from airflow_batchcode.emulator.refinery_service import Job

    job = Job(
        id="job_x",
        tenant="t",
        location=parse_manifest_url("s3://b-1/k"),
        label_spec={"question": "Which major group of ANZSCO?", "options": list(MAJOR_GROUPS)},
        threshold=3,
        task_type="text_classification",
        created_at=0.0,
    )
    coder = TaskCoder(job, load_models(), 0.0, 0)
    line = json.dumps({"data_url": data_url("software developer", "writing code"), "metadata": {"line": 0}})
    task = coder.task(line.encode(), 0)
    assert task["status"] == "completed" and task["consensus_label"] == "2 Professionals"
    assert task["worker_count"] >= 3 and task["agreement_count"] >= 3 and 0 < task["confidence"] <= 1
    vague = coder.label("worker", "various")
    assert vague["consensus_label"] is None and vague["agreement_count"] < 3
    custom = TaskCoder(
        Job(**{**job.__dict__, "label_spec": {"question": "Animal?", "options": ["cat", "dog"]}}), load_models(), 1.0, 0
    )
    assert custom.task(line.encode(), 0)["error"] == "no worker could complete the task"
    assert custom.label("software developer", "")["consensus_label"] in ("cat", "dog")


def test_streams_are_not_closed_by_conversion() -> None:
    handle: IO[bytes] = canonical({"occp_text": "a", "tasks_text": "b"})
    convert_manifest(handle, io.BytesIO())
    assert not handle.closed
