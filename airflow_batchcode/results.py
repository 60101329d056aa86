"""Service output → normalised :class:`~airflow_batchcode.rows.Row` s, one per manifest line.

Each service's normaliser (:mod:`airflow_batchcode.normalise`) reads its raw output; its outcomes
are joined here line by line to the chunk's manifest and position sidecar, streaming: no file is
ever read whole. The run summary and quality gate
are in :mod:`airflow_batchcode.summary`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import msgspec

from airflow_batchcode.exceptions import UnexpectedResponseError
from airflow_batchcode.normalise import reader_for
from airflow_batchcode.rows import COLUMNS, Row
from airflow_batchcode.staging import read_positions, read_rejected
from airflow_batchcode.storage import open_staged

__all__ = ["COLUMNS", "Row", "rejected_rows", "service_chunk_rows"]


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
    chunk: int,
    operation_id: str | None,
    topic: str,
    model_id: str | None,
    source: str = "batch",
) -> Iterator[Row]:
    """Normalised rows of one chunk through its service's :class:`Coded` reader; ``lines`` is the manifest's
    record count (a service whose normaliser has a ``chunk_rows`` fast path takes that instead).

    The service's normaliser (:mod:`airflow_batchcode.normalise`) yields one outcome per manifest
    line in order; each is joined, line by line, to the manifest (the record's texts and id) and
    to the positions sidecar. All three are streamed.
    """
    coded_reader, _ = reader_for(service)
    tail = (topic, model_id, operation_id, chunk, service)
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
                source,
            )
        left_over = next(outcomes, None)
    if count != lines or left_over is not None:
        raise UnexpectedResponseError(
            f"Results of {service} operation {operation_id} (chunk {chunk}) do not match its manifest of {lines} "
            "records: refusing to load misaligned results"
        )


def rejected_rows(rejects: str, *, topic: str, model_id: str | None) -> Iterator[Row]:
    """Rows for records caught before upload, with the reason as the error."""
    for record in read_rejected(_lines(rejects, "rejected-records file")):
        yield Row(
            *(record.recordId, record.position, "error", None, None, None, None, record.error),
            *(record.occp_text, record.tasks_text, record.note, topic, model_id),
            *(None, None, None, None, None, None),
        )
