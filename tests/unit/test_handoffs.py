"""The typed hand-offs: staging layout and line formats, chunk XComs, the trigger event, the row.

Each type is read back from what it writes, and from what an earlier release wrote (running
DAGs and retried tasks carry those values)."""

from __future__ import annotations

import io
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from airflow_batchcode.chunks import Chunk, ChunkResult, ExtractSummary
from airflow_batchcode.exceptions import ConfigurationError, UnexpectedResponseError
from airflow_batchcode.rows import COLUMNS, Row
from airflow_batchcode.staging import (
    ChunkPaths,
    Provenance,
    Rejected,
    position_line,
    position_lines,
    read_positions,
    read_rejected,
    rejected_line,
    rejects_path,
)
from airflow_batchcode.triggers.event import EndReason, EventStatus, OperationEvent
from airflow_batchcode.warehouse import TABLE_COLUMNS

NOTE = st.none() | st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\t\n\r"), min_size=1, max_size=20
)  # notes are our own text: never lone surrogates, which no UTF-8 file can hold


def test_the_layout_of_a_run_folder() -> None:
    paths = ChunkPaths.of("s3://bucket/staging/dag/run/", 7)
    assert paths == ChunkPaths(
        "s3://bucket/staging/dag/run/chunk-00007.jsonl",
        "s3://bucket/staging/dag/run/chunk-00007.positions",
        "s3://bucket/staging/dag/run/chunk-00007/",
    )
    assert rejects_path("/s/dag/run/") == "/s/dag/run/rejected.jsonl"


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(min_value=1, max_value=10**12), NOTE), max_size=30), st.integers(0, 5))
def test_positions_lines_read_back_as_written(records: list[tuple[int, str | None]], offset: int) -> None:
    positions = [position for position, _ in records]
    notes = {offset + i: note for i, (_, note) in enumerate(records) if note}
    block = position_lines(positions, notes, offset)
    assert block == b"".join(position_line(p, n) for p, n in records), "the block form equals line by line"
    assert list(read_positions(io.BytesIO(block))) == [(p, n or None) for p, n in records]


def test_rejected_records_keep_their_line_format_and_read_back() -> None:
    record = Rejected(position=3, recordId="r1", occp_text="caf\u00e9", tasks_text="", error="non-ASCII", note=None)
    line = rejected_line(record)
    assert line == (
        b'{"position":3,"recordId":"r1","occp_text":"caf\xc3\xa9","tasks_text":"","error":"non-ASCII","note":null}\n'
    )
    assert list(read_rejected([line, line])) == [record, record]


def test_provenance_reads_what_it_writes_and_older_files() -> None:
    provenance = Provenance("gravity", "job-1", "anzsco", None, "output.csv", 12, "2026-01-01T00:00:00Z")
    assert Provenance.from_json(provenance.to_json()) == provenance
    older = Provenance.from_json('{"operation_id": "op-1", "topic": "osca", "model": "m"}')
    assert (older.service, older.output, older.model) == ("", "output.jsonl", "m")
    for bad in ("not json", "[]", '{"topic": "x"}'):
        with pytest.raises(UnexpectedResponseError, match="operation.json"):
            Provenance.from_json(bad)


def test_chunk_and_extract_summary_round_trip_through_xcom() -> None:
    chunk = Chunk(1, "/s/chunk-00001.jsonl", "/s/chunk-00001.positions", "/s/chunk-00001/", 10, 500, "ab" * 16)
    summary = ExtractSummary(rows=12, sent=10, rejected=2, sanitized=1, rejects="/s/rejected.jsonl", chunks=[chunk])
    wire = summary.to_xcom()
    assert wire["chunks"][0] == {
        "index": 1,
        "manifest": "/s/chunk-00001.jsonl",
        "positions": "/s/chunk-00001.positions",
        "results": "/s/chunk-00001/",
        "records": 10,
        "bytes": 500,
        "digest": "ab" * 16,
    }
    assert ExtractSummary.from_xcom(wire) == summary
    assert chunk.mapping() == {"manifest": chunk.manifest, "results": chunk.results, "digest": chunk.digest}


@pytest.mark.parametrize(
    "value",
    [{}, {"rows": 1, "rejects": "r", "chunks": [{"index": 1}]}, {"rows": "x", "rejects": "r", "chunks": []}],
)
def test_a_value_that_is_not_an_extract_summary_is_a_configuration_error(value: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError):
        ExtractSummary.from_xcom(value)


def test_a_chunk_must_make_sense() -> None:
    with pytest.raises(ConfigurationError):
        Chunk(0, "m", "p", "r/", 0, 0)


def test_chunk_result_xcom_keeps_the_download_tasks_keys() -> None:
    result = ChunkResult("file:///s/chunk-00001", Provenance("abs", "op-1", "anzsco", output_bytes=9), 4)
    wire = result.to_xcom()
    assert {k: wire[k] for k in ("operation_id", "output", "metadata", "output_bytes", "metadata_bytes")} == {
        "operation_id": "op-1",
        "output": "file:///s/chunk-00001/output.jsonl",
        "metadata": "file:///s/chunk-00001/metadata.json",
        "output_bytes": 9,
        "metadata_bytes": 4,
    }
    assert ChunkResult.from_xcom(wire) == result


@pytest.mark.parametrize(
    "event",
    [
        OperationEvent(EventStatus.COMPLETE, "op-1", "done", "anzsco", EndReason.SERVICE, 3),
        OperationEvent(EventStatus.TIMED_OUT, "op-1", "gave up", "anzsco", EndReason.DEADLINE, 0),
        OperationEvent(EventStatus.ERROR, "op-1", "status check failed", "anzsco", polls=10),
        OperationEvent(EventStatus.ERROR, "op-1", "no connection", "anzsco"),
    ],
)
def test_trigger_events_round_trip_as_plain_dicts(event: OperationEvent) -> None:
    payload = event.to_payload()
    assert all(isinstance(value, str | int | type(None)) for value in payload.values())
    assert type(payload["status"]) is str and OperationEvent.from_payload(payload) == event
    assert ("reason" in payload) == (event.reason is not None) and ("polls" in payload) == (event.polls is not None)


@pytest.mark.parametrize(
    "payload",
    [None, "complete", {}, {"status": "complete"}, {"status": "weird", "operation_id": "op-1"}, {"operation_id": "x"}],
)
def test_a_malformed_trigger_event_is_an_unexpected_response(payload: Any) -> None:
    with pytest.raises(UnexpectedResponseError, match="Malformed trigger event"):
        OperationEvent.from_payload(payload)


def test_a_row_is_a_plain_tuple_in_the_tables_column_order() -> None:
    row = Row(
        "r",
        1,
        "successful",
        "261312",
        "Dev",
        0.9,
        None,
        None,
        "o",
        "t",
        None,
        "anzsco",
        None,
        "op",
        1,
        "abs",
        None,
        None,
        None,
    )
    assert isinstance(row, tuple) and len(row) == len(COLUMNS) == 21
    assert TABLE_COLUMNS[: len(COLUMNS)] == COLUMNS and row[COLUMNS.index("code_status")] == row.code_status
