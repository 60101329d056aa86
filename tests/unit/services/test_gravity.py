"""Unit tests of the Gravity client's pieces: CSV conversion, the multipart body, envelopes, statuses, settings."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
from python_multipart.multipart import MultipartParser, parse_options_header

from airflow_batchcode.exceptions import (
    AuthenticationError,
    ConfigurationError,
    ConflictError,
    InvalidRequestError,
    NotFoundError,
    RateLimitedError,
    ServiceError,
    TransportError,
    UnexpectedResponseError,
)
from airflow_batchcode.services.base import BatchCodeClient, OperationState
from airflow_batchcode.services.catalogue import spec_for
from airflow_batchcode.services.gravity import (
    CSV_MIME,
    DEFAULT_MAPPING,
    AsyncGravityClient,
    ColumnMapping,
    GravityClient,
    GravitySettings,
    envelope_error,
    job_operation,
    manifest_to_csv,
    parse_job,
    parse_mapping,
    status_state,
    unwrap,
    upload_filename,
)
from airflow_batchcode.services.multipart import FieldPart, FilePart, MultipartBody
from airflow_batchcode.services.registry import ServiceConfig

KEY = "gk_live_0123456789abcdef"
JOB_ID = "59015703-de7f-4e92-9451-6b08210fbb16"
JOB: dict[str, object] = {
    "name": "chunk-0001",
    "inputFileName": "chunk-0001.csv",
    "inputMime": CSV_MIME,
    "billedUsage": 20,
    "recordCount": 3,
    "recordGroupCount": 1,
    "processingTimeMS": 1424,
    "status": "success",
    "errorMessage": None,
    "id": JOB_ID,
    "createdDateUtc": "2023-02-21T21:41:30.405Z",
    "lastUpdatedUtc": "2023-02-22T00:12:51.539Z",
}


def jsonl(*records: dict[str, object]) -> io.BytesIO:
    return io.BytesIO("".join(json.dumps(r) + "\n" for r in records).encode())


def csv_rows(data: bytes) -> list[list[str]]:
    return list(csv.reader(io.StringIO(data.decode("utf-8"), newline="")))


def client(**settings: object) -> GravityClient:
    return GravityClient(GravitySettings("http://127.0.0.1:9", KEY, rate_limit=0, **settings))  # type: ignore[arg-type]


# --- the manifest as CSV ------------------------------------------------------------------------


def test_manifest_to_csv_quotes_fields_and_carries_line_numbers() -> None:
    manifest = jsonl(
        {"recordId": "r1", "occp_text": "Chef, head", "tasks_text": 'says "yes, chef"'},
        {"occp_text": "nurse", "tasks_text": ""},
        {"recordId": "", "occp_text": "line\nbreak", "tasks_text": "carriage\rreturn"},
    )
    sink = io.BytesIO()
    assert manifest_to_csv(manifest, sink) == 3
    data = sink.getvalue()
    assert data.startswith(b"line,record_id,occp_text,tasks_text\r\n")
    assert b'0,r1,"Chef, head","says ""yes, chef"""\r\n' in data
    assert csv_rows(data) == [
        ["line", "record_id", "occp_text", "tasks_text"],
        ["0", "r1", "Chef, head", 'says "yes, chef"'],
        ["1", "", "nurse", ""],
        ["2", "", "line\nbreak", "carriage\rreturn"],
    ]
    assert not sink.closed, "the sink stays open for the upload"


def test_manifest_to_csv_reads_paths_skips_blank_lines_and_keeps_their_numbers(tmp_path: Path) -> None:
    path = tmp_path / "m.jsonl"
    path.write_text('{"occp_text": "a", "tasks_text": "b"}\n\n{"recordId": "7", "occp_text": "c", "tasks_text": "d"}')
    sink = io.BytesIO()
    assert manifest_to_csv(path, sink) == 2
    assert [row[0] for row in csv_rows(sink.getvalue())[1:]] == ["0", "2"]


@pytest.mark.parametrize("line", ["not json", '["a", "b"]', '{"occp_text": "a"}', '{"occp_text": 1, "tasks_text": ""}'])
def test_manifest_to_csv_names_a_bad_line(line: str) -> None:
    manifest = io.BytesIO(b'{"occp_text": "a", "tasks_text": "b"}\n' + line.encode() + b"\n")
    with pytest.raises(ConfigurationError, match="Manifest line 1 "):
        manifest_to_csv(manifest, io.BytesIO())


def test_upload_filename_is_path_safe() -> None:
    assert upload_filename("chunk-00ab.c") == "chunk-00ab.c.csv"
    assert upload_filename("../../etc/passwd") == "etc_passwd.csv"
    assert upload_filename(None) == "manifest.csv"
    assert upload_filename('a"b\r\nc') == "a_b_c.csv"


# --- multipart ------------------------------------------------------------------------------------


def test_multipart_body_is_exact_and_its_length_matches(tmp_path: Path) -> None:
    path = tmp_path / "in.csv"
    path.write_bytes(b"line,x\r\n0,a\r\n")
    body = MultipartBody(
        [
            FieldPart("data", b'{"mimeType":"text/csv"}', "application/json"),
            FilePart("file", "in.csv", path, "text/csv"),
        ],
        boundary="BOUNDARY",
    )
    expected = (
        b"--BOUNDARY\r\n"
        b'Content-Disposition: form-data; name="data"\r\n'
        b"Content-Type: application/json\r\n\r\n"
        b'{"mimeType":"text/csv"}\r\n'
        b"--BOUNDARY\r\n"
        b'Content-Disposition: form-data; name="file"; filename="in.csv"\r\n'
        b"Content-Type: text/csv\r\n\r\n"
        b"line,x\r\n0,a\r\n\r\n"
        b"--BOUNDARY--\r\n"
    )
    assert b"".join(body) == expected
    assert len(body) == len(expected) == body.sent
    assert b"".join(body) == expected, "re-iterable for retries"
    assert body.content_type == "multipart/form-data; boundary=BOUNDARY"


def test_multipart_body_streams_an_open_file_from_its_position_in_chunks() -> None:
    handle = io.BytesIO(b"HEADER" + b"x" * 10_000)
    handle.seek(6)
    body = MultipartBody([FilePart("file", "f", handle)], chunk_bytes=1024)
    chunks = list(body)
    assert max(len(c) for c in chunks) <= 1024
    assert b"HEADER" not in b"".join(chunks)
    assert len(b"".join(chunks)) == len(body)
    assert len(body.boundary) == 32


def test_multipart_body_parses_back_with_a_real_parser_and_escapes_names() -> None:
    payload = bytes(range(256)) * 40
    body = MultipartBody([FieldPart("data", b"{}"), FilePart("file", 'we"ird\nname.csv', io.BytesIO(payload))])
    parts: dict[str, bytearray] = {}
    header = {"field": b"", "value": b""}
    disposition: list[bytes] = []

    def on_header_field(data: bytes, start: int, end: int) -> None:
        header["field"] += data[start:end]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        header["value"] += data[start:end]

    def on_header_end() -> None:
        if header["field"].lower() == b"content-disposition":
            disposition.append(header["value"])
        header["field"] = header["value"] = b""

    def on_headers_finished() -> None:
        _, options = parse_options_header(disposition[-1])
        parts[options[b"name"].decode()] = bytearray()

    def on_part_data(data: bytes, start: int, end: int) -> None:
        parts[list(parts)[-1]] += data[start:end]

    callbacks = {
        "on_header_field": on_header_field,
        "on_header_value": on_header_value,
        "on_header_end": on_header_end,
        "on_headers_finished": on_headers_finished,
        "on_part_data": on_part_data,
    }
    parser = MultipartParser(body.boundary, callbacks)  # type: ignore[arg-type]
    for chunk in body:
        parser.write(chunk)
    assert parts == {"data": b"{}", "file": payload}
    assert b'filename="we%22ird%0Aname.csv"' in b"".join(body)


def test_multipart_body_refuses_a_file_that_shrank_and_unseekable_sources(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"12345")
    body = MultipartBody([FilePart("file", "f", path)])
    path.write_bytes(b"12")
    with pytest.raises(TransportError, match="shrank"):
        b"".join(body)

    class Pipe(io.RawIOBase):
        def seekable(self) -> bool:
            return False

    with pytest.raises(ConfigurationError):
        MultipartBody([FilePart("file", "f", Pipe())])  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError):
        MultipartBody([])


# --- envelopes, jobs, statuses --------------------------------------------------------------------


def test_unwrap_returns_data_of_a_good_envelope() -> None:
    assert unwrap({"data": [1], "isError": False, "errorMessage": None}, "x") == [1]
    assert unwrap({"data": "u", "isError": "false"}, "x") == "u"
    assert unwrap({"data": None}, "x") is None


@pytest.mark.parametrize(
    ("message", "kind"),
    [
        ("Job 123 was not found", NotFoundError),
        ("The output file of job 1 is no longer available", NotFoundError),
        ("Invalid API key", AuthenticationError),
        ("Job 1 is not complete yet (status incomplete)", ConflictError),
        ("Too many requests", RateLimitedError),
        ("mimeType is required", InvalidRequestError),
        (None, InvalidRequestError),
    ],
)
def test_a_200_with_is_error_is_a_typed_failure_naming_the_job(message: str | None, kind: type[ServiceError]) -> None:
    with pytest.raises(kind) as caught:
        unwrap({"data": None, "isError": True, "errorMessage": message}, "result link", "job-1")
    assert type(caught.value) is kind
    assert "job-1" in str(caught.value) and "Gravity result link" in str(caught.value)
    assert caught.value.service_message == (message or "no errorMessage given")


@pytest.mark.parametrize("body", [[], "text", {"id": "x"}, {"data": 1, "isError": 1}])
def test_unwrap_refuses_what_is_not_an_envelope(body: object) -> None:
    with pytest.raises(UnexpectedResponseError):
        unwrap(body, "x")


def test_envelope_error_without_an_operation() -> None:
    error = envelope_error("kaput", what="create job")
    assert isinstance(error, InvalidRequestError) and error.operation_id is None and "kaput" in str(error)


@pytest.mark.parametrize(
    ("status", "state"),
    [
        ("success", OperationState.COMPLETE),
        ("Success", OperationState.COMPLETE),
        ("SUCCESS", OperationState.COMPLETE),
        ("Incomplete", OperationState.IN_PROGRESS),
        ("incomplete", OperationState.IN_PROGRESS),
        ("pending", OperationState.IN_PROGRESS),
        ("Processing", OperationState.IN_PROGRESS),
        ("In Progress", OperationState.IN_PROGRESS),
        ("Error", OperationState.FAILED),
        ("error", OperationState.FAILED),
        ("Fail", OperationState.FAILED),
        ("failed", OperationState.FAILED),
    ],
)
def test_every_status_spelling_maps_to_a_state(status: str, state: OperationState) -> None:
    assert status_state(status) is state
    assert job_operation({**JOB, "status": status}).state is state


def test_unknown_or_missing_status_is_off_contract() -> None:
    with pytest.raises(UnexpectedResponseError, match="unknown status 'Exploded'"):
        status_state("Exploded")
    with pytest.raises(UnexpectedResponseError, match="status is null"):
        job_operation({**JOB, "status": None})


def test_job_operation_carries_progress_and_the_failure_reason() -> None:
    done = job_operation(JOB)
    assert done.operation_id == JOB_ID and done.raw_status == "success" and done.error is None
    assert done.progress == {"recordCount": 3, "recordGroupCount": 1, "billedUsage": 20, "processingTimeMS": 1424}
    running = job_operation({**JOB, "status": "Incomplete", "statusMessage": "Processing 3 records"})
    assert running.progress["statusMessage"] == "Processing 3 records"
    assert "in_progress (service status 'Incomplete')" in running.describe()
    failed = job_operation({**JOB, "status": "Error", "errorMessage": "bad input", "statusMessage": "x"})
    assert failed.error == "bad input"
    assert job_operation({**JOB, "status": "Fail", "statusMessage": "model crashed"}).error == "model crashed"
    assert job_operation({**JOB, "status": "Fail"}).error == "the job failed without a message"
    assert "billedUsage" not in job_operation({**JOB, "billedUsage": True}).progress


def test_parse_job_checks_the_object_and_its_id() -> None:
    assert parse_job(JOB, "x", JOB_ID) is JOB
    with pytest.raises(UnexpectedResponseError, match="not a job object"):
        parse_job([JOB], "x")
    with pytest.raises(UnexpectedResponseError, match="no usable id"):
        parse_job({**JOB, "id": "../etc"}, "x")
    with pytest.raises(UnexpectedResponseError, match="asked for job other"):
        parse_job(JOB, "x", "other")


# --- settings, mappings, requests -----------------------------------------------------------------


def test_parse_mapping_accepts_lists_objects_and_json_text() -> None:
    expected = (ColumnMapping("a", "b", None),)
    assert parse_mapping([{"source": "a", "destination": "b"}], "m") == expected
    assert parse_mapping({"a": "b"}, "m") == expected
    assert parse_mapping('[{"source": "a", "destination": "b", "defaultValue": 0}]', "m") == (
        ColumnMapping("a", "b", "0"),
    )
    assert parse_mapping([], "m") == ()
    assert parse_mapping(None, "m") is None
    for bad in ("{not json", 3, [{"source": "a"}], [{"source": "", "destination": "b"}], ["x"]):
        with pytest.raises(ConfigurationError, match="m"):
            parse_mapping(bad, "m")


def test_settings_hide_the_key_and_check_the_origin() -> None:
    settings = GravitySettings("https://on-demand.gravity-ai.com", KEY)
    assert KEY not in repr(settings)
    assert KEY not in settings.limiter_key
    with pytest.raises(ConfigurationError, match="API key"):
        GravitySettings("https://on-demand.gravity-ai.com", "")
    with pytest.raises(ConfigurationError, match="http"):
        GravitySettings("ftp://example.com", KEY)
    with pytest.raises(UnexpectedResponseError, match="only https"):
        GravitySettings("http://gravity.example.com", KEY)


def test_settings_from_a_connection_read_the_extras() -> None:
    config = ServiceConfig(
        service="gravity",
        base_url="https://on-demand.gravity-ai.com",
        password=KEY,
        extra={
            "version": "1.0.0",
            "mapping": '{"occp_text": "title", "tasks_text": "duties"}',
            "output_mapping": [{"source": "code", "destination": "occupation_code", "defaultValue": ""}],
            "rate_limit": 2,
        },
    )
    settings = GravitySettings.from_config(config)
    assert settings.version == "1.0.0" and settings.rate_limit == 2.0
    assert settings.mapping == (ColumnMapping("occp_text", "title"), ColumnMapping("tasks_text", "duties"))
    assert settings.output_mapping == (ColumnMapping("code", "occupation_code", ""),)
    default = GravitySettings.from_config(ServiceConfig(service="gravity", base_url="https://x.example", password=KEY))
    assert default.mapping == DEFAULT_MAPPING and default.output_mapping is None and default.version is None


@pytest.mark.parametrize("base_url", ["https://on-demand.gravity-ai.com", "", "https://api.gravity-ai.com/"])
def test_gravitys_own_service_needs_a_mapping_in_the_settings_and_the_connection_test(
    base_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow_batchcode.hooks.batchcode import BatchCodeHook

    config = ServiceConfig(service="gravity", base_url=base_url, password=KEY)
    with pytest.raises(ConfigurationError, match="needs the connection extra 'mapping'") as caught:
        GravitySettings.from_config(config)
    assert "job_title, duties" in str(caught.value)
    hook = BatchCodeHook()
    monkeypatch.setattr(BatchCodeHook, "config", property(lambda self: config))
    ok, message = hook.test_connection()
    assert not ok and "needs the connection extra 'mapping'" in message
    explicit = ServiceConfig(service="gravity", base_url=base_url, password=KEY, extra={"mapping": None})
    assert GravitySettings.from_config(explicit).mapping is None, "an explicit null sends no mapping"


def test_the_registry_builds_both_clients_and_reports_the_key() -> None:
    secrets: list[str] = []
    config = ServiceConfig(service="gravity", base_url="http://127.0.0.1:9", password=KEY, extra={"rate_limit": 0})
    spec = spec_for("gravity")
    sync = spec.build_client(config, secrets.append)
    assert isinstance(sync, GravityClient) and isinstance(sync, BatchCodeClient)
    assert sync.input_with_create and sync.output_name == "output.csv"
    assert isinstance(spec.build_async_client(config, secrets.append), AsyncGravityClient)
    assert KEY in secrets
    assert KEY not in repr(sync) and KEY not in repr(sync.settings)
    sync.close()


def test_request_data_uses_the_default_mapping_and_the_model_as_version() -> None:
    with client() as gravity:
        data = gravity.request_data("chunk-1", "2.0.0")
    assert data == {
        "mimeType": "text/csv; header=present",
        "name": "chunk-1",
        "version": "2.0.0",
        "mapping": [
            {"source": "occp_text", "destination": "job_title", "defaultValue": ""},
            {"source": "tasks_text", "destination": "duties", "defaultValue": ""},
        ],
    }
    with client(mapping=None, output_mapping=(ColumnMapping("code", "c"),), version="1.0.0") as gravity:
        assert gravity.request_data(None, None) == {
            "mimeType": "text/csv; header=present",
            "version": "1.0.0",
            "outputMapping": [{"source": "code", "destination": "c", "defaultValue": None}],
        }


def test_service_messages_lose_the_key_and_link_signatures() -> None:
    with client() as gravity:
        echo = f"key {KEY} refused for https://bucket.s3.amazonaws.com/out.csv?AWSAccessKeyId=A&Signature=zz"
        with pytest.raises(InvalidRequestError) as caught:
            gravity._data({"data": None, "isError": True, "errorMessage": echo}, "create job")
        text = str(caught.value)
        assert KEY not in text and "Signature=zz" not in text and "<redacted>" in text
        body = json.dumps({"isError": True, "errorMessage": echo}).encode()
        read = gravity._read_error(400, body, "application/json") or ""
        assert KEY not in read and "Signature" not in read


def test_create_needs_a_manifest_and_upload_is_not_part_of_the_flow() -> None:
    with client() as gravity:
        with pytest.raises(ConfigurationError, match="manifest="):
            gravity.create_operation("anzsco")
        from airflow_batchcode.services.base import UploadTarget

        with pytest.raises(ConfigurationError, match="already has its input"):
            gravity.upload_manifest(UploadTarget("job-1", ""), io.BytesIO(b""))
