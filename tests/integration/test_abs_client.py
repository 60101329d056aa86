"""The ABS client against the emulator over real HTTP on loopback: every endpoint, state, error and fault."""

from __future__ import annotations

import asyncio
import io
import json
import time
from typing import Any

import pytest

from airflow_batchcode.emulator.server import EmulatorServer
from airflow_batchcode.exceptions import (
    AuthenticationError,
    ConfigurationError,
    ConflictError,
    InvalidRequestError,
    NotFoundError,
    RateLimitedError,
    ServerError,
    TransportError,
    UploadRejectedError,
)
from airflow_batchcode.services.abs import AbsClient, AbsSettings, AsyncAbsClient
from airflow_batchcode.services.base import OperationState, UploadTarget
from airflow_batchcode.services.budget import QuotaSettings
from airflow_batchcode.services.http.retry import RetryPolicy
from airflow_batchcode.services.http.settings import HttpSettings
from tests.support import admin, emulator

FAST = RetryPolicy(max_attempts=6, backoff_base=0.05, backoff_max=0.5)
RECORDS = [
    {"recordId": "1", "occp_text": "software developer", "tasks_text": "writing code and unit tests"},
    {"recordId": "2", "occp_text": "Paramedic", "tasks_text": "responding to medical emergencies"},
    {"recordId": "3", "occp_text": "Brickie", "tasks_text": ""},
    {"recordId": "4", "occp_text": "worker", "tasks_text": "various"},
    {"recordId": "5", "occp_text": "caf\u00e9 manager", "tasks_text": "running the cafe"},
    {"recordId": "6", "occp_text": "x" * 200, "tasks_text": "y" * 101},
    {"recordId": "1", "occp_text": "nurse", "tasks_text": "caring for patients"},
]


def client_for(
    server: EmulatorServer, *, secret: str = "demo-secret", client_id: str = "demo-client", **kw: Any
) -> AbsClient:
    quota = QuotaSettings(quota_window=kw.pop("quota_window", 86400.0))
    http = HttpSettings(retry=FAST, read_timeout=kw.pop("read_timeout", 10.0), quota=quota)
    return AbsClient(
        AbsSettings(server.base_url, client_id, secret, rate_limit=kw.pop("rate_limit", 0), http=http), **kw
    )


def manifest(records: list[dict[str, Any]], extra_lines: tuple[str, ...] = ()) -> io.BytesIO:
    lines = [json.dumps(r) for r in records] + list(extra_lines)
    return io.BytesIO(("\n".join(lines) + "\n").encode())


def wait_terminal(client: AbsClient, operation_id: str, topic: str = "anzsco") -> Any:
    for _ in range(200):
        operation = client.get_operation(operation_id, topic)
        if operation.state.is_terminal():
            return operation
        time.sleep(0.05)
    raise AssertionError("operation never finished")


def run_operation(client: AbsClient, records: list[dict[str, Any]], *extra: str) -> tuple[Any, list[dict[str, Any]]]:
    target = client.create_operation("anzsco")
    client.upload_manifest(target, manifest(records, extra))
    operation = wait_terminal(client, target.operation_id)
    out = io.BytesIO()
    client.download_results(target.operation_id, "anzsco", out)
    return operation, [json.loads(line) for line in out.getvalue().splitlines()]


def test_full_lifecycle_codes_every_line_in_order_with_each_outcome() -> None:
    with emulator() as server, client_for(server) as client:
        target = client.create_operation("anzsco")
        assert client.get_operation(target.operation_id, "anzsco").state is OperationState.AWAITING_INPUT
        sent = client.upload_manifest(target, manifest(RECORDS, ("this is not a json string",)))
        assert sent > 0
        assert client.get_operation(target.operation_id, "anzsco").state in (
            OperationState.IN_PROGRESS,
            OperationState.COMPLETE,
        )
        done = wait_terminal(client, target.operation_id)
        assert done.state is OperationState.COMPLETE and done.response_url and done.metadata_url
        out, meta = io.BytesIO(), io.BytesIO()
        sizes = client.download_results(target.operation_id, "anzsco", out, meta)
        assert sizes == (len(out.getvalue()), len(meta.getvalue()))
    rows = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [r["recordId"] for r in rows] == ["1", "2", "3", "4", "5", "6", "1", "unknown"]
    assert rows[0]["codeStatus"] == "successful" and rows[0]["result"]["codeCategory"].startswith("2613")
    assert rows[2]["result"]["codeCategory"] == "331111"
    assert any(r["codeStatus"] == "unsuccessful" and 1 <= len(r.get("suggestions", [])) <= 3 for r in rows)
    assert "printable ASCII" in rows[4]["error"] and "300 characters" in rows[5]["error"]
    assert rows[7] == {
        "recordId": "unknown",
        "codeStatus": "unsuccessful",
        "input": "this is not a json string",
        "error": "Invalid JSON data format. ",
    }
    assert json.loads(meta.getvalue())["model"]["modelId"]


def test_records_without_ids_echo_null_and_a_named_model_is_used() -> None:
    with emulator() as server, client_for(server) as client:
        models = client.list_models("anzsco")
        assert len(models) >= 2 and all(m.model_id and m.input_format for m in models)
        older = models[0].model_id
        target = client.create_operation("anzsco", older)
        client.upload_manifest(target, manifest([{"occp_text": "plumber", "tasks_text": ""}]))
        operation = client.get_operation(target.operation_id, "anzsco", older)
        assert operation.operation_id == target.operation_id
        wait_terminal(client, target.operation_id)
        out, meta = io.BytesIO(), io.BytesIO()
        client.download_results(target.operation_id, "anzsco", out, meta, model=older)
    assert json.loads(out.getvalue())["recordId"] is None
    assert json.loads(meta.getvalue())["model"]["modelId"] == older


def test_topics_and_the_documented_lookup_errors() -> None:
    with emulator() as server, client_for(server) as client:
        assert {t.uri_name for t in client.list_topics()} == {"anzsco", "osca"}
        osca_model = client.list_models("osca")[0].model_id
        with pytest.raises(NotFoundError, match="The specified topic does not exist"):
            client.list_models("isco")
        with pytest.raises(NotFoundError, match="The specified model does not exist") as unknown:
            client.create_operation("anzsco", "00000000-0000-0000-0000-000000000000")
        assert str(unknown.value).startswith("create anzsco operation with model 00000000-0000-0000-0000-000000000000:")
        with pytest.raises(ConflictError, match="Selected model does not match the input topic"):
            client.create_operation("anzsco", osca_model)


def test_inconsistent_fields_fail_the_operation_with_the_services_message() -> None:
    with emulator() as server, client_for(server) as client:
        target = client.create_operation("anzsco")
        client.upload_manifest(
            target,
            manifest([{"recordId": "1", "occp_text": "a", "tasks_text": "b"}, {"occp_text": "c", "tasks_text": "d"}]),
        )
        operation = wait_terminal(client, target.operation_id)
    assert operation.state is OperationState.FAILED
    assert operation.error and "same fields" in operation.error


def test_awaiting_timeout_upload_expiry_second_upload_and_retention() -> None:
    with emulator(awaiting_timeout=600, url_ttl=900, retention=3600) as server, client_for(server) as client:
        late = client.create_operation("anzsco")
        admin(server, "clock", {"advance": 601})
        assert client.get_operation(late.operation_id, "anzsco").state is OperationState.TIMED_OUT
        with pytest.raises(UploadRejectedError) as refused:
            client.upload_manifest(late, manifest(RECORDS[:1]))
        assert late.operation_id in str(refused.value)

        expired = client.create_operation("anzsco")
        admin(server, "clock", {"advance": 500})
        assert client.get_operation(expired.operation_id, "anzsco").state is OperationState.AWAITING_INPUT
        admin(server, "clock", {"advance": 450})
        with pytest.raises(UploadRejectedError, match="expired") as info:
            client.upload_manifest(expired, manifest(RECORDS[:1]))
        assert "X-Amz-Signature" not in str(info.value)

        target = client.create_operation("anzsco")
        client.upload_manifest(target, manifest(RECORDS[:2]))
        with pytest.raises(UploadRejectedError, match="no longer accepting input"):
            client.upload_manifest(target, manifest(RECORDS[:2]))
        done = wait_terminal(client, target.operation_id)
        assert client.results_available(done)
        admin(server, "clock", {"advance": 3601})
        assert not client.results_available(client.get_operation(target.operation_id, "anzsco"))
        with pytest.raises(NotFoundError, match="deletes outputs within 24 hours"):
            client.download_results(target.operation_id, "anzsco", io.BytesIO())


def test_tampered_signature_and_wrong_kms_key_are_refused() -> None:
    with emulator() as server, client_for(server) as client:
        target = client.create_operation("anzsco")
        tampered = UploadTarget(
            target.operation_id, target.upload_url.replace("X-Amz-Signature=", "X-Amz-Signature=0"), target.kms_key_arn
        )
        with pytest.raises(UploadRejectedError, match="SignatureDoesNotMatch"):
            client.upload_manifest(tampered, manifest(RECORDS[:1]))
        wrong_key = UploadTarget(target.operation_id, target.upload_url, "arn:aws:kms:ap-southeast-2:1:key/other")
        with pytest.raises(Exception, match="InvalidArgument"):
            client.upload_manifest(wrong_key, manifest(RECORDS[:1]))
        assert client.get_operation(target.operation_id, "anzsco").state is OperationState.AWAITING_INPUT


def test_another_tenants_operation_is_a_clean_404() -> None:
    clients = {"demo-client": "demo-secret", "other": "other-secret"}
    with emulator(clients=clients) as server, client_for(server) as mine:
        target = mine.create_operation("anzsco")
        with client_for(server, client_id="other", secret="other-secret") as theirs:
            with pytest.raises(NotFoundError, match="The specified operation does not exist") as info:
                theirs.get_operation(target.operation_id, "anzsco")
        assert info.value.operation_id == target.operation_id


def test_bad_credentials_fail_without_revealing_the_secret() -> None:
    with emulator() as server, client_for(server, secret="wrong-secret-value") as client:
        with pytest.raises(AuthenticationError) as info:
            client.list_topics()
        assert admin(server, "stats")["requests"].get("POST /oauth2/token") == 1, "a refusal is final at once"
    assert "invalid_client" in str(info.value) and "wrong-secret-value" not in str(info.value)
    assert "/oauth2/token refused client id 'demo-client'; check the connection's login (client id), " in str(
        info.value
    )


def test_one_token_is_shared_by_every_client_of_the_connection_and_renewed_when_refused() -> None:
    with emulator(token_ttl=3600) as server:
        for _ in range(3):
            with client_for(server) as client:
                client.list_topics()

        async def poll() -> None:
            async_client = AsyncAbsClient(AbsSettings(server.base_url, "demo-client", "demo-secret", rate_limit=0))
            try:
                await async_client.token()
            finally:
                await async_client.aclose()

        asyncio.run(poll())
        assert admin(server, "stats")["tokens_issued"] == {"demo-client": 1}


def test_sync_and_async_status_agree_and_secrets_are_reported() -> None:
    seen: list[str] = []
    with emulator() as server, client_for(server, on_secret=seen.append) as client:
        target = client.create_operation("osca")
        client.upload_manifest(target, manifest(RECORDS[:3]))
        wait_terminal(client, target.operation_id, "osca")

        async def status() -> Any:
            async_client = AsyncAbsClient(
                AbsSettings(server.base_url, "demo-client", "demo-secret", rate_limit=0), on_secret=seen.append
            )
            try:
                return await async_client.get_operation(target.operation_id, "osca")
            finally:
                await async_client.aclose()

        operation = asyncio.run(status())
    assert operation.state is OperationState.COMPLETE
    assert "demo-secret" in seen and target.upload_url in seen and operation.response_url in seen
    assert any(len(s) >= 20 and "://" not in s and s != "demo-secret" for s in seen), "the token"


def test_rate_limit_429s_are_retried_after_retry_after_and_avoided_by_the_shared_limiter() -> None:
    with emulator(rate_limit=5) as server:
        with client_for(server) as eager:
            for _ in range(6):
                eager.list_topics()
        throttled = sum(admin(server, "stats")["throttled"].values())
        assert throttled >= 1, "without a client limiter the service throttles, and the client retries"
        before = throttled
        time.sleep(0.5)  # let the service's bucket refill after the eager client
        with client_for(server, rate_limit=4) as polite:
            for _ in range(6):
                polite.list_topics()
        assert sum(admin(server, "stats")["throttled"].values()) == before


def test_a_spent_quota_is_waited_out_until_the_window_resets_not_retried_at_once() -> None:
    # issue 15: "Limit Exceeded" is no longer a failure; the call waits for the quota window to reset
    with emulator(daily_quota=2, quota_window=2) as server, client_for(server, quota_window=2) as client:
        while time.time() % 2 > 0.5:  # the two calls below land early in one window
            time.sleep(0.05)
        window = time.time() // 2
        client.list_topics()
        client.list_topics()
        assert client.list_topics(), "the third call waited for the next window and succeeded"
        assert time.time() // 2 > window
        stats = admin(server, "stats")
    assert stats["throttled"] == {"daily_quota": 1}, "refused once, then not tried again until the reset"
    assert stats["requests"].get("GET /v1/topics", 0) <= 4


def test_injected_5xx_and_429_bursts_are_survived() -> None:
    with emulator(fault_5xx_rate=0.3, fault_429_rate=0.1, fault_retry_after=0, seed=7) as server:
        with client_for(server) as client:
            operation, rows = run_operation(client, RECORDS)
        faults = admin(server, "stats")["faults"]
    assert operation.state is OperationState.COMPLETE and len(rows) == len(RECORDS)
    assert sum(faults.values()) >= 2


def test_a_lost_create_response_is_retried_and_the_orphan_counted() -> None:
    with emulator(fault_lost_response_rate=1.0, fault_only=r"^POST .*/batch-code$") as server:
        with client_for(server) as client:
            with pytest.raises(TransportError, match="create anzsco operation"):
                client.create_operation("anzsco")
            admin(server, "faults", {"fault_lost_response_rate": 0.0})
            client.create_operation("anzsco")
        created = admin(server, "stats")["operations_created"]["demo-client"]
    assert created == FAST.max_attempts + 1


def test_a_failing_token_endpoint_is_tried_max_attempts_times_in_all() -> None:
    """The token is fetched inside each try of the API call; once the token's own loop has given up,
    the call's loop does not start it again (it used to: 6 x 6 token requests, 3 minutes per task try)."""
    with emulator(fault_5xx_rate=1.0, fault_only=r"^POST /oauth2/token") as server:
        with client_for(server) as client, pytest.raises(ServerError, match="token request") as raised:
            client.list_models("anzsco")
        assert admin(server, "stats")["faults"] == {"5xx": FAST.max_attempts}
    assert f"gave up after {FAST.max_attempts} tries and " in str(raised.value)


def test_the_status_poll_of_the_trigger_fetches_a_failing_token_max_attempts_times_in_all() -> None:
    async def poll(server: EmulatorServer) -> None:
        http = HttpSettings(retry=FAST, read_timeout=10.0)
        settings = AbsSettings(server.base_url, "demo-client", "demo-secret", rate_limit=0, http=http)
        client = AsyncAbsClient(settings)
        try:
            await client.get_operation("not-created", "anzsco")
        finally:
            await client.aclose()

    with emulator(fault_5xx_rate=1.0, fault_only=r"^POST /oauth2/token") as server:
        with pytest.raises(ServerError, match=f"gave up after {FAST.max_attempts} tries"):
            asyncio.run(poll(server))
        assert admin(server, "stats")["faults"] == {"5xx": FAST.max_attempts}


def test_a_retry_after_longer_than_a_call_waits_says_so() -> None:
    with emulator(fault_429_rate=1.0, fault_retry_after=900, fault_only=r"^GET /v1/topics") as server:
        with client_for(server) as client, pytest.raises(RateLimitedError) as raised:
            client.list_models("anzsco")
        assert admin(server, "stats")["faults"] == {"429": 1}
    assert "the service asked to wait 900 s (Retry-After), longer than the 600 s a call waits" in str(raised.value)


def test_truncated_downloads_are_detected_and_resumed_to_the_exact_file() -> None:
    with emulator() as server, client_for(server) as client:
        records = [{"recordId": str(i), "occp_text": "chef", "tasks_text": f"cooking meal {i}"} for i in range(3000)]
        target = client.create_operation("anzsco")
        client.upload_manifest(target, manifest(records))
        wait_terminal(client, target.operation_id)
        clean = io.BytesIO()
        client.download_results(target.operation_id, "anzsco", clean)
        admin(server, "faults", {"fault_truncate_rate": 0.5})
        for _ in range(3):
            again = io.BytesIO()
            client.download_results(target.operation_id, "anzsco", again)
            assert again.getvalue() == clean.getvalue()
        assert admin(server, "stats")["faults"].get("truncate", 0) >= 1


def test_a_status_call_hanging_past_the_timeout_is_retried() -> None:
    with emulator(fault_slow_rate=1.0, fault_slow_seconds=2.0, fault_only=r"^GET .*/operations/") as server:
        with client_for(server, read_timeout=0.5) as client:
            target = client.create_operation("anzsco")
            with pytest.raises(TransportError, match="timed out"):
                client.get_operation(target.operation_id, "anzsco")
            admin(server, "faults", {"fault_slow_rate": 0.5})
            assert client.get_operation(target.operation_id, "anzsco").state is OperationState.AWAITING_INPUT


def test_realtime_coding_limits_and_errors() -> None:
    with emulator() as server, client_for(server) as client:
        coded = client.code("anzsco", [{"occp_text": "electrician", "tasks_text": "wiring houses"}] * 3)
        assert len(coded) == 3 and coded[0]["codeStatus"] == "successful"
        with pytest.raises(ConfigurationError, match="1 to 300"):
            client.code("anzsco", [{"occp_text": "a", "tasks_text": ""}] * 301)
        with pytest.raises(InvalidRequestError, match="record 1"):
            client.code("anzsco", [{"occp_text": "a", "tasks_text": ""}, {"occp_text": "\u00e9", "tasks_text": ""}])
