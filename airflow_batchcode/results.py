"""Service output → normalised rows, the run summary and the quality gate.

Output lines are joined to their chunk's position sidecar line by line (the service keeps
input order), streaming: neither file is ever read whole.
"""

from __future__ import annotations

import contextlib
import itertools
import json
from bisect import bisect_right
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import IO, Any

import msgspec

from airflow_batchcode.exceptions import QualityGateError, UnexpectedResponseError
from airflow_batchcode.normalise import reader_for
from airflow_batchcode.storage import as_storage_path, local_path

COLUMNS = (
    "record_id",
    "position",
    "code_status",
    "code_category",
    "code_label",
    "code_confidence",
    "suggestions",
    "error",
    "occp_text",
    "tasks_text",
    "note",
    "topic",
    "model_id",
    "operation_id",
    "chunk",
    "service",
    "item_id",
    "agreement",
    "details",
)
"""Columns of a normalised row, in order (the loader adds ``dag_id``, ``dag_run_id`` and ``loaded_at``).

The last four carry meaning for some services only: ``item_id`` is the service's own id of the
record's task or job (Refinery task, super.ai job), ``agreement`` the share of workers agreeing on
Refinery's consensus label, ``details`` a JSON object of other service-specific values."""

Row = tuple[Any, ...]
_decode = msgspec.json.decode
CONFIDENCE_BUCKETS = (0.5, 0.7, 0.9)


class _Result(msgspec.Struct):
    codeCategory: Any = None
    codeLabel: Any = msgspec.UNSET
    spaced_label: Any = msgspec.field(default=None, name=" codeLabel")
    codeConfidence: Any = None


class _Input(msgspec.Struct):
    occp_text: Any = None
    tasks_text: Any = None


class _ManifestLine(msgspec.Struct):
    recordId: Any = None
    occp_text: Any = None
    tasks_text: Any = None


_decode_input = msgspec.json.Decoder(_ManifestLine).decode


class _Output(msgspec.Struct):
    """The usual shape of an output line, decoded without a dict; anything else takes :func:`normalise`."""

    recordId: Any = None
    codeStatus: Any = None
    error: Any = None
    result: _Result | None = None
    suggestions: Any = None
    input: _Input | str | None = None


_decode_output = msgspec.json.Decoder(_Output).decode


@contextlib.contextmanager
def _open(location: str) -> Iterator[IO[bytes]]:
    local = local_path(location)
    if local is not None:
        with open(local, "rb", buffering=1 << 20) as handle:
            yield handle
        return
    with as_storage_path(location).open("rb") as handle:
        yield handle


def _lines(location: str) -> Iterator[bytes]:
    local = local_path(location)
    if local is not None:
        with open(local, "rb", buffering=1 << 20) as handle:
            yield from handle
        return
    with as_storage_path(location).open("rb") as handle:
        yield from handle


def normalise(line: bytes) -> tuple[str | None, str, str | None, str | None, float | None, str | None, str | None, Any]:
    """One ABS output line → (record_id, status, category, label, confidence, suggestions JSON, error, input)."""
    try:
        data = _decode(line)
    except msgspec.DecodeError:
        return None, "error", None, None, None, None, "the service returned a line that is not JSON", None
    if not isinstance(data, dict):
        return None, "error", None, None, None, None, "the service returned a line that is not an object", None
    record_id = data.get("recordId")
    record_id = None if record_id is None else str(record_id)
    given = data.get("input")
    if data.get("error"):
        return record_id, "error", None, None, None, None, str(data["error"]).strip(), given
    status = data.get("codeStatus")
    if status == "successful" and isinstance(data.get("result"), dict):
        result = data["result"]
        confidence = result.get("codeConfidence")
        return (
            record_id,
            "successful",
            _str(result.get("codeCategory")),
            _str(result.get("codeLabel", result.get(" codeLabel"))),
            float(confidence) if isinstance(confidence, int | float) else None,
            None,
            None,
            given,
        )
    if status == "unsuccessful":
        suggestions = data.get("suggestions") or []
        return record_id, "unsuccessful", None, None, None, json.dumps(suggestions), None, given
    return record_id, "error", None, None, None, None, f"unexpected output line with codeStatus {status!r}", given


def _str(value: Any) -> str | None:
    return None if value is None else str(value)


def chunk_rows(
    output: str, positions: str, *, chunk: int, operation_id: str, topic: str, model_id: str | None
) -> Iterator[Row]:
    """Normalised rows of one chunk: its output file joined line by line to its positions.

    Lines of the usual shape go through a typed decoder (no dict, no lookups); anything else
    through :func:`normalise`. Both give the same rows.
    """
    count = 0
    tail = (topic, model_id, operation_id, chunk, "abs", None, None, None)
    decode, unset, output_type = _decode_output, msgspec.UNSET, _Input
    with _open(output) as out_lines, _open(positions) as pos_lines:
        for line, pos in zip(out_lines, pos_lines, strict=False):
            count += 1
            where, _, noted = pos.rstrip(b"\n").partition(b"\t")
            position, note = int(where), noted.decode() if noted else None
            try:
                data = decode(line)
            except msgspec.MsgspecError:
                yield _slow_row(line, position, note, topic, model_id, operation_id, chunk)
                continue
            record_id = data.recordId
            if record_id is not None and type(record_id) is not str:
                record_id = str(record_id)
            given = data.input
            occp, tasks = (given.occp_text, given.tasks_text) if type(given) is output_type else (None, None)
            if data.error:
                coded: tuple[Any, ...] = ("error", None, None, None, None, str(data.error).strip())
            elif data.codeStatus == "successful" and data.result is not None:
                result = data.result
                label = result.codeLabel if result.codeLabel is not unset else result.spaced_label
                confidence = result.codeConfidence
                coded = (
                    "successful",
                    None if result.codeCategory is None else str(result.codeCategory),
                    None if label is None else str(label),
                    float(confidence) if isinstance(confidence, int | float) else None,
                    None,
                    None,
                )
            elif data.codeStatus == "unsuccessful":
                coded = ("unsuccessful", None, None, None, json.dumps(data.suggestions or []), None)
            else:
                error = f"unexpected output line with codeStatus {data.codeStatus!r}"
                coded = ("error", None, None, None, None, error)
            yield (record_id, position, *coded, occp, tasks, note, *tail)
        leftover_output = next(out_lines, None)
        leftover_positions = next(pos_lines, None)
    if leftover_output is not None or leftover_positions is not None:
        raise UnexpectedResponseError(
            f"Output of operation {operation_id} (chunk {chunk}) has "
            f"{'more' if leftover_output is not None else 'fewer'} lines than its manifest "
            f"(matched {count}): refusing to load misaligned results"
        )


def _slow_row(
    line: bytes, position: int, note: str | None, topic: str, model_id: str | None, operation_id: str, chunk: int
) -> Row:
    """A row through :func:`normalise`, for lines the typed decoder does not take."""
    record_id, status, category, label, confidence, suggestions, error, given = normalise(line)
    occp = given.get("occp_text") if isinstance(given, dict) else None
    tasks = given.get("tasks_text") if isinstance(given, dict) else None
    return (
        *(record_id, position, status, category, label, confidence, suggestions, error, occp, tasks, note),
        *(topic, model_id, operation_id, chunk, "abs", None, None, None),
    )


def service_chunk_rows(
    service: str,
    output: str,
    metadata: Mapping[str, Any],
    manifest: str,
    positions: str,
    *,
    lines: int,
    chunk: int,
    operation_id: str,
    topic: str,
    model_id: str | None,
) -> Iterator[Row]:
    """Normalised rows of one chunk of a service other than ABS; ``lines`` is the manifest's record count.

    The service's normaliser (:mod:`airflow_batchcode.normalise`) yields one outcome per manifest
    line in order; each is joined, line by line, to the manifest (the record's texts and id) and
    to the positions sidecar. All three are streamed.
    """
    coded_reader, _ = reader_for(service)
    tail = (topic, model_id, operation_id, chunk, service)
    decode_input = _decode_input
    count = 0
    with _open(output) as out, _open(manifest) as man_lines, _open(positions) as pos_lines:
        outcomes = coded_reader(out, metadata, lines)
        for outcome, given, pos in zip(outcomes, man_lines, pos_lines, strict=False):
            count += 1
            where, _, noted = pos.rstrip(b"\n").partition(b"\t")
            record = decode_input(given)
            record_id = outcome.record_id if outcome.record_id is not None else record.recordId
            yield (
                None if record_id is None else str(record_id),
                int(where),
                outcome.code_status,
                outcome.code_category,
                outcome.code_label,
                outcome.code_confidence,
                outcome.suggestions,
                outcome.error,
                record.occp_text,
                record.tasks_text,
                noted.decode() if noted else None,
                *tail,
                outcome.item_id,
                outcome.agreement,
                outcome.details,
            )
        left_over = next(outcomes, None)
    if count != lines or left_over is not None:
        raise UnexpectedResponseError(
            f"Results of {service} operation {operation_id} (chunk {chunk}) do not match its manifest of {lines} "
            "records: refusing to load misaligned results"
        )


def chunk_usage(service: str, metadata: Mapping[str, Any]) -> dict[str, float]:
    """Numbers a service reports about one operation (billed usage, invalid inputs) for the run summary."""
    if service == "abs":
        return {}
    _, usage_reader = reader_for(service)
    return usage_reader(metadata)


def rejected_rows(rejects: str, *, topic: str, model_id: str | None) -> Iterator[Row]:
    """Rows for records caught before upload, with the reason as the error."""
    for line in _lines(rejects):
        data = _decode(line)
        yield (
            data.get("recordId"),
            data["position"],
            "error",
            None,
            None,
            None,
            None,
            data["error"],
            data.get("occp_text"),
            data.get("tasks_text"),
            data.get("note"),
            topic,
            model_id,
            None,
            None,
            None,
            None,
            None,
            None,
        )


@dataclass
class RunSummary:
    """Counts by status, success rate and confidence distribution of a run's rows."""

    by_status: Counter[str] = field(default_factory=Counter)
    confidence: Counter[str] = field(default_factory=Counter)
    code_lengths: Counter[int] = field(default_factory=Counter)
    sanitized: int = 0
    operations: int = 0
    service: str = "abs"
    usage: Counter[str] = field(default_factory=Counter)

    def add_usage(self, numbers: Mapping[str, float]) -> None:
        """Add what the service reported about one operation (e.g. billed usage) to the run's totals."""
        self.usage.update(numbers)

    def add(self, row: Row) -> None:
        status = row[2]
        self.by_status[status] += 1
        if row[10]:
            self.sanitized += 1
        if status == "successful":
            if row[5] is not None:
                self.confidence[_BUCKET_NAMES[bisect_right(CONFIDENCE_BUCKETS, row[5])]] += 1
            if row[3]:
                self.code_lengths[len(row[3])] += 1

    @property
    def total(self) -> int:
        return sum(self.by_status.values())

    @property
    def success_rate(self) -> float:
        return self.by_status["successful"] / self.total if self.total else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "records": self.total,
            "successful": self.by_status["successful"],
            "unsuccessful": self.by_status["unsuccessful"],
            "error": self.by_status["error"],
            "success_rate": round(self.success_rate, 4),
            "sanitized": self.sanitized,
            "operations": self.operations,
            "confidence": {bucket: self.confidence[bucket] for bucket in _bucket_names()},
            "code_lengths": {str(n): c for n, c in sorted(self.code_lengths.items(), reverse=True)},
            "service": self.service,
            "usage": {name: round(value, 6) for name, value in sorted(self.usage.items())},
        }


def _bucket_names() -> list[str]:
    edges = (0.0, *CONFIDENCE_BUCKETS, 1.0)
    return [f"{low:.1f}-{high:.1f}" for low, high in itertools.pairwise(edges)]


_BUCKET_NAMES = tuple(_bucket_names())


def _bucket(confidence: float) -> str:
    """The name of the bucket ``confidence`` falls in (below the first edge ... at or above the last)."""
    return _BUCKET_NAMES[bisect_right(CONFIDENCE_BUCKETS, confidence)]


def describe(summary: dict[str, Any]) -> str:
    """A readable multi-line account of a summary dict."""
    total = summary["records"] or 1
    lines = [
        f"{summary['records']} records in {summary['operations']} operation(s): "
        f"{summary['successful']} coded ({100 * summary['successful'] / total:.1f} %), "
        f"{summary['unsuccessful']} unsuccessful with suggestions, {summary['error']} errors"
        + (f", {summary['sanitized']} sanitized" if summary["sanitized"] else ""),
        "confidence of coded records: " + ", ".join(f"{k}: {v}" for k, v in summary["confidence"].items()),
        "code lengths: " + ", ".join(f"{k}-digit: {v}" for k, v in summary["code_lengths"].items()),
    ]
    usage = summary.get("usage") or {}
    if usage:
        lines.append(
            f"{summary.get('service', 'service')} usage: " + ", ".join(_usage_text(k, v) for k, v in usage.items())
        )
    return "\n".join(lines)


def _usage_text(name: str, value: float) -> str:
    if name.endswith("_dollars"):
        return f"{name.removesuffix('_dollars').replace('_', ' ')} ${value:,.3f}"
    return f"{name.replace('_', ' ')} {value:g}"


def quality_gate(summary: dict[str, Any], min_success_rate: float | None) -> None:
    """Raise :class:`QualityGateError` when the success rate is under ``min_success_rate``."""
    if min_success_rate is None:
        return
    rate = summary["success_rate"]
    if rate < min_success_rate:
        raise QualityGateError(
            f"Success rate {rate:.1%} is below the required {min_success_rate:.1%} "
            f"({summary['successful']} of {summary['records']} records coded). "
            "The outputs are written; inspect the error and unsuccessful rows before re-running."
        )
