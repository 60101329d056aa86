"""ABS output joined to its manifest: verified in order, re-joined when reordered, refused when ambiguous.

The output files come from the ABS emulator's own coder, and the reordered ones from its
reordered-output fault (``reorder_lines``), so the tests read what the emulator serves.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest

from airflow_batchcode.emulator.coding_model import load_models
from airflow_batchcode.emulator.processing import code_file, reorder_lines
from airflow_batchcode.exceptions import OutputOrderError, UnexpectedResponseError
from airflow_batchcode.normalise.abs import chunk_rows
from airflow_batchcode.rows import Stamp
from airflow_batchcode.sample_data import survey_responses


def _chunk(tmp_path: Path, records: list[dict[str, Any]], *, reorder: str | None = None) -> dict[str, str]:
    """Write a manifest and positions (positions start at 101, every third has a note), code it, maybe reorder."""
    manifest, positions, output = tmp_path / "manifest.jsonl", tmp_path / "positions.tsv", tmp_path / "output.jsonl"
    manifest.write_text("".join(json.dumps(r, separators=(",", ":")) + "\n" for r in records))
    positions.write_text("".join(f"{101 + i}\t{'n' + str(i) if i % 3 == 0 else ''}\n" for i in range(len(records))))
    model = load_models()["anzsco"][-1]
    code_file(manifest, output, model, threading.Event())
    if reorder is not None:
        reorder_lines(output, reorder)
    return {"output": str(output), "positions": str(positions), "manifest": str(manifest)}


def _rows(files: dict[str, str]) -> list[tuple[Any, ...]]:
    return list(
        chunk_rows(
            files["output"],
            files["positions"],
            manifest=files["manifest"],
            stamp=Stamp(chunk=0, operation_id="op-1", topic="anzsco", model_id="m"),
        )
    )


def _records(count: int, *, ids: bool = True) -> list[dict[str, Any]]:
    records = []
    for i, r in enumerate(survey_responses(count, seed=7, messy=False)):
        record = {"occp_text": r.occp_text, "tasks_text": f"{r.tasks_text} ({i})"[:150]}
        records.append({"recordId": f"R{i}", **record} if ids else record)
    return records


def _by_position(rows: list[tuple[Any, ...]]) -> dict[int, tuple[Any, ...]]:
    return {row[1]: row for row in rows}


@pytest.mark.parametrize("ids", [True, False], ids=["with-ids", "without-ids"])
def test_a_reordered_output_gives_the_same_rows_as_the_ordered_one(tmp_path: Path, ids: bool) -> None:
    records = _records(60, ids=ids)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    ordered = _by_position(_rows(_chunk(tmp_path / "a", records)))
    reordered_files = _chunk(tmp_path / "b", records, reorder="seed-1")
    assert Path(reordered_files["output"]).read_bytes() != Path(tmp_path / "a" / "output.jsonl").read_bytes()
    reordered = _by_position(_rows(reordered_files))
    assert sorted(ordered) == list(range(101, 161))
    assert reordered == ordered, "every code stays on its own source row, notes included"
    for i, record in enumerate(records):
        row = ordered[101 + i]
        assert (row[8], row[9]) == (record["occp_text"], record["tasks_text"])
        assert row[10] == (f"n{i}" if i % 3 == 0 else None)


def test_ambiguous_keys_after_a_reorder_refuse_the_load(tmp_path: Path) -> None:
    records = _records(20, ids=False)
    records[15] = dict(records[4])  # the same texts twice, no record id to tell them apart
    files = _chunk(tmp_path, records, reorder="seed-2")
    with pytest.raises(OutputOrderError, match="several source rows"):
        _rows(files)


def test_duplicate_keys_in_order_still_load(tmp_path: Path) -> None:
    records = _records(10, ids=False)
    records[7] = dict(records[2])
    rows = _rows(_chunk(tmp_path, records))
    assert [r[1] for r in rows] == list(range(101, 111))


def test_an_output_line_answering_another_record_is_refused(tmp_path: Path) -> None:
    records = _records(10)
    files = _chunk(tmp_path, records)
    lines = Path(files["output"]).read_text().splitlines(keepends=True)
    swapped = json.loads(lines[5])
    swapped["input"]["occp_text"] = "somebody else"
    lines[5] = json.dumps(swapped) + "\n"
    Path(files["output"]).write_text("".join(lines))
    with pytest.raises(OutputOrderError, match="line 6 answers no waiting manifest line"):
        _rows(files)


def test_a_missing_output_line_is_refused_in_order_and_out_of_order(tmp_path: Path) -> None:
    files = _chunk(tmp_path, _records(10))
    lines = Path(files["output"]).read_text().splitlines(keepends=True)
    Path(files["output"]).write_text("".join(lines[:-1]))
    with pytest.raises(UnexpectedResponseError, match="fewer lines than its manifest"):
        _rows(files)
    Path(files["output"]).write_text("".join(lines[1:]))
    with pytest.raises(OutputOrderError, match="unanswered"):
        _rows(files)


@pytest.mark.parametrize(("cut", "message"), [(-1, "Positions file .* has fewer lines"), (None, "more lines")])
def test_a_positions_file_of_another_length_is_refused(tmp_path: Path, cut: int | None, message: str) -> None:
    """A short sidecar must not let the output's and manifest's next lines go by unseen (nothing is lost)."""
    files = _chunk(tmp_path, _records(10))
    lines = Path(files["positions"]).read_text().splitlines(keepends=True)
    Path(files["positions"]).write_text("".join(lines[:cut] if cut else [*lines, "999\t\n"]))
    with pytest.raises(UnexpectedResponseError, match=message):
        _rows(files)


def test_the_emulator_fault_is_reproducible_and_always_reorders(tmp_path: Path) -> None:
    path = tmp_path / "f"
    original = b"".join(b"%d\n" % i for i in range(2))
    for seed in ("a", "b", "c"):
        path.write_bytes(original)
        reorder_lines(path, seed)
        assert path.read_bytes() == b"1\n0\n"


@pytest.mark.parametrize("metadata", [b"<html>gateway page</html>", b'["a list"]', b'{"model": {"modelId": "m-meta"}}'])
def test_the_load_keeps_going_whatever_shape_the_metadata_has(tmp_path: Path, metadata: bytes) -> None:
    from airflow_batchcode.chunks import Chunk
    from airflow_batchcode.results import chunk_results
    from airflow_batchcode.staging import METADATA_FILE, OPERATION_FILE
    from airflow_batchcode.summary import RunSummary

    files = _chunk(tmp_path, _records(5))
    (tmp_path / METADATA_FILE).write_bytes(metadata)
    operation = {"service": "abs", "operation_id": "op-9", "topic": "anzsco", "model": "m-requested"}
    (tmp_path / OPERATION_FILE).write_text(json.dumps(operation))
    chunk = Chunk(
        index=1,
        manifest=files["manifest"],
        positions=files["positions"],
        results=str(tmp_path),
        records=5,
        bytes=Path(files["manifest"]).stat().st_size,
    )
    rows = list(chunk_results(chunk, "anzsco", RunSummary(operations=1)))
    assert [r[1] for r in rows] == list(range(101, 106))
    expected = "m-meta" if b"m-meta" in metadata else "m-requested"
    assert {r[12] for r in rows} == {expected}
    assert (tmp_path / METADATA_FILE).read_bytes() == metadata, "kept raw"
