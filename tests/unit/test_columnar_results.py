"""The columnar ABS reader gives the rows and errors of :func:`airflow_batchcode.normalise.abs.chunk_rows`."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from airflow_batchcode.columnar import results
from airflow_batchcode.columnar.results import abs_chunk_batches, count_batch
from airflow_batchcode.exceptions import OutputOrderError, UnexpectedResponseError
from airflow_batchcode.normalise.abs import chunk_rows
from airflow_batchcode.rows import Stamp
from airflow_batchcode.summary import RunSummary
from tests.unit.test_fast_paths import RAW_LINE, USUAL_LINE, echoed_key

POSITIONS = st.lists(st.sampled_from([None, "sanitized: folded whitespace", "tab\there"]))
WHERE = {"stamp": Stamp(chunk=1, operation_id="op-1", topic="anzsco", model_id="m1")}


def _files(
    folder: str, lines: list[bytes], positions: list[tuple[int, str | None]], manifest: list[bytes] | None = None
) -> dict[str, str]:
    output, sidecar, sent = Path(folder, "output.jsonl"), Path(folder, "chunk.positions"), Path(folder, "chunk.jsonl")
    output.write_bytes(b"".join(lines))
    sidecar.write_text("".join(f"{p}\t{n or ''}\n" for p, n in positions))
    if manifest is None:  # the manifest each line answers, in order
        keys = [echoed_key(line) for line in lines]
        manifest = [json.dumps({"recordId": r, "occp_text": o, "tasks_text": t}).encode() + b"\n" for r, o, t in keys]
    sent.write_bytes(b"".join(manifest))
    return {"output": str(output), "positions": str(sidecar), "manifest": str(sent)}


def both(
    lines: list[bytes], positions: list[tuple[int, str | None]], manifest: list[bytes] | None = None
) -> tuple[Any, Any]:
    """(the columnar reader's rows, ``chunk_rows``' rows), each a list or the error it raised.

    ``chunk_rows``' input texts that are not text read as the loader stores them (``str``).
    """

    def attempt(read: Callable[[], list[tuple[Any, ...]]]) -> Any:
        try:
            return read()
        except (OutputOrderError, UnexpectedResponseError) as exc:
            return type(exc), str(exc)

    with tempfile.TemporaryDirectory() as folder:
        files = _files(folder, lines, positions, manifest)
        where = {"manifest": files["manifest"], **WHERE}
        columnar = attempt(
            lambda: [
                tuple(row.values())
                for batch in abs_chunk_batches(files["output"], files["positions"], **where)
                for row in batch.to_pylist()
            ]
        )
        expected = attempt(
            lambda: [
                tuple(row._replace(occp_text=_text(row.occp_text), tasks_text=_text(row.tasks_text)))
                for row in chunk_rows(files["output"], files["positions"], **where)
            ]
        )
    return columnar, expected


def _text(value: Any) -> Any:
    return value if value is None or isinstance(value, str) else str(value)


def _positions(count: int, notes: list[str | None]) -> list[tuple[int, str | None]]:
    return [(i + 7, notes[i % len(notes)] if notes else None) for i in range(count)]


def _line(record_id: str, occp: str, status: str = "successful") -> bytes:
    result = {"codeCategory": "261312", "codeLabel": "Developer", "codeConfidence": 0.9}
    data = {
        "recordId": record_id,
        "codeStatus": status,
        "result": result,
        "input": {"occp_text": occp, "tasks_text": ""},
    }
    return json.dumps(data).encode() + b"\n"


def _manifest(*keys: tuple[str, str]) -> list[bytes]:
    return [json.dumps({"recordId": r, "occp_text": o, "tasks_text": ""}).encode() + b"\n" for r, o in keys]


@settings(max_examples=200, deadline=None)
@given(st.lists(USUAL_LINE.map(lambda d: json.dumps(d).encode() + b"\n"), max_size=25), POSITIONS)
def test_usual_lines(lines: list[bytes], notes: list[str | None]) -> None:
    columnar, expected = both(lines, _positions(len(lines), notes))
    assert columnar == expected


@settings(max_examples=300, deadline=None)
@given(st.lists(RAW_LINE, max_size=25), POSITIONS, st.integers(1, 600))
def test_any_lines_in_blocks(lines: list[bytes], notes: list[str | None], block: int) -> None:
    """Blocks of any size: each file's blocks end at other lines than the output's (read to a line's end)."""
    with mock.patch.object(results, "BLOCK_BYTES", block):
        columnar, expected = both(lines, _positions(len(lines), notes))
    assert columnar == expected


@settings(max_examples=200, deadline=None)
@given(st.permutations(range(8)), st.integers(1, 400), st.booleans())
def test_output_out_of_order_is_rejoined_or_refused_as_chunk_rows_does(
    order: list[int], block: int, repeat: bool
) -> None:
    """Whatever the order and the block size, the same rows (re-joined by key) or the same refusal."""
    keys = [(f"r{i}", "same" if repeat and i < 2 else f"job {i}") for i in range(8)]
    if repeat:  # two manifest lines with one key: ambiguous once the order breaks before them
        keys[1] = keys[0]
    lines = [_line(*keys[i]) for i in order]
    with mock.patch.object(results, "BLOCK_BYTES", block):
        columnar, expected = both(lines, _positions(8, []), _manifest(*keys))
    assert columnar == expected


def test_whitespace_is_what_str_strip_removes() -> None:
    assert set(results._WHITESPACE) == {chr(c) for c in range(0x110000) if chr(c).isspace()}


def test_usual_output_in_order_never_takes_the_row_path(monkeypatch: pytest.MonkeyPatch) -> None:
    lines = [
        _line("1", "dev"),
        b'{"recordId":"3","codeStatus":"unsuccessful","suggestions":[{"code":"1","confidence":0.5}]}\n',
        b'{"recordId":"4","error":" \\u2003bad line\\u001c "}\n',
        b'{"recordId":"5","codeStatus":"odd"}',
    ]
    manifest = _manifest(("1", "dev"), ("3", "a"), ("4", "b"), ("5", "c"))
    with tempfile.TemporaryDirectory() as folder:
        expected = both(lines, _positions(4, [None, "n"]), manifest)[1]
        monkeypatch.setattr(results, "chunk_rows", lambda *a, **k: pytest.fail("row path taken"))
        files = _files(folder, lines, _positions(4, [None, "n"]), manifest)
        got = [
            tuple(row.values())
            for batch in abs_chunk_batches(files["output"], files["positions"], manifest=files["manifest"], **WHERE)
            for row in batch.to_pylist()
        ]
    assert got == expected


def test_misaligned_files_are_refused_with_chunk_rows_message() -> None:
    lines = [_line("1", "a"), _line("2", "b"), _line("3", "c")]
    keys = _manifest(("1", "a"), ("2", "b"), ("3", "c"))
    for case in (
        both(lines[:2], _positions(3, []), keys),  # output short
        both(lines, _positions(2, []), keys),  # positions short
        both(lines, _positions(3, []), keys[:2]),  # manifest short
        both(lines, _positions(4, []), keys),  # positions long
    ):
        columnar, expected = case
        assert columnar == expected
        assert columnar[0] is UnexpectedResponseError


def test_an_echo_answering_another_record_is_refused() -> None:
    lines = [_line("1", "a"), _line("2", "someone else")]
    columnar, expected = both(lines, _positions(2, []), _manifest(("1", "a"), ("2", "b")))
    assert columnar == expected
    assert columnar[0] is OutputOrderError


@settings(max_examples=100, deadline=None)
@given(st.lists(RAW_LINE, max_size=25), POSITIONS)
def test_batch_counts_equal_row_counts(lines: list[bytes], notes: list[str | None]) -> None:
    positions = _positions(len(lines), notes)
    with tempfile.TemporaryDirectory() as folder:
        files = _files(folder, lines, positions)
        where = {"manifest": files["manifest"], **WHERE}
        by_batch, by_row = RunSummary(), RunSummary()
        for batch in abs_chunk_batches(files["output"], files["positions"], **where):
            count_batch(by_batch, batch)
        for row in chunk_rows(files["output"], files["positions"], **where):
            by_row.add(row)
    assert by_batch.to_dict() == by_row.to_dict()
