"""Warehouse extract → validated JSONL manifest chunks, streaming in constant memory.

Rows come from any common-sql connection through ``fetchmany`` (server-side cursors where
the driver has them, psycopg 3's chunked stream where libpq allows), are checked against the
service's input rules (or sanitised, when asked), and are written to the staging location in
chunks that close at ``chunk_records`` records or before ``max_chunk_bytes``. Each chunk has
a sidecar index holding every line's position in the extract, so results map back one-to-one
even when record ids repeat. Records the service would reject are not sent: they go to
``rejected.jsonl`` with the reason.
"""

from __future__ import annotations

import bisect
import contextlib
import hashlib
import itertools
import os
import re
from collections.abc import Generator, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from operator import itemgetter
from typing import IO, Any

import msgspec

from airflow_batchcode.exceptions import ConfigurationError
from airflow_batchcode.records import as_text, check, sanitize, suspects
from airflow_batchcode.storage import as_storage_path, local_path

ABS_MAX_BYTES = 5 * 1024**3
DEFAULT_MAX_CHUNK_BYTES = ABS_MAX_BYTES - 64 * 1024**2
"""Chunks close with a margin under the service's 5 GB limit."""
FETCH_ROWS = 10_000
BATCH_ROWS = 10_000
"""Records validated and encoded together: the rules and the JSON encoder work a column or a batch at a time."""
WRITE_BUFFER = 1 << 20
_encode = msgspec.json.Encoder().encode
_ESCAPED = re.compile(r"[^\x20\x21\x23-\x5b\x5d-\x7e]")
"""Characters a JSON string does not hold as they are: quote, backslash, controls, and (for speed) non-ASCII."""
_WITH_ID = ('{"recordId":"', None, '","occp_text":"', None, '","tasks_text":"', None, '"}\n')
_WITHOUT_ID = ('{"occp_text":"', None, '","tasks_text":"', None, '"}\n')


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

    def write_batch(
        self,
        ids: list[str] | None,
        occp: list[str],
        tasks: list[str],
        positions: Sequence[int],
        notes: Mapping[int, str],
        plain: tuple[bool, bool, bool] = (False, False, False),
    ) -> None:
        """Write many records at once, encoded together (see :func:`manifest_lines` for ``plain``).

        ``notes`` maps an index of the batch to its note.
        """
        start, total = 0, len(occp)
        while start < total:
            if self._lines is None or self._count >= self.chunk_records:
                self._roll()
            assert self._lines is not None and self._positions is not None
            end = min(total, start + self.chunk_records - self._count)
            blob = manifest_lines(ids[start:end] if ids is not None else None, occp[start:end], tasks[start:end], plain)
            if self._bytes + len(blob) > self.max_bytes:
                for i in range(start, end):  # the byte limit falls in this run: roll over line by line
                    line = manifest_lines([ids[i]] if ids is not None else None, [occp[i]], [tasks[i]])
                    self.write(line, positions[i], notes.get(i))
                start = end
                continue
            self._lines.write(blob)
            self._digest.update(blob)
            self._positions.write(_position_lines(positions[start:end], notes, start))
            self._count += end - start
            self._bytes += len(blob)
            start = end

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


def manifest_lines(
    ids: list[str] | None, occp: list[str], tasks: list[str], plain: tuple[bool, bool, bool] = (False, False, False)
) -> bytes:
    """JSONL manifest lines ``{"recordId", "occp_text", "tasks_text"}`` for columns of texts, built a batch at once.

    Byte for byte what ``msgspec.json.encode`` gives each record, at a fraction of the cost:
    the lines are the texts interleaved with the fixed JSON between them, and only the few
    texts that need escaping go through the encoder. ``plain`` tells which columns are known
    to need none (printable ASCII without quotes or backslashes).
    """
    parts: list[str | None]
    if ids is None:
        parts = list(_WITHOUT_ID) * len(occp)
        parts[1::5] = occp if plain[1] else _json_strings(occp)
        parts[3::5] = tasks if plain[2] else _json_strings(tasks)
    else:
        parts = list(_WITH_ID) * len(occp)
        parts[1::7] = ids if plain[0] else _json_strings(ids)
        parts[3::7] = occp if plain[1] else _json_strings(occp)
        parts[5::7] = tasks if plain[2] else _json_strings(tasks)
    return "".join(parts).encode()  # type: ignore[arg-type]  # every None is filled in above


def _plain(joined: str) -> bool:
    """True when text needs no JSON escaping: printable ASCII without quotes or backslashes."""
    return joined.isascii() and joined.isprintable() and '"' not in joined and "\\" not in joined


def _json_strings(texts: list[str]) -> list[str]:
    """``texts`` as they read between the quotes of a JSON string (escaped only where they need it)."""
    joined = "".join(texts)
    if _plain(joined):
        return texts
    ends = list(itertools.accumulate(map(len, texts)))
    escape = {bisect.bisect_right(ends, match.start()) for match in _ESCAPED.finditer(joined)}
    texts = list(texts)
    for i in escape:
        texts[i] = _encode(texts[i])[1:-1].decode()
    return texts


def _position_lines(positions: Sequence[int], notes: Mapping[int, str], offset: int) -> bytes:
    """The sidecar lines ``position\tnote\n`` of a run of records (``notes`` indexed from ``offset``)."""
    if not notes:
        return (("%d\t\n" * len(positions)) % tuple(positions)).encode()
    return "".join(f"{position}\t{notes.get(offset + i) or ''}\n" for i, position in enumerate(positions)).encode()


def _column(values: list[Any]) -> tuple[list[str], str]:
    """A column as text (see :func:`as_text`; ``NULL``s are replaced in place) and its concatenation."""
    with contextlib.suppress(TypeError):
        return values, "".join(values)
    index = -1
    try:
        while True:
            index = values.index(None, index + 1)
            if values[index] is not None:
                raise TypeError("equal to None but not None: as_text says what it is")
            values[index] = ""
    except ValueError:  # every NULL replaced
        with contextlib.suppress(TypeError):  # values other than text and NULL
            return values, "".join(values)
    except TypeError:
        pass
    values = [value if type(value) is str else as_text(value) for value in values]
    return values, "".join(values)


def _without(column: Sequence[Any], dropped: list[int]) -> list[Any]:
    """``column`` less the items at the (sorted) indexes ``dropped``."""
    kept: list[Any] = []
    start = 0
    for index in dropped:
        kept += column[start:index]
        start = index + 1
    kept += column[start:]
    return kept


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
    occp_of, tasks_of = itemgetter(occp_at), itemgetter(tasks_at)
    rid_of = itemgetter(rid_at) if rid_at is not None else None
    source = iter(rows)
    position = 0
    try:
        with open_sink(summary.rejects) as rejects:
            while batch := list(itertools.islice(source, BATCH_ROWS)):
                occp, occp_joined = _column(list(map(occp_of, batch)))
                tasks, tasks_joined = _column(list(map(tasks_of, batch)))
                ids, ids_joined = _column(list(map(rid_of, batch))) if rid_of is not None else (None, "")
                first, position = position + 1, position + len(batch)
                positions: range | list[int] = range(first, position + 1)
                dropped: list[int] = []
                notes: dict[int, str] = {}
                quoted = '"' in occp_joined or "\\" in occp_joined, '"' in tasks_joined or "\\" in tasks_joined
                for i in suspects(occp, tasks, (occp_joined, tasks_joined)):
                    checked = rule(occp[i], tasks[i])
                    if checked.note:
                        summary.sanitized += 1
                    if checked.error is None:
                        occp[i], tasks[i] = checked.occp_text, checked.tasks_text
                        if checked.note:
                            notes[i - len(dropped)] = checked.note
                            quoted = (True, True)
                        continue
                    dropped.append(i)
                    record = {
                        "position": first + i,
                        "recordId": ids[i] if ids is not None else None,
                        "occp_text": occp[i],
                        "tasks_text": tasks[i],
                        "error": checked.error,
                        "note": checked.note,
                    }
                    rejects.write(_encode(record) + b"\n")
                if dropped:
                    occp, tasks, positions = (
                        _without(occp, dropped),
                        _without(tasks, dropped),
                        _without(positions, dropped),
                    )
                    ids = _without(ids, dropped) if ids is not None else None
                plain = (ids is not None and _plain(ids_joined), not quoted[0], not quoted[1])
                writer.write_batch(ids, occp, tasks, positions, notes, plain)
                summary.sent += len(occp)
                summary.rejected += len(dropped)
            summary.rows = summary.sent + summary.rejected
    finally:
        writer.close()
    summary.chunks = writer.chunks
    return summary


@contextlib.contextmanager
def stream_query(conn_id: str, sql: str, *, fetch_rows: int = FETCH_ROWS) -> Iterator[tuple[list[str], Iterator[Any]]]:
    """Run ``sql`` on a common-sql connection; yield its column names and a row iterator.

    PostgreSQL rows come from psycopg 3's chunked ``stream`` where libpq has it (17 and later),
    else a server-side (named) cursor; other databases use ``fetchmany``: the result set is
    never held in memory whole. SQLite text that is not valid
    UTF-8 is read with bad bytes shown as U+FFFD (the query is re-run in the same read
    transaction with a decoding text factory, only if such text turns up).
    """
    from airflow.sdk import BaseHook

    hook = BaseHook.get_connection(conn_id).get_hook()
    conn = hook.get_conn()
    try:
        if type(conn).__module__.startswith("sqlite3"):
            if not conn.in_transaction:
                conn.execute("BEGIN")  # one snapshot, should the query have to be re-run
            cursor = conn.cursor()
            cursor.execute(sql)
            columns = [d[0] for d in cursor.description or ()]
            yield columns, itertools.chain.from_iterable(_sqlite_batches(conn, cursor, sql, fetch_rows))
        else:
            first = None
            streamed = _chunked_stream(conn, sql, fetch_rows)
            if streamed is not None:
                cursor, stream = streamed
                try:
                    first = next(stream, None)  # runs the query; its columns are known from the first row
                    if first is not None:
                        columns = [d[0] for d in cursor.description or ()]
                        yield columns, itertools.chain((first,), stream)
                finally:
                    stream.close()  # a stream left half read would hold the connection
            if first is None:  # no chunked stream, or an empty result (whose columns a stream does not give)
                cursor = _server_side_cursor(conn, fetch_rows)
                cursor.execute(sql)
                columns = [d[0] for d in cursor.description or ()]
                yield columns, itertools.chain.from_iterable(iter(partial(cursor.fetchmany, fetch_rows), []))
        cursor.close()
    finally:
        with contextlib.suppress(Exception):
            conn.rollback()
        conn.close()


def _replace_bad_utf8(raw: bytes) -> str:
    return raw.decode("utf-8", "replace")


def _sqlite_batches(conn: Any, cursor: Any, sql: str, fetch_rows: int) -> Iterator[list[Any]]:
    """``fetchmany`` batches; on text that is not UTF-8, re-run with a decoding factory and skip what was read."""
    import sqlite3

    done = 0
    while True:
        try:
            while batch := cursor.fetchmany(fetch_rows):
                done += len(batch)
                yield batch
            return
        except sqlite3.OperationalError as exc:
            if conn.text_factory is _replace_bad_utf8 or "decode" not in str(exc):
                raise
        conn.text_factory = _replace_bad_utf8
        cursor = conn.cursor()
        cursor.execute(sql)
        skip = done
        while skip and (batch := cursor.fetchmany(min(skip, fetch_rows))):
            skip -= len(batch)


def _chunked_stream(conn: Any, sql: str, fetch_rows: int) -> tuple[Any, Generator[Any, None, None]] | None:
    """psycopg 3 over libpq 17 or later: a cursor and its ``stream`` of ``sql``'s rows in chunks of ``fetch_rows``.

    The server sends the rows without waiting to be asked for each batch (as with ``COPY``),
    and psycopg converts them a chunk at a time: half the time of a server-side cursor's
    ``fetchmany`` round trips. ``None`` for other drivers and older libpq.
    """
    module = type(conn).__module__
    if module != "psycopg" and not module.startswith("psycopg."):  # psycopg 3 (psycopg2 is another driver)
        return None
    try:
        from psycopg import capabilities
    except ImportError:
        return None
    if not capabilities.has_stream_chunked():
        return None
    cursor = conn.cursor()
    return cursor, cursor.stream(sql, size=fetch_rows)


def _server_side_cursor(conn: Any, fetch_rows: int) -> Any:
    module = type(conn).__module__
    if module.startswith(("psycopg2", "psycopg")):
        cursor = conn.cursor(name=f"batchcode_extract_{os.getpid()}")
        cursor.itersize = fetch_rows
        return cursor
    return conn.cursor()
