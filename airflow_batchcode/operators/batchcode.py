"""The three steps of a batch coding operation: create it, upload its manifest, download its results.

Each operator is retry-safe and thin: the hook applies the lifecycle policy
(:mod:`airflow_batchcode.hooks.lifecycle`), and what a try has done is recorded in Airflow's
task state store (which, unlike XCom, survives a retry), so a retried or cleared task picks up
the remote operation it already has instead of starting another.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import cached_property
from typing import Any

from airflow.sdk import BaseOperator

from airflow_batchcode.exceptions import ConfigurationError
from airflow_batchcode.hooks.batchcode import BatchCodeHook
from airflow_batchcode.hooks.lifecycle import CREATED_KEY, UPLOAD_URL_MARGIN, UPLOADED_KEY, upload_url_expiry
from airflow_batchcode.operation_ref import OperationRef
from airflow_batchcode.staging import METADATA_FILE, OPERATION_FILE

__all__ = [
    "CREATED_KEY",
    "METADATA_FILE",
    "OPERATION_FILE",
    "UPLOADED_KEY",
    "UPLOAD_URL_MARGIN",
    "CreateOperationOperator",
    "DownloadResultsOperator",
    "UploadManifestOperator",
    "operation_name",
    "upload_url_expiry",
]


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
        ref = self.hook.create_or_reattach(
            topic,
            self.model or None,
            input_digest=self.input_digest,
            manifest=self.manifest,
            name=operation_name(context, self.input_digest),
            store=context.get("task_state_store"),
        )
        return ref.to_xcom()


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
        return self.hook.upload_once(ref, self.manifest, store=context.get("task_state_store"))


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
        return self.hook.download_to(ref, self.destination).to_xcom()
