"""What the pipeline's tasks hand each other through XCom about chunks, typed.

XCom carries plain JSON-able dicts (so running DAGs and retries of tasks written by an earlier
release keep working); these classes are what the code reads and writes on either side::

    extract ──ExtractSummary (chunks: [Chunk])──► chunks ──Chunk.mapping()──► code_chunk[i]
    download ──ChunkResult──► (XCom; operation.json in the chunk's results folder) ──► load
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from airflow_batchcode.exceptions import ConfigurationError
from airflow_batchcode.staging import METADATA_FILE, ChunkPaths, Provenance


@dataclass(frozen=True)
class Chunk:
    """One manifest file: one remote operation.

    :param index: the chunk's number, from 1.
    :param manifest: the manifest's location.
    :param positions: its positions sidecar.
    :param results: the folder its results are downloaded into.
    :param records: the manifest's lines.
    :param bytes: the manifest's size.
    :param digest: SHA-256 of the manifest's bytes: a retried create re-attaches only to an
        operation fed this content.
    """

    index: int
    manifest: str
    positions: str
    results: str
    records: int
    bytes: int
    digest: str = ""

    def __post_init__(self) -> None:
        if self.index < 1 or self.records < 0 or self.bytes < 0:
            raise ConfigurationError(f"not a chunk: index {self.index}, {self.records} records, {self.bytes} bytes")

    @classmethod
    def empty(cls, paths: ChunkPaths, index: int) -> Chunk:
        """A chunk just opened for writing."""
        return cls(index, paths.manifest, paths.positions, paths.results, 0, 0)

    def to_xcom(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_xcom(cls, value: Mapping[str, Any]) -> Chunk:
        try:
            return cls(
                index=int(value["index"]),
                manifest=str(value["manifest"]),
                positions=str(value["positions"]),
                results=str(value["results"]),
                records=int(value["records"]),
                bytes=int(value["bytes"]),
                digest=str(value.get("digest") or ""),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigurationError(f"not a chunk from the extract task: {exc!r}") from None

    def mapping(self) -> dict[str, str]:
        """The arguments of this chunk's ``code_chunk`` task group (Airflow cannot map over a key of a dict)."""
        return {"manifest": self.manifest, "results": self.results, "digest": self.digest}


@dataclass
class ExtractSummary:
    """What an extract produced (filled in while it runs).

    :param rows: records read.
    :param sent: records written to manifests.
    :param rejected: records caught before upload (in ``rejects``).
    :param sanitized: records sanitising changed.
    :param rejects: the rejected-records file.
    :param chunks: the manifests written.
    :param distinct: distinct texts among the records that passed the rules.
    :param duplicates: records not sent because an earlier record of the run has the same texts.
    :param cached: records not sent because the result cache holds their outcome.
    :param reused: the reused-rows file (``""`` when nothing is reused: no de-duplication, cache or re-code).
    :param model: the model the run codes with (resolved before the extract when the cache is on).
    :param realtime: the chunks go to the service's real-time endpoint, not to remote operations.
    """

    rows: int = 0
    sent: int = 0
    rejected: int = 0
    sanitized: int = 0
    rejects: str = ""
    chunks: list[Chunk] = field(default_factory=list)
    distinct: int = 0
    duplicates: int = 0
    cached: int = 0
    reused: str = ""
    model: str | None = None
    realtime: bool = False

    def to_xcom(self) -> dict[str, Any]:
        return {**asdict(self), "chunks": [c.to_xcom() for c in self.chunks]}

    @classmethod
    def from_xcom(cls, value: Mapping[str, Any]) -> ExtractSummary:
        try:
            return cls(
                rows=int(value["rows"]),
                sent=int(value.get("sent", 0)),
                rejected=int(value.get("rejected", 0)),
                sanitized=int(value.get("sanitized", 0)),
                rejects=str(value["rejects"]),
                chunks=[Chunk.from_xcom(chunk) for chunk in value["chunks"]],
                distinct=int(value.get("distinct", 0)),
                duplicates=int(value.get("duplicates", 0)),
                cached=int(value.get("cached", 0)),
                reused=str(value.get("reused") or ""),
                model=value.get("model") or None,
                realtime=bool(value.get("realtime", False)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigurationError(f"not the extract task's summary: {exc!r}") from None


@dataclass(frozen=True)
class ChunkResult:
    """A downloaded chunk: the results folder's files and the operation they came from.

    :param folder: the results folder (path or URI).
    :param provenance: its ``operation.json``.
    :param metadata_bytes: the size of ``metadata.json``.
    """

    folder: str
    provenance: Provenance
    metadata_bytes: int = 0

    @property
    def output(self) -> str:
        """The raw output file."""
        return f"{self.folder.rstrip('/')}/{self.provenance.output}"

    @property
    def metadata(self) -> str:
        """The ``metadata.json`` file."""
        return f"{self.folder.rstrip('/')}/{METADATA_FILE}"

    def to_xcom(self) -> dict[str, Any]:
        """The download task's return value."""
        provenance = self.provenance
        return {
            "operation_id": provenance.operation_id,
            "output": self.output,
            "metadata": self.metadata,
            "output_bytes": provenance.output_bytes,
            "metadata_bytes": self.metadata_bytes,
            "service": provenance.service,
            "topic": provenance.topic,
            "model": provenance.model,
            "downloaded_at": provenance.downloaded_at,
        }

    @classmethod
    def from_xcom(cls, value: Mapping[str, Any]) -> ChunkResult:
        """Read the download task's return value (one of an earlier release lacks the provenance keys)."""
        try:
            folder, _, name = str(value["output"]).rpartition("/")
            provenance = Provenance(
                service=str(value.get("service") or ""),
                operation_id=str(value["operation_id"]),
                topic=str(value.get("topic") or ""),
                model=value.get("model"),
                output=name,
                output_bytes=int(value.get("output_bytes") or 0),
                downloaded_at=str(value.get("downloaded_at") or ""),
            )
            return cls(folder, provenance, int(value.get("metadata_bytes") or 0))
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigurationError(f"not the download task's result: {exc!r}") from None
