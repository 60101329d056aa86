"""The columnar ABS reader gives the rows of :func:`airflow_batchcode.normalise.abs.chunk_rows`, line for line."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from airflow_batchcode.columnar import results
from airflow_batchcode.columnar.results import abs_chunk_batches
from airflow_batchcode.exceptions import UnexpectedResponseError
from tests.unit.test_fast_paths import RAW_LINE, USUAL_LINE, fast_rows

POSITIONS = st.lists(st.sampled_from([None, "sanitized: folded whitespace"]))


def columnar_rows(lines: list[bytes], positions: list[tuple[int, str | None]]) -> list[tuple[Any, ...]]:
    with tempfile.TemporaryDirectory() as folder:
        output, sidecar = Path(folder, "output.jsonl"), Path(folder, "chunk.positions")
        output.write_bytes(b"".join(lines))
        sidecar.write_text("".join(f"{p}\t{n or ''}\n" for p, n in positions))
        batches = abs_chunk_batches(
            str(output), str(sidecar), chunk=1, operation_id="op-1", topic="anzsco", model_id="m1"
        )
        return [tuple(row.values()) for batch in batches for row in batch.to_pylist()]


def expected(lines: list[bytes], positions: list[tuple[int, str | None]]) -> list[tuple[Any, ...]]:
    """``chunk_rows``' rows; input texts that are not text read as the loader stores them (``str``)."""
    rows = []
    for row in fast_rows(lines, positions):
        texts = [v if v is None or isinstance(v, str) else str(v) for v in (row.occp_text, row.tasks_text)]
        rows.append(tuple(row._replace(occp_text=texts[0], tasks_text=texts[1])))
    return rows


def _positions(count: int, notes: list[str | None]) -> list[tuple[int, str | None]]:
    return [(i + 7, notes[i % len(notes)] if notes else None) for i in range(count)]


@settings(max_examples=200, deadline=None)
@given(st.lists(USUAL_LINE.map(lambda d: json.dumps(d).encode() + b"\n"), max_size=25), POSITIONS)
def test_usual_lines(lines: list[bytes], notes: list[str | None]) -> None:
    positions = _positions(len(lines), notes)
    assert columnar_rows(lines, positions) == expected(lines, positions)


@settings(max_examples=300, deadline=None)
@given(st.lists(RAW_LINE, max_size=25), POSITIONS, st.integers(1, 6))
def test_any_lines_in_blocks(lines: list[bytes], notes: list[str | None], block: int) -> None:
    positions = _positions(len(lines), notes)
    with mock.patch.object(results, "BLOCK_LINES", block):
        assert columnar_rows(lines, positions) == expected(lines, positions)


def test_emulator_output_takes_the_columnar_path_and_misalignment_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    lines = [
        b'{"recordId":"1","codeStatus":"successful","result":{"codeCategory":"261312","codeLabel":"Developer",'
        b'"codeConfidence":0.9},"input":{"occp_text":"dev","tasks_text":"code"}}\n',
        b'{"recordId":"3","codeStatus":"unsuccessful","suggestions":[{"code":"1","confidence":0.5}]}\n',
        b'{"recordId":"4","error":" \\u2003bad line\\u001c "}\n',
        b'{"recordId":"5","codeStatus":"odd"}',
    ]
    slow = []
    monkeypatch.setattr(results, "_slow_block", lambda *a: slow.append(a) or pytest.fail("slow path taken"))
    positions = _positions(4, [None, "n"])
    assert columnar_rows(lines, positions) == expected(lines, positions)
    with pytest.raises(UnexpectedResponseError, match="fewer lines"):
        columnar_rows(lines[:3], positions)
    with pytest.raises(UnexpectedResponseError, match="more lines"):
        columnar_rows(lines, positions[:3])
