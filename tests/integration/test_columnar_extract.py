"""The ADBC extract writes the same files, byte for byte, as the DB-API extract (real SQLite and PostgreSQL).

The warehouses are the pipeline test's (its ``warehouse`` fixture, connection ``test_warehouse``).

Same manifests, positions and rejected records for the same rows, the nasty inputs of the
pipeline test included, with and without ``sanitize``, across chunk and byte limits.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
from collections.abc import Sequence
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from airflow_batchcode.columnar.extract import extract_chunks
from airflow_batchcode.columnar.rules import utf8_limits
from airflow_batchcode.dedupe import TextReuse
from airflow_batchcode.exceptions import ConfigurationError
from airflow_batchcode.manifests import ChunkOptions
from airflow_batchcode.services.catalogue import SERVICES, spec_for
from airflow_batchcode.services.rules import utf8_rules
from tests.integration import test_pipeline
from tests.integration.test_pipeline import seed

warehouse = test_pipeline.warehouse  # the fixture, shared
FIELDS = {"record_id": "respondent_id", "occp_text": "occupation", "tasks_text": "duties"}
ODD = [
    ("ONLY-WHITESPACE", "  \t ", " \n"),
    ("UNICODE-SPACE", "nurse\u00a0aide", "caring\u2028for"),
    ("CONTROL", "clerk\x01", "filing\x7f"),
    ("ESCAPES", 'say "hi"\\', "back\\slash"),
    ("EXACT-300", "a" * 150, "b" * 150),
    ("OVER-300", "a" * 150, "b" * 151),
    ("SANITISABLE", "caf\u00e9   owner", "runs  the caf\u00e9 " * 30),
]


def _seed(kind: str, connect: Any) -> int:
    placeholder = "?" if kind == "sqlite" else "%s"
    with closing(connect()) as conn:
        total = seed(conn, placeholder, sample=1200)
        insert = f"INSERT INTO survey_responses VALUES ({', '.join([placeholder] * 4)})"
        conn.cursor().executemany(insert, [(rid, "2026-01-01", occp, tasks) for rid, occp, tasks in ODD])
        conn.commit()
    return total + len(ODD)


def _files(folder: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir())}


class _Cache:
    """A result cache holding a fixed quarter of all digests (those starting 0-3)."""

    def hits(self, digests: Sequence[str]) -> set[str]:
        return {digest for digest in digests if digest[0] in "0123"}


@pytest.mark.parametrize("reuse", [None, "dedupe", "dedupe+cache", "dedupe+cache+recode"])
@pytest.mark.parametrize("sanitize", [False, True])
@pytest.mark.parametrize(("chunk_records", "max_chunk_bytes"), [(150, 5 * 1024**3 - 64 * 1024**2), (10_000, 4096)])
def test_adbc_extract_writes_the_db_api_files(
    warehouse: tuple[str, Any],
    tmp_path: Path,
    sanitize: bool,
    chunk_records: int,
    max_chunk_bytes: int,
    reuse: str | None,
) -> None:
    total = _seed(*warehouse)
    sql = "SELECT respondent_id, occupation, duties FROM survey_responses ORDER BY respondent_id, occupation, duties"
    fields = FIELDS
    if reuse is not None and "recode" in reuse:  # a third of the records re-code an earlier run, rejected ones too
        recode = "CASE WHEN length(occupation) % 3 = 0 THEN 'earlier-run' END AS recode_of"
        sql = sql.replace("duties FROM", f"duties, {recode} FROM")
        fields = {**FIELDS, "recode_of": "recode_of"}
    summaries = {}
    for columnar in (True, False):
        folder = tmp_path / str(columnar)
        with contextlib.ExitStack() as stack:
            chooser = None
            if reuse is not None:
                folder.mkdir()
                sink = stack.enter_context((folder / "reused.jsonl").open("wb"))
                cache = _Cache() if "cache" in reuse else None
                chooser = TextReuse(sink, dedupe=True, cache=cache, list_sent=cache is not None)
            summaries[columnar] = extract_chunks(
                "test_warehouse",
                sql,
                fields,
                str(folder),
                options=ChunkOptions(chunk_records, max_chunk_bytes, sanitize),
                columnar=columnar,
                reuse=chooser,
            )
    arrow, rows = summaries[True], summaries[False]
    assert rows.rows == total
    counted = ("rows", "sent", "rejected", "sanitized", "distinct", "duplicates", "cached")
    assert [getattr(arrow, name) for name in counted] == [getattr(rows, name) for name in counted]
    if reuse is not None:
        assert rows.duplicates > 0 and (rows.cached > 0) == ("cache" in reuse)
        listed = (tmp_path / "False" / "reused.jsonl").read_bytes()
        assert (b'"earlier-run"' in listed and b'"rejected"' in listed) == ("recode" in reuse)
    assert [(c.records, c.bytes, c.digest) for c in arrow.chunks] == [
        (c.records, c.bytes, c.digest) for c in rows.chunks
    ]
    assert (len(rows.chunks) > 1 or reuse is not None) and rows.rejected > 0  # repeats sent once fill fewer chunks
    columnar_files, row_files = _files(tmp_path / "True"), _files(tmp_path / "False")
    assert columnar_files == row_files
    assert b"ONLY-WHITESPACE" in row_files["rejected.jsonl"]


@pytest.mark.parametrize("sanitize", [False, True])
@pytest.mark.parametrize("service", ["gravity", "superai", "a UTF-8 service taking 300 bytes"])
def test_adbc_extract_writes_the_db_api_files_under_a_utf8_services_rules(
    warehouse: tuple[str, Any], tmp_path: Path, sanitize: bool, service: str
) -> None:
    """The UTF-8 services send what ABS refuses (non-ASCII, controls): the same files on both paths,
    under their catalogue rules and under a limit small enough to reject and truncate."""
    total = _seed(*warehouse)
    if service in SERVICES:
        rules, limits = spec_for(service).rules(), spec_for(service).limits()
    else:
        rules, limits = utf8_rules(300), utf8_limits(300)
    sql = "SELECT respondent_id, occupation, duties FROM survey_responses ORDER BY respondent_id, occupation, duties"
    options = ChunkOptions(chunk_records=500, sanitize_records=sanitize)
    summaries = {
        columnar: extract_chunks(
            "test_warehouse",
            sql,
            FIELDS,
            str(tmp_path / str(columnar)),
            options=options,
            rules=rules,
            limits=limits,
            columnar=columnar,
        )
        for columnar in (True, False)
    }
    arrow, rows = summaries[True], summaries[False]
    counted = ("rows", "sent", "rejected", "sanitized")
    assert [getattr(arrow, name) for name in counted] == [getattr(rows, name) for name in counted]
    assert rows.rows == total and len(rows.chunks) > 1
    assert _files(tmp_path / "True") == _files(tmp_path / "False")
    sent = b"".join((tmp_path / "False" / Path(c.manifest).name).read_bytes() for c in rows.chunks)
    assert "caf\u00e9".encode() in sent, "non-ASCII texts are sent as they are"
    rejected = (tmp_path / "False" / "rejected.jsonl").read_bytes()
    assert b"ONLY-WHITESPACE" in rejected
    if service not in SERVICES:
        assert (b"OVER-300" in rejected) is not sanitize, "over the limit: rejected, or truncated when sanitising"


def test_sqlite_bytes_bad_utf8_and_mixed_types_read_as_the_db_api_reads_them(tmp_path: Path) -> None:
    path = tmp_path / "warehouse.db"
    with closing(sqlite3.connect(path)) as conn:
        conn.execute("CREATE TABLE t (id, occupation, duties)")
        conn.executemany("INSERT INTO t VALUES (?, ?, ?)", [(i, f"job {i}", "tasks") for i in range(2500)])
        conn.execute("INSERT INTO t VALUES ('text-id', CAST(x'ff41' AS TEXT), x'c3a9c3')")
        conn.execute("INSERT INTO t VALUES (NULL, 'clerk', x'6f6b')")
        conn.commit()
    os.environ["AIRFLOW_CONN_TEST_COLUMNAR"] = json.dumps({"conn_type": "sqlite", "host": str(path)})
    try:
        fields = {"record_id": "id", "occp_text": "occupation", "tasks_text": "duties"}
        for columnar in (True, False):
            extract_chunks("test_columnar", "SELECT * FROM t", fields, str(tmp_path / str(columnar)), columnar=columnar)
    finally:
        os.environ.pop("AIRFLOW_CONN_TEST_COLUMNAR", None)
    assert _files(tmp_path / "True") == _files(tmp_path / "False")
    assert b'"recordId":"","occp_text":"clerk","tasks_text":"ok"' in _files(tmp_path / "True")["chunk-00001.jsonl"]


def test_sqlite_column_changing_type_after_the_first_batch_falls_back_to_the_db_api_path(tmp_path: Path) -> None:
    path = tmp_path / "warehouse.db"
    with closing(sqlite3.connect(path)) as conn:
        conn.execute("CREATE TABLE t (id, occupation, duties)")
        conn.executemany("INSERT INTO t VALUES (?, 'job', 'tasks')", [(i,) for i in range(10_001)] + [(1.5,)])
        conn.commit()
    os.environ["AIRFLOW_CONN_TEST_COLUMNAR"] = json.dumps({"conn_type": "sqlite", "host": str(path)})
    try:
        fields = {"record_id": "id", "occp_text": "occupation", "tasks_text": "duties"}
        summaries = [
            extract_chunks("test_columnar", "SELECT * FROM t", fields, str(tmp_path / str(c)), columnar=c)
            for c in (True, False)
        ]
    finally:
        os.environ.pop("AIRFLOW_CONN_TEST_COLUMNAR", None)
    assert summaries[0].sent == summaries[1].sent == 10_002
    assert _files(tmp_path / "True") == _files(tmp_path / "False")
    assert b'"recordId":"1.5"' in _files(tmp_path / "True")["chunk-00001.jsonl"]
    # with de-duplication the extract has listed repeats already and cannot start over: a clear error
    os.environ["AIRFLOW_CONN_TEST_COLUMNAR"] = json.dumps({"conn_type": "sqlite", "host": str(path)})
    try:
        with (tmp_path / "reused.jsonl").open("wb") as sink, pytest.raises(ConfigurationError, match="columnar=False"):
            reuse = TextReuse(sink, dedupe=True, cache=None, list_sent=False)
            extract_chunks("test_columnar", "SELECT * FROM t", fields, str(tmp_path / "reused"), reuse=reuse)
    finally:
        os.environ.pop("AIRFLOW_CONN_TEST_COLUMNAR", None)
