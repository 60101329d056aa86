"""The hook's lifecycle policy without an Airflow task context: create or re-attach, upload once,
require complete, download to a folder (a fake client at the service boundary, a dict as the state store)."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path
from typing import IO, Any

import pytest

from airflow_batchcode.chunks import ChunkResult
from airflow_batchcode.exceptions import (
    NotFoundError,
    OperationFailedError,
    OperationTimedOutError,
    UnexpectedResponseError,
    UploadRejectedError,
)
from airflow_batchcode.hooks.lifecycle import CREATED_KEY, UPLOAD_URL_MARGIN, UPLOADED_KEY
from airflow_batchcode.operation_ref import OperationRef, seal_upload, unseal_upload
from airflow_batchcode.services.base import Operation, OperationState, UploadTarget
from airflow_batchcode.staging import OPERATION_FILE, Provenance
from tests.fakes import FakeClient, FakeInputWithCreateClient, Store, hook_with


def stored(store: Store, **fields: Any) -> None:
    store.set(CREATED_KEY, {"operation_id": "op-0", "topic": "anzsco", **fields})


def sealed_ref(operation_id: str = "op-1") -> OperationRef:
    return OperationRef(operation_id, "anzsco", sealed_upload=seal_upload(UploadTarget(operation_id, "https://u", "k")))


# create or re-attach ---------------------------------------------------------------------------


def test_a_first_create_makes_and_records_an_operation_with_its_url_sealed() -> None:
    client, store = FakeClient(), Store()
    ref = hook_with(client).create_or_reattach("anzsco", None, input_digest="d1", store=store)
    assert (ref.operation_id, ref.topic, ref.service, client.created) == ("op-1", "anzsco", "abs", 1)
    record = store.data[CREATED_KEY]
    assert record["operation_id"] == "op-1" and record["input_digest"] == "d1"
    assert record["upload_expires"] == pytest.approx(time.time() + 3600, abs=5)
    assert "https://" not in json.dumps(record) and "https://" not in json.dumps(ref.to_xcom())
    assert unseal_upload(ref).upload_url.startswith("https://s3.example/in")


@pytest.mark.parametrize(
    ("state", "expires_in", "reused"),
    [
        (OperationState.AWAITING_INPUT, UPLOAD_URL_MARGIN + 60, True),
        (OperationState.AWAITING_INPUT, UPLOAD_URL_MARGIN - 60, False),
        (OperationState.IN_PROGRESS, -10, True),
        (OperationState.COMPLETE, -10, True),
        (OperationState.FAILED, 3000, False),
        (OperationState.TIMED_OUT, 3000, False),
    ],
)
def test_a_retry_reattaches_only_to_a_usable_operation(state: OperationState, expires_in: int, reused: bool) -> None:
    client, store = FakeClient(state), Store()
    stored(store, upload_expires=time.time() + expires_in)
    ref = hook_with(client).create_or_reattach("anzsco", store=store)
    assert ref.operation_id == ("op-0" if reused else "op-1")
    assert client.created == (0 if reused else 1)
    assert store.data[CREATED_KEY]["operation_id"] == ref.operation_id


def test_an_awaiting_operation_without_a_known_expiry_is_reused() -> None:
    client, store = FakeClient(), Store()
    stored(store)
    assert hook_with(client).create_or_reattach("anzsco", store=store).operation_id == "op-0"


@pytest.mark.parametrize(
    ("record", "topic", "model", "digest"),
    [
        ({}, "osca", None, None),
        ({"model": "m1"}, "anzsco", "m2", None),
        ({"input_digest": "old"}, "anzsco", None, "new"),
        ({}, "anzsco", None, "new"),
    ],
)
def test_an_operation_for_another_topic_model_or_input_is_not_reused(
    record: dict[str, Any], topic: str, model: str | None, digest: str | None
) -> None:
    client, store = FakeClient(OperationState.IN_PROGRESS), Store()
    stored(store, **record)
    ref = hook_with(client).create_or_reattach(topic, model, input_digest=digest, store=store)
    assert ref.operation_id == "op-1" and client.status_calls == 0, "decided without asking the service"


def test_a_complete_operation_whose_results_are_gone_is_replaced() -> None:
    client, store = FakeClient(OperationState.COMPLETE, outputs_kept=False), Store()
    stored(store)
    assert hook_with(client).create_or_reattach("anzsco", store=store).operation_id == "op-1"


def test_an_earlier_operation_that_cannot_be_checked_is_replaced() -> None:
    class Unreachable(FakeClient):
        def get_operation(self, operation_id: str, topic: str, model: str | None = None) -> Operation:
            raise NotFoundError("no such operation", status_code=404)

    client, store = Unreachable(), Store()
    stored(store)
    assert hook_with(client).create_or_reattach("anzsco", store=store).operation_id == "op-1"


def test_without_a_store_every_call_creates() -> None:
    client = FakeClient()
    hook = hook_with(client)
    assert [hook.create_or_reattach("anzsco").operation_id for _ in range(2)] == ["op-1", "op-2"]


def test_input_with_create_sends_the_manifest_and_name_once(tmp_path: Path) -> None:
    client, store = FakeInputWithCreateClient(), Store()
    manifest = tmp_path / "m.jsonl"
    manifest.write_text('{"occp_text":"nurse","tasks_text":""}\n')
    hook = hook_with(client)
    first = hook.create_or_reattach("anzsco", input_digest="d", manifest=str(manifest), name="run-1", store=store)
    again = hook.create_or_reattach("anzsco", input_digest="d", manifest=str(manifest), name="run-1", store=store)
    assert first.operation_id == again.operation_id == "job-1"
    assert client.sent == [(manifest.read_bytes(), "run-1")]


def test_input_with_create_without_a_manifest_is_a_configuration_error() -> None:
    with pytest.raises(Exception, match="pass manifest="):
        hook_with(FakeInputWithCreateClient()).create_or_reattach("anzsco")


# upload once -----------------------------------------------------------------------------------


def test_upload_sends_into_an_awaiting_operation_and_records_it(tmp_path: Path) -> None:
    client, store = FakeClient(), Store()
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("{}\n")
    result = hook_with(client).upload_once(sealed_ref(), str(manifest), store=store)
    assert result == {"operation_id": "op-1", "bytes": 10} and client.uploads == 1
    assert store.data[UPLOADED_KEY] == {"operation_id": "op-1", "bytes": 10}


@pytest.mark.parametrize("state", [OperationState.IN_PROGRESS, OperationState.COMPLETE])
def test_upload_into_an_operation_past_awaiting_input_is_a_no_op(state: OperationState) -> None:
    client, store = FakeClient(state), Store()
    store.set(UPLOADED_KEY, {"operation_id": "op-1", "bytes": 123})
    result = hook_with(client).upload_once(sealed_ref(), "never-read.jsonl", store=store)
    assert result == {"operation_id": "op-1", "bytes": 123, "skipped": True} and client.uploads == 0


@pytest.mark.parametrize(
    ("state", "error"),
    [(OperationState.FAILED, OperationFailedError), (OperationState.TIMED_OUT, OperationTimedOutError)],
)
def test_upload_into_an_ended_operation_raises_the_typed_error(state: OperationState, error: type) -> None:
    with pytest.raises(error, match="op-1"):
        hook_with(FakeClient(state)).upload_once(sealed_ref(), "never-read.jsonl")


def test_a_refused_upload_of_an_operation_that_has_its_input_is_a_no_op(tmp_path: Path) -> None:
    class LostAnswer(FakeClient):
        """The first upload went through, its answer was lost; the retry is refused."""

        def upload_manifest(self, target: UploadTarget, manifest: Any) -> int:
            self.state = OperationState.IN_PROGRESS
            raise UploadRejectedError("already uploaded", status_code=403)

    manifest = tmp_path / "m.jsonl"
    manifest.write_text("{}\n")
    result = hook_with(LostAnswer()).upload_once(sealed_ref(), str(manifest))
    assert result["skipped"] and result["bytes"] is None


def test_a_refused_upload_of_an_operation_still_awaiting_input_raises(tmp_path: Path) -> None:
    class Refusing(FakeClient):
        def upload_manifest(self, target: UploadTarget, manifest: Any) -> int:
            raise UploadRejectedError("signature expired", status_code=403)

    manifest = tmp_path / "m.jsonl"
    manifest.write_text("{}\n")
    with pytest.raises(UploadRejectedError):
        hook_with(Refusing()).upload_once(sealed_ref(), str(manifest))


# require complete and download -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("state", "error"),
    [
        (OperationState.AWAITING_INPUT, UnexpectedResponseError),
        (OperationState.IN_PROGRESS, UnexpectedResponseError),
        (OperationState.FAILED, OperationFailedError),
        (OperationState.TIMED_OUT, OperationTimedOutError),
    ],
)
def test_require_complete_raises_the_typed_error_for_any_other_state(state: OperationState, error: type) -> None:
    with pytest.raises(error, match="op-1"):
        hook_with(FakeClient(state)).require_complete(OperationRef("op-1", "anzsco"))


class Downloading(FakeClient):
    """A complete operation whose results download as given (or are gone)."""

    def __init__(self, output: bytes = b'{"recordId":"1"}\n', *, gone: bool = False) -> None:
        super().__init__(OperationState.COMPLETE)
        self.output, self.gone, self.downloads = output, gone, 0

    def download_results(
        self, operation_id: str, topic: str, output: IO[bytes], metadata: IO[bytes] | None = None, model: Any = None
    ) -> tuple[int, int]:
        self.downloads += 1
        if self.gone:
            raise NotFoundError("NoSuchKey", status_code=404)
        output.write(self.output)
        assert metadata is not None
        metadata.write(b'{"recordCount": 1}')
        return len(self.output), 18


def test_download_writes_the_files_then_operation_json_and_returns_the_chunk_result(tmp_path: Path) -> None:
    client = Downloading()
    ref = OperationRef("op-1", "anzsco", "m1")
    result = hook_with(client).download_to(ref, str(tmp_path / "chunk-00001/"))
    folder = tmp_path / "chunk-00001"
    assert (folder / "output.jsonl").read_bytes() == client.output
    assert json.loads((folder / "metadata.json").read_text()) == {"recordCount": 1}
    provenance = Provenance.from_json((folder / OPERATION_FILE).read_bytes())
    assert (provenance.service, provenance.operation_id, provenance.topic, provenance.model) == (
        "abs",
        "op-1",
        "anzsco",
        "m1",
    )
    assert provenance.output == "output.jsonl" and provenance.output_bytes == len(client.output)
    assert result.provenance == provenance and result.metadata_bytes == 18
    xcom = result.to_xcom()
    assert xcom["output"].endswith("chunk-00001/output.jsonl") and xcom["metadata"].endswith(
        "chunk-00001/metadata.json"
    )
    assert ChunkResult.from_xcom(xcom) == result
    assert sorted(p.name for p in folder.iterdir()) == ["metadata.json", "operation.json", "output.jsonl"]


def test_a_repeated_download_replaces_the_files(tmp_path: Path) -> None:
    hook = hook_with(Downloading())
    for _ in range(2):
        hook.download_to(OperationRef("op-1", "anzsco"), str(tmp_path))
    assert (tmp_path / "output.jsonl").read_text().count("\n") == 1


def test_results_gone_is_a_not_found_error_saying_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match="Clear the whole chunk task group") as info:
        hook_with(Downloading(gone=True)).download_to(OperationRef("op-1", "anzsco"), str(tmp_path))
    assert info.value.operation_id == "op-1"
    assert not (tmp_path / OPERATION_FILE).exists() and not (tmp_path / "output.jsonl").exists()


def test_download_of_an_incomplete_operation_downloads_nothing(tmp_path: Path) -> None:
    client = Downloading()
    client.state = OperationState.IN_PROGRESS
    with pytest.raises(UnexpectedResponseError, match="run the wait task first"):
        hook_with(client).download_to(OperationRef("op-1", "anzsco"), str(tmp_path))
    assert client.downloads == 0 and list(tmp_path.iterdir()) == []


def test_chunk_result_reads_an_earlier_release_download_xcom() -> None:
    old = {
        "operation_id": "op-1",
        "output": "file:///s/run/chunk-00001/output.jsonl",
        "metadata": "file:///s/run/chunk-00001/metadata.json",
        "output_bytes": 5,
        "metadata_bytes": 2,
    }
    result = ChunkResult.from_xcom(old)
    assert result.output == old["output"] and result.metadata == old["metadata"]
    assert {key: result.to_xcom()[key] for key in old} == old
    assert io.BytesIO(result.provenance.to_json()).read().startswith(b'{"service":""')
