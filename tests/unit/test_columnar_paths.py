"""Which path the extract and the load take, by connection type; and the ADBC URI built from a connection."""

from __future__ import annotations

import logging
import sqlite3
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any
from unittest import mock
from urllib.parse import unquote, urlsplit

import pytest

from airflow_batchcode.columnar import extract
from airflow_batchcode.columnar.adbc import postgres_uri, stream_batches
from tests.support import env_connection

FIELDS = {"record_id": "id", "occp_text": "title", "tasks_text": "duties"}


def _warehouse(tmp_path: Path) -> Path:
    path = tmp_path / "w.db"
    with closing(sqlite3.connect(path)) as conn:
        conn.execute("CREATE TABLE t (id TEXT, title TEXT, duties TEXT)")
        conn.executemany("INSERT INTO t VALUES (?, ?, ?)", [("1", "cook", "cooking"), ("2", "", "")])
        conn.commit()
    return path


def test_a_sqlite_connection_extracts_through_adbc(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=extract.__name__)
    with (
        env_connection("w", {"conn_type": "sqlite", "host": str(_warehouse(tmp_path))}),
        mock.patch.object(extract, "stream_query", side_effect=AssertionError("DB-API path taken")),
    ):
        summary = extract.extract_chunks("w", "SELECT * FROM t", FIELDS, str(tmp_path / "out"))
    assert (summary.sent, summary.rejected) == (1, 1)
    assert "Extracting through ADBC into Arrow record batches" in caplog.text


def test_a_connection_without_a_driver_keeps_the_db_api_path(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=extract.__name__)
    rows = [("1", "cook", "cooking")]

    @contextmanager
    def fake_stream(conn_id: str, sql: str) -> Any:
        yield ["id", "title", "duties"], iter(rows)

    with (
        env_connection("other", {"conn_type": "generic", "host": "example"}),
        mock.patch.object(extract, "stream_query", fake_stream),
    ):
        with stream_batches("other", "SELECT 1") as streamed:
            assert streamed is None
        summary = extract.extract_chunks("other", "SELECT 1", FIELDS, str(tmp_path / "out"))
    assert summary.sent == 1
    assert "Connection 'other' has no ADBC driver here" in caplog.text


def test_the_postgres_uri_quotes_credentials_and_keeps_libpq_options_only() -> None:
    conn = mock.Mock(
        login="us er",
        password="p@ss:w/rd?#",
        host="db.example",
        port=6543,
        schema="ware house",
        extra_dejson={"sslmode": "require", "cursor": "named", "options": "-c search_path=x"},
    )
    uri = urlsplit(postgres_uri(conn))
    assert (unquote(uri.username or ""), unquote(uri.password or "")) == ("us er", "p@ss:w/rd?#")
    assert (uri.hostname, uri.port, unquote(uri.path)) == ("db.example", 6543, "/ware house")
    assert "sslmode=require" in uri.query and "cursor" not in uri.query and "search_path" in unquote(uri.query)


def _batches(count: int) -> list[Any]:
    import pyarrow as pa

    return [pa.record_batch({"n": pa.array(range(i * 3, i * 3 + 3), pa.int64())}) for i in range(count)]


def test_batches_read_ahead_arrive_in_order_and_stop_when_the_reader_fails() -> None:
    import pyarrow as pa

    from airflow_batchcode.columnar.adbc import read_ahead

    schema = pa.schema([("n", pa.int64())])
    got = [b.column(0).to_pylist() for b in read_ahead(pa.RecordBatchReader.from_batches(schema, _batches(4)))]
    assert got == [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9, 10, 11]]

    def failing() -> Any:
        yield from _batches(2)
        raise pa.ArrowInvalid("the connection dropped")

    reader = read_ahead(pa.RecordBatchReader.from_batches(schema, failing()))
    assert next(reader).num_rows == 3
    assert next(reader).num_rows == 3
    with pytest.raises(pa.ArrowInvalid, match="the connection dropped"):
        next(reader)


def test_closing_batches_read_ahead_waits_for_the_read_under_way() -> None:
    import threading

    import pyarrow as pa

    from airflow_batchcode.columnar.adbc import read_ahead

    read, release = threading.Event(), threading.Event()

    def slow() -> Any:
        first, second = _batches(2)
        yield first
        read.set()
        release.wait(5)
        yield second

    reader = read_ahead(pa.RecordBatchReader.from_batches(pa.schema([("n", pa.int64())]), slow()))
    next(reader)
    assert read.wait(5)
    threading.Timer(0.2, release.set).start()
    reader.close()  # returns only once the thread is done with the reader
    assert release.is_set()


def test_the_system_allocator_serves_the_block_and_the_default_pool_comes_back() -> None:
    import pyarrow as pa

    from airflow_batchcode.columnar.adbc import system_allocator

    before = pa.default_memory_pool().backend_name
    with pytest.raises(RuntimeError), system_allocator():
        assert pa.default_memory_pool().backend_name == "system"
        kept = pa.array(["made inside"] * 1000)
        raise RuntimeError("a failure inside")
    assert pa.default_memory_pool().backend_name == before
    assert kept.to_pylist()[0] == "made inside"  # a buffer made inside outlives the block
