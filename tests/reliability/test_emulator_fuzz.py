"""Property-based fuzzing of the ABS emulator: no 5xx, and answers that keep the documented schema.

Two layers, both deterministic (derandomized Hypothesis, no example database) and bounded:

* **The OpenAPI document** (``GET /openapi.json``) drives schemathesis: every documented operation
  gets generated requests (valid and, where there is a body, invalid ones) with a valid token,
  with no ``Authorization`` at all, and with generated ones. Path parameters mix generated
  values with real topics, models, the caller's own operations and another tenant's, so
  examples reach the business logic instead of stopping at "no such topic".
* **What the document leaves out** - presigned storage URLs and their ``Range`` header, the
  ``Basic`` credentials of the token endpoint, deeply nested JSON - gets Hypothesis
  strategies of its own.

No faults are enabled, so any 5xx is a bug. The six bugs this module found in the emulator
(non-ASCII Basic credentials and signatures, deeply nested JSON, superscript digits in a Range
header, an oversized token request) are fixed; each keeps a ``test_regression_*`` test holding
the request that reproduced it.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import pytest
import requests
from hypothesis import HealthCheck, Phase, assume, given, settings
from hypothesis import strategies as st

from airflow_batchcode.emulator.server import EmulatorServer
from airflow_batchcode.exceptions import NotFoundError
from airflow_batchcode.services.abs import AbsClient, AbsSettings, AsyncAbsClient
from airflow_batchcode.services.http.retry import RetryPolicy
from airflow_batchcode.services.http.settings import HttpSettings
from tests.support import admin, emulator

try:
    import schemathesis
except ImportError:  # pragma: no cover - depends on the environment
    if os.environ.get("CI"):
        raise
    pytest.skip("schemathesis is not installed (pip install -e '.[dev]')", allow_module_level=True)

from schemathesis import GenerationMode

from tests.reliability.openapi_fuzz import ExtraCheck, Run, fuzz_operation

MAX_EXAMPLES = 50
"""Generated requests per operation, auth mode and generation mode."""
CLIENTS = {"demo-client": "demo-secret", "other-tenant": "other-secret"}
SSE = {"x-amz-server-side-encryption": "aws:kms"}
KMS = "x-amz-server-side-encryption-aws-kms-key-id"
RECORD = {"recordId": "r1", "occp_text": "chef", "tasks_text": "cooking meals"}
PROPERTY = settings(
    max_examples=MAX_EXAMPLES,
    derandomize=True,
    database=None,
    deadline=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
)

# --- the emulator under fuzz -----------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """A running emulator and the real values that make generated requests reach its logic."""

    server: EmulatorServer
    schema: Any
    token: str
    other_token: str
    basic: str
    path_variants: list[dict[str, str]]
    own_operation: str
    other_operation: str
    download_url: str
    file_body: bytes

    @property
    def base_url(self) -> str:
        return self.server.base_url


def get_token(base_url: str, client: str) -> str:
    response = requests.post(
        f"{base_url}/oauth2/token", auth=(client, CLIENTS[client]), data={"grant_type": "client_credentials"}, timeout=5
    )
    response.raise_for_status()
    token: str = response.json()["access_token"]
    return token


def create(base_url: str, token: str, topic: str) -> dict[str, str]:
    response = requests.post(f"{base_url}/v1/topics/{topic}/batch-code", headers={"authorization": token}, timeout=5)
    response.raise_for_status()
    created: dict[str, str] = response.json()
    return created


def upload(created: dict[str, str], body: bytes) -> None:
    headers = {**SSE, KMS: created["bucketKmsKeyArn"]}
    requests.put(created["requestUploadUrl"], data=body, headers=headers, timeout=5).raise_for_status()


def wait_status(base_url: str, token: str, topic: str, operation: str) -> dict[str, Any]:
    url = f"{base_url}/v1/topics/{topic}/batch-code/operations/{operation}"
    for _ in range(200):
        status: dict[str, Any] = requests.get(url, headers={"authorization": token}, timeout=5).json()
        if status["operationStatus"] in ("complete", "failed", "timed_out"):
            return status
        time.sleep(0.05)
    raise AssertionError(f"operation {operation} did not finish")


@pytest.fixture(scope="module")
def target() -> Iterator[Target]:
    """One emulator for the module (two tenants, no faults) with an operation of each, one complete."""
    with emulator(clients=dict(CLIENTS)) as server:
        base = server.base_url
        token, other_token = get_token(base, "demo-client"), get_token(base, "other-tenant")
        models = {
            topic: [
                m["modelId"]
                for m in requests.get(
                    f"{base}/v1/topics/{topic}/models", headers={"authorization": token}, timeout=5
                ).json()
            ]
            for topic in ("anzsco", "osca")
        }
        own = create(base, token, "anzsco")
        other = create(base, other_token, "anzsco")
        done = create(base, token, "osca")
        upload(done, b"\n".join(json.dumps({**RECORD, "recordId": str(i)}).encode() for i in range(40)) + b"\n")
        status = wait_status(base, token, "osca", done["operationId"])
        assert status["operationStatus"] == "complete", status
        file_body = requests.get(status["responseDownloadUrl"], timeout=5).content
        variants = [
            {"topic": topic, "model": model, "operation_id": operation}
            for topic in models
            for model in [*models[topic], *models["osca" if topic == "anzsco" else "anzsco"]]
            for operation in (own["operationId"], other["operationId"], done["operationId"])
        ]
        yield Target(
            server=server,
            schema=schemathesis.openapi.from_url(f"{base}/openapi.json"),
            token=token,
            other_token=other_token,
            basic="Basic " + base64.b64encode(b"demo-client:demo-secret").decode(),
            path_variants=variants,
            own_operation=own["operationId"],
            other_operation=other["operationId"],
            download_url=status["responseDownloadUrl"],
            file_body=file_body,
        )


# --- the OpenAPI document, through schemathesis ----------------------------------------------------

MODES = ["valid-token", "no-auth", "generated-auth"]
MIN_REQUESTS = {"valid-token": 500, "no-auth": 450, "generated-auth": 450}
"""Requests each mode must send (last seen: 551, 450 and 450, about 1,450 in all)."""
SINGLE_REQUEST = {("valid-token", "GET /v1/topics")}
"""(mode, operation) pairs with nothing to generate: one distinct request is all there is."""


def no_unauthenticated_success(mode: str) -> ExtraCheck:
    """A check of our own: without a valid token no API call may succeed."""

    def check(case: schemathesis.Case, response: schemathesis.Response) -> str | None:
        if mode != "valid-token" and case.path.startswith("/v1/") and response.status_code < 400:
            return f"answered {response.status_code} without a valid token"
        return None

    return check


@pytest.mark.parametrize("mode", MODES)
def test_every_documented_operation_survives_fuzzing(target: Target, mode: str) -> None:
    """Generated requests to every operation of /openapi.json: no 5xx, no answer off the documented schema."""
    run = Run()
    operations = [result.ok() for result in target.schema.get_all_operations()]
    assert len(operations) >= 9, [op.label for op in operations]
    with requests.Session() as session:
        for operation in operations:
            token_call = operation.path == "/oauth2/token"
            headers = {"authorization": target.basic if token_call else target.token} if mode == "valid-token" else None
            modes = [GenerationMode.POSITIVE]
            if mode == "valid-token" and operation.body:
                modes.append(GenerationMode.NEGATIVE)
            for generation_mode in modes:
                fuzz_operation(
                    run,
                    operation,
                    base_url=target.base_url,
                    session=session,
                    mode=f"{mode}/{generation_mode.value}",
                    generation_mode=generation_mode,
                    max_examples=MAX_EXAMPLES,
                    headers=headers,
                    drop_headers=("authorization",) if mode == "no-auth" else (),
                    path_variants=target.path_variants,
                    body_variants=[RECORD, [RECORD, {**RECORD, "recordId": None}]],
                    extra_check=no_unauthenticated_success(mode),
                )
    print(f"{mode}: {run.examples} requests;", {label: dict(seen) for label, seen in run.statuses.items()})
    assert not run.findings, f"{len(run.findings)} problems in {run.examples} requests:\n{run.report()}"
    assert set(run.statuses) == {op.label for op in operations}
    sent = {label: sum(seen.values()) for label, seen in run.statuses.items()}
    starved = {
        label: count
        for label, count in sent.items()
        if count < (1 if (mode, label) in SINGLE_REQUEST else MAX_EXAMPLES)
    }
    assert starved == {}, f"operations that got too few requests: {starved}"
    assert run.examples == sum(sent.values()) >= MIN_REQUESTS[mode], f"{run.examples} requests in {mode} mode"
    if mode == "valid-token":
        reached = {label for label, seen in run.statuses.items() if any(200 <= s < 300 for s in seen)}
        assert reached == set(run.statuses), f"never got past validation: {set(run.statuses) - reached}"
    else:
        assert all(set(seen) <= {400, 401, 403, 404} for seen in run.statuses.values()), run.statuses


def test_the_harness_reports_a_5xx() -> None:
    """The fuzz loop is not vacuous: with the emulator's 5xx fault switched on it reports the 500s."""
    with emulator() as server:
        admin(server, "faults", {"5xx_rate": 1.0})
        schema = schemathesis.openapi.from_url(f"{server.base_url}/openapi.json")
        run = Run()
        with requests.Session() as session:
            fuzz_operation(
                run,
                schema["/v1/topics"]["GET"],
                base_url=server.base_url,
                session=session,
                mode="fault",
                generation_mode=GenerationMode.POSITIVE,
                max_examples=3,
            )
    assert run.findings
    assert {f.status for f in run.findings.values()} == {500}
    assert "curl" in run.report() and "/v1/topics" in run.report()


def test_another_tenants_operation_is_a_clean_404(target: Target) -> None:
    """Another client's operation id is "does not exist" - on both status routes and through both clients."""
    for token, operation in ((target.token, target.other_operation), (target.other_token, target.own_operation)):
        for path in (
            f"/v1/topics/anzsco/batch-code/operations/{operation}",
            f"/v1/topics/anzsco/models/d47a9e15-3c6b-4f28-8e0d-5a1b7c9f2e64/batch-code/operations/{operation}",
        ):
            response = requests.get(target.base_url + path, headers={"authorization": token}, timeout=5)
            assert response.status_code == 404, (path, response.text)
            assert response.json() == {"message": "The specified operation does not exist"}
    settings_ = AbsSettings(
        target.base_url, "other-tenant", "other-secret", rate_limit=0, http=HttpSettings(retry=RetryPolicy(2, 0.01))
    )
    with (
        AbsClient(settings_) as client,
        pytest.raises(NotFoundError, match=f"HTTP 404; operation {target.own_operation}"),
    ):
        client.get_operation(target.own_operation, "anzsco")

    async def poll() -> None:
        client = AsyncAbsClient(settings_)
        try:
            await client.get_operation(target.own_operation, "anzsco")
        finally:
            await client.aclose()

    with pytest.raises(NotFoundError, match="not found"):
        asyncio.run(poll())


# --- beyond the document: Hypothesis strategies of our own -----------------------------------------

LATIN1_TEXT = st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"), max_size=60)


@PROPERTY
@given(
    credential=st.one_of(
        LATIN1_TEXT,
        st.binary(max_size=48).map(lambda b: base64.b64encode(b).decode()),
        st.tuples(LATIN1_TEXT, LATIN1_TEXT).map(lambda p: base64.b64encode(f"{p[0]}:{p[1]}".encode()).decode()),
    ),
    scheme=st.sampled_from(["Basic ", "basic ", "Bearer ", ""]),
)
def test_the_token_endpoint_answers_any_credentials_with_an_oauth_error(
    target: Target, credential: str, scheme: str
) -> None:
    value = (scheme + credential).lstrip()  # requests refuses a header value that starts with a space
    response = requests.post(
        f"{target.base_url}/oauth2/token",
        headers={"Authorization": value.encode("latin-1"), "Content-Type": "application/x-www-form-urlencoded"},
        data="grant_type=client_credentials",
        timeout=5,
    )
    assert response.status_code in (400, 401), (value, response.status_code, response.text)
    assert isinstance(response.json().get("error"), str)


JSON_LEAVES = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | LATIN1_TEXT
JSON_VALUES = st.recursive(
    JSON_LEAVES,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(LATIN1_TEXT, inner, max_size=4),
    max_leaves=20,
)
RECORDISH = st.fixed_dictionaries(
    {"occp_text": JSON_VALUES, "tasks_text": JSON_VALUES},
    optional={"recordId": JSON_VALUES, "extra": JSON_VALUES},
)


@PROPERTY
@given(
    body=st.one_of(
        JSON_VALUES.map(json.dumps),
        RECORDISH.map(json.dumps),
        st.lists(RECORDISH, min_size=0, max_size=5).map(json.dumps),
        st.integers(1, 3000).map(lambda depth: "[" * depth + "]" * depth),
        st.binary(max_size=64).map(lambda b: b.decode("latin-1")),
    )
)
def test_real_time_coding_answers_any_body_with_200_or_400(target: Target, body: str) -> None:
    response = requests.post(
        f"{target.base_url}/v1/topics/anzsco/code",
        headers={"authorization": target.token, "Content-Type": "application/json"},
        data=body.encode("utf-8", "surrogatepass"),
        timeout=5,
    )
    assert response.status_code in (200, 400), (body[:200], response.status_code, response.text)
    answer = response.json()
    if response.status_code == 400:
        assert isinstance(answer.get("message"), str)
    else:
        coded = answer if isinstance(answer, list) else [answer]
        assert all(item["codeStatus"] in ("successful", "unsuccessful") for item in coded)


RANGE_NUMBER = st.one_of(
    st.just(""),
    st.integers(0, 10**25).map(str),
    st.integers(-5, -1).map(str),
    st.text(st.sampled_from("0123456789 \u00b2\u00b3\u00b9+-,x"), max_size=6),
)
RANGE_HEADER = st.one_of(
    st.builds(lambda a, b: f"bytes={a}-{b}", RANGE_NUMBER, RANGE_NUMBER),
    st.builds(lambda a, b, c: f"bytes={a}-{b},{c}-", RANGE_NUMBER, RANGE_NUMBER, RANGE_NUMBER),
    LATIN1_TEXT,
)


@PROPERTY
@given(header=RANGE_HEADER)
def test_result_downloads_answer_any_range_with_200_206_or_416(target: Target, header: str) -> None:
    response = requests.get(target.download_url, headers={"Range": header.encode("latin-1")}, timeout=5)
    assert response.status_code in (200, 206, 416), (header, response.status_code, response.text[:200])
    if response.status_code == 200:
        assert response.content == target.file_body
    elif response.status_code == 206:
        first, last = response.headers["Content-Range"].removeprefix("bytes ").split("/")[0].split("-")
        assert response.content == target.file_body[int(first) : int(last) + 1]


@PROPERTY
@given(
    changes=st.dictionaries(
        st.sampled_from(
            [
                "X-Amz-Signature",
                "X-Amz-Expires",
                "X-Amz-Date",
                "X-Amz-Algorithm",
                "X-Amz-SignedHeaders",
                "Signature",
                "Expires",
                "AWSAccessKeyId",
                "extra",
            ]
        ),
        st.one_of(st.none(), st.text(max_size=30), st.integers(-(10**12), 10**12).map(str)),
        min_size=1,
        max_size=4,
    ),
    method=st.sampled_from(["GET", "HEAD", "PUT"]),
)
def test_tampered_presigned_urls_are_refused_without_a_5xx(
    target: Target, changes: dict[str, str | None], method: str
) -> None:
    parts = urlsplit(target.download_url)
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    assume(any(query.get(name) != value for name, value in changes.items()))
    for name, value in changes.items():
        if value is None:
            query.pop(name, None)
        else:
            query[name] = value
    path = parts.path.replace("abs-coder-output", "abs-coder-input").replace("output.jsonl", "input.jsonl")
    url = urlunsplit((parts.scheme, parts.netloc, path if method == "PUT" else parts.path, urlencode(query), ""))
    response = requests.request(method, url, data=b"{}\n" if method == "PUT" else None, headers=SSE, timeout=5)
    assert response.status_code in (400, 403, 404), (method, query, response.status_code, response.text[:200])


# --- regressions: the requests that once made the emulator answer 5xx -----------------------------


def test_regression_non_ascii_basic_credentials(target: Target) -> None:
    response = requests.post(
        f"{target.base_url}/oauth2/token",
        headers={"Authorization": b"Basic \xe9\xe9", "Content-Type": "application/x-www-form-urlencoded"},
        data="grant_type=client_credentials",
        timeout=5,
    )
    assert response.status_code == 401 and response.json() == {"error": "invalid_client"}


def test_regression_deeply_nested_real_time_body(target: Target) -> None:
    response = requests.post(
        f"{target.base_url}/v1/topics/anzsco/code",
        headers={"authorization": target.token, "Content-Type": "application/json"},
        data="[" * 1000 + "]" * 1000,
        timeout=5,
    )
    assert response.status_code == 400 and response.json() == {"message": "Invalid request body"}


def test_regression_deeply_nested_input_line(target: Target) -> None:
    created = create(target.base_url, target.token, "anzsco")
    upload(created, json.dumps(RECORD).encode() + b"\n" + b"[" * 1000 + b"]" * 1000 + b"\n")
    status = wait_status(target.base_url, target.token, "anzsco", created["operationId"])
    assert status["operationStatus"] == "complete", status


@pytest.mark.parametrize("header", ["bytes=\u00b2-", "bytes=-\u00b9", "bytes=0-\u00b3"])
def test_regression_range_with_superscript_digits(target: Target, header: str) -> None:
    response = requests.get(target.download_url, headers={"Range": header.encode("latin-1")}, timeout=5)
    assert response.status_code == 200 and response.content == target.file_body


@pytest.mark.parametrize("method", ["GET", "PUT"])
def test_regression_non_ascii_signature(target: Target, method: str) -> None:
    parts = urlsplit(target.download_url)
    query = {**dict(parse_qsl(parts.query)), "X-Amz-Signature": "\u00e9"}
    url = urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(query), ""))
    response = requests.request(method, url, data=b"{}\n" if method == "PUT" else None, headers=SSE, timeout=5)
    assert response.status_code == 403 and b"SignatureDoesNotMatch" in response.content


def test_regression_oversized_token_request_body(target: Target) -> None:
    response = requests.post(
        f"{target.base_url}/oauth2/token",
        auth=("demo-client", "demo-secret"),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        data="grant_type=client_credentials&pad=" + "x" * (70 << 10),
        timeout=5,
    )
    assert response.status_code == 400 and response.json()["error"] == "invalid_request"
