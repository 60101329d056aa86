"""ABS output read a block of lines at a time by Arrow's JSON reader and joined to the positions, as columns.

The rows of :func:`airflow_batchcode.normalise.abs.chunk_rows`, as Arrow record batches of the
output table's row columns. Each block of output lines is parsed by ``pyarrow.json`` against the
usual line shape (an explicit schema: any other shape, a number where text is due, fails the
parse), and so is the manifest's matching block; each output line's echo (``recordId`` and
``input``) is compared with its manifest line as one column expression, with the rule of
:func:`airflow_batchcode.services.abs.order.agrees`. The positions sidecar's block is parsed by
``pyarrow.csv``; statuses, codes and errors are computed as column expressions. Python touches
only what Arrow cannot say the same way: the suggestions of ``unsuccessful`` lines
(``json.dumps`` of what the line holds) and the message for an unexpected status.

Anything else hands the rest of the chunk to :func:`~airflow_batchcode.normalise.abs.chunk_rows`
itself (the rows already yielded skipped): a block that does not parse or is ambiguous (a
``codeLabel`` given as ``null`` beside a ``" codeLabel"``), output out of manifest order (which
that path re-joins by key, or refuses), files of different lengths (which it refuses with its
message). So both paths give the same rows and the same errors, and the common case, the
service's usual lines in order, never builds a Python row.

Each file is read a block of whole lines at a time (:data:`BLOCK_BYTES`), parsed in one piece, and
the manifest's and the positions' rows are taken as many at a time as the output block has (only a
block holding ``unsuccessful`` lines is split into lines, for their suggestions). That every line
holds one object is two counts of bytes (line ends, and line ends before a ``{``) against the rows
parsed. Measured on 200,000 output lines of the emulator (one process, best of 3, in turn): 0.46 s,
against 0.51 s when the lines were read one by one (``islice``), joined and tested a line at a time;
``chunk_rows`` took 0.46 s to make the same rows in Python, which the load would still have to
convert. Each block is parsed on the calling thread: in the PostgreSQL load of 1,000,000 rows,
Arrow's own threads (a block split in 1 MB pieces parsed at once) took 3.07-6.39 s against 2.91-6.67
s (median 5.0 s against 4.0 s, 10 each, in turn), the server's ``COPY`` having the other core.
"""

from __future__ import annotations

import collections
import io
import itertools
import json
import re
from collections.abc import Callable, Iterator
from typing import IO, Any

import msgspec
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv
import pyarrow.json

from airflow_batchcode.columnar.load import ROW_SCHEMA, row_batches
from airflow_batchcode.normalise.abs import chunk_rows
from airflow_batchcode.rows import COLUMNS, Stamp
from airflow_batchcode.services.abs.settings import SERVICE
from airflow_batchcode.storage import open_staged
from airflow_batchcode.summary import CONFIDENCE_BUCKETS, RunSummary

BLOCK_BYTES = 1 << 20
"""Bytes of each file read and parsed together, to the end of a line: about 5,000 output lines (memory
stays flat however long the output). Measured reading, counting and writing as CSV 1,000,000 rows (the
load's work but the ``COPY``): peak RSS grew 70-73 MB with 2 MB blocks, 49-51 MB with 1 MB and 34-35 MB
with 512 KB, against 55-56 MB when reading 10,000 lines at a time; the times were within the noise
(2.9-3.2 s)."""
_TEXT = pa.large_string()
_LINE = pa.schema(
    [
        ("recordId", _TEXT),
        ("codeStatus", _TEXT),
        ("error", _TEXT),
        (
            "result",
            pa.struct(
                [("codeCategory", _TEXT), ("codeLabel", _TEXT), (" codeLabel", _TEXT), ("codeConfidence", pa.float64())]
            ),
        ),
        ("input", pa.struct([("occp_text", _TEXT), ("tasks_text", _TEXT)])),
    ]
)
_PARSE = pyarrow.json.ParseOptions(explicit_schema=_LINE, unexpected_field_behavior="ignore")
_MANIFEST = pyarrow.json.ParseOptions(
    explicit_schema=pa.schema([("recordId", _TEXT), ("occp_text", _TEXT), ("tasks_text", _TEXT)]),
    unexpected_field_behavior="ignore",
)
_POSITIONS_READ = pyarrow.csv.ReadOptions(column_names=["position", "note"])
_POSITIONS_PARSE = pyarrow.csv.ParseOptions(delimiter="\t", quote_char=False, escape_char=False)
_POSITIONS_CONVERT = pyarrow.csv.ConvertOptions(
    column_types={"position": pa.int64(), "note": _TEXT}, null_values=[""], strings_can_be_null=True
)
_NOT_AN_OBJECT = re.compile(rb"^(?![ \t\r]*\{)", re.MULTILINE)
"""A line that does not open a JSON object (searched short of the block's final line end)."""
_WHITESPACE = (
    "\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006"
    "\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)
"""What ``str.strip`` removes (Arrow's own whitespace test is Unicode's, which differs): every character
whose ``isspace()`` is true, written out (finding them took 0.4 s at each import)."""


class _Suggestions(msgspec.Struct):
    suggestions: Any = None


_decode_suggestions = msgspec.json.Decoder(_Suggestions).decode


def abs_chunk_batches(output: str, positions: str, *, manifest: str, stamp: Stamp) -> Iterator[pa.RecordBatch]:
    """The rows of one ABS chunk as record batches of :data:`ROW_SCHEMA` (see the module's docstring).

    Takes the arguments of :func:`~airflow_batchcode.normalise.abs.chunk_rows` and raises its errors.
    """
    done = 0
    with (
        open_staged(output, "result file") as out,
        open_staged(manifest, "manifest") as sent,
        open_staged(positions, "positions file") as pos,
    ):
        given, sidecar = _Rows(sent, _parse_manifest), _Rows(pos, _parse_positions)
        while blob := _whole_lines(out):
            parsed = _parse_json(blob, _PARSE)
            batch = None
            if parsed is not None:
                batch = _block(blob, parsed, given.take(parsed.num_rows), sidecar.take(parsed.num_rows), stamp)
            if batch is None:
                break
            yield batch
            done += batch.num_rows
        else:
            if given.ended() and sidecar.ended():
                return
    # the rest through the row path, which re-joins, refuses or reads the odd line exactly as the pipeline's
    rows = itertools.islice(chunk_rows(output, positions, manifest=manifest, stamp=stamp), done, None)
    yield from row_batches(
        row._replace(occp_text=_text(row.occp_text), tasks_text=_text(row.tasks_text)) for row in rows
    )


def _whole_lines(handle: IO[bytes]) -> bytes:
    """The next :data:`BLOCK_BYTES` or so of ``handle``, to the end of a line (one is added to the file's last
    line where it lacks it); empty at the file's end."""
    blob = handle.read(BLOCK_BYTES)
    if blob and not blob.endswith(b"\n"):
        blob += handle.readline()
        if not blob.endswith(b"\n"):
            blob += b"\n"
    return blob


class _Rows:
    """A staged file parsed a block of whole lines at a time, its rows taken in any count (the output's blocks')."""

    def __init__(self, handle: IO[bytes], parse: Callable[[bytes], pa.RecordBatch | None]) -> None:
        self._handle = handle
        self._parse = parse
        self._parsed: collections.deque[pa.RecordBatch] = collections.deque()
        self._ready = 0

    def _more(self) -> bool:
        """Parse the next block: ``False`` at the file's end or where a block does not parse (one row a line)."""
        blob = _whole_lines(self._handle)
        batch = self._parse(blob) if blob else None
        if batch is None:
            return False
        self._parsed.append(batch)
        self._ready += batch.num_rows
        return True

    def take(self, count: int) -> pa.RecordBatch | None:
        """The next ``count`` rows, or ``None`` where fewer are left or the lines holding them do not parse."""
        while self._ready < count:
            if not self._more():
                return None
        pieces = []
        while count > 0:
            head = self._parsed[0]
            if head.num_rows <= count:
                pieces.append(self._parsed.popleft())
            else:
                pieces.append(head.slice(0, count))
                self._parsed[0] = head.slice(count)
            count -= pieces[-1].num_rows
            self._ready -= pieces[-1].num_rows
        return pieces[0] if len(pieces) == 1 else pa.concat_batches(pieces)

    def ended(self) -> bool:
        """Whether every row was taken and the file holds nothing more."""
        return self._ready == 0 and not self._handle.read(1)


def _text(value: Any) -> str | None:
    """A text column's value: what the loader's text conversion would store for a non-text input."""
    return value if value is None or isinstance(value, str) else str(value)


def _block(
    blob: bytes, parsed: pa.RecordBatch, sent: pa.RecordBatch | None, places: pa.RecordBatch | None, stamp: Stamp
) -> pa.RecordBatch | None:
    """One block's rows, or ``None`` when the block needs the row path (see the module's docstring)."""
    if sent is None or places is None or _ambiguous(parsed) or not _in_order(parsed, sent):
        return None
    size = parsed.num_rows
    columns = _coded(parsed, blob)
    columns["position"], columns["note"] = places.column("position"), places.column("note")
    for name, value in (*stamp._asdict().items(), ("service", SERVICE)):
        columns[name] = pa.repeat(pa.scalar(value, ROW_SCHEMA.field(name).type), size)
    for name in ("item_id", "agreement", "details", "recode_of"):
        columns[name] = pa.nulls(size, ROW_SCHEMA.field(name).type)
    return pa.RecordBatch.from_arrays([columns[name] for name in COLUMNS], schema=ROW_SCHEMA)


def _parse_manifest(blob: bytes) -> pa.RecordBatch | None:
    return _parse_json(blob, _MANIFEST)


def _parse_json(blob: bytes, options: pyarrow.json.ParseOptions) -> pa.RecordBatch | None:
    """One object a line of ``blob`` (whole lines) as a record batch, or ``None`` if any line is anything else."""
    lines = blob.count(b"\n")
    # every line must open an object: then equal counts mean one object a line (and Arrow's reader,
    # given a bare top-level null first, crashes instead of refusing it)
    if (
        not (blob.startswith(b"{") and blob.count(b"\n{") == lines - 1)
        and _NOT_AN_OBJECT.search(blob, 0, len(blob) - 1) is not None
    ):
        return None
    read = pyarrow.json.ReadOptions(use_threads=False, block_size=max(len(blob), 1 << 20))
    try:
        table = pyarrow.json.read_json(io.BytesIO(blob), read_options=read, parse_options=options)
    except pa.ArrowInvalid:
        return None
    if table.num_rows != lines:
        return None
    return table.combine_chunks().to_batches()[0]


def _parse_positions(blob: bytes) -> pa.RecordBatch | None:
    """The block's positions and notes (``null`` when empty), as :func:`~airflow_batchcode.staging.read_positions`."""
    try:
        table = pyarrow.csv.read_csv(
            io.BytesIO(blob),
            read_options=_POSITIONS_READ,
            parse_options=_POSITIONS_PARSE,
            convert_options=_POSITIONS_CONVERT,
        )
    except pa.ArrowInvalid:  # a note holding a tab, a position that is not a plain number
        return None
    return table.combine_chunks().to_batches()[0] if table.num_rows == blob.count(b"\n") else None


def _ambiguous(parsed: pa.RecordBatch) -> bool:
    """A ``codeLabel`` of ``null`` beside a ``" codeLabel"``: the typed path keeps the null, Arrow cannot tell."""
    result = parsed.column("result")
    both = pc.and_(pc.is_null(pc.struct_field(result, "codeLabel")), pc.is_valid(pc.struct_field(result, " codeLabel")))
    return bool(pc.any(both).as_py())


def _in_order(parsed: pa.RecordBatch, sent: pa.RecordBatch) -> bool:
    """Whether every output line answers the manifest line at its place (the rule of ``order.agrees``)."""
    # an absent recordId and an empty one are the same to the service
    same_id = pc.equal(pc.fill_null(parsed.column("recordId"), ""), pc.fill_null(sent.column("recordId"), ""))
    echo = parsed.column("input")
    same_texts = pc.and_(
        _same(pc.struct_field(echo, "occp_text"), sent.column("occp_text")),
        _same(pc.struct_field(echo, "tasks_text"), sent.column("tasks_text")),
    )
    agrees = pc.if_else(pc.is_valid(echo), pc.and_(same_id, same_texts), same_id)
    return bool(pc.all(agrees).as_py())


def _same(got: pa.Array, expected: pa.Array) -> pa.Array:
    """Equal texts, or both null."""
    return pc.or_(pc.fill_null(pc.equal(got, expected), False), pc.and_(pc.is_null(got), pc.is_null(expected)))


def _coded(batch: pa.RecordBatch, blob: bytes) -> dict[str, pa.Array]:
    """record_id, status, category, label, confidence, suggestions, error, occp and tasks texts, as columns."""
    status, error, result = batch.column("codeStatus"), batch.column("error"), batch.column("result")
    failed = pc.fill_null(pc.not_equal(pc.utf8_length(pc.fill_null(error, "")), 0), False)
    coded = pc.and_(pc.fill_null(pc.equal(status, "successful"), False), pc.is_valid(result))
    coded = pc.and_(pc.invert(failed), coded)
    unsuccessful = pc.and_(
        pc.invert(failed), pc.and_(pc.invert(coded), pc.fill_null(pc.equal(status, "unsuccessful"), False))
    )
    other = pc.invert(pc.or_(pc.or_(failed, coded), unsuccessful))
    label = pc.coalesce(pc.struct_field(result, "codeLabel"), pc.struct_field(result, " codeLabel"))
    nothing = pa.nulls(batch.num_rows, _TEXT)
    statuses = pc.if_else(coded, "successful", pc.if_else(unsuccessful, "unsuccessful", "error")).cast(_TEXT)
    errors = pc.if_else(failed, pc.utf8_trim(pc.fill_null(error, ""), _WHITESPACE), nothing)
    suggestions = nothing
    odd = pc.indices_nonzero(pc.or_(unsuccessful, other)).to_pylist()
    if odd:
        lines = blob.split(b"\n")
        texts: list[str | None] = []
        for i in odd:
            if unsuccessful[i].as_py():
                texts.append(json.dumps(_decode_suggestions(lines[i]).suggestions or []))
            else:
                texts.append(f"unexpected output line with codeStatus {status[i].as_py()!r}")
        values = pa.array(texts, _TEXT)
        mask = pc.or_(unsuccessful, other)
        suggestions = pc.if_else(unsuccessful, pc.replace_with_mask(nothing, mask, values), nothing)
        errors = pc.if_else(other, pc.replace_with_mask(nothing, mask, values), errors)
    given = batch.column("input")
    return {
        "record_id": batch.column("recordId"),
        "code_status": statuses,
        "code_category": pc.if_else(coded, pc.struct_field(result, "codeCategory"), nothing),
        "code_label": pc.if_else(coded, label, nothing),
        "code_confidence": pc.if_else(
            coded, pc.struct_field(result, "codeConfidence"), pa.nulls(batch.num_rows, pa.float64())
        ),
        "suggestions": suggestions,
        "error": errors,
        "occp_text": pc.struct_field(given, "occp_text"),
        "tasks_text": pc.struct_field(given, "tasks_text"),
    }


def count_batch(run: RunSummary, batch: pa.RecordBatch) -> None:
    """Count a record batch of rows into ``run``, as :meth:`~airflow_batchcode.summary.RunSummary.add` counts rows."""
    confidence = batch.column("code_confidence")
    bucket = pa.array([0] * batch.num_rows, pa.int64())  # bisect_right of CONFIDENCE_BUCKETS, a bound at a time
    for bound in CONFIDENCE_BUCKETS:
        bucket = pc.add(bucket, pc.cast(pc.greater_equal(confidence, bound), pa.int64()))
    keys = pa.table(
        {
            "status": batch.column("code_status"),
            "bucket": bucket,  # null where the confidence is
            "length": pc.utf8_length(batch.column("code_category")),
            "sanitized": pc.fill_null(pc.greater(pc.utf8_length(batch.column("note")), 0), False),
        }
    )
    groups = keys.group_by(["status", "bucket", "length", "sanitized"], use_threads=False).aggregate(
        [([], "count_all")]
    )
    for status, bucket_index, length, sanitized, count in zip(*groups.to_pydict().values(), strict=True):
        run.add_counted(status, bucket_index, length, sanitized, count)
