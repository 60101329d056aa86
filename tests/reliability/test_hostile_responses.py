"""The real ABS clients against a hostile server: every off-contract answer is a clear, typed, secret-free error.

A small ASGI server on loopback (:mod:`tests.reliability.hostile_server`) answers the token,
topics, create, status, upload and download calls with canned bad answers: bodies that are
not JSON or are huge, wrong types, unknown states, insecure or unparseable presigned URLs,
redirects to other origins, short downloads, and answers that never come. Name resolution
is replaced for the whole module: ``*.invalid`` resolves to loopback (so an allowed plain-http
URL to a "remote" host really is fetched, from the hostile server) and every other
non-loopback name fails, so nothing here can leave the machine, and the test can see
whether a refused URL was ever looked up.
"""

from __future__ import annotations

import asyncio
import base64
import io
import logging
import socket
import tracemalloc
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from airflow_batchcode.exceptions import (
    BatchCodeError,
    IncompleteDownloadError,
    InvalidRequestError,
    TransportError,
    UnexpectedResponseError,
)
from airflow_batchcode.services.abs import AbsClient, AbsSettings, AsyncAbsClient
from airflow_batchcode.services.base import OperationState, UploadTarget
from airflow_batchcode.services.http.bodies import declared_length, expected_length
from airflow_batchcode.services.http.retry import RetryPolicy
from airflow_batchcode.services.http.settings import HttpSettings
from airflow_batchcode.services.tokens import token_cache_for
from tests.reliability.hostile_server import (
    Handler,
    HostileServer,
    Sent,
    gzip_bomb,
    huge_json,
    json_body,
    raw,
    redirect,
    short_body,
    silent,
    stall,
    streamed,
)

CLIENT_ID = "hostile-client"
SECRET = "client-secret-7f3a9c21"
TOKEN = "token-9b8c7d6e5f4a3b2c1d0e"
SIGNATURE = "X-Amz-Signature=deadbeefcafe0123"
BASIC = base64.b64encode(f"{CLIENT_ID}:{SECRET}".encode()).decode()
NEEDLES = (SECRET, TOKEN, BASIC, "deadbeefcafe0123", "X-Amz-Signature")
"""Nothing an error message or a log line may contain."""

TOKEN_PATH = "/oauth2/token"
TOPICS_PATH = "/v1/topics"
MODELS_PATH = "/v1/topics/anzsco/models"
CREATE_PATH = "/v1/topics/anzsco/batch-code"
STATUS_PATH = "/v1/topics/anzsco/batch-code/operations/op-1"
MB = 1 << 20
MANIFEST = b'{"recordId": "1", "occp_text": "chef", "tasks_text": "cooking"}\n'


# --- fixtures and helpers --------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def resolver(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Names looked up during the test; ``*.invalid`` resolves to loopback, other remote names fail."""
    looked_up: list[str] = []
    real = socket.getaddrinfo

    def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        name = host.decode() if isinstance(host, bytes) else str(host)
        looked_up.append(name)
        if name.endswith(".invalid"):
            return real("127.0.0.1", port, *args, **kwargs)
        if name not in ("127.0.0.1", "localhost", "::1"):
            raise socket.gaierror(socket.EAI_NONAME, "remote names are not resolved in these tests")
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return looked_up


@pytest.fixture(autouse=True)
def clean_logs(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """No secret reaches the log either (retry warnings quote the errors they retry)."""
    caplog.set_level(logging.DEBUG, logger="airflow_batchcode")
    yield
    assert_clean(caplog.text)


@pytest.fixture(scope="module")
def hostile() -> Iterator[HostileServer]:
    with HostileServer() as server:
        yield server


@pytest.fixture(scope="module")
def other_origin() -> Iterator[HostileServer]:
    with HostileServer() as server:
        yield server


def reset(server: HostileServer) -> HostileServer:
    """Forget the routes, the requests seen and the token cached for this server."""
    server.routes.clear()
    server.seen.clear()
    token_cache_for(f"{server.base_url}{TOKEN_PATH}", CLIENT_ID, SECRET).invalidate()
    return server


@pytest.fixture
def server(hostile: HostileServer) -> HostileServer:
    """The hostile server, reset, with a working token endpoint."""
    reset(hostile).on("POST", TOKEN_PATH, json_body({"access_token": TOKEN, "expires_in": 3600}))
    return hostile


@pytest.fixture
def elsewhere(other_origin: HostileServer) -> HostileServer:
    """A second origin that redirects point to; it must never hear from the client."""
    return reset(other_origin)


def settings(server: HostileServer, *, allow_insecure_http: bool = False, **http: Any) -> AbsSettings:
    retry = RetryPolicy(max_attempts=http.pop("max_attempts", 2), backoff_base=0.01)
    return AbsSettings(
        server.base_url,
        CLIENT_ID,
        SECRET,
        rate_limit=0,
        http=HttpSettings(retry=retry, allow_insecure_http=allow_insecure_http, **http),
    )


def sync_client(server: HostileServer, **kw: Any) -> AbsClient:
    return AbsClient(settings(server, **kw))


def async_status(server: HostileServer, **kw: Any) -> Any:
    """``get_operation('op-1')`` through the async client (as the trigger calls it)."""

    async def call() -> Any:
        client = AsyncAbsClient(settings(server, **kw))
        try:
            return await client.get_operation("op-1", "anzsco")
        finally:
            await client.aclose()

    return asyncio.run(call())


def assert_clean(text: str) -> None:
    for needle in NEEDLES:
        assert needle not in text, f"secret {needle[:12]}... leaked: {text[:300]}"


def refused(
    call: Callable[[], object], error: type[BatchCodeError], *fragments: str, not_subclass: type | None = None
) -> BatchCodeError:
    """Run ``call``; it must raise exactly ``error`` (or a subclass), naming every fragment, leaking nothing."""
    with pytest.raises(error) as caught:
        call()
    message = str(caught.value)
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    if not_subclass is not None:
        assert not isinstance(caught.value, not_subclass), message
    assert_clean(message)
    assert len(message) < 600, "messages stay short whatever the server sends"
    return caught.value


def target(url: str) -> UploadTarget:
    return UploadTarget("op-1", url, "arn:aws:kms:ap-southeast-2:1:key/k")


def complete(response_url: str) -> Handler:
    return json_body({"operationStatus": "complete", "responseDownloadUrl": response_url})


# --- bodies that are not JSON ----------------------------------------------------------------------

NOT_JSON = [
    pytest.param(b"<html><body>Please log in</body></html>", "text/html", id="html"),
    pytest.param(b"OK", "text/plain", id="text"),
    pytest.param(b'{"operationStatus": "in_pro', "application/json", id="cut-json"),
    pytest.param(b'{"access_token": NaN}', "application/json", id="nan"),
    pytest.param(b"\xff\xfe\x00garbage", "application/octet-stream", id="binary"),
]
CALLS: dict[str, tuple[str, str, Callable[[AbsClient], object]]] = {
    "token": ("POST", TOKEN_PATH, lambda c: c.token()),
    "topics": ("GET", TOPICS_PATH, lambda c: c.list_topics()),
    "create": ("POST", CREATE_PATH, lambda c: c.create_operation("anzsco")),
    "status": ("GET", STATUS_PATH, lambda c: c.get_operation("op-1", "anzsco")),
}


@pytest.mark.parametrize("endpoint", list(CALLS))
@pytest.mark.parametrize(("body", "content_type"), NOT_JSON)
def test_a_200_that_is_not_json_is_refused_by_every_call(
    server: HostileServer, endpoint: str, body: bytes, content_type: str
) -> None:
    method, path, call = CALLS[endpoint]
    server.on(method, path, raw(body, content_type=content_type))
    with sync_client(server) as client:
        refused(lambda: call(client), UnexpectedResponseError, "not JSON", content_type)


@pytest.mark.parametrize(("body", "content_type"), NOT_JSON)
def test_the_async_status_call_refuses_a_200_that_is_not_json(
    server: HostileServer, body: bytes, content_type: str
) -> None:
    server.on("GET", STATUS_PATH, raw(body, content_type=content_type))
    refused(lambda: async_status(server), UnexpectedResponseError, "operation status", "not JSON", content_type)


# --- huge bodies -----------------------------------------------------------------------------------


@pytest.mark.parametrize("use_async", [False, True], ids=["sync", "async"])
def test_a_huge_streamed_status_body_is_cut_off_at_the_size_cap(server: HostileServer, use_async: bool) -> None:
    total = 64 * MB  # the server counts what it pushed into socket buffers too, so leave room
    sent = Sent()
    server.on("GET", STATUS_PATH, streamed(huge_json(total), sent=sent))
    if use_async:
        refused(lambda: async_status(server), UnexpectedResponseError, "larger than 4194304 bytes")
    else:
        with sync_client(server) as client:
            refused(lambda: client.get_operation("op-1", "anzsco"), UnexpectedResponseError, "larger than")
    assert sent.done.wait(10)
    assert sent.disconnected and sent.body_bytes < total // 3, f"client read on: {sent.body_bytes} bytes sent"
    assert len(server.requests_to(STATUS_PATH)) == 1, "an oversized answer is not worth retrying"


@pytest.mark.parametrize("use_async", [False, True], ids=["sync", "async"])
def test_a_status_body_announced_as_huge_is_refused_before_reading(server: HostileServer, use_async: bool) -> None:
    total = 20 * MB
    sent = Sent()
    length = str(len(b"".join(huge_json(total)())))
    server.on("GET", STATUS_PATH, streamed(huge_json(total), sent=sent, headers={"content-length": length}))
    if use_async:
        refused(lambda: async_status(server), UnexpectedResponseError, f"body of {length} bytes is larger")
    else:
        with sync_client(server) as client:
            refused(lambda: client.get_operation("op-1", "anzsco"), UnexpectedResponseError, f"body of {length}")
    assert sent.done.wait(10)
    assert sent.body_bytes < total // 2


@pytest.mark.parametrize("use_async", [False, True], ids=["sync", "async"])
def test_a_gzip_bomb_is_refused_with_memory_kept_flat(server: HostileServer, use_async: bool) -> None:
    bomb = gzip_bomb(64 * MB)  # about 64 KB on the wire
    server.on("GET", STATUS_PATH, raw(bomb, headers={"content-encoding": "gzip"}))
    client = sync_client(server)
    client.token()  # warm up outside the measurement
    tracemalloc.start()
    try:
        if use_async:
            refused(lambda: async_status(server), UnexpectedResponseError, "larger than")
        else:
            refused(lambda: client.get_operation("op-1", "anzsco"), UnexpectedResponseError, "larger than")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
        client.close()
    assert peak < 40 * MB, f"decompressing the answer took {peak / MB:.0f} MB"


# --- wrong types, unknown states -------------------------------------------------------------------

WRONG = [
    pytest.param("status", {"operationStatus": 3}, "operationStatus is a number, not a string", id="status-number"),
    pytest.param("status", {"operationStatus": None}, "operationStatus is null, not a string", id="status-null"),
    pytest.param("status", {"state": "complete"}, "no operationStatus", id="status-missing"),
    pytest.param("status", [{"operationStatus": "complete"}], "is a list, not a JSON object", id="status-list"),
    pytest.param("status", "complete", "is a string, not a JSON object", id="status-string"),
    pytest.param("status", {"operationStatus": "paused"}, "unknown status 'paused'", id="status-unknown"),
    pytest.param("status", {"operationStatus": "Complete"}, "unknown status 'Complete'", id="status-case"),
    pytest.param("status", {"operationStatus": "complete"}, "complete but no responseDownloadUrl", id="no-url"),
    pytest.param(
        "status",
        {"operationStatus": "complete", "responseDownloadUrl": 42},
        "responseDownloadUrl is a number, not a string",
        id="url-number",
    ),
    pytest.param(
        "status", {"operationStatus": "failed", "error": {"code": 1}}, "error is an object", id="error-object"
    ),
    pytest.param(
        "create",
        {"operationId": None, "requestUploadUrl": "https://s3.invalid/in", "bucketKmsKeyArn": "arn:k"},
        "operationId is missing",
        id="create-id-null",
    ),
    pytest.param(
        "create",
        {"operationId": "op-1", "requestUploadUrl": 123, "bucketKmsKeyArn": "arn:k"},
        "requestUploadUrl is a number, not a string",
        id="create-url-number",
    ),
    pytest.param(
        "create",
        {"operationId": "../../admin", "requestUploadUrl": "https://s3.invalid/in", "bucketKmsKeyArn": "arn:k"},
        "is not a plain identifier",
        id="create-id-path",
    ),
    pytest.param("create", [], "is a list, not a JSON object", id="create-list"),
    pytest.param("token", {"access_token": TOKEN, "expires_in": "soon"}, "expires_in is a string", id="expiry-text"),
    pytest.param("token", {"access_token": TOKEN, "expires_in": -5}, "not a positive number", id="expiry-negative"),
    pytest.param("token", {"access_token": TOKEN, "expires_in": True}, "not a positive number", id="expiry-bool"),
    pytest.param("token", {"access_token": 12345678}, "access_token is a number", id="token-number"),
    pytest.param("token", {"token": TOKEN}, "access_token is missing", id="token-missing"),
    pytest.param("token", [TOKEN], "is a list, not a JSON object", id="token-list"),
    pytest.param("topics", {"topics": []}, "is an object, not a list", id="topics-object"),
    pytest.param("topics", ["anzsco"], "entry 0 is a string, not an object", id="topics-strings"),
]


@pytest.mark.parametrize(("endpoint", "answer", "fragment"), WRONG)
def test_wrong_types_and_unknown_states_are_named_in_the_error(
    server: HostileServer, endpoint: str, answer: Any, fragment: str
) -> None:
    method, path, call = CALLS[endpoint]
    server.on(method, path, json_body(answer))
    with sync_client(server) as client:
        refused(lambda: call(client), UnexpectedResponseError, fragment)


def test_the_async_client_names_a_wrong_status_type_too(server: HostileServer) -> None:
    server.on("GET", STATUS_PATH, json_body({"operationStatus": 3}))
    refused(lambda: async_status(server), UnexpectedResponseError, "op-1", "operationStatus is a number")


def test_an_endless_unknown_status_is_quoted_briefly(server: HostileServer) -> None:
    server.on("GET", STATUS_PATH, json_body({"operationStatus": "x" * 100_000}))
    with sync_client(server) as client:
        refused(lambda: client.get_operation("op-1", "anzsco"), UnexpectedResponseError, "unknown status 'xxx")


def test_an_infinite_token_lifetime_is_refused(server: HostileServer) -> None:
    server.on("POST", TOKEN_PATH, raw(b'{"access_token": "%s", "expires_in": 1e400}' % TOKEN.encode()))
    with sync_client(server) as client:
        refused(client.token, UnexpectedResponseError, "expires_in is a number, not a positive number")


def test_odd_but_harmless_model_fields_do_not_crash_the_listing(server: HostileServer) -> None:
    server.on("GET", MODELS_PATH, json_body([{"modelId": "m1", "inputFormat": 5}, {"modelId": "m2"}]))
    with sync_client(server) as client:
        models = client.list_models("anzsco")
    assert [(m.model_id, m.input_format) for m in models] == [("m1", ()), ("m2", ())]


# --- presigned URLs: scheme and host rules ---------------------------------------------------------


def test_an_http_upload_url_to_a_remote_host_is_refused_before_any_connection(
    server: HostileServer, resolver: list[str]
) -> None:
    url = f"http://uploads.invalid:{server.port}/in?{SIGNATURE}"
    server.on("POST", CREATE_PATH, json_body({"operationId": "op-1", "requestUploadUrl": url, "bucketKmsKeyArn": "k"}))
    with sync_client(server) as client:
        created = client.create_operation("anzsco")
        refused(
            lambda: client.upload_manifest(created, io.BytesIO(MANIFEST)),
            UnexpectedResponseError,
            "Refusing upload URL http://uploads.invalid",
            "only https",
        )
    assert "uploads.invalid" not in resolver, "the refused host was looked up"
    assert not server.requests_to("/in")


def test_an_http_download_url_to_a_remote_host_is_refused_before_any_connection(
    server: HostileServer, resolver: list[str]
) -> None:
    server.on("GET", STATUS_PATH, complete(f"http://results.invalid:{server.port}/out?{SIGNATURE}"))
    server.on("GET", "/out", raw(b"{}\n"))
    with sync_client(server) as client:
        refused(
            lambda: client.download_results("op-1", "anzsco", io.BytesIO()),
            UnexpectedResponseError,
            "Refusing download URL http://results.invalid",
        )
    assert "results.invalid" not in resolver
    assert not server.requests_to("/out")


def test_allow_insecure_http_lets_plain_http_to_a_remote_host_through(
    server: HostileServer, resolver: list[str]
) -> None:
    server.on("PUT", "/in", raw(b"", content_type=None))
    server.on("GET", STATUS_PATH, complete(f"http://results.invalid:{server.port}/out?{SIGNATURE}"))
    server.on("GET", "/out", raw(b'{"recordId": "1"}\n', content_type="application/octet-stream"))
    with sync_client(server, allow_insecure_http=True) as client:
        assert client.upload_manifest(
            target(f"http://uploads.invalid:{server.port}/in?{SIGNATURE}"), io.BytesIO(MANIFEST)
        )
        sink = io.BytesIO()
        assert client.download_results("op-1", "anzsco", sink) == (18, 0)
    assert sink.getvalue() == b'{"recordId": "1"}\n'
    assert {"uploads.invalid", "results.invalid"} <= set(resolver)
    assert server.requests_to("/in")[0].body == MANIFEST


def test_plain_http_to_loopback_needs_no_permission(server: HostileServer) -> None:
    server.on("PUT", "/in", raw(b"", content_type=None))
    with sync_client(server) as client:
        assert client.upload_manifest(target(f"http://localhost:{server.port}/in?{SIGNATURE}"), io.BytesIO(MANIFEST))


BAD_SCHEMES = ["ftp://files.invalid/in.jsonl", "file:///etc/passwd", "gopher://files.invalid/1", "data:,hello"]


@pytest.mark.parametrize("allow_insecure_http", [False, True], ids=["strict", "insecure-allowed"])
@pytest.mark.parametrize("url", BAD_SCHEMES)
def test_non_http_urls_are_refused_even_when_insecure_http_is_allowed(
    server: HostileServer, resolver: list[str], url: str, allow_insecure_http: bool
) -> None:
    server.on("GET", STATUS_PATH, complete(url))
    with sync_client(server, allow_insecure_http=allow_insecure_http) as client:
        refused(
            lambda: client.upload_manifest(target(url), io.BytesIO(MANIFEST)),
            UnexpectedResponseError,
            "Refusing upload URL",
        )
        refused(
            lambda: client.download_results("op-1", "anzsco", io.BytesIO()),
            UnexpectedResponseError,
            "Refusing download URL",
        )
    assert "files.invalid" not in resolver


@pytest.mark.parametrize(
    "url", ["https://s3.invalid:99999/in?" + SIGNATURE, "https://s3.invalid:port/in", "http://[::1/in", "https:///in"]
)
def test_unparseable_urls_are_refused_with_a_typed_error(server: HostileServer, url: str) -> None:
    with sync_client(server) as client:
        refused(lambda: client.upload_manifest(target(url), io.BytesIO(MANIFEST)), UnexpectedResponseError, "Refusing")
        refused(lambda: client.download(url, io.BytesIO()), UnexpectedResponseError, "Refusing")


# --- redirects -------------------------------------------------------------------------------------


def cross_origin(elsewhere: HostileServer, path: str) -> str:
    """A URL on another origin (another host name and port) with a signature in its query."""
    return f"http://localhost:{elsewhere.port}{path}?{SIGNATURE}"


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_a_status_redirect_is_refused_and_the_token_goes_nowhere(
    server: HostileServer, elsewhere: HostileServer, status: int
) -> None:
    server.on("GET", STATUS_PATH, redirect(cross_origin(elsewhere, "/steal"), status=status))
    elsewhere.on("GET", "/steal", json_body({"operationStatus": "in_progress"}))
    with sync_client(server) as client:
        refused(
            lambda: client.get_operation("op-1", "anzsco"),
            UnexpectedResponseError,
            f"redirected (HTTP {status}) to http://localhost:{elsewhere.port}/steal?<redacted>",
        )
    refused(lambda: async_status(server), UnexpectedResponseError, f"redirected (HTTP {status})")
    assert elsewhere.seen == []


def test_a_token_endpoint_redirect_does_not_forward_the_client_secret(
    server: HostileServer, elsewhere: HostileServer
) -> None:
    server.on("POST", TOKEN_PATH, redirect(cross_origin(elsewhere, "/token"), status=307))
    with sync_client(server) as client:
        refused(client.token, UnexpectedResponseError, "token request", "redirected (HTTP 307)")
    assert elsewhere.seen == []


def test_an_upload_redirect_does_not_send_the_manifest_elsewhere(
    server: HostileServer, elsewhere: HostileServer
) -> None:
    server.on("PUT", "/in", redirect(cross_origin(elsewhere, "/in"), status=307))
    with sync_client(server) as client:
        refused(
            lambda: client.upload_manifest(target(f"{server.base_url}/in?{SIGNATURE}"), io.BytesIO(MANIFEST)),
            UnexpectedResponseError,
            "redirected (HTTP 307)",
        )
    assert elsewhere.seen == []


def test_a_download_redirect_to_plain_http_elsewhere_is_not_followed(
    server: HostileServer, elsewhere: HostileServer, resolver: list[str]
) -> None:
    server.on("GET", "/out", redirect(f"http://evil.invalid:{elsewhere.port}/out?{SIGNATURE}"))
    with sync_client(server) as client:
        refused(
            lambda: client.download(f"{server.base_url}/out?{SIGNATURE}", io.BytesIO()),
            UnexpectedResponseError,
            "redirected (HTTP 302) to http://evil.invalid",
        )
    assert "evil.invalid" not in resolver
    assert elsewhere.seen == []


# --- downloads that break --------------------------------------------------------------------------


def test_a_download_shorter_than_its_content_length_fails_after_its_retries(server: HostileServer) -> None:
    # Every byte that arrives before the cut is kept, so the retry resumes there with a Range request.
    kept = 3 * MB // 2
    server.on("GET", "/out", short_body(b"x" * kept, declared=3 * MB))
    sink = io.BytesIO()
    with sync_client(server, max_attempts=3) as client:
        refused(
            lambda: client.download(f"{server.base_url}/out?{SIGNATURE}", sink),
            IncompleteDownloadError,
            "download of http://127.0.0.1",
            "/out?<redacted> broke off",
        )
    tries = server.requests_to("/out")
    assert len(tries) == 3
    assert tries[1].headers.get("range") == f"bytes={kept}-", "a broken transfer is resumed"
    assert sink.getbuffer().nbytes == kept, "what was kept stays, never taken for the whole file"


WHOLE = bytes(range(256)) * (3 * MB // 256)


def resume_from_wrong_offset() -> Handler:
    """First a short answer; then, to the ranged retry, a 206 that starts again from byte 0; then the file."""
    calls = {"n": 0}

    async def handler(scope: Any, receive: Any, send: Any) -> None:
        calls["n"] += 1
        if calls["n"] == 1:
            await short_body(WHOLE[: 3 * MB // 2], declared=len(WHOLE))(scope, receive, send)
        elif calls["n"] == 2:
            headers = {"content-range": f"bytes 0-{len(WHOLE) - 1}/{len(WHOLE)}"}
            await raw(WHOLE, status=206, content_type=None, headers=headers)(scope, receive, send)
        else:
            await raw(WHOLE, content_type=None)(scope, receive, send)

    return handler


def test_a_resumed_download_that_restarts_at_the_wrong_byte_is_not_spliced_in(server: HostileServer) -> None:
    server.on("GET", "/out", resume_from_wrong_offset())
    sink = io.BytesIO(b"kept:")
    sink.seek(0, io.SEEK_END)
    with sync_client(server, max_attempts=3) as client:
        assert client.download(f"{server.base_url}/out?{SIGNATURE}", sink) == len(WHOLE)
    assert sink.getvalue() == b"kept:" + WHOLE
    # the retry asks for the rest after every byte the short answer delivered
    assert [seen.headers.get("range") for seen in server.requests_to("/out")] == [None, f"bytes={3 * MB // 2}-", None]


def test_an_unasked_partial_answer_is_not_taken_for_the_whole_file(server: HostileServer) -> None:
    headers = {"content-range": "bytes 0-49/100"}
    server.on("GET", "/out", raw(b"y" * 50, status=206, content_type="application/octet-stream", headers=headers))
    with sync_client(server) as client:
        refused(
            lambda: client.download(f"{server.base_url}/out?{SIGNATURE}", io.BytesIO()),
            IncompleteDownloadError,
            "does not continue the file",
        )


def test_content_lengths_are_read_as_ascii_digits_only() -> None:
    assert declared_length({"Content-Length": "\u00b2"}) is None
    assert declared_length({"Content-Length": " 12 "}) == 12
    assert expected_length({"Content-Length": "-1"}, 5) is None
    assert expected_length({"Content-Length": "7"}, 5) == 12


# --- answers that never come -----------------------------------------------------------------------

NEVER = [
    pytest.param(silent, id="no-headers"),
    pytest.param(lambda: stall(b'{"operationStatus": ', content_length=100), id="body-stalls"),
    pytest.param(lambda: stall(b'{"operationStatus": '), id="chunked-body-stalls"),
]


@pytest.mark.parametrize("answer", NEVER)
@pytest.mark.parametrize("use_async", [False, True], ids=["sync", "async"])
def test_an_answer_that_never_ends_is_a_timeout(
    server: HostileServer, answer: Callable[[], Handler], use_async: bool
) -> None:
    server.on("GET", STATUS_PATH, answer())
    if use_async:
        refused(lambda: async_status(server, read_timeout=0.3), TransportError, "timed out", "op-1")
    else:
        with sync_client(server, read_timeout=0.3) as client:
            refused(
                lambda: client.get_operation("op-1", "anzsco"),
                TransportError,
                "operation status: GET http://127.0.0.1",
                "timed out",
                not_subclass=IncompleteDownloadError,
            )
    assert len(server.requests_to(STATUS_PATH)) == 2, "a timeout is retried"


def test_a_refused_connection_is_not_called_a_timeout(server: HostileServer) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    with sync_client(server) as client:
        error = refused(lambda: client.download(f"http://127.0.0.1:{closed_port}/out", io.BytesIO()), TransportError)
    assert "timed out" not in str(error)


# --- error bodies that echo secrets ----------------------------------------------------------------


@pytest.mark.parametrize("use_async", [False, True], ids=["sync", "async"])
def test_an_error_body_echoing_the_token_or_a_signed_url_is_scrubbed(server: HostileServer, use_async: bool) -> None:
    echo = f"token {TOKEN} is odd; see https://s3.invalid/key?{SIGNATURE}&X-Amz-Credential=abc"
    server.on("GET", STATUS_PATH, json_body({"message": echo}, status=400))
    call = (
        (lambda: async_status(server)) if use_async else (lambda: sync_client(server).get_operation("op-1", "anzsco"))
    )
    error = refused(
        call, InvalidRequestError, "HTTP 400", "token <redacted> is odd", "https://s3.invalid/key?<redacted>"
    )
    assert "X-Amz-Credential" not in str(error)


def test_a_token_error_echoing_the_basic_credentials_is_scrubbed(server: HostileServer) -> None:
    server.on(
        "POST", TOKEN_PATH, json_body({"error": "invalid_client", "error_description": f"bad {BASIC}"}, status=400)
    )
    with sync_client(server) as client:
        refused(client.token, InvalidRequestError, "bad <redacted>")


def test_a_sane_server_still_works_end_to_end(server: HostileServer) -> None:
    """The hostile harness itself is sound: a well-formed answer is accepted."""
    server.on("GET", STATUS_PATH, json_body({"operationStatus": "in_progress"}))
    with sync_client(server) as client:
        assert client.get_operation("op-1", "anzsco").state is OperationState.IN_PROGRESS
    assert async_status(server).state is OperationState.IN_PROGRESS
    sent = server.requests_to(STATUS_PATH)[0]
    assert sent.headers["authorization"] == TOKEN
    assert server.requests_to(TOKEN_PATH)[0].headers["authorization"] == f"Basic {BASIC}"
