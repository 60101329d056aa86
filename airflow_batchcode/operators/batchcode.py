"""The three steps of a batch coding operation: create it, upload its manifest, download its results.

Each operator is retry-safe. What a try has done is recorded in Airflow's task state store
(which, unlike XCom, survives a retry), so a retried or cleared task picks up the remote
operation it already has instead of starting another.
"""

from __future__ import annotations

import calendar
import json
import re
import time
from collections.abc import Sequence
from functools import cached_property
from typing import Any
from urllib.parse import parse_qs, urlsplit

from airflow.sdk import BaseOperator

from airflow_batchcode.exceptions import (
    BatchCodeError,
    ConfigurationError,
    NotFoundError,
    UnexpectedResponseError,
    UploadRejectedError,
)
from airflow_batchcode.hooks.batchcode import BatchCodeHook
from airflow_batchcode.operation_ref import OperationRef, seal_upload, unseal_upload
from airflow_batchcode.sensors.batchcode import raise_for_outcome
from airflow_batchcode.services.base import Operation, OperationState, UploadTarget
from airflow_batchcode.storage import as_storage_path, open_for_reading, write_atomically

CREATED_KEY = "batchcode_operation"
METADATA_FILE = "metadata.json"
UPLOADED_KEY = "batchcode_uploaded"
OPERATION_FILE = "operation.json"
UPLOAD_URL_MARGIN = 300.0
"""A stored upload URL is reused only if it stays valid at least this many more seconds."""


def upload_url_expiry(url: str) -> float | None:
    """Epoch seconds at which a presigned URL expires (SigV4 or legacy form), if it says."""
    query = {key.lower(): values[0] for key, values in parse_qs(urlsplit(url).query).items()}
    if "expires" in query and query["expires"].isdigit():
        return float(query["expires"])
    date, expires = query.get("x-amz-date"), query.get("x-amz-expires")
    if date and expires and expires.isdigit():
        try:
            signed = calendar.timegm(time.strptime(date, "%Y%m%dT%H%M%SZ"))
        except ValueError:
            return None
        return signed + float(expires)
    return None


class _BatchCodeOperator(BaseOperator):
    """What the three operators share: the connection, the hook and the operation reference."""

    def __init__(self, *, batchcode_conn_id: str = BatchCodeHook.default_conn_name, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.batchcode_conn_id = batchcode_conn_id

    @cached_property
    def hook(self) -> BatchCodeHook:
        return BatchCodeHook(self.batchcode_conn_id)

    def _ref(self, operation: Any, topic: str | None, model: str | None) -> OperationRef:
        return OperationRef.parse(operation, topic=topic or self.hook.default_topic, model=model)


class CreateOperationOperator(_BatchCodeOperator):
    """Creates a remote batch coding operation and returns a reference to it for the next tasks.

    A retry re-attaches to the operation the first try created when it can still be used
    (awaiting input with a valid upload URL, or already uploaded), instead of creating a
    second one. The returned dict holds the operation id, topic and model in clear and the
    upload URL Fernet-encrypted.

    :param topic: the topic to code against (``anzsco`` or ``osca`` for ABS); defaults to the connection's.
    :param model: a model id; the service's latest model when ``None``.
    :param input_digest: a fingerprint of the manifest this operation is for; a retry re-attaches
        only to an operation made for the same fingerprint (so a re-extracted, changed chunk
        is never matched to stale results).
    :param manifest: the manifest, for services that take their input with the create call
        (Refinery, super.ai, Gravity: the connection's client has ``input_with_create``); ABS
        ignores it and takes the manifest in the upload task.
    :param batchcode_conn_id: the ``batchcode`` connection.
    """

    template_fields: Sequence[str] = ("topic", "model", "input_digest", "manifest", "batchcode_conn_id")
    ui_color = "#fff3d6"

    def __init__(
        self,
        *,
        topic: str | None = None,
        model: str | None = None,
        input_digest: str | None = None,
        manifest: Any = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.topic = topic
        self.model = model
        self.input_digest = input_digest
        self.manifest = manifest

    def execute(self, context: Any) -> dict[str, Any]:
        topic = self.topic or self.hook.default_topic
        if not topic:
            raise ConfigurationError("CreateOperationOperator needs a topic (argument or connection extra 'topic')")
        model = self.model or None
        store = context.get("task_state_store")
        previous = self._reusable(store.get(CREATED_KEY) if store is not None else None, topic, model)
        if previous is not None:
            return previous.to_xcom()
        target = self._create(topic, model, context)
        ref = OperationRef(
            operation_id=target.operation_id,
            topic=topic,
            model=model,
            service=self.hook.service,
            sealed_upload=seal_upload(target),
        )
        if store is not None:
            store.set(
                CREATED_KEY,
                {
                    **ref.to_xcom(),
                    "upload_expires": upload_url_expiry(target.upload_url),
                    "input_digest": self.input_digest or None,
                },
            )
        self.log.info("Created %s operation %s (topic %s)", self.hook.service, target.operation_id, topic)
        return ref.to_xcom()

    def _create(self, topic: str, model: str | None, context: Any) -> UploadTarget:
        client = self.hook.client
        if not client.input_with_create:
            return client.create_operation(topic, model)
        if self.manifest is None:
            raise ConfigurationError(
                f"The {self.hook.service} service takes its input when the operation is created: "
                "pass manifest= to CreateOperationOperator"
            )
        with open_for_reading(self.manifest) as source:
            return client.create_operation(
                topic, model, manifest=source, name=operation_name(context, self.input_digest)
            )

    def _reusable(self, stored: Any, topic: str, model: str | None) -> OperationRef | None:
        """The operation an earlier try created, if it can still be used for this task."""
        if not isinstance(stored, dict) or not stored.get("operation_id"):
            return None
        ref = OperationRef.parse(stored)
        if ref.topic != topic or ref.model != model:
            self.log.info("Earlier operation %s was for another topic/model; creating a new one", ref.operation_id)
            return None
        if (stored.get("input_digest") or None) != (self.input_digest or None):
            self.log.info("Earlier operation %s was for a different manifest; creating a new one", ref.operation_id)
            return None
        try:
            operation = self.hook.client.get_operation(ref.operation_id, topic, model)
        except BatchCodeError as exc:
            self.log.warning("Cannot check earlier operation %s (%s); creating a new one", ref.operation_id, exc)
            return None
        expires = stored.get("upload_expires")
        if operation.state is OperationState.AWAITING_INPUT:
            if expires is None or expires - time.time() > UPLOAD_URL_MARGIN:
                self.log.info("Re-attaching to operation %s, still awaiting input", ref.operation_id)
                return ref
            self.log.info(
                "Operation %s awaits input but its upload URL is expiring; creating a new one", ref.operation_id
            )
            return None
        if operation.state is OperationState.COMPLETE and not self._results_available(operation):
            self.log.warning(
                "Earlier operation %s is complete but its output is gone (the service deletes outputs within "
                "24 hours); creating a new one to code this chunk again",
                ref.operation_id,
            )
            return None
        if operation.state in (OperationState.IN_PROGRESS, OperationState.COMPLETE):
            self.log.info("Re-attaching to operation %s, already %s", ref.operation_id, operation.state.value)
            return ref
        self.log.warning("Earlier operation %s is %s; creating a new one", ref.operation_id, operation.state.value)
        return None

    def _results_available(self, operation: Operation) -> bool:
        return bool(self.hook.client.results_available(operation))


def operation_name(context: Any, digest: str | None) -> str:
    """A stable name for the remote operation of this task instance and input.

    The same on every try of the task (so a service that keeps names lets a retry find the job
    a lost response hid), different for another run, chunk or manifest content.
    """
    ti = context.get("ti") if hasattr(context, "get") else None
    parts = [
        str(getattr(ti, "dag_id", "") or ""),
        str(context.get("run_id", "") if hasattr(context, "get") else ""),
        str(getattr(ti, "task_id", "") or ""),
        str(getattr(ti, "map_index", -1)),
        (digest or "")[:16],
    ]
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", "__".join(part for part in parts if part))
    return name[:200] or "batchcode"


class UploadManifestOperator(_BatchCodeOperator):
    """Streams a JSONL manifest into an operation created by :class:`CreateOperationOperator`.

    Checks the operation's status first and never uploads into an operation that has left
    ``awaiting_input``: a retry after a successful upload (or a lost response) is a no-op.

    :param operation: the create task's output (it carries the encrypted upload URL).
    :param manifest: the manifest file: a local path, ``file://`` or object store URI, or ``ObjectStoragePath``.
    :param batchcode_conn_id: the ``batchcode`` connection.
    """

    template_fields: Sequence[str] = ("operation", "manifest", "batchcode_conn_id")
    ui_color = "#fff3d6"

    def __init__(self, *, operation: Any, manifest: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.operation = operation
        self.manifest = manifest

    def execute(self, context: Any) -> dict[str, Any]:
        ref = self._ref(self.operation, None, None)
        client = self.hook.client
        status = client.get_operation(ref.operation_id, ref.require_topic(), ref.model)
        if not status.state.accepts_input:
            return self._already_uploaded(ref, status.state, context)
        target: UploadTarget = unseal_upload(ref)
        started = time.monotonic()
        try:
            with open_for_reading(self.manifest) as source:
                sent = client.upload_manifest(target, source)
        except UploadRejectedError as exc:
            after = client.get_operation(ref.operation_id, ref.require_topic(), ref.model)
            if after.state in (OperationState.IN_PROGRESS, OperationState.COMPLETE):
                self.log.info("Upload was refused but operation %s already has its input (%s)", ref.operation_id, exc)
                return self._already_uploaded(ref, after.state, context)
            raise
        seconds = time.monotonic() - started
        self.log.info(
            "Uploaded %s (%.1f MB) into operation %s in %.1f s (%.1f MB/s)",
            as_storage_path(self.manifest),
            sent / 1e6,
            ref.operation_id,
            seconds,
            sent / 1e6 / max(seconds, 1e-6),
        )
        store = context.get("task_state_store")
        if store is not None:
            store.set(UPLOADED_KEY, {"operation_id": ref.operation_id, "bytes": sent})
        return {"operation_id": ref.operation_id, "bytes": sent}

    def _already_uploaded(self, ref: OperationRef, state: OperationState, context: Any) -> dict[str, Any]:
        if state in (OperationState.FAILED, OperationState.TIMED_OUT):
            raise_for_outcome(state.value, ref.operation_id, None)
        if self.hook.client.input_with_create:
            self.log.info(
                "Operation %s is %s: the %s service took its input with the create call; nothing to upload",
                ref.operation_id,
                state.value,
                self.hook.service,
            )
        else:
            self.log.info(
                "Operation %s is %s: its manifest is already uploaded, not sending it again",
                ref.operation_id,
                state.value,
            )
        store = context.get("task_state_store")
        recorded = store.get(UPLOADED_KEY) if store is not None else None
        sent = recorded.get("bytes") if isinstance(recorded, dict) else None
        return {"operation_id": ref.operation_id, "bytes": sent, "skipped": True}


class DownloadResultsOperator(_BatchCodeOperator):
    """Downloads a complete operation's output and metadata files to ``destination``.

    Download links are fetched fresh (ABS's expire after an hour), the files are streamed to
    disk, checked against ``Content-Length`` and then put in place whole: a retried download
    replaces the files, never appends to them.

    :param operation: the create task's output, or an operation id (then pass ``topic``).
    :param destination: a folder (local path or URI); the service's raw output (``output.jsonl``,
        or ``output.csv`` for Gravity), ``metadata.json`` (model, job object, usage) and
        ``operation.json`` (which operation, when) are written in it.
    :param topic: the operation's topic, when ``operation`` does not carry it.
    :param model: the operation's model, if one was named.
    :param batchcode_conn_id: the ``batchcode`` connection.
    """

    template_fields: Sequence[str] = ("operation", "destination", "topic", "model", "batchcode_conn_id")
    ui_color = "#e3f6e3"

    def __init__(
        self, *, operation: Any, destination: Any, topic: str | None = None, model: str | None = None, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.operation = operation
        self.destination = destination
        self.topic = topic
        self.model = model

    def execute(self, context: Any) -> dict[str, Any]:
        ref = self._ref(self.operation, self.topic, self.model)
        folder = as_storage_path(self.destination)
        client = self.hook.client
        output, metadata = folder / client.output_name, folder / METADATA_FILE
        started = time.monotonic()
        self._complete_operation(ref)
        sizes: tuple[int, int] = (0, 0)

        def fetch(output_sink: Any) -> None:
            def fetch_both(metadata_sink: Any) -> None:
                nonlocal sizes
                sizes = client.download_results(
                    ref.operation_id, ref.require_topic(), output_sink, metadata_sink, model=ref.model
                )

            write_atomically(metadata, fetch_both)

        try:
            write_atomically(output, fetch)
        except NotFoundError as exc:
            raise NotFoundError(
                "The operation's results are gone: the service deletes them some time after completion "
                "(ABS within 24 hours). Clear the whole chunk task group to code the chunk again",
                status_code=exc.status_code,
                service_message=exc.service_message,
                operation_id=ref.operation_id,
            ) from None
        self.log.info(
            "Downloaded operation %s: %s (%.1f MB) and %s in %.1f s",
            ref.operation_id,
            output,
            sizes[0] / 1e6,
            metadata,
            time.monotonic() - started,
        )
        provenance = {
            "service": self.hook.service,
            "operation_id": ref.operation_id,
            "topic": ref.topic,
            "model": ref.model,
            "output": client.output_name,
            "output_bytes": sizes[0],
            "downloaded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        write_atomically(folder / OPERATION_FILE, lambda sink: sink.write(json.dumps(provenance).encode()))
        return {
            "operation_id": ref.operation_id,
            "output": str(output),
            "metadata": str(metadata),
            "output_bytes": sizes[0],
            "metadata_bytes": sizes[1],
        }

    def _complete_operation(self, ref: OperationRef) -> Operation:
        """A fresh status of a complete operation (fresh download URLs); typed errors otherwise."""
        operation = self.hook.client.get_operation(ref.operation_id, ref.require_topic(), ref.model)
        if operation.state is not OperationState.COMPLETE:
            raise_for_outcome(operation.state.value, ref.operation_id, operation.error)
            raise UnexpectedResponseError(
                f"Operation {ref.operation_id} is {operation.state.value}: nothing to download yet "
                "(run the wait task first)"
            )
        return operation
