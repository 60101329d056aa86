"""Gravity's output CSV as :class:`Coded` rows, and its billed usage.

The output has every input column (after the input ``mapping``) and the model's outputs (after
``outputMapping``). Rows join back to the manifest by the ``line`` column the client added. An output
without that column (a model that drops unknown inputs) is joined by order instead, only when it has
exactly as many rows as the manifest has lines, and the log says so. The column names are found by
applying the mappings recorded in the metadata's ``request`` (the data object sent with the job) to the
client's CSV header and to the model's outputs ``code``, ``label``, ``confidence`` and ``error``. A value
equal to its mapping entry's non-empty ``defaultValue`` counts as empty (it is what the service fills in
when the model gave nothing).

Outcome of a row: a ``code`` → ``successful`` (an ``error`` beside it is kept in ``details``); else an
``error`` → ``error``; else ``unsuccessful``. The model's other output columns, if any, go into
``details`` as JSON. The file is read twice, streamed: once to index where each line's row starts
(a :class:`LineIndex`), then in manifest order.
"""

from __future__ import annotations

import csv
import json
import logging
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import IO, Any

from airflow_batchcode.exceptions import ConfigurationError, UnexpectedResponseError
from airflow_batchcode.normalise import Coded, missing
from airflow_batchcode.normalise.index import LineIndex
from airflow_batchcode.services.gravity import CSV_HEADER, DEFAULT_MAPPING, ColumnMapping, parse_mapping

OUTPUTS = ("code", "label", "confidence", "error")
log = logging.getLogger("airflow_batchcode.normalise")


@dataclass(frozen=True)
class Columns:
    """Where the values of one output file are: column indexes and the defaults that mean "empty"."""

    line: int | None
    record_id: int | None
    outputs: dict[str, int]
    defaults: dict[str, str]
    details: dict[str, int]

    @classmethod
    def resolve(cls, header: list[str], metadata: Mapping[str, Any]) -> Columns:
        """Find the columns of ``header`` from the mappings recorded in ``metadata``."""
        mapping, output_mapping = _mappings(metadata)
        renamed = {entry.source: entry.destination for entry in mapping}
        out = {entry.source: entry for entry in output_mapping}
        position = {name: index for index, name in reversed(list(enumerate(header)))}
        line_name = renamed.get("line", "line")
        names = {name: out[name].destination if name in out else name for name in OUTPUTS}
        if names["code"] not in position and names["error"] not in position:
            raise UnexpectedResponseError(
                f"Gravity output has neither a {names['code']!r} nor an {names['error']!r} column; "
                "check the connection's output_mapping"
            )
        inputs = {renamed.get(name, name) for name in CSV_HEADER}
        known = inputs | set(names.values())
        return cls(
            line=position.get(line_name),
            record_id=position.get(renamed.get("record_id", "record_id")),
            outputs={name: position[column] for name, column in names.items() if column in position},
            defaults={name: out[name].default_value or "" for name in OUTPUTS if name in out},
            details={name: index for name, index in position.items() if name not in known},
        )


def _mappings(metadata: Mapping[str, Any]) -> tuple[tuple[ColumnMapping, ...], tuple[ColumnMapping, ...]]:
    request = metadata.get("request")
    try:
        if not isinstance(request, Mapping):
            return DEFAULT_MAPPING, ()
        return (
            parse_mapping(request.get("mapping"), "mapping") or (),
            parse_mapping(request.get("outputMapping"), "outputMapping") or (),
        )
    except ConfigurationError as exc:
        raise UnexpectedResponseError(f"Gravity metadata: the recorded request is unreadable ({exc})") from None


class _Records:
    """CSV records of a binary file, each with the byte offset where it starts."""

    def __init__(self, handle: IO[bytes], start: int) -> None:
        handle.seek(start)
        self._handle = handle
        self.offset = start
        self._reader = csv.reader(self._lines())

    def _lines(self) -> Iterator[str]:
        for raw in iter(self._handle.readline, b""):
            first = self.offset == 0
            self.offset += len(raw)
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise UnexpectedResponseError("Gravity output is not UTF-8 text") from None
            yield text.removeprefix("\ufeff") if first else text

    def next(self) -> tuple[int, list[str]] | None:
        start = self.offset
        try:
            row = next(self._reader, None)
        except csv.Error as exc:
            raise UnexpectedResponseError(f"Gravity output is not valid CSV near byte {start}: {exc}") from None
        return None if row is None else (start, row)


def _line_number(row: list[str], columns: Columns, lines: int, order: int) -> int:
    """The manifest line of a row: its ``line`` column, or (without one) its place among the rows."""
    if columns.line is None:
        if order >= lines:
            raise UnexpectedResponseError(
                f"Gravity output has no 'line' column and more rows than the manifest's {lines} lines: "
                "refusing to join its rows by order"
            )
        return order
    raw = row[columns.line].strip() if columns.line < len(row) else ""
    if not raw.isascii() or not raw.isdigit():
        raise UnexpectedResponseError(f"Gravity output row has line {raw[:40]!r}, not a manifest line number")
    line = int(raw)
    if line >= lines:
        raise UnexpectedResponseError(f"Gravity output has a row for line {line}; the manifest has {lines} lines")
    return line


def _index(output: IO[bytes], metadata: Mapping[str, Any], lines: int) -> tuple[Columns | None, LineIndex]:
    """Pass one: the columns, and where each manifest line's row starts."""
    index = LineIndex(lines)
    records = _Records(output, 0)
    columns: Columns | None = None
    rows = 0
    while (item := records.next()) is not None:
        start, row = item
        if not any(value.strip() for value in row):
            continue
        if columns is None:
            columns = Columns.resolve(row, metadata)
            continue
        line = _line_number(row, columns, lines, rows)
        rows += 1
        if line in index:
            raise UnexpectedResponseError(f"Gravity output has two rows for manifest line {line}")
        index[line] = start
    if columns is not None and columns.line is None:
        if rows != lines:
            raise UnexpectedResponseError(
                f"Gravity output has no 'line' column and {rows} rows for the manifest's {lines} lines: "
                "refusing to join its rows by order"
            )
        log.warning("Gravity output has no 'line' column: its %d rows are joined to the manifest by order", rows)
    return columns, index


def _value(row: list[str], columns: Columns, name: str) -> str | None:
    index = columns.outputs.get(name)
    value = row[index].strip() if index is not None and index < len(row) else ""
    if not value or value == columns.defaults.get(name):
        return None
    return value


def _confidence(text: str | None) -> float | None:
    try:
        value = float(text) if text is not None else None
    except ValueError:
        return None
    return value if value is not None and math.isfinite(value) else None


def to_coded(row: list[str], columns: Columns) -> Coded:
    """One output row → its :class:`Coded` outcome."""
    record_id = row[columns.record_id] if columns.record_id is not None and columns.record_id < len(row) else ""
    extra = {name: row[i] for name, i in columns.details.items() if i < len(row) and row[i] != ""}
    code, error = _value(row, columns, "code"), _value(row, columns, "error")
    raw_confidence = _value(row, columns, "confidence")
    confidence = _confidence(raw_confidence)
    if raw_confidence is not None and confidence is None:
        extra["confidence"] = raw_confidence
    if code is not None and error is not None:
        extra["error"] = error
    details = json.dumps(extra, sort_keys=True) if extra else None
    rid = record_id or None
    if code is not None:
        label = _value(row, columns, "label")
        return Coded(rid, "successful", code, label, confidence, details=details)
    if error is not None:
        return Coded(rid, "error", error=error, details=details)
    return Coded(rid, "unsuccessful", details=details)


def coded(output: IO[bytes], metadata: Mapping[str, Any], lines: int) -> Iterator[Coded]:
    """Exactly ``lines`` outcomes, in manifest line order, from Gravity's output CSV."""
    columns, index = _index(output, metadata, lines)
    records: _Records | None = None

    def read(line: int, start: int) -> Coded:
        nonlocal records
        if columns is None:  # no header, so no rows were indexed either
            return missing(line)
        if records is None or records.offset != start:
            records = _Records(output, start)
        item = records.next()
        if item is None:  # the file changed between the passes
            raise UnexpectedResponseError(f"Gravity output: the row of manifest line {line} could not be re-read")
        return to_coded(item[1], columns)

    yield from index.in_order(read, missing)


def usage(metadata: Mapping[str, Any]) -> dict[str, float]:
    """The job's cost: ``billedUsage`` units of $0.001."""
    job = metadata.get("job")
    billed = job.get("billedUsage") if isinstance(job, Mapping) else None
    if isinstance(billed, bool) or not isinstance(billed, int | float) or not math.isfinite(billed):
        return {}
    return {"billed_usage_dollars": billed / 1000, "billed_units": float(billed)}
