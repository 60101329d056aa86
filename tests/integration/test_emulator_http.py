"""The ABS emulator over real HTTP on loopback, driven with raw ``requests`` calls."""

from __future__ import annotations

import base64
import http.client
import json
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
import requests

from airflow_batchcode.emulator.coding_model import load_models
from airflow_batchcode.emulator.server import EmulatorServer

MakeEmulator = Callable[..., EmulatorServer]
SSE = "x-amz-server-side-encryption"
KMS = "x-amz-server-side-encryption-aws-kms-key-id"
DENY = "User is not authorized to access this resource with an explicit deny"
TOPICS = [
    {"uriName": "anzsco", "fullName": "Australian and New Zealand Standard Classification of Occupations, 2022"},
    {"uriName": "osca", "fullName": "Occupation Standard Classification for Australia, 2024"},
]


def jsonl(*lines: Any) -> bytes:
    """Records as JSONL; strings are written as they are."""
    return "".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines).encode()


GOOD = [
    {"recordId": "1", "occp_text": "software developer", "tasks_text": "writing code and unit tests"},
    {"recordId": "2", "occp_text": "Paramedic", "tasks_text": "responding to medical emergencies"},
    {"recordId": "3", "occp_text": "Brickie", "tasks_text": ""},
]


class Api:
    """One OAuth2 client of an emulator, speaking raw HTTP."""

    def __init__(self, server: EmulatorServer, client: str = "demo-client", secret: str = "demo-secret") -> None:
        self.server = server
        self.base = server.base_url
        self.http = requests.Session()
        response = token(server, client, secret)
        assert response.status_code == 200, response.text
        self.token = response.json()["access_token"]

    def call(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        headers = {"Authorization": self.token, **kwargs.pop("headers", {})}
        return self.http.request(method, self.base + path, headers=headers, timeout=kwargs.pop("timeout", 10), **kwargs)

    def create(self, topic: str = "anzsco", model: str | None = None) -> dict[str, str]:
        path = f"/v1/topics/{topic}/batch-code" if model is None else f"/v1/topics/{topic}/models/{model}/batch-code"
        response = self.call("POST", path)
        assert response.status_code == 200, response.text
        return response.json()

    def status(self, operation_id: str, topic: str = "anzsco") -> dict[str, str]:
        response = self.call("GET", f"/v1/topics/{topic}/batch-code/operations/{operation_id}")
        assert response.status_code == 200, response.text
        return response.json()

    def wait(self, operation_id: str, topic: str = "anzsco", timeout: float = 10) -> dict[str, str]:
        deadline = time.monotonic() + timeout
        while (status := self.status(operation_id, topic))["operationStatus"] == "in_progress":
            assert time.monotonic() < deadline, "operation stayed in_progress"
            time.sleep(0.05)
        return status

    def run(self, data: bytes, topic: str = "anzsco") -> tuple[dict[str, str], dict[str, str]]:
        created = self.create(topic)
        assert upload(created, data).status_code == 200
        return created, self.wait(created["operationId"], topic)


def token(
    server: EmulatorServer, client: str = "demo-client", secret: str = "demo-secret", **kw: Any
) -> requests.Response:
    data = kw.pop("data", {"grant_type": "client_credentials"})
    return requests.post(f"{server.base_url}/oauth2/token", auth=(client, secret), data=data, timeout=5, **kw)


def upload(created: dict[str, str], data: bytes, headers: dict[str, str] | None = None) -> requests.Response:
    sent = {SSE: "aws:kms", KMS: created["bucketKmsKeyArn"]} if headers is None else headers
    return requests.put(created["requestUploadUrl"], data=data, headers=sent, timeout=10)


def admin(server: EmulatorServer, path: str, body: dict[str, Any] | None = None) -> Any:
    url = f"{server.base_url}/_emulator/{path}"
    response = requests.post(url, json=body, timeout=5) if body is not None else requests.get(url, timeout=5)
    assert response.status_code == 200, response.text
    return response.json()


def advance(server: EmulatorServer, seconds: float) -> None:
    admin(server, "clock", {"advance": seconds})


def s3_error(response: requests.Response) -> str:
    assert response.headers["content-type"] == "application/xml"
    assert response.text.startswith('<?xml version="1.0" encoding="UTF-8"?><Error><Code>')
    return response.text.split("<Code>")[1].split("</Code>")[0]


def lines_of(response: requests.Response) -> list[dict[str, Any]]:
    assert response.status_code == 200, response.text
    return [json.loads(line) for line in response.text.splitlines()]


@pytest.fixture
def api(abs_emulator: EmulatorServer) -> Api:
    return Api(abs_emulator)


# --- OAuth2 --------------------------------------------------------------------------------------


def test_token_is_issued_for_client_credentials(make_emulator: MakeEmulator) -> None:
    server = make_emulator(token_ttl=1234)
    response = token(server)
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"access_token", "expires_in", "token_type"}
    assert len(body["access_token"]) >= 40 and body["expires_in"] == 1234 and body["token_type"] == "Bearer"
    assert token(server).json()["access_token"] != body["access_token"]


def test_token_failures(make_emulator: MakeEmulator) -> None:
    server = make_emulator(token_limit=2)
    url = f"{server.base_url}/oauth2/token"
    form = {"grant_type": "client_credentials"}
    assert token(server, secret="wrong").status_code == 401
    assert token(server, secret="wrong").json() == {"error": "invalid_client"}
    assert token(server, client="nobody").json() == {"error": "invalid_client"}
    assert requests.post(url, data=form, timeout=5).json() == {"error": "invalid_client"}
    garbled = requests.post(url, data=form, headers={"Authorization": "Basic !!!"}, timeout=5)
    assert garbled.status_code == 401
    wrong_grant = token(server, data={"grant_type": "password"})
    assert (wrong_grant.status_code, wrong_grant.json()) == (400, {"error": "unsupported_grant_type"})
    assert token(server).status_code == 200
    assert token(server).status_code == 200
    over = token(server)
    assert over.status_code == 403
    assert over.json() == {"error": "access_denied", "error_description": "Too many token requests"}
    advance(server, 3601)
    assert token(server).status_code == 200


def test_basic_credentials_header_is_what_counts(abs_emulator: EmulatorServer) -> None:
    basic = base64.b64encode(b"demo-client:demo-secret").decode()
    response = requests.post(
        f"{abs_emulator.base_url}/oauth2/token",
        data="grant_type=client_credentials",
        headers={"Authorization": f"Basic {basic}", "Content-Type": "application/x-www-form-urlencoded"},
        timeout=5,
    )
    assert response.status_code == 200


def test_api_auth_failures(api: Api) -> None:
    url = f"{api.base}/v1/topics"
    missing = requests.get(url, timeout=5)
    assert (missing.status_code, missing.json()) == (401, {"message": "Unauthorized"})
    bearer = requests.get(url, headers={"Authorization": f"Bearer {api.token}"}, timeout=5)
    assert (bearer.status_code, bearer.json()) == (403, {"message": DENY})
    unknown = requests.get(url, headers={"Authorization": "x" * 43}, timeout=5)
    assert (unknown.status_code, unknown.json()) == (403, {"message": DENY})
    assert api.call("GET", "/v1/topics").status_code == 200


def test_expired_token_is_denied(make_emulator: MakeEmulator) -> None:
    server = make_emulator(token_ttl=60)
    api = Api(server)
    assert api.call("GET", "/v1/topics").status_code == 200
    advance(server, 61)
    assert api.call("GET", "/v1/topics").json() == {"message": DENY}


# --- topics and models ---------------------------------------------------------------------------


def test_topics_and_models(api: Api) -> None:
    assert api.call("GET", "/v1/topics").json() == TOPICS
    for topic in ("anzsco", "osca"):
        models = api.call("GET", f"/v1/topics/{topic}/models").json()
        assert models == [m.info.to_json() for m in load_models()[topic]]
        assert {"modelId", "modelVersion", "modelReleaseDate", "modelType", "inputFormat"} <= set(models[0])
    missing = api.call("GET", "/v1/topics/isco/models")
    assert (missing.status_code, missing.json()) == (404, {"message": "The specified topic does not exist"})


def test_create_operation_both_forms_and_model_errors(api: Api) -> None:
    latest = api.create("osca")
    assert set(latest) == {"requestUploadUrl", "operationId", "bucketKmsKeyArn"}
    assert latest["bucketKmsKeyArn"].startswith("arn:aws:kms:ap-southeast-2:123456789012:key/")
    anzsco = load_models()["anzsco"]
    pinned = api.create("anzsco", anzsco[0].info.model_id)
    assert pinned["operationId"] != latest["operationId"]
    assert pinned["bucketKmsKeyArn"] != latest["bucketKmsKeyArn"]
    osca_model = load_models()["osca"][0].info.model_id
    wrong = api.call("POST", f"/v1/topics/anzsco/models/{osca_model}/batch-code")
    assert (wrong.status_code, wrong.json()) == (409, {"message": "Selected model does not match the input topic."})
    unknown = api.call("POST", "/v1/topics/anzsco/models/00000000-0000-0000-0000-000000000000/batch-code")
    assert (unknown.status_code, unknown.json()) == (404, {"message": "The specified model does not exist"})
    no_topic = api.call("POST", "/v1/topics/nope/batch-code")
    assert (no_topic.status_code, no_topic.json()) == (404, {"message": "The specified topic does not exist"})


def test_upload_url_is_a_presigned_s3_put(api: Api) -> None:
    created = api.create()
    parts = urlsplit(created["requestUploadUrl"])
    assert f"{parts.scheme}://{parts.netloc}" == api.base
    assert parts.path == f"/_storage/abs-coder-input/{created['operationId']}/input.jsonl"
    query = dict(parse_qsl(parts.query))
    assert query["X-Amz-Algorithm"] == "AWS4-HMAC-SHA256"
    assert query["X-Amz-SignedHeaders"] == f"host;{SSE};{KMS}"
    assert query["X-Amz-Expires"] == "600"


def test_public_url_goes_into_presigned_urls(make_emulator: MakeEmulator) -> None:
    api = Api(make_emulator(public_url="https://storage.example.test/"))
    assert api.create()["requestUploadUrl"].startswith("https://storage.example.test/_storage/abs-coder-input/")


# --- uploads -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "named"),
    [
        ({}, SSE),
        ({KMS: "{arn}"}, SSE),
        ({SSE: "AES256", KMS: "{arn}"}, SSE),
        ({SSE: "aws:kms"}, KMS),
        ({SSE: "aws:kms", KMS: "arn:aws:kms:ap-southeast-2:123456789012:key/other"}, KMS),
    ],
    ids=["none", "no-sse", "wrong-sse", "no-kms", "wrong-kms"],
)
def test_upload_needs_both_encryption_headers(api: Api, headers: dict[str, str], named: str) -> None:
    created = api.create()
    sent = {k: v.format(arn=created["bucketKmsKeyArn"]) for k, v in headers.items()}
    response = upload(created, jsonl(*GOOD), sent)
    assert response.status_code == 400 and s3_error(response) == "InvalidArgument"
    assert named in response.text
    assert api.status(created["operationId"]) == {"operationStatus": "awaiting_input"}
    assert upload(created, jsonl(*GOOD)).status_code == 200


def test_tampered_upload_url_is_refused(api: Api) -> None:
    created = api.create()
    url = created["requestUploadUrl"]
    signature = dict(parse_qsl(urlsplit(url).query))["X-Amz-Signature"]
    tampered = {**created, "requestUploadUrl": url.replace(signature, signature[::-1])}
    response = upload(tampered, jsonl(*GOOD))
    assert response.status_code == 403 and s3_error(response) == "SignatureDoesNotMatch"
    assert signature not in response.text and signature[::-1] not in response.text
    unsigned = {**created, "requestUploadUrl": url.split("?")[0]}
    assert s3_error(upload(unsigned, jsonl(*GOOD))) == "SignatureDoesNotMatch"
    other_op = {**created, "requestUploadUrl": url.replace(created["operationId"], api.create()["operationId"])}
    assert s3_error(upload(other_op, jsonl(*GOOD))) == "SignatureDoesNotMatch"


def test_expired_upload_url_is_refused(api: Api) -> None:
    created = api.create()
    advance(api.server, 601)
    response = upload(created, jsonl(*GOOD))
    assert response.status_code == 403 and s3_error(response) == "AccessDenied"
    assert "Request has expired" in response.text


def test_second_upload_is_refused(api: Api) -> None:
    created = api.create()
    first = upload(created, jsonl(*GOOD))
    assert first.status_code == 200 and first.text == "" and first.headers["ETag"].startswith('"')
    second = upload(created, jsonl(*GOOD))
    assert second.status_code == 403 and s3_error(second) == "AccessDenied"
    assert "no longer accepting input" in second.text


def test_upload_over_the_limit_is_refused(make_emulator: MakeEmulator) -> None:
    api = Api(make_emulator(max_upload_bytes=100))
    created = api.create()
    response = upload(created, b"x" * 101)
    assert response.status_code == 400 and s3_error(response) == "EntityTooLarge"

    def chunks() -> Any:
        yield b"x" * 60
        yield b"x" * 60

    streamed = requests.put(
        created["requestUploadUrl"], data=chunks(), headers={SSE: "aws:kms", KMS: created["bucketKmsKeyArn"]}, timeout=5
    )
    assert streamed.status_code == 400 and s3_error(streamed) == "EntityTooLarge"
    assert api.status(created["operationId"]) == {"operationStatus": "awaiting_input"}
    assert upload(created, jsonl(GOOD[0])).status_code == 200


def test_chunked_upload_is_accepted(api: Api) -> None:
    created = api.create()
    data = jsonl(*GOOD)
    response = requests.put(
        created["requestUploadUrl"],
        data=iter([data[:10], data[10:]]),
        headers={SSE: "aws:kms", KMS: created["bucketKmsKeyArn"]},
        timeout=5,
    )
    assert response.status_code == 200
    assert len(lines_of(requests.get(api.wait(created["operationId"])["responseDownloadUrl"], timeout=5))) == 3


def uploads_refused(server: EmulatorServer) -> int:
    """How many uploads the emulator has refused so far (an interrupted one included)."""
    return int(admin(server, "stats")["uploads"]["refused"])


def test_broken_upload_leaves_the_operation_awaiting_input(api: Api) -> None:
    created = api.create()
    url = urlsplit(created["requestUploadUrl"])
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=5)
    conn.putrequest("PUT", f"{url.path}?{url.query}")
    for name, value in {SSE: "aws:kms", KMS: created["bucketKmsKeyArn"], "Content-Length": "1000"}.items():
        conn.putheader(name, value)
    conn.endheaders()
    conn.send(b'{"occp_text": "nurse", ')
    conn.close()
    deadline = time.monotonic() + 10
    while uploads_refused(api.server) < 1:  # the emulator has seen the upload break off
        assert time.monotonic() < deadline, "the emulator never noticed the interrupted upload"
        time.sleep(0.02)
    assert api.status(created["operationId"]) == {"operationStatus": "awaiting_input"}
    assert upload(created, jsonl(*GOOD)).status_code == 200


# --- processing and outputs ----------------------------------------------------------------------


def test_state_progression_and_output_lines(make_emulator: MakeEmulator) -> None:
    server = make_emulator(processing_delay=60)
    api = Api(server)
    model = load_models()["anzsco"][-1]
    records: list[Any] = [
        GOOD[0],
        {"recordId": "2", "occp_text": "xyzzy", "tasks_text": "plugh"},
        "this is not a json string",
        {"recordId": "4", "occp_text": "x" * 200, "tasks_text": "y" * 101},
        {"recordId": "5", "occp_text": "caf\u00e9 manager", "tasks_text": ""},
        {"recordId": "6", "occp_text": "", "tasks_text": ""},
        {"recordId": "7", "occp_text": 5, "tasks_text": "x"},
        {"recordId": "8", "occp_text": "nurse", "tasks_text": "tab\there"},
        "[1, 2]",
        {"recordId": "1", "occp_text": "Brickie", "tasks_text": ""},
    ]
    created = api.create()
    op = created["operationId"]
    assert api.status(op) == {"operationStatus": "awaiting_input"}
    assert upload(created, jsonl(*records)).status_code == 200
    assert api.status(op) == {"operationStatus": "in_progress"}
    deadline = time.monotonic() + 10
    while server.service.operations[op].outcome is None:  # the emulator has coded the input
        assert time.monotonic() < deadline, "the emulator never finished coding"
        time.sleep(0.02)
    advance(server, 59)
    assert api.status(op) == {"operationStatus": "in_progress"}, "in progress until the processing delay is over"
    advance(server, 2)
    status = api.wait(op)
    assert status["operationStatus"] == "complete"
    assert set(status) == {"operationStatus", "responseDownloadUrl", "metadataDownloadUrl"}
    response = requests.get(status["responseDownloadUrl"], timeout=5)
    assert response.headers["Content-Type"] == "application/octet-stream"
    assert response.text.endswith("}\n") and "\r" not in response.text and ": " not in response.text
    out = lines_of(response)
    assert len(out) == len(records)
    assert [line["recordId"] for line in out] == ["1", "2", "unknown", "4", "5", "6", "7", "8", "unknown", "1"]

    def coded(record: dict[str, Any]) -> dict[str, Any]:
        outcome = model.code(record["occp_text"], record["tasks_text"])
        head = {
            "recordId": record["recordId"],
            "codeStatus": outcome.status,
            "input": {"occp_text": record["occp_text"], "tasks_text": record["tasks_text"]},
        }
        if outcome.result is not None:
            return {**head, "result": outcome.result.to_json()}
        return {**head, "suggestions": [s.to_json() for s in outcome.suggestions]}

    assert out[0] == coded(records[0]) and out[0]["codeStatus"] == "successful"
    assert out[1] == coded(records[1]) and out[1]["codeStatus"] == "unsuccessful"
    assert 1 <= len(out[1]["suggestions"]) <= 3
    assert out[2] == {
        "recordId": "unknown",
        "codeStatus": "unsuccessful",
        "input": "this is not a json string",
        "error": "Invalid JSON data format. ",
    }
    errors = {
        3: "Input text exceeds the maximum length of 300 characters",
        4: "Input text contains characters outside printable ASCII",
        5: "At least one of occp_text and tasks_text must be non-empty",
        6: "Field occp_text must be a string",
        7: "Input text contains characters outside printable ASCII",
    }
    for index, error in errors.items():
        record = records[index]
        assert out[index] == {
            "recordId": record["recordId"],
            "codeStatus": "unsuccessful",
            "input": {"occp_text": record["occp_text"], "tasks_text": record["tasks_text"]},
            "error": error,
        }
    assert out[8]["input"] == "[1, 2]" and out[8]["error"] == "Invalid JSON data format. "
    assert out[9] == coded(records[9])

    metadata = requests.get(status["metadataDownloadUrl"], timeout=5).json()
    assert metadata["operationId"] == op and metadata["topic"] == "anzsco"
    assert metadata["model"] == model.info.to_json()
    assert metadata["recordCount"] == 10
    assert metadata["errorCount"] == 7
    assert metadata["successfulCount"] + metadata["unsuccessfulCount"] == 3
    assert metadata["createdAt"].endswith("Z") and metadata["completedAt"] >= metadata["createdAt"]


def test_record_id_is_null_when_the_input_has_none(api: Api) -> None:
    records = [{k: v for k, v in r.items() if k != "recordId"} for r in GOOD]
    _, status = api.run(jsonl(*records, "not json"))
    out = lines_of(requests.get(status["responseDownloadUrl"], timeout=5))
    assert [line["recordId"] for line in out] == [None, None, None, "unknown"]
    assert '"recordId":null' in requests.get(status["responseDownloadUrl"], timeout=5).text


def test_pinned_model_codes_with_that_model(api: Api) -> None:
    oldest = load_models()["anzsco"][0]
    created = api.create("anzsco", oldest.info.model_id)
    assert upload(created, jsonl(*GOOD)).status_code == 200
    status = api.wait(created["operationId"])
    assert requests.get(status["metadataDownloadUrl"], timeout=5).json()["model"] == oldest.info.to_json()
    pinned_status = api.call(
        "GET", f"/v1/topics/anzsco/models/{oldest.info.model_id}/batch-code/operations/{created['operationId']}"
    )
    assert pinned_status.json()["operationStatus"] == "complete"


def test_crlf_and_blank_lines(api: Api) -> None:
    data = (json.dumps(GOOD[0]) + "\r\n\r\n" + json.dumps(GOOD[1])).encode()
    _, status = api.run(data)
    out = lines_of(requests.get(status["responseDownloadUrl"], timeout=5))
    assert [line["recordId"] for line in out] == ["1", "2"]


def test_mixed_fields_fail_the_operation(api: Api) -> None:
    mixed = jsonl(GOOD[0], GOOD[1], {"occp_text": "nurse"})
    _, status = api.run(mixed)
    assert status == {
        "operationStatus": "failed",
        "error": "All lines of input must contain the same fields: line 3 has [occp_text] "
        "but line 1 has [occp_text, recordId, tasks_text]",
    }
    _, status = api.run(jsonl({"occp_text": "a", "tasks_text": "b", "extra": 1}))
    assert status["operationStatus"] == "failed" and "line 1 has [extra, occp_text, tasks_text]" in status["error"]


def test_empty_file_fails_the_operation(api: Api) -> None:
    _, status = api.run(b"")
    assert status == {"operationStatus": "failed", "error": "The input file is empty"}
    _, status = api.run(b"\n\n")
    assert status["error"] == "The input file is empty"


def test_awaiting_input_times_out(make_emulator: MakeEmulator) -> None:
    server = make_emulator(awaiting_timeout=300, url_ttl=3600)
    api = Api(server)
    created = api.create()
    advance(server, 299)
    assert api.status(created["operationId"]) == {"operationStatus": "awaiting_input"}
    advance(server, 2)
    assert api.status(created["operationId"]) == {"operationStatus": "timed_out"}
    refused = upload(created, jsonl(*GOOD))
    assert refused.status_code == 403 and "no longer accepting input" in refused.text


def test_download_urls_are_fresh_on_every_status_call(api: Api) -> None:
    created, first = api.run(jsonl(*GOOD))
    advance(api.server, 601)
    expired = requests.get(first["responseDownloadUrl"], timeout=5)
    assert expired.status_code == 403 and s3_error(expired) == "AccessDenied"
    second = api.status(created["operationId"])
    assert second["responseDownloadUrl"] != first["responseDownloadUrl"]
    assert second["metadataDownloadUrl"] != first["metadataDownloadUrl"]
    assert len(lines_of(requests.get(second["responseDownloadUrl"], timeout=5))) == 3


def test_outputs_are_deleted_after_retention(api: Api) -> None:
    created, status = api.run(jsonl(*GOOD))
    assert requests.get(status["responseDownloadUrl"], timeout=5).status_code == 200
    advance(api.server, 3601)
    later = api.status(created["operationId"])
    assert later["operationStatus"] == "complete" and "responseDownloadUrl" in later
    for url in (later["responseDownloadUrl"], later["metadataDownloadUrl"]):
        gone = requests.get(url, timeout=5)
        assert gone.status_code == 404 and s3_error(gone) == "NoSuchKey"


def test_download_headers_and_range_resume(api: Api) -> None:
    _, status = api.run(jsonl(*GOOD))
    url = status["responseDownloadUrl"]
    whole = requests.get(url, timeout=5)
    size = len(whole.content)
    assert whole.headers["Content-Length"] == str(size)
    assert whole.headers["Accept-Ranges"] == "bytes"
    assert whole.headers["ETag"].startswith('"') and whole.headers["Last-Modified"].endswith("GMT")
    tail = requests.get(url, headers={"Range": "bytes=100-"}, timeout=5)
    assert tail.status_code == 206 and tail.content == whole.content[100:]
    assert tail.headers["Content-Range"] == f"bytes 100-{size - 1}/{size}"
    assert tail.headers["ETag"] == whole.headers["ETag"]
    middle = requests.get(url, headers={"Range": "bytes=10-19"}, timeout=5)
    assert middle.content == whole.content[10:20]
    suffix = requests.get(url, headers={"Range": "bytes=-5"}, timeout=5)
    assert suffix.content == whole.content[-5:]
    beyond = requests.get(url, headers={"Range": f"bytes={size}-"}, timeout=5)
    assert beyond.status_code == 416 and s3_error(beyond) == "InvalidRange"
    assert requests.head(url, timeout=5).status_code == 403, "a URL presigned for GET is not valid for HEAD"


def test_download_needs_a_genuine_url(api: Api) -> None:
    _, status = api.run(jsonl(*GOOD))
    url = status["responseDownloadUrl"]
    bare = requests.get(url.split("?")[0], timeout=5)
    assert bare.status_code == 403 and s3_error(bare) == "SignatureDoesNotMatch"
    swapped = requests.get(url.replace("output.jsonl", "metadata.json"), timeout=5)
    assert s3_error(swapped) == "SignatureDoesNotMatch"


def test_operations_are_private_to_their_client(make_emulator: MakeEmulator) -> None:
    server = make_emulator(clients={"alice": "a-secret", "bob": "b-secret"})
    alice, bob = Api(server, "alice", "a-secret"), Api(server, "bob", "b-secret")
    created = alice.create()
    for path in (
        f"/v1/topics/anzsco/batch-code/operations/{created['operationId']}",
        "/v1/topics/anzsco/batch-code/operations/not-a-guid",
        "/v1/topics/anzsco/batch-code/operations/00000000-0000-4000-8000-000000000000",
        f"/v1/topics/osca/batch-code/operations/{created['operationId']}",
    ):
        response = bob.call("GET", path) if "not-a" not in path else alice.call("GET", path)
        assert (response.status_code, response.json()) == (404, {"message": "The specified operation does not exist"})
    assert alice.status(created["operationId"]) == {"operationStatus": "awaiting_input"}


# --- limits --------------------------------------------------------------------------------------


def test_rate_limit_answers_429_with_retry_after(make_emulator: MakeEmulator) -> None:
    server = make_emulator(rate_limit=0.5)
    api = Api(server)
    assert api.call("GET", "/v1/topics").status_code == 200
    throttled = api.call("GET", "/v1/topics")
    assert (throttled.status_code, throttled.json()) == (429, {"message": "Too Many Requests"})
    assert int(throttled.headers["Retry-After"]) in (1, 2)
    assert token(server).status_code == 200, "token calls are not rate limited"
    advance(server, 2)
    assert api.call("GET", "/v1/topics").status_code == 200


def test_rate_limit_lets_a_patient_client_through(make_emulator: MakeEmulator) -> None:
    server = make_emulator(rate_limit=4)
    api = Api(server)
    assert api.call("GET", "/v1/topics").status_code == 200
    throttled = api.call("GET", "/v1/topics")
    assert throttled.status_code == 429 and throttled.headers["Retry-After"] == "1"
    advance(server, 0.3)  # the emulator's clock: a real pause would race a busy machine
    assert api.call("GET", "/v1/topics").status_code == 200


def test_daily_quota(make_emulator: MakeEmulator) -> None:
    server = make_emulator(daily_quota=3)
    api = Api(server)
    for _ in range(3):
        assert api.call("GET", "/v1/topics").status_code == 200
    spent = api.call("GET", "/v1/topics")
    assert (spent.status_code, spent.json()) == (429, {"message": "Limit Exceeded"})
    assert "Retry-After" not in spent.headers
    stats = admin(server, "stats")
    assert stats["throttled"] == {"daily_quota": 1}
    assert stats["calls_busiest_window"] == {"demo-client": 4}, "a refused call is a call of the window too"
    advance(server, 86400)
    assert api.call("GET", "/v1/topics").status_code == 200


# --- real-time coding ----------------------------------------------------------------------------


def test_real_time_coding(api: Api) -> None:
    model = load_models()["osca"][-1]
    single = api.call("POST", "/v1/topics/osca/code", json={"occp_text": "chef", "tasks_text": "cooking"})
    outcome = model.code("chef", "cooking")
    assert single.status_code == 200
    assert single.json()["recordId"] is None and single.json()["codeStatus"] == outcome.status
    assert "input" not in single.json()
    batch = [{"recordId": str(i), **{k: v for k, v in r.items() if k != "recordId"}} for i, r in enumerate(GOOD)]
    listed = api.call("POST", f"/v1/topics/osca/models/{model.info.model_id}/code", json=batch)
    assert listed.status_code == 200 and [r["recordId"] for r in listed.json()] == ["0", "1", "2"]
    success = next(r for r in listed.json() if r["codeStatus"] == "successful")
    assert set(success["result"]) == {"codeCategory", "codeLabel", "codeConfidence"}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ([GOOD[0]] * 301, "Invalid request body"),
        ([], "Invalid request body"),
        ("not json", "Invalid request body"),
        ({"occp_text": "chef"}, "Invalid request body"),
        ([GOOD[0], 5], "Invalid request body"),
        (
            [GOOD[0], {"occp_text": "x" * 301, "tasks_text": ""}],
            "Input text exceeds the maximum length of 300 characters (record 1)",
        ),
        ({"occp_text": "", "tasks_text": ""}, "At least one of occp_text and tasks_text must be non-empty (record 0)"),
        ({"occp_text": 1, "tasks_text": ""}, "Field occp_text must be a string (record 0)"),
    ],
)
def test_real_time_coding_rejects_bad_bodies(api: Api, body: Any, message: str) -> None:
    data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
    response = api.call("POST", "/v1/topics/anzsco/code", data=data, headers={"Content-Type": "application/json"})
    assert (response.status_code, response.json()) == (400, {"message": message})


# --- faults --------------------------------------------------------------------------------------


def test_5xx_fault(api: Api) -> None:
    admin(api.server, "faults", {"fault_5xx_rate": 1.0})
    response = api.call("GET", "/v1/topics")
    assert (response.status_code, response.json()) == (500, {"message": "Error performing request"})
    assert admin(api.server, "stats")["faults"] == {"5xx": 1}
    admin(api.server, "faults", {"fault_5xx_rate": 0})
    assert api.call("GET", "/v1/topics").status_code == 200


def test_429_fault_burst(make_emulator: MakeEmulator) -> None:
    server = make_emulator(fault_429_rate=1.0, fault_429_burst=2, fault_retry_after=3, fault_only="^GET /v1/topics$")
    api = Api(server)
    response = api.call("GET", "/v1/topics")
    assert (response.status_code, response.json()) == (429, {"message": "Too Many Requests"})
    assert response.headers["Retry-After"] == "3"
    assert api.call("GET", "/v1/topics/osca/models").status_code == 200
    assert admin(server, "faults")["fault_429_burst"] == 2


def test_lost_response_still_creates_the_operation(make_emulator: MakeEmulator) -> None:
    server = make_emulator(fault_lost_response_rate=1.0, fault_only=r"^POST .*/batch-code$")
    api = Api(server)
    with pytest.raises(requests.exceptions.RequestException):
        api.call("POST", "/v1/topics/anzsco/batch-code")
    stats = admin(server, "stats")
    assert stats["operations_created"] == {"demo-client": 1}
    assert stats["faults"] == {"lost_response": 1}
    assert stats["operations_by_state"] == {"awaiting_input": 1}


def test_lost_response_to_an_upload_still_stores_it(api: Api) -> None:
    created = api.create()
    admin(api.server, "faults", {"fault_lost_response_rate": 1.0, "fault_only": "^PUT "})
    with pytest.raises(requests.exceptions.RequestException):
        upload(created, jsonl(*GOOD))
    admin(api.server, "faults", {"fault_lost_response_rate": 0.0})
    assert api.wait(created["operationId"])["operationStatus"] == "complete"


def test_truncated_download(api: Api) -> None:
    _, status = api.run(jsonl(*GOOD))
    admin(api.server, "faults", {"fault_truncate_rate": 1.0})
    url = urlsplit(status["responseDownloadUrl"])
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=5)
    conn.request("GET", f"{url.path}?{url.query}")
    response = conn.getresponse()
    length = int(response.headers["Content-Length"])
    with pytest.raises(http.client.IncompleteRead) as caught:
        response.read()
    assert len(caught.value.partial) == length // 2
    conn.close()
    with pytest.raises(requests.exceptions.RequestException):
        requests.get(status["responseDownloadUrl"], timeout=5)
    assert admin(api.server, "stats")["faults"] == {"truncate": 2}


def test_slow_fault_outlasts_a_client_timeout(api: Api) -> None:
    created = api.create()
    admin(api.server, "faults", {"fault_slow_rate": 1.0, "fault_slow_seconds": 1.0, "fault_only": "/operations/"})
    with pytest.raises(requests.exceptions.Timeout):
        api.call("GET", f"/v1/topics/anzsco/batch-code/operations/{created['operationId']}", timeout=0.3)
    assert api.call("GET", "/v1/topics").status_code == 200
    assert admin(api.server, "stats")["faults"] == {"slow": 1}


def test_storage_faults_are_s3_xml(api: Api) -> None:
    created = api.create()
    admin(api.server, "faults", {"fault_5xx_rate": 1.0, "fault_only": "^PUT /_storage/"})
    response = upload(created, jsonl(*GOOD))
    assert response.status_code == 500 and s3_error(response) == "InternalError"
    assert api.call("GET", "/v1/topics").status_code == 200


def test_admin_routes_are_never_faulted_or_limited(make_emulator: MakeEmulator) -> None:
    server = make_emulator(fault_5xx_rate=1.0, rate_limit=0.01)
    for _ in range(3):
        assert admin(server, "stats")["faults"] == {}
        assert admin(server, "faults")["fault_5xx_rate"] == 1.0
    assert requests.get(f"{server.base_url}/openapi.json", timeout=5).status_code == 200


def test_bad_fault_settings_are_a_400(abs_emulator: EmulatorServer) -> None:
    response = requests.post(f"{abs_emulator.base_url}/_emulator/faults", json={"fault_5xx_rate": 3}, timeout=5)
    assert response.status_code == 400 and "between 0 and 1" in response.json()["message"]
    response = requests.post(f"{abs_emulator.base_url}/_emulator/clock", json={"advance": -1}, timeout=5)
    assert response.status_code == 400


# --- stats and schema ----------------------------------------------------------------------------


def test_stats_count_what_happened(make_emulator: MakeEmulator) -> None:
    server = make_emulator(clients={"alice": "a", "bob": "b"})
    alice, bob = Api(server, "alice", "a"), Api(server, "bob", "b")
    token(server, "alice", "a")
    created = alice.create()
    bob.create("osca")
    assert upload(created, jsonl(*GOOD), {}).status_code == 400
    _, status = alice.run(jsonl(*GOOD))
    requests.get(status["responseDownloadUrl"], timeout=5)
    requests.get(status["metadataDownloadUrl"], timeout=5)
    stats = admin(server, "stats")
    assert stats["operations_created"] == {"alice": 2, "bob": 1}
    assert stats["tokens_issued"] == {"alice": 2, "bob": 1}
    assert stats["uploads"] == {"accepted": 1, "refused": 1}
    assert stats["downloads"] == {"output.jsonl": 1, "metadata.json": 1}
    assert stats["requests"]["POST /v1/topics/{topic}/batch-code"] == 3
    assert stats["requests"]["POST /oauth2/token"] == 3
    assert stats["operations_by_state"] == {"awaiting_input": 2, "complete": 1}


def test_openapi_describes_the_service(abs_emulator: EmulatorServer) -> None:
    schema = requests.get(f"{abs_emulator.base_url}/openapi.json", timeout=5).json()
    paths = set(schema["paths"])
    assert "/v1/topics/{topic}/batch-code/operations/{operation_id}" in paths
    assert "/v1/topics/{topic}/models/{model}/code" in paths
    assert not any(p.startswith(("/_emulator", "/_storage")) for p in paths)
    status = schema["paths"]["/v1/topics/{topic}/batch-code"]["post"]["responses"]
    assert {"200", "400", "403", "404", "409", "429", "500"} <= set(status)


def test_unknown_routes_and_methods_are_json_4xx(api: Api) -> None:
    assert api.call("GET", "/v1/nothing").status_code == 404
    wrong = api.call("DELETE", "/v1/topics")
    assert wrong.status_code == 405 and "message" in wrong.json()


def test_internal_errors_are_the_gateway_500(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: Any) -> Any:
        raise RuntimeError("boom")

    monkeypatch.setattr(api.server.service, "model", broken)
    response = api.call("GET", "/v1/topics/anzsco/models")
    assert (response.status_code, response.json()) == (500, {"message": "Error performing request"})
