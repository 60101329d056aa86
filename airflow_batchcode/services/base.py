"""What every batch coding service has in common: states, operations, and the client protocol.

No Airflow imports here: ``services/`` is the wire contract only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import IO, Any, Protocol, runtime_checkable


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


@runtime_checkable
class BatchCodeClient(Protocol):
    """The synchronous client every service implements."""

    service: str

    def create_operation(self, topic: str, model: str | None = None) -> UploadTarget:
        """Create a remote operation that will take one manifest."""
        ...

    def upload_manifest(self, target: UploadTarget, manifest: IO[bytes] | Path) -> int:
        """Stream the manifest into the operation; return the bytes sent."""
        ...

    def get_operation(self, operation_id: str, topic: str, model: str | None = None) -> Operation:
        """Fetch the operation's current status."""
        ...

    def download(self, url: str, sink: IO[bytes]) -> int:
        """Stream a (presigned) result URL into ``sink``; return the bytes written."""
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
