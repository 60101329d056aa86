"""Service output → normalised :class:`~airflow_batchcode.rows.Row` s, one per manifest line.

Each service's normaliser (:mod:`airflow_batchcode.normalise`) reads its raw output; its outcomes
are joined here line by line to the chunk's manifest and position sidecar, streaming: no file is
ever read whole. :func:`chunk_results` reads one downloaded chunk whichever service coded it
(:func:`chunk_batches`, as Arrow record batches, for the columnar load). The run summary and
quality gate are in :mod:`airflow_batchcode.summary`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, NamedTuple

import msgspec

from airflow_batchcode.chunks import Chunk
from airflow_batchcode.exceptions import UnexpectedResponseError
from airflow_batchcode.normalise import Normaliser, normaliser_for, reader_for
from airflow_batchcode.rows import COLUMNS, Row, Stamp
from airflow_batchcode.services.catalogue import DEFAULT_SERVICE
from airflow_batchcode.staging import METADATA_FILE, OPERATION_FILE, Provenance, read_positions, read_rejected
from airflow_batchcode.storage import as_storage_path, open_staged, read_staged_text
from airflow_batchcode.summary import RunSummary

__all__ = ["COLUMNS", "Row", "chunk_batches", "chunk_results", "rejected_rows", "service_chunk_rows"]


class _ManifestLine(msgspec.Struct):
    recordId: Any = None
    occp_text: Any = None
    tasks_text: Any = None


_decode_input = msgspec.json.Decoder(_ManifestLine).decode


def _lines(location: str, what: str) -> Iterator[bytes]:
    with open_staged(location, what) as handle:
        yield from handle


def service_chunk_rows(
    service: str,
    output: str,
    metadata: Mapping[str, Any],
    manifest: str,
    positions: str,
    *,
    lines: int,
    stamp: Stamp,
) -> Iterator[Row]:
    """Normalised rows of one chunk through its service's :class:`Coded` reader; ``lines`` is the manifest's
    record count (a service whose normaliser has a ``chunk_rows`` fast path takes that instead).

    The service's normaliser (:mod:`airflow_batchcode.normalise`) yields one outcome per manifest
    line in order; each is joined, line by line, to the manifest (the record's texts and id) and
    to the positions sidecar. All three are streamed.
    """
    coded_reader, _ = reader_for(service)
    tail = (stamp.topic, stamp.model_id, stamp.operation_id, stamp.chunk, service)
    decode_input = _decode_input
    count = 0
    with (
        open_staged(output, "result file") as out,
        open_staged(manifest, "manifest") as man_lines,
        open_staged(positions, "positions file") as pos_file,
    ):
        outcomes = coded_reader(out, metadata, lines)
        for outcome, given, (position, note) in zip(outcomes, man_lines, read_positions(pos_file), strict=False):
            count += 1
            record = decode_input(given)
            record_id = outcome.record_id if outcome.record_id is not None else record.recordId
            yield Row(
                None if record_id is None else str(record_id),
                position,
                outcome.code_status,
                outcome.code_category,
                outcome.code_label,
                outcome.code_confidence,
                outcome.suggestions,
                outcome.error,
                record.occp_text,
                record.tasks_text,
                note,
                *tail,
                outcome.item_id,
                outcome.agreement,
                outcome.details,
                stamp.source,
            )
        left_over = next(outcomes, None)
    if count != lines or left_over is not None:
        raise UnexpectedResponseError(
            f"Results of {service} operation {stamp.operation_id} (chunk {stamp.chunk}) do not match its manifest "
            f"of {lines} records: refusing to load misaligned results"
        )


def rejected_rows(rejects: str, *, topic: str, model_id: str | None) -> Iterator[Row]:
    """Rows for records caught before upload, with the reason as the error."""
    for record in read_rejected(_lines(rejects, "rejected-records file")):
        yield Row(
            *(record.recordId, record.position, "error", None, None, None, None, record.error),
            *(record.occp_text, record.tasks_text, record.note, topic, model_id),
            *(None, None, None, None, None, None),
        )


# downloaded chunks ---------------------------------------------------------------------------


class _Downloaded(NamedTuple):
    """What reading one downloaded chunk takes."""

    service: str
    normaliser: Normaliser
    output: str
    metadata: dict[str, Any]
    stamp: Stamp


def _metadata(text: str) -> dict[str, Any]:
    """What the service said about an operation, or ``{}`` for a file of unknown shape (kept raw on disk)."""
    try:
        body = json.loads(text or "{}")
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _downloaded(chunk: Chunk, topic: str, run: RunSummary) -> _Downloaded:
    """Read a downloaded chunk's operation record and metadata; count its operation and usage into ``run``."""
    folder = as_storage_path(chunk.results)
    operation = Provenance.from_json(read_staged_text(folder / OPERATION_FILE, "operation record"))
    metadata = _metadata(read_staged_text(folder / METADATA_FILE, "result metadata"))
    service = operation.service or DEFAULT_SERVICE
    normaliser = normaliser_for(service)
    run.service = service
    run.add_usage(normaliser.usage(metadata))
    realtime = operation.source == "realtime"
    if not realtime:
        run.operation_ids.append(operation.operation_id)
    stamp = Stamp(
        chunk=chunk.index,
        operation_id=None if realtime else operation.operation_id,
        topic=operation.topic or topic,
        model_id=normaliser.model_id(metadata) or operation.model,
        source=operation.source,
    )
    return _Downloaded(service, normaliser, str(folder / operation.output), metadata, stamp)


def _rows(chunk: Chunk, found: _Downloaded, run: RunSummary) -> Iterator[Row]:
    if found.normaliser.chunk_rows is not None:
        rows: Iterable[Row] = found.normaliser.chunk_rows(
            found.output, chunk.positions, manifest=chunk.manifest, stamp=found.stamp
        )
    else:
        rows = service_chunk_rows(
            found.service, found.output, found.metadata, chunk.manifest, chunk.positions,
            lines=chunk.records, stamp=found.stamp,
        )  # fmt: skip
    for row in rows:
        run.add(row)
        yield row


def chunk_results(chunk: Chunk, topic: str, run: RunSummary) -> Iterator[Row]:
    """The normalised rows of one downloaded chunk, whichever service coded it; counted into ``run``."""
    yield from _rows(chunk, _downloaded(chunk, topic, run), run)


def chunk_batches(chunk: Chunk, topic: str, run: RunSummary) -> Iterator[Any]:
    """:func:`chunk_results`' rows as Arrow record batches, read as such where the normaliser can
    (``chunk_batches``), else converted; counted into ``run``. Needs pyarrow."""
    from airflow_batchcode.columnar.load import row_batches
    from airflow_batchcode.columnar.results import count_batch

    found = _downloaded(chunk, topic, run)
    if found.normaliser.chunk_batches is None:
        yield from row_batches(_rows(chunk, found, run))
        return
    for batch in found.normaliser.chunk_batches(
        found.output, chunk.positions, manifest=chunk.manifest, stamp=found.stamp
    ):
        count_batch(run, batch)
        yield batch


def columnar_load(service: str, conn_id: str) -> bool:
    """Whether the load takes Arrow record batches: ``service``'s results are read as such and the output
    connection has an ADBC driver (:mod:`airflow_batchcode.columnar.load`). Needs pyarrow."""
    from airflow_batchcode.columnar.adbc import has_driver

    return normaliser_for(service).chunk_batches is not None and has_driver(conn_id, "postgres", "sqlite")
