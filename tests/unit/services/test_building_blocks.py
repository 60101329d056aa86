"""Unit tests of the service layer's building blocks: retry, rate limit, tokens, redaction, parsing."""

from __future__ import annotations

import asyncio
import io
import time
from pathlib import Path

import pytest

from airflow_batchcode.exceptions import (
    AuthenticationError,
    ConfigurationError,
    ConflictError,
    InvalidRequestError,
    NotFoundError,
    QuotaExceededError,
    RateLimitedError,
    ServerError,
    UnexpectedResponseError,
)
from airflow_batchcode.services.abs import (
    AbsSettings,
    default_auth_url,
    parse_create,
    parse_status,
    parse_token,
    topic_path,
)
from airflow_batchcode.services.base import OperationState
from airflow_batchcode.services.http.bodies import FileBody
from airflow_batchcode.services.http.errors import error_for_status, json_message_reader, s3_message_reader
from airflow_batchcode.services.http.retry import RetryPolicy, parse_retry_after
from airflow_batchcode.services.http.settings import check_url
from airflow_batchcode.services.redact import redact_url
from airflow_batchcode.services.tokens import Token, TokenCache


def test_operation_state_terminality() -> None:
    assert {s for s in OperationState if s.is_terminal()} == {
        OperationState.COMPLETE,
        OperationState.FAILED,
        OperationState.TIMED_OUT,
    }
    assert OperationState.IN_PROGRESS.is_in_progress()
    assert OperationState.AWAITING_INPUT.accepts_input
    assert not OperationState.IN_PROGRESS.accepts_input
    assert OperationState("complete") == "complete"


def test_retry_policy_backs_off_exponentially_with_jitter_and_honours_retry_after() -> None:
    policy = RetryPolicy(max_attempts=4, backoff_base=1.0, backoff_max=5.0)
    for attempt, ceiling in ((1, 1.0), (2, 2.0), (3, 4.0), (4, 5.0), (9, 5.0)):
        delays = {policy.delay(attempt) for _ in range(50)}
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert len(delays) > 1, "jitter"
    assert policy.delay(1, retry_after=7.0) == 7.0
    assert policy.can_retry(3) and not policy.can_retry(4)
    assert not policy.can_retry(1, retry_after=10_000)


def test_parse_retry_after_reads_seconds_and_http_dates() -> None:
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0
    future = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 30))
    assert 25 <= (parse_retry_after(future) or 0) <= 31


def test_token_cache_is_single_flight_and_renews_before_expiry() -> None:
    cache = TokenCache()
    calls: list[int] = []

    def fetch() -> Token:
        calls.append(1)
        return Token.from_lifetime(f"tok{len(calls)}", 3600)

    assert cache.get(fetch) == "tok1"
    assert cache.get(fetch) == "tok1"
    assert len(calls) == 1
    cache.invalidate("other")
    assert cache.get(fetch) == "tok1"
    cache.invalidate()
    assert cache.get(fetch) == "tok2"
    before = time.monotonic()
    long_lived, short_lived = Token.from_lifetime("x", 3600), Token.from_lifetime("y", 0.5)
    after = time.monotonic()
    assert before + 3600 - 120 <= long_lived.renew_at <= after + 3600 - 120, "renewed 120 s before expiry"
    assert before + 0.45 <= short_lived.renew_at <= after + 0.45, "a short-lived token keeps 90 % of its life"


def test_token_cache_async_fetches_once_for_many_waiters() -> None:
    cache = TokenCache()
    calls = 0

    async def fetch() -> Token:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.05)
        return Token.from_lifetime("shared", 3600)

    async def main() -> list[str]:
        return await asyncio.gather(*(cache.get_async(fetch) for _ in range(50)))

    assert asyncio.run(main()) == ["shared"] * 50
    assert calls == 1


def test_redact_url_removes_query_and_keeps_location() -> None:
    url = "https://bucket.s3.amazonaws.com/a/b.jsonl?X-Amz-Signature=deadbeef&X-Amz-Expires=3600"
    assert redact_url(url) == "https://bucket.s3.amazonaws.com/a/b.jsonl?<redacted>"
    assert "deadbeef" not in redact_url(url)
    assert redact_url("https://user:pw@host:8443/x") == "https://host:8443/x"
    assert redact_url("http://h/x") == "http://h/x"


@pytest.mark.parametrize(
    ("status", "message", "kind"),
    [
        (400, "Invalid request body", InvalidRequestError),
        (403, "User is not authorized to access this resource with an explicit deny", AuthenticationError),
        (404, "The specified topic does not exist", NotFoundError),
        (409, "Selected model does not match the input topic.", ConflictError),
        (429, "Too Many Requests", RateLimitedError),
        (429, "Limit Exceeded", QuotaExceededError),
        (500, "Error performing request", ServerError),
    ],
)
def test_error_for_status_maps_the_documented_errors(status: int, message: str, kind: type) -> None:
    error = error_for_status(status, message, what="thing", operation_id="op-1")
    assert type(error) is kind
    assert "op-1" in str(error) and message in str(error) and str(status) in str(error)
    assert error.transient == (status in (429, 500) and kind is not QuotaExceededError)


def test_error_readers() -> None:
    read = json_message_reader("message")
    assert read(403, b'{"message": "nope"}', "application/json") == "nope"
    assert read(500, b"<html>bad gateway</html>", "text/html") == "<html>bad gateway</html>"
    xml = b"<?xml version='1.0'?><Error><Code>AccessDenied</Code><Message>Request has expired</Message></Error>"
    assert s3_message_reader(403, xml, "application/xml") == "AccessDenied: Request has expired"


def test_check_url_allows_https_and_loopback_http_only() -> None:
    check_url("https://example.com/x?sig=1", allow_insecure_http=False, what="URL")
    check_url("http://127.0.0.1:9/x", allow_insecure_http=False, what="URL")
    check_url("http://[::1]:9/x", allow_insecure_http=False, what="URL")
    check_url("http://example.com/x", allow_insecure_http=True, what="URL")
    with pytest.raises(UnexpectedResponseError) as info:
        check_url("http://example.com/x?X-Amz-Signature=secret", allow_insecure_http=False, what="URL")
    assert "secret" not in str(info.value)
    with pytest.raises(UnexpectedResponseError):
        check_url("ftp://example.com/x", allow_insecure_http=True, what="URL")


def test_file_body_streams_in_chunks_and_rereads_for_retries(tmp_path: Path) -> None:
    path = tmp_path / "m.jsonl"
    path.write_bytes(b"x" * 2500)
    body = FileBody(path, chunk_bytes=1000)
    assert len(body) == 2500
    assert [len(c) for c in body] == [1000, 1000, 500]
    assert b"".join(body) == b"x" * 2500
    handle = io.BytesIO(b"head" + b"y" * 10)
    handle.seek(4)
    body = FileBody(handle, chunk_bytes=4)
    assert len(body) == 10 and b"".join(body) == b"y" * 10 and b"".join(body) == b"y" * 10


def test_default_auth_url_follows_the_abs_host_pattern() -> None:
    assert (
        default_auth_url("https://partner-coder.api.abs.gov.au") == "https://partner-coder.auth.abs.gov.au/oauth2/token"
    )
    assert default_auth_url("http://127.0.0.1:8080/") == "http://127.0.0.1:8080/oauth2/token"


def test_abs_settings_validate_and_hide_the_secret() -> None:
    settings = AbsSettings("https://partner-coder.api.abs.gov.au", "id", "s3cr3t")
    assert "s3cr3t" not in repr(settings)
    with pytest.raises(ConfigurationError):
        AbsSettings("partner-coder.api.abs.gov.au", "id", "x")
    with pytest.raises(ConfigurationError):
        AbsSettings("https://h", "", "")
    with pytest.raises(UnexpectedResponseError):
        AbsSettings("http://example.com", "id", "x")


def test_topic_path_refuses_path_injection() -> None:
    assert topic_path("anzsco", None) == "/v1/topics/anzsco"
    assert topic_path("osca", "0000-11") == "/v1/topics/osca/models/0000-11"
    for bad in ("../admin", "a/b", "x?y=1", ""):
        with pytest.raises(ConfigurationError):
            topic_path(bad, None)


def test_parsers_accept_the_documented_shapes_and_reject_others() -> None:
    token = parse_token({"access_token": "abc", "expires_in": 3600, "token_type": "Bearer"})
    assert token.value == "abc" and token.fresh
    for bad in ({}, {"access_token": ""}, {"access_token": "a", "expires_in": "soon"}, []):
        with pytest.raises(UnexpectedResponseError):
            parse_token(bad)
    target = parse_create({"requestUploadUrl": "https://u?sig", "operationId": "op-1", "bucketKmsKeyArn": "k"})
    assert target.operation_id == "op-1" and "sig" not in repr(target)
    with pytest.raises(UnexpectedResponseError):
        parse_create({"operationId": "op-1"})
    done = parse_status(
        {"operationStatus": "complete", "responseDownloadUrl": "https://r?s", "metadataDownloadUrl": "https://m?s"},
        "op-1",
    )
    assert done.state is OperationState.COMPLETE and "https://r" not in repr(done)
    failed = parse_status({"operationStatus": "failed", "error": "bad lines"}, "op-1")
    assert failed.error == "bad lines" and "bad lines" in failed.describe()
    for bad in ({"operationStatus": "exploded"}, {"operationStatus": "complete"}, {"operationStatus": 3}, "x"):
        with pytest.raises(UnexpectedResponseError):
            parse_status(bad, "op-1")
