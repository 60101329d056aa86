"""The Gravity emulator's hosted model, the "occupation coder", run over a CSV input.

Its features are ``job_title`` and ``duties`` (the input ``mapping`` renames the caller's columns
to them; columns not mapped pass through unchanged, a mapped source missing from the file takes its
``defaultValue`` or fails the job). Its outputs are ``code``, ``label``, ``confidence`` and ``error``
(``outputMapping`` renames them; an empty value takes the entry's ``defaultValue``). The output CSV
has every (mapped) input column, then the outputs, one row per input row in input order. A row with
an empty title and duties, or one chosen by ``record_failure_rate`` (a hash of the texts, so the
same record always fails), gets an ``error`` and no code. Otherwise the ANZSCO coder answers: a
code with its label and confidence, or, when it is not sure, no code (an unsuccessful record).
:func:`check_input` counts what is billed; an input the model cannot read raises :class:`JobFailed`.
"""

from __future__ import annotations

import csv
import hashlib
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from airflow_batchcode.emulator.coding_model import CodingModel

FEATURES = ("job_title", "duties")

OUTPUTS = ("code", "label", "confidence", "error")

CSV_MIMES = frozenset({"text/csv", "application/csv"})

MSG_ROW_EMPTY = "job_title and duties are both empty"

MSG_ROW_FAILED = "The model could not score this record"


class JobFailed(Exception):
    """The job's input cannot be processed: the job ends ``error`` with this message."""


@dataclass(frozen=True)
class Mapping:
    """One ``mapping`` / ``outputMapping`` entry."""

    source: str
    destination: str
    default: str | None = None


@dataclass(frozen=True)
class JobRequest:
    """The ``data`` part of a job submission, checked."""

    mime_type: str
    name: str | None = None
    version: str | None = None
    mapping: tuple[Mapping, ...] = ()
    output_mapping: tuple[Mapping, ...] = ()


def is_csv(mime: str) -> bool:
    """``text/csv`` with any parameters."""
    return mime.split(";", 1)[0].strip().lower() in CSV_MIMES


@dataclass(frozen=True)
class _Plan:
    """How input rows become output rows: which input column feeds each (mapped) column, and defaults."""

    columns: tuple[str, ...]
    sources: tuple[int, ...]  # index into the input row, -1 for a mapped column absent from the input
    defaults: tuple[str | None, ...]
    title: int
    duties: int
    outputs: tuple[str, ...]
    output_defaults: tuple[str | None, ...]


def plan(header: Sequence[str], request: JobRequest) -> _Plan:
    """Apply the mappings to the input header; :class:`JobFailed` when the model cannot read the result."""
    renamed = {m.source: m for m in request.mapping}
    columns: list[str] = []
    sources: list[int] = []
    defaults: list[str | None] = []
    for index, name in enumerate(header):
        entry = renamed.get(name)
        columns.append(entry.destination if entry else name)
        sources.append(index)
        defaults.append(entry.default if entry else None)
    for entry in request.mapping:
        if entry.source not in header:
            if entry.default is None:
                raise JobFailed(f"Mapping source column {entry.source!r} is not in the input file")
            columns.append(entry.destination)
            sources.append(-1)
            defaults.append(entry.default)
    missing = [f for f in FEATURES if f not in columns]
    if missing:
        raise JobFailed(
            f"The model's features {', '.join(FEATURES)} are missing from the input (missing: {', '.join(missing)}; "
            "map your columns to them with mapping)"
        )
    outputs = {m.source: m for m in request.output_mapping}
    unknown = [name for name in outputs if name not in OUTPUTS]
    if unknown:
        raise JobFailed(f"outputMapping source {unknown[0]!r} is not an output of the model ({', '.join(OUTPUTS)})")
    return _Plan(
        columns=tuple(columns),
        sources=tuple(sources),
        defaults=tuple(defaults),
        title=columns.index(FEATURES[0]),
        duties=columns.index(FEATURES[1]),
        outputs=tuple(outputs[o].destination if o in outputs else o for o in OUTPUTS),
        output_defaults=tuple(outputs[o].default if o in outputs else None for o in OUTPUTS),
    )


def _rows(handle: IO[str]) -> Iterator[list[str]]:
    """Non-blank CSV rows; a bad file is a :class:`JobFailed`."""
    try:
        for row in csv.reader(handle):
            if row and any(value != "" for value in row):
                yield row
    except UnicodeDecodeError:
        raise JobFailed("The input file is not UTF-8 text") from None
    except csv.Error as exc:
        raise JobFailed(f"The input file is not valid CSV: {exc}") from None


def check_input(path: Path, request: JobRequest) -> int:
    """Check a CSV input against the model and count its records (what is billed)."""
    with path.open(encoding="utf-8-sig", newline="") as handle:
        rows = _rows(handle)
        header = next(rows, None)
        if header is None:
            raise JobFailed("The input file is empty")
        plan(header, request)
        count = sum(1 for _ in rows)
    if count == 0:
        raise JobFailed("The input file has a header but no records")
    return count


def fails_by_rate(seed: int, title: str, duties: str, rate: float) -> bool:
    """Whether ``record_failure_rate`` picks this record: a stable hash of the texts below ``rate``."""
    if rate <= 0:
        return False
    digest = hashlib.blake2b(f"{seed}\0{title}\0{duties}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64 < rate


def code_csv(
    source: Path,
    target: Path,
    request: JobRequest,
    model: CodingModel,
    *,
    seed: int,
    failure_rate: float,
    cancelled: threading.Event | None = None,
) -> int:
    """Run the model over a CSV input, streaming; return the rows written (:class:`JobFailed` if ``cancelled``)."""
    written = 0
    with source.open(encoding="utf-8-sig", newline="") as src, target.open("w", encoding="utf-8", newline="") as out:
        rows = _rows(src)
        how = plan(next(rows), request)
        writer = csv.writer(out, lineterminator="\r\n")
        writer.writerow(how.columns + how.outputs)
        for row in rows:
            values = [
                (row[i] if 0 <= i < len(row) else "") or (default or "")
                for i, default in zip(how.sources, how.defaults, strict=True)
            ]
            outputs = _score(values[how.title], values[how.duties], model, seed, failure_rate)
            outputs = [value or (default or "") for value, default in zip(outputs, how.output_defaults, strict=True)]
            writer.writerow(values + outputs)
            written += 1
            if cancelled is not None and written % 4096 == 0 and cancelled.is_set():
                raise JobFailed("The service is shutting down")
    return written


def _score(title: str, duties: str, model: CodingModel, seed: int, failure_rate: float) -> list[str]:
    """``[code, label, confidence, error]`` of one record."""
    if not title.strip() and not duties.strip():
        return ["", "", "", MSG_ROW_EMPTY]
    if fails_by_rate(seed, title, duties, failure_rate):
        return ["", "", "", MSG_ROW_FAILED]
    outcome = model.code(title, duties)
    if outcome.status == "successful" and outcome.result is not None:
        result = outcome.result
        return [result.category, result.label, f"{result.confidence:g}", ""]
    return ["", "", "", ""]
