"""An extract query the source database refuses ends in a SourceQueryError naming the connection, on every path.

Real SQLite and PostgreSQL databases, through the DB-API path (``stream_query``) and the ADBC one
(``stream_batches``); the database's own words stay in the message and its exception is the cause.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import pytest

from airflow_batchcode.columnar.adbc import stream_batches
from airflow_batchcode.exceptions import ConfigurationError, SourceQueryError
from airflow_batchcode.warehouse import stream_query
from tests.support import env_connection, postgres_database, sqlite_warehouse

Streamer = Callable[[str, str], AbstractContextManager[Any]]
PATHS: dict[str, Streamer] = {"dbapi": stream_query, "adbc": stream_batches}


@pytest.mark.parametrize("path", PATHS)
def test_a_missing_column_or_table_in_sqlite_names_the_connection(tmp_path: Path, path: str) -> None:
    sqlite_warehouse(tmp_path, 10)
    for sql, words in (
        ("SELECT respondent_id, job_title FROM survey_responses", "no such column: job_title"),
        ("SELECT * FROM answers", "no such table: answers"),
    ):
        with pytest.raises(SourceQueryError) as raised, PATHS[path]("test_warehouse", sql):
            pass
        assert str(raised.value).startswith("The extract query failed on connection 'test_warehouse': ")
        assert words in str(raised.value)  # the database's own words (ADBC's come with its driver's prefix)
        assert "Rendered Template" in str(raised.value) and isinstance(raised.value, ConfigurationError)
        assert raised.value.__cause__ is not None and raised.value.conn_id == "test_warehouse"


@pytest.mark.postgres
@pytest.mark.parametrize("path", PATHS)
def test_a_missing_table_in_postgresql_names_the_connection(path: str) -> None:
    with postgres_database() as fields, env_connection("test_pg_source", fields):
        with pytest.raises(SourceQueryError, match="failed on connection 'test_pg_source': .*answers") as raised:
            with PATHS[path]("test_pg_source", "SELECT id FROM answers"):
                pass
    assert raised.value.__cause__ is not None


def test_an_error_of_the_code_reading_the_rows_is_not_taken_for_the_querys(tmp_path: Path) -> None:
    sqlite_warehouse(tmp_path, 10)
    with pytest.raises(KeyError), stream_query("test_warehouse", "SELECT * FROM survey_responses") as (_, rows):
        next(rows)
        raise KeyError("the caller's own")
