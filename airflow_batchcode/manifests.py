"""Warehouse extract → validated JSONL manifest chunks, streaming in constant memory.

Rows come from any common-sql connection through ``fetchmany`` (server-side cursors where
the driver has them), are checked against the service's input rules (or sanitised, when
asked), and are written to the staging location in chunks that close at ``chunk_records``
records or before ``max_chunk_bytes``. Each chunk has a sidecar index holding every line's
position in the extract, so results map back one-to-one even when record ids repeat.
Records the service would reject are not sent: they go to ``rejected.jsonl`` with the reason.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import IO, Any

import msgspec

from airflow_batchcode.exceptions import ConfigurationError
from airflow_batchcode.records import as_text, check, sanitize
from airflow_batchcode.storage import as_storage_path, local_path

ABS_MAX_BYTES = 5 * 1024**3
DEFAULT_MAX_CHUNK_BYTES = ABS_MAX_BYTES - 64 * 1024**2
"""Chunks close with a margin under the service's 5 GB limit."""
FETCH_ROWS = 10_000
WRITE_BUFFER = 1 << 20
_encode = msgspec.json.Encoder().encode


@dataclass(frozen=True)
class FieldMap:
    """Which result columns feed which record fields.

    :param occp_text: column with the job title.
    :param tasks_text: column with the duties.
    :param record_id: column with the record's id (``None``: records are sent without ids).
    """

    occp_text: str
    tasks_text: str
    record_id: str | None = None

    @classmethod
    def parse(cls, value: FieldMap | Mapping[str, str]) -> FieldMap:
        """Accept a ``FieldMap`` or a dict: ``{"record_id": "id", "occp_text": "title", "tasks_text": "duties"}``."""
        if isinstance(value, FieldMap):
            return value
        unknown = set(value) - {"occp_text", "tasks_text", "record_id"}
        if unknown or "occp_text" not in value or "tasks_text" not in value:
            raise ConfigurationError(
                f"field_map needs 'occp_text' and 'tasks_text' (and may have 'record_id'); got {sorted(value)}"
            )
        return cls(occp_text=value["occp_text"], tasks_text=value["tasks_text"], record_id=value.get("record_id"))

    def indexes(self, columns: Sequence[str]) -> tuple[int | None, int, int]:
        """Positions of the mapped columns in a result row (case-insensitive)."""
        lookup = {name.lower(): i for i, name in enumerate(columns)}

        def find(name: str) -> int:
            try:
                return lookup[name.lower()]
            except KeyError:
                raise ConfigurationError(
                    f"field_map column {name!r} is not in the query's columns {list(columns)}"
                ) from None

        rid = find(self.record_id) if self.record_id else None
        return rid, find(self.occp_text), find(self.tasks_text)


@dataclass(frozen=True)
class Chunk:
    """One manifest file: one remote operation."""

    index: int
    manifest: str
    positions: str
    results: str
    records: int
    bytes: int
    digest: str = ""
    """BLAKE2b of the manifest's bytes: a retried create re-attaches only to an operation fed this content."""

    def to_xcom(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ExtractSummary:
    """What an extract produced."""

    rows: int = 0
    sent: int = 0
    rejected: int = 0
    sanitized: int = 0
    rejects: str = ""
    chunks: list[Chunk] = field(default_factory=list)

    def to_xcom(self) -> dict[str, Any]:
        return {**asdict(self), "chunks": [c.to_xcom() for c in self.chunks]}


@contextlib.contextmanager
def open_sink(location: str) -> Iterator[IO[bytes]]:
    """A buffered binary writer for a local path or object store URI."""
    local = local_path(location)
    if local is not None:
        local.parent.mkdir(parents=True, exist_ok=True)
        with open(local, "wb", buffering=WRITE_BUFFER) as handle:
            yield handle
        return
    with as_storage_path(location).open("wb") as handle:
        yield handle


class _ChunkWriter:
    """Writes manifest chunks and their position sidecars, rolling over at the limits."""

    def __init__(self, folder: str, chunk_records: int, max_bytes: int) -> None:
        self.folder = folder.rstrip("/")
        self.chunk_records = chunk_records
        self.max_bytes = max_bytes
        self.chunks: list[Chunk] = []
        self._stack: contextlib.ExitStack | None = None
        self._lines: IO[bytes] | None = None
        self._positions: IO[bytes] | None = None
        self._count = 0
        self._bytes = 0
        self._digest = hashlib.blake2b(digest_size=16)

    def write(self, line: bytes, position: int, note: str | None) -> None:
        if self._lines is None or self._count >= self.chunk_records or self._bytes + len(line) > self.max_bytes:
            self._roll()
        assert self._lines is not None and self._positions is not None
        self._lines.write(line)
        self._digest.update(line)
        self._positions.write(f"{position}\t{note or ''}\n".encode())
        self._count += 1
        self._bytes += len(line)

    def _roll(self) -> None:
        self.close()
        index = len(self.chunks) + 1
        base = f"{self.folder}/chunk-{index:05d}"
        self._stack = contextlib.ExitStack()
        self._lines = self._stack.enter_context(open_sink(f"{base}.jsonl"))
        self._positions = self._stack.enter_context(open_sink(f"{base}.positions"))
        self._count = self._bytes = 0
        self._digest = hashlib.blake2b(digest_size=16)
        self.chunks.append(Chunk(index, f"{base}.jsonl", f"{base}.positions", f"{base}/", 0, 0))

    def close(self) -> None:
        if self._stack is None:
            return
        self._stack.close()
        last = self.chunks[-1]
        self.chunks[-1] = Chunk(
            last.index, last.manifest, last.positions, last.results, self._count, self._bytes, self._digest.hexdigest()
        )
        self._stack = self._lines = self._positions = None


def write_chunks(
    rows: Iterable[Sequence[Any]],
    columns: Sequence[str],
    field_map: FieldMap | Mapping[str, str],
    folder: str,
    *,
    chunk_records: int = 100_000,
    max_chunk_bytes: int = DEFAULT_MAX_CHUNK_BYTES,
    sanitize_records: bool = False,
) -> ExtractSummary:
    """Validate ``rows`` and write them as manifest chunks under ``folder`` (path or URI).

    :return: counts, the chunks written, and where the rejected records went.
    """
    if chunk_records < 1:
        raise ConfigurationError(f"chunk_records must be at least 1, got {chunk_records}")
    if not 1024 <= max_chunk_bytes <= ABS_MAX_BYTES:
        raise ConfigurationError(f"max_chunk_bytes must be between 1 KiB and 5 GB, got {max_chunk_bytes}")
    rid_at, occp_at, tasks_at = FieldMap.parse(field_map).indexes(columns)
    rule = sanitize if sanitize_records else check
    summary = ExtractSummary(rejects=f"{folder.rstrip('/')}/rejected.jsonl")
    writer = _ChunkWriter(folder, chunk_records, max_chunk_bytes)
    try:
        with open_sink(summary.rejects) as rejects:
            for position, row in enumerate(rows, start=1):
                occp, tasks = as_text(row[occp_at]), as_text(row[tasks_at])
                record_id = as_text(row[rid_at]) if rid_at is not None else None
                checked = rule(occp, tasks)
                if checked.note:
                    summary.sanitized += 1
                if checked.error is not None:
                    summary.rejected += 1
                    rejects.write(
                        _encode(
                            {
                                "position": position,
                                "recordId": record_id,
                                "occp_text": occp,
                                "tasks_text": tasks,
                                "error": checked.error,
                                "note": checked.note,
                            }
                        )
                        + b"\n"
                    )
                    continue
                record = {"occp_text": checked.occp_text, "tasks_text": checked.tasks_text}
                if record_id is not None:
                    record = {"recordId": record_id, **record}
                writer.write(_encode(record) + b"\n", position, checked.note)
                summary.sent += 1
            summary.rows = summary.sent + summary.rejected
    finally:
        writer.close()
    summary.chunks = writer.chunks
    return summary


@contextlib.contextmanager
def stream_query(conn_id: str, sql: str, *, fetch_rows: int = FETCH_ROWS) -> Iterator[tuple[list[str], Iterator[Any]]]:
    """Run ``sql`` on a common-sql connection; yield its column names and a row iterator.

    Uses a server-side (named) cursor where the driver has one (PostgreSQL), and ``fetchmany``
    everywhere: the result set is never held in memory whole.
    """
    from airflow.sdk import BaseHook

    hook = BaseHook.get_connection(conn_id).get_hook()
    conn = hook.get_conn()
    try:
        if type(conn).__module__.startswith("sqlite3"):
            conn.text_factory = lambda raw: raw.decode("utf-8", "replace")
        cursor = _server_side_cursor(conn, fetch_rows)
        cursor.execute(sql)
        columns = [d[0] for d in cursor.description or ()]

        def rows() -> Iterator[Any]:
            while batch := cursor.fetchmany(fetch_rows):
                yield from batch

        yield columns, rows()
        cursor.close()
    finally:
        with contextlib.suppress(Exception):
            conn.rollback()
        conn.close()


def _server_side_cursor(conn: Any, fetch_rows: int) -> Any:
    module = type(conn).__module__
    if module.startswith(("psycopg2", "psycopg")):
        cursor = conn.cursor(name=f"batchcode_extract_{os.getpid()}")
        cursor.itersize = fetch_rows
        return cursor
    return conn.cursor()
