"""The staging layout: every file a run leaves in its staging folder, named and formatted here only.

The extract writes, the download adds, and the load reads::

    <staging>/<dag_id>/<run_id>/
        chunk-00001.jsonl        the manifest: canonical JSONL {"recordId"?, "occp_text", "tasks_text"}
        chunk-00001.positions    one line per manifest line: "<position>\\t<note>\\n" (note may be empty)
        chunk-00001/             the chunk's results folder
            output.jsonl         the service's raw output (named by its client: output.csv for Gravity)
            metadata.json        what the service says about the operation (model, job, usage)
            operation.json       which operation produced the output, and when (:class:`Provenance`)
        rejected.jsonl           records caught before upload, one :class:`Rejected` per line
        reused.jsonl             rows not sent as they are: duplicates, cache hits, re-codes (:class:`Reused`)

Writers and readers both go through this module, so a change of layout or line format is
made once.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import msgspec

from airflow_batchcode.exceptions import UnexpectedResponseError

METADATA_FILE = "metadata.json"
OPERATION_FILE = "operation.json"
REJECTED_FILE = "rejected.jsonl"
REUSED_FILE = "reused.jsonl"
DEFAULT_OUTPUT = "output.jsonl"
"""The raw output's name when ``operation.json`` does not say (files staged before it did)."""


@dataclass(frozen=True)
class ChunkPaths:
    """Where one chunk's files are.

    :param manifest: the manifest (JSONL).
    :param positions: its positions sidecar.
    :param results: the folder the download task fills (ends with ``/``).
    """

    manifest: str
    positions: str
    results: str

    @classmethod
    def of(cls, folder: str, index: int) -> ChunkPaths:
        """The files of chunk ``index`` (from 1) of the run staged under ``folder``."""
        base = f"{folder.rstrip('/')}/chunk-{index:05d}"
        return cls(manifest=f"{base}.jsonl", positions=f"{base}.positions", results=f"{base}/")


def rejects_path(folder: str) -> str:
    """The rejected-records file of the run staged under ``folder``."""
    return f"{folder.rstrip('/')}/{REJECTED_FILE}"


# positions sidecar -----------------------------------------------------------------------------


def position_line(position: int, note: str | None) -> bytes:
    """The sidecar line of one record."""
    return f"{position}\t{note or ''}\n".encode()


def position_lines(positions: Sequence[int], notes: Mapping[int, str], offset: int) -> bytes:
    """The sidecar lines of a run of records (``notes`` indexed from ``offset``), built at once."""
    if not notes:
        return (("%d\t\n" * len(positions)) % tuple(positions)).encode()
    return b"".join(position_line(position, notes.get(offset + i)) for i, position in enumerate(positions))


def read_positions(lines: Iterable[bytes]) -> Iterator[tuple[int, str | None]]:
    """``(position, note)`` of each sidecar line, in order (``note`` is ``None`` when empty)."""
    for raw in lines:
        where, _, noted = raw.rstrip(b"\n").partition(b"\t")
        yield int(where), noted.decode() if noted else None


# rejected records -----------------------------------------------------------------------------


class Rejected(msgspec.Struct, kw_only=True):
    """A record caught before upload: where it was, what it held and why it was not sent."""

    position: int
    recordId: str | None = None  # the manifest's field name
    occp_text: str | None = None
    tasks_text: str | None = None
    error: str
    note: str | None = None


_encode = msgspec.json.Encoder().encode
_decode_rejected = msgspec.json.Decoder(Rejected).decode


def rejected_line(record: Rejected) -> bytes:
    """One line of ``rejected.jsonl``."""
    return _encode(record) + b"\n"


def read_rejected(lines: Iterable[bytes]) -> Iterator[Rejected]:
    """The records of ``rejected.jsonl``, in order."""
    for line in lines:
        yield _decode_rejected(line)


# reused rows ---------------------------------------------------------------------------------

SENT = "sent"
DUPLICATE = "duplicate"
CACHED = "cache"
REJECTED = "rejected"


class Reused(msgspec.Struct, array_like=True):
    """One line of ``reused.jsonl``: a row the load fills in the database rather than from a result file.

    :param position: the row's position in the extract.
    :param kind: ``duplicate`` (same texts as the row at ``first``), ``cache`` (an earlier run's
        outcome for ``digest``), or ``sent`` / ``rejected`` (listed for their ``digest`` or ``recode_of``).
    :param digest: the texts' digest (:func:`airflow_batchcode.dedupe.text_digest`).
    :param first: the position of the first row of the run with the same texts (duplicates).
    :param record_id: the row's record id.
    :param note: what sanitising changed in this row.
    :param recode_of: the earlier run this row re-codes.
    """

    position: int
    kind: str
    digest: str | None = None
    first: int | None = None
    record_id: str | None = None
    note: str | None = None
    recode_of: str | None = None


def reused_path(folder: str) -> str:
    """The reused-rows file of the run staged under ``folder``."""
    return f"{folder.rstrip('/')}/{REUSED_FILE}"


def reused_line(record: Reused) -> bytes:
    """One line of ``reused.jsonl``."""
    return _encode(record) + b"\n"


_decode_reused = msgspec.json.Decoder(Reused).decode


def read_reused(lines: Iterable[bytes]) -> Iterator[Reused]:
    """The records of ``reused.jsonl``, in order."""
    for line in lines:
        yield _decode_reused(line)


# operation.json -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Provenance:
    """``operation.json``: which operation a results folder came from, written after its files are in place.

    :param service: the service's name.
    :param operation_id: the remote operation.
    :param topic: the topic it coded against.
    :param model: the model named at creation, if any.
    :param output: the raw output's file name in the folder.
    :param output_bytes: the raw output's size.
    :param downloaded_at: when, as ``YYYY-MM-DDTHH:MM:SSZ``.
    :param source: ``batch`` (a remote operation) or ``realtime`` (coded through the real-time
        endpoint: ``operation_id`` then names the call, not a remote operation).
    """

    service: str
    operation_id: str
    topic: str
    model: str | None = None
    output: str = DEFAULT_OUTPUT
    output_bytes: int = 0
    downloaded_at: str = ""
    source: str = "batch"

    def __post_init__(self) -> None:
        if not self.operation_id:
            raise UnexpectedResponseError("operation.json names no operation")

    def to_json(self) -> bytes:
        """The file's content."""
        return msgspec.json.encode(asdict(self))

    @classmethod
    def from_json(cls, data: bytes | str) -> Provenance:
        """Read the file's content (older files may lack ``service`` or ``output``)."""
        try:
            value: Any = msgspec.json.decode(data)
        except msgspec.DecodeError:
            raise UnexpectedResponseError("operation.json is not JSON") from None
        if not isinstance(value, dict) or not value.get("operation_id"):
            raise UnexpectedResponseError("operation.json names no operation")
        return cls(
            service=str(value.get("service") or ""),
            operation_id=str(value["operation_id"]),
            topic=str(value.get("topic") or ""),
            model=value.get("model"),
            output=str(value.get("output") or DEFAULT_OUTPUT),
            output_bytes=int(value.get("output_bytes") or 0),
            downloaded_at=str(value.get("downloaded_at") or ""),
            source=str(value.get("source") or "batch"),
        )
