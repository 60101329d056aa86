"""Operators and sensor over a real hook with a fake client at its boundary (the real path is in integration)."""

from __future__ import annotations

import time
from typing import Any
from unittest import mock

import pytest

from airflow_batchcode.exceptions import (
    ConfigurationError,
    OperationFailedError,
    OperationTimedOutError,
    StatusCheckFailedError,
    UnexpectedResponseError,
    WaitTimedOutError,
)
from airflow_batchcode.operation_ref import OperationRef, seal_upload, unseal_upload
from airflow_batchcode.operators.batchcode import (
    CREATED_KEY,
    CreateOperationOperator,
    UploadManifestOperator,
    upload_url_expiry,
)
from airflow_batchcode.sensors.batchcode import OperationStatusSensor
from airflow_batchcode.services.base import OperationState, UploadTarget
from tests.fakes import FakeClient, FakeInputWithCreateClient, Store, hook_with


def with_client(operator: Any, client: FakeClient) -> Any:
    operator.__dict__["hook"] = hook_with(client)
    return operator


@pytest.mark.parametrize(
    ("state", "expires_in", "reused"),
    [
        (OperationState.AWAITING_INPUT, 3000, True),
        (OperationState.AWAITING_INPUT, 60, False),
        (OperationState.IN_PROGRESS, 3000, True),
        (OperationState.COMPLETE, -10, True),
        (OperationState.FAILED, 3000, False),
        (OperationState.TIMED_OUT, 3000, False),
    ],
)
def test_create_reattaches_only_to_a_usable_operation(state: OperationState, expires_in: int, reused: bool) -> None:
    client = FakeClient(state)
    store = Store()
    operator = with_client(CreateOperationOperator(task_id="create", topic="anzsco"), client)
    first = operator.execute({"task_state_store": store})  # the record a real earlier try leaves
    store.set(CREATED_KEY, {**store.get(CREATED_KEY), "upload_expires": time.time() + expires_in})
    result = operator.execute({"task_state_store": store})
    assert (result == first) is reused, "a reused operation is handed on as the earlier try handed it"
    assert result["operation_id"] == ("op-1" if reused else "op-2")
    assert client.created == (1 if reused else 2)
    assert unseal_upload(OperationRef.parse(result)).operation_id == result["operation_id"]


def test_create_does_not_reattach_to_a_complete_operation_whose_outputs_are_gone() -> None:
    client, store = FakeClient(OperationState.COMPLETE, outputs_kept=False), Store()
    store.set(CREATED_KEY, {"operation_id": "op-0", "topic": "anzsco"})
    result = with_client(CreateOperationOperator(task_id="c", topic="anzsco"), client).execute(
        {"task_state_store": store}
    )
    assert result["operation_id"] == "op-1" and client.created == 1


def test_create_records_the_new_operation_and_seals_the_upload_url() -> None:
    client, store = FakeClient(), Store()
    result = with_client(CreateOperationOperator(task_id="c", topic="osca"), client).execute(
        {"task_state_store": store}
    )
    assert store.data[CREATED_KEY]["operation_id"] == result["operation_id"] == "op-1"
    assert "https://" not in repr(result) and "X-Amz" not in repr(result)
    target = unseal_upload(OperationRef.parse(result))
    assert target.upload_url.startswith("https://s3.example/in") and target.kms_key_arn == "kms"


def test_create_for_another_topic_does_not_reuse() -> None:
    client, store = FakeClient(), Store()
    store.set(CREATED_KEY, {"operation_id": "op-0", "topic": "anzsco"})
    result = with_client(CreateOperationOperator(task_id="c", topic="osca"), client).execute(
        {"task_state_store": store}
    )
    assert result["operation_id"] == "op-1"


@pytest.mark.parametrize("state", [OperationState.IN_PROGRESS, OperationState.COMPLETE])
def test_upload_never_sends_twice(state: OperationState, tmp_path: Any) -> None:
    client = FakeClient(state)
    sealed = seal_upload(UploadTarget("op-1", "https://u", "k"))
    operation = {"operation_id": "op-1", "topic": "anzsco", "sealed_upload": sealed}
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("{}\n")
    result = with_client(
        UploadManifestOperator(task_id="u", operation=operation, manifest=str(manifest)), client
    ).execute({"task_state_store": Store()})
    assert client.uploads == 0 and result["skipped"]


def test_services_taking_input_with_create_get_the_manifest_and_a_stable_name(tmp_path: Any) -> None:
    client, store = FakeInputWithCreateClient(), Store()
    manifest = tmp_path / "m.jsonl"
    manifest.write_text('{"occp_text":"nurse","tasks_text":""}\n')
    ti = mock.Mock(dag_id="nightly", task_id="code_chunk.create", map_index=3)
    context = {"task_state_store": store, "ti": ti, "run_id": "scheduled__2026-01-01T00:00:00+00:00"}
    create = CreateOperationOperator(task_id="c", topic="anzsco", input_digest="ab" * 32, manifest=str(manifest))
    result = with_client(create, client).execute(context)
    assert result["operation_id"] == "job-1"
    ((body, name),) = client.sent
    assert body == manifest.read_bytes()
    assert name == "nightly__scheduled__2026-01-01T00_00_00_00_00__code_chunk.create__3__abababababababab"
    # a retry re-attaches instead of sending the input again
    again = with_client(
        CreateOperationOperator(task_id="c", topic="anzsco", input_digest="ab" * 32, manifest=str(manifest)), client
    ).execute(context)
    assert again["operation_id"] == "job-1" and client.created == 1
    # and the upload task has nothing to do
    uploaded = with_client(UploadManifestOperator(task_id="u", operation=result, manifest=str(manifest)), client)
    assert uploaded.execute({"task_state_store": Store()})["skipped"] and client.uploads == 0


def test_a_service_taking_input_with_create_needs_the_manifest() -> None:
    create = with_client(CreateOperationOperator(task_id="c", topic="anzsco"), FakeInputWithCreateClient())
    with pytest.raises(ConfigurationError, match="pass manifest="):
        create.execute({"task_state_store": Store()})


def test_upload_into_a_failed_operation_raises_the_typed_error(tmp_path: Any) -> None:
    client = FakeClient(OperationState.FAILED)
    operator = UploadManifestOperator(task_id="u", operation={"operation_id": "op-9", "topic": "anzsco"}, manifest="x")
    with pytest.raises(OperationFailedError, match="op-9"):
        with_client(operator, client).execute({"task_state_store": Store()})


@pytest.mark.parametrize(
    ("event", "error"),
    [
        ({"status": "failed", "operation_id": "op-1", "message": "bad lines"}, OperationFailedError),
        ({"status": "timed_out", "operation_id": "op-1", "message": "x", "reason": "service"}, OperationTimedOutError),
        ({"status": "timed_out", "operation_id": "op-1", "message": "x", "reason": "deadline"}, WaitTimedOutError),
        ({"status": "error", "operation_id": "op-1", "message": "boom"}, StatusCheckFailedError),
        ({"status": "weird", "operation_id": "op-1"}, UnexpectedResponseError),
        ({"operation_id": "op-1"}, UnexpectedResponseError),
        (None, UnexpectedResponseError),
    ],
)
def test_execute_complete_validates_and_raises_typed_errors(event: Any, error: type) -> None:
    sensor = OperationStatusSensor(task_id="w", operation="op-1", topic="anzsco", deferrable=True)
    with pytest.raises(error) as info:
        sensor.execute_complete({}, event)
    if error is OperationFailedError:
        assert (
            "op-1" in str(info.value) and "bad lines" in str(info.value) and "clear the task group" in str(info.value)
        )
    if error is StatusCheckFailedError:
        assert str(info.value).startswith("Could not read the batch coding operation's status (operation op-1). boom.")
        assert "clear the wait task to wait on the same operation again" in str(info.value)
    if error is WaitTimedOutError:
        assert "may still finish" in str(info.value) and "cannot be reused" not in str(info.value)
        assert not isinstance(info.value, OperationTimedOutError), "opposite advice: not a kind of it"


def test_execute_complete_returns_the_operation_id() -> None:
    sensor = OperationStatusSensor(task_id="w", operation="op-1", topic="anzsco")
    assert sensor.execute_complete({}, {"status": "complete", "operation_id": "op-1", "message": "ok"}) == "op-1"
    assert sensor.deferrable, "deferrable by default"


def test_sensor_refuses_a_poll_interval_below_half_a_second() -> None:
    with pytest.raises(ConfigurationError, match="at least 0.5"):
        OperationStatusSensor(task_id="w", operation="op-1", poll_interval=0.1)


def test_operation_ref_parsing() -> None:
    assert OperationRef.parse("op-1", topic="osca") == OperationRef("op-1", "osca")
    assert OperationRef.parse('{"operation_id": "op-2", "topic": "anzsco"}').topic == "anzsco"
    with pytest.raises(ConfigurationError):
        OperationRef.parse({"topic": "x"})
    with pytest.raises(ConfigurationError):
        OperationRef("op-3").require_topic()


def test_upload_url_expiry_reads_both_presign_styles() -> None:
    assert upload_url_expiry("https://h/k?X-Amz-Date=20260101T000000Z&X-Amz-Expires=3600") == 1767229200.0
    assert upload_url_expiry("https://h/k?Expires=1767229200&Signature=x") == 1767229200.0
    assert upload_url_expiry("https://h/k") is None


@pytest.mark.parametrize(("service", "expected"), [("abs", 600.0), ("refinery", 60.0), ("gravity", 60.0)])
def test_the_default_poll_interval_is_the_services_advice(service: str, expected: float) -> None:
    from airflow.sdk.exceptions import TaskDeferred

    client = FakeClient(OperationState.IN_PROGRESS)
    client.service = service
    sensor = OperationStatusSensor(task_id="w", operation="op-1", topic="anzsco", deferrable=True)
    sensor.__dict__["hook"] = mock.Mock(client=client, service=service, default_topic="anzsco")
    with pytest.raises(TaskDeferred) as deferred:
        sensor.execute({"task_state_store": Store()})
    assert deferred.value.trigger.poll_interval == expected
    given = OperationStatusSensor(task_id="g", operation="op-1", topic="anzsco", poll_interval=0.5, deferrable=False)
    given.__dict__["hook"] = sensor.hook
    assert given._interval() == 0.5, "tests still go down to 0.5 s"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b'{"model": {"modelId": "m-1", "modelVersion": "2"}}', "m-1"),
        (b'{"model": "m-2"}', "m-2"),
        (b'{"modelId": "m-3", "other": [1]}', "m-3"),
        (b'{"model": {"id": 5}}', None),
        (b"[1, 2]", None),
        (b"not json at all", None),
        (b"", None),
    ],
)
def test_abs_metadata_of_any_shape_never_fails(raw: bytes, expected: str | None) -> None:
    from airflow_batchcode.services.abs.wire import metadata_model_id

    assert metadata_model_id(raw) == expected
