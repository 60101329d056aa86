"""ABS output read a block of lines at a time by Arrow's JSON reader and joined to the positions, as columns.

The same rows as :func:`airflow_batchcode.normalise.abs.chunk_rows` for output in manifest order,
as Arrow record batches of the output table's row columns. It does not yet check each line's echo
against its manifest line (:mod:`airflow_batchcode.services.abs.order`), so output the service
reordered would be joined by position: the pipeline does not use it; ``bench/`` measures it.

Each block of output lines is parsed by ``pyarrow.json`` against
the usual line shape (an explicit schema: any other shape, a number where text is due, fails the
parse); the positions sidecar's matching block is parsed by ``pyarrow.csv``; statuses, codes and
errors are computed as column expressions. Python touches only what Arrow cannot say the same
way: the suggestions of ``unsuccessful`` lines (``json.dumps`` of what the line holds) and the
message for an unexpected status. A block that does not parse, or is ambiguous (a ``codeLabel``
given as ``null`` beside a ``" codeLabel"``), goes line by line through
:func:`airflow_batchcode.normalise.abs.normalise`, which gives the same rows as the typed path.
"""

from __future__ import annotations

import io
import itertools
import json
import re
from collections.abc import Iterator
from typing import Any

import msgspec
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv
import pyarrow.json

from airflow_batchcode.columnar.load import ROW_SCHEMA
from airflow_batchcode.exceptions import UnexpectedResponseError
from airflow_batchcode.normalise.abs import normalise
from airflow_batchcode.rows import COLUMNS
from airflow_batchcode.services.abs.settings import SERVICE
from airflow_batchcode.staging import read_positions
from airflow_batchcode.storage import open_staged

BLOCK_LINES = 10_000
"""Output lines parsed together (memory stays flat however long the output)."""
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
_NOT_AN_OBJECT = re.compile(rb"^(?![ \t\r]*\{)", re.MULTILINE)
"""A line that does not open a JSON object (searched short of the block's final line end)."""
_WHITESPACE = "".join(chr(c) for c in range(0x110000) if chr(c).isspace())
"""What ``str.strip`` removes (Arrow's own whitespace test is Unicode's, which differs)."""


class _Suggestions(msgspec.Struct):
    suggestions: Any = None


_decode_suggestions = msgspec.json.Decoder(_Suggestions).decode


def abs_chunk_batches(
    output: str, positions: str, *, chunk: int, operation_id: str, topic: str, model_id: str | None
) -> Iterator[pa.RecordBatch]:
    """The rows of one ABS chunk as record batches of :data:`ROW_SCHEMA` (see the module's docstring)."""
    tail = {"topic": topic, "model_id": model_id, "operation_id": operation_id, "chunk": chunk, "service": SERVICE}
    count = 0
    with open_staged(output, "result file") as out, open_staged(positions, "positions file") as pos:
        while lines := list(itertools.islice(out, BLOCK_LINES)):
            sidecar = list(itertools.islice(pos, len(lines)))
            count += len(sidecar)
            if len(sidecar) < len(lines):
                _misaligned(operation_id, chunk, "more", count)
            yield _block(lines, sidecar, tail)
        if next(pos, None) is not None:
            _misaligned(operation_id, chunk, "fewer", count)


def _misaligned(operation_id: str, chunk: int, which: str, count: int) -> None:
    raise UnexpectedResponseError(
        f"Output of operation {operation_id} (chunk {chunk}) has {which} lines than its manifest "
        f"(matched {count}): refusing to load misaligned results"
    )


def _block(lines: list[bytes], sidecar: list[bytes], tail: dict[str, Any]) -> pa.RecordBatch:
    where, notes = _positions(sidecar)
    size = len(lines)
    parsed = None
    if not lines[-1].endswith(b"\n"):  # only the file's last line may lack its end
        lines = [*lines[:-1], lines[-1] + b"\n"]
    blob = b"".join(lines)
    # every line must open an object: then equal counts mean one object a line (and Arrow's reader,
    # given a bare top-level null first, crashes instead of refusing it)
    if _NOT_AN_OBJECT.search(blob, 0, len(blob) - 1) is None:
        try:
            parsed = pyarrow.json.read_json(io.BytesIO(blob), parse_options=_PARSE)
        except pa.ArrowInvalid:
            parsed = None
    if parsed is None or parsed.num_rows != size or _ambiguous(parsed):
        return _slow_block(lines, where, notes, tail)
    columns = _coded(parsed.combine_chunks().to_batches()[0] if parsed.num_rows else None, lines)
    columns["position"], columns["note"] = where, notes
    for name, value in tail.items():
        columns[name] = pa.array([value] * size, ROW_SCHEMA.field(name).type)
    for name in ("item_id", "agreement", "details", "recode_of"):
        columns[name] = pa.nulls(size, ROW_SCHEMA.field(name).type)
    columns["source"] = pa.array(["batch"] * size, ROW_SCHEMA.field("source").type)
    return pa.RecordBatch.from_arrays([columns[name] for name in COLUMNS], schema=ROW_SCHEMA)


def _ambiguous(parsed: pa.Table) -> bool:
    """A ``codeLabel`` of ``null`` beside a ``" codeLabel"``: the typed path keeps the null, Arrow cannot tell."""
    result = parsed.column("result")
    both = pc.and_(pc.is_null(pc.struct_field(result, "codeLabel")), pc.is_valid(pc.struct_field(result, " codeLabel")))
    return bool(pc.any(both).as_py())


def _coded(batch: pa.RecordBatch, lines: list[bytes]) -> dict[str, pa.Array]:
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
    nothing = pa.nulls(len(lines), _TEXT)
    statuses = pc.if_else(coded, "successful", pc.if_else(unsuccessful, "unsuccessful", "error")).cast(_TEXT)
    errors = pc.if_else(failed, pc.utf8_trim(pc.fill_null(error, ""), _WHITESPACE), nothing)
    suggestions = nothing
    odd = pc.indices_nonzero(pc.or_(unsuccessful, other)).to_pylist()
    if odd:
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
            coded, pc.struct_field(result, "codeConfidence"), pa.nulls(len(lines), pa.float64())
        ),
        "suggestions": suggestions,
        "error": errors,
        "occp_text": pc.struct_field(given, "occp_text"),
        "tasks_text": pc.struct_field(given, "tasks_text"),
    }


def _positions(sidecar: list[bytes]) -> tuple[pa.Array, pa.Array]:
    """The block's positions and notes (``null`` when empty), as :func:`~airflow_batchcode.staging.read_positions`."""
    pairs = list(read_positions(sidecar))
    return pa.array([p for p, _ in pairs], pa.int64()), pa.array([n for _, n in pairs], _TEXT)


def _slow_block(lines: list[bytes], where: pa.Array, notes: pa.Array, tail: dict[str, Any]) -> pa.RecordBatch:
    """A block line by line through :func:`~airflow_batchcode.normalise.abs.normalise` (the typed path's equal)."""
    rows = []
    for line, position, note in zip(lines, where.to_pylist(), notes.to_pylist(), strict=True):
        record_id, status, category, label, confidence, suggestions, error, given = normalise(line)
        occp = _text(given.get("occp_text")) if isinstance(given, dict) else None
        tasks = _text(given.get("tasks_text")) if isinstance(given, dict) else None
        rows.append(
            (
                record_id,
                position,
                status,
                category,
                label,
                confidence,
                suggestions,
                error,
                occp,
                tasks,
                note,
                *tail.values(),
                None,
                None,
                None,
                "batch",
                None,
            )
        )
    return pa.RecordBatch.from_pylist([dict(zip(COLUMNS, row, strict=True)) for row in rows], schema=ROW_SCHEMA)


def _text(value: Any) -> str | None:
    """A text column's value: what the loader's text conversion would store for a non-text input."""
    return value if value is None or isinstance(value, str) else str(value)
