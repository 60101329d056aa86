"""What every batch coding service has in common: states, operations, and the client protocol.

No Airflow imports here: ``services/`` is the wire contract only.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import IO, Any, Protocol, Self, runtime_checkable


class OperationState(StrEnum):
    """The life of a remote batch operation, shared by every service.

    ABS names these states itself; other services' states are mapped onto them.
    """

    AWAITING_INPUT = "awaiting_input"
    IN_PROGRESS = "in_progress"
    COMPLETE = "complete"
    FAILED = "failed"
    TIMED_OUT = "timed_out"

    def is_terminal(self) -> bool:
        """True when the operation will not change any more."""
        return self in _TERMINAL

    def is_in_progress(self) -> bool:
        """True while the operation waits for input or is being coded."""
        return not self.is_terminal()

    @property
    def accepts_input(self) -> bool:
        """True while a manifest may still be uploaded into the operation."""
        return self is OperationState.AWAITING_INPUT


_TERMINAL = frozenset({OperationState.COMPLETE, OperationState.FAILED, OperationState.TIMED_OUT})


@dataclass(frozen=True)
class UploadTarget:
    """Where and how to upload the input of a newly created operation.

    ``upload_url`` is a presigned URL: a secret. ``repr`` hides it.
    """

    operation_id: str
    upload_url: str = field(repr=False)
    kms_key_arn: str = field(default="", repr=False)


@dataclass(frozen=True)
class Operation:
    """A snapshot of a remote operation's status.

    Download URLs are presigned secrets (hidden from ``repr``) and expire: ask for a fresh
    status right before downloading.
    """

    operation_id: str
    state: OperationState
    error: str | None = None
    response_url: str | None = field(default=None, repr=False)
    metadata_url: str | None = field(default=None, repr=False)
    raw_status: str = ""
    progress: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> str:
        """One human line for logs, free of secrets."""
        text = f"operation {self.operation_id} is {self.state.value}"
        if self.raw_status and self.raw_status != self.state.value:
            text += f" (service status {self.raw_status!r})"
        if self.progress:
            text += " " + ", ".join(f"{k}={v}" for k, v in self.progress.items())
        if self.error:
            text += f": {self.error}"
        return text


@dataclass(frozen=True)
class DownloadedResults:
    """Where a completed operation's files were written, and their sizes in bytes."""

    output_path: Path
    output_bytes: int
    metadata_path: Path | None = None
    metadata_bytes: int = 0


SecretCallback = Callable[[str], None]
"""Called with every secret a client learns (tokens, presigned URLs) so a caller can mask it."""

ManifestSource = IO[bytes] | Path
"""A manifest: an open binary file or a local path."""


@dataclass(frozen=True)
class StagedInput:
    """A manifest copied to object storage for a service that reads its input from there.

    :param url: ``s3://``, ``gs://`` or ``https://`` location the service will read.
    :param credentials: what the service needs to read it (secrets: hidden from ``repr``).
    """

    url: str
    credentials: dict[str, Any] = field(default_factory=dict, repr=False)


@runtime_checkable
class ObjectStore(Protocol):
    """Object storage a service reads its input from or delivers its results to.

    Built on the Airflow side (the hook makes one from the connection's ``manifest_location``
    and ``storage_conn_id``) and handed to clients, which stay free of Airflow imports.
    """

    def stage(self, source: ManifestSource, name: str) -> StagedInput:
        """Copy ``source`` (streamed) to the store as object ``name``; where it is and how to read it."""
        ...

    def open(self, url: str) -> AbstractContextManager[IO[bytes]]:
        """Open an object of the store (``s3://bucket/key``) for streaming reads."""
        ...

    def put(self, name: str, data: bytes, content_type: str = "application/json") -> str:
        """Store a small object ``name`` beside the staged manifests; return its URL (``s3://`` or ``gs://``).

        (A store that can also presign reads offers ``presign(url, expires_in) -> str``.)
        """
        ...


class Closing:
    """Lets a client be used in ``with``: leaving the block calls its :meth:`close`."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Release connections."""


@runtime_checkable
class BatchCodeClient(Protocol):
    """The synchronous client every service implements.

    Two shapes of service fit behind it. ABS creates an empty operation and takes the manifest
    by a later upload (``input_with_create`` False). Refinery, super.ai and Gravity take their
    input with the create call itself (``input_with_create`` True): ``create_operation`` gets
    the manifest, the operation it returns already has its input, and ``upload_manifest`` is
    never needed (the upload operator sees the operation is past ``awaiting_input``).

    The manifest every client reads is the pipeline's canonical JSONL: one object per line with
    ``occp_text``, ``tasks_text`` and optionally ``recordId``. Clients of other services turn it
    into their own input format, carrying each line's 0-based number so results join back.
    """

    service: str
    input_with_create: bool
    output_name: str
    """File name of the raw output written by :meth:`download_results` (``output.jsonl``, ``output.csv``)."""

    def create_operation(
        self, topic: str, model: str | None = None, *, manifest: ManifestSource | None = None, name: str | None = None
    ) -> UploadTarget:
        """Create a remote operation; services with ``input_with_create`` send ``manifest`` with it.

        :param name: a stable name for the operation (the chunk's digest), where the service keeps one.
        """
        ...

    def upload_manifest(self, target: UploadTarget, manifest: ManifestSource) -> int:
        """Stream the manifest into the operation; return the bytes sent."""
        ...

    def get_operation(self, operation_id: str, topic: str, model: str | None = None) -> Operation:
        """Fetch the operation's current status."""
        ...

    def results_available(self, operation: Operation) -> bool:
        """Whether a complete operation's results can still be downloaded (services delete them)."""
        ...

    def download_results(
        self,
        operation_id: str,
        topic: str,
        output: IO[bytes],
        metadata: IO[bytes] | None = None,
        model: str | None = None,
    ) -> tuple[int, int]:
        """Stream a complete operation's raw output into ``output`` and what the service says about the
        operation (model, job object, usage, per-input errors) as JSON into ``metadata``.

        :return: bytes written to each.
        """
        ...

    def close(self) -> None:
        """Release connections."""
        ...


@runtime_checkable
class AsyncBatchCodeClient(Protocol):
    """The async status client the trigger uses; it never blocks the event loop."""

    service: str

    async def get_operation(self, operation_id: str, topic: str, model: str | None = None) -> Operation:
        """Fetch the operation's current status."""
        ...

    async def aclose(self) -> None:
        """Release connections."""
        ...
