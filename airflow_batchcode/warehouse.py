"""The warehouse side of the pipeline: the extract query streamed out, the output table loaded.

:func:`stream_query` runs the extract on any common-sql connection through ``fetchmany``
(server-side cursors where the driver has them, psycopg 3's chunked stream where libpq allows),
never holding the result set whole. The output table is created when missing; loading a run
deletes that run's earlier rows and inserts the new ones in one transaction, so re-running or
clearing a run never duplicates. PostgreSQL gets ``COPY FROM STDIN`` (:mod:`airflow_batchcode.pg_copy`);
other databases get batched ``executemany``. A row of the output table is a :class:`Row` and the
loader's three columns (:data:`TABLE_COLUMNS`).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
from collections.abc import Callable, Generator, Iterable, Iterator
from datetime import UTC, datetime
from functools import partial
from typing import Any, NamedTuple

from airflow_batchcode.exceptions import BatchCodeError, ConfigurationError, PartialLoadError, SourceQueryError
from airflow_batchcode.pg_copy import RowLoader, TableRow, copy_blocks, row_copier
from airflow_batchcode.rows import COLUMNS, Row

TABLE_COLUMNS = (*COLUMNS, "dag_id", "dag_run_id", "loaded_at")
COLUMN_TYPES = {
    "position": "BIGINT",
    "code_confidence": "DOUBLE PRECISION",
    "agreement": "DOUBLE PRECISION",
    "chunk": "INTEGER",
    "loaded_at": "TIMESTAMP",
}
"""SQL types of the output table's columns that are not ``TEXT``."""


def column_type(name: str) -> str:
    """The SQL type of an output-table column."""
    return COLUMN_TYPES.get(name, "TEXT")


_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?$")
BATCH_ROWS = 10_000
FETCH_ROWS = 10_000


@contextlib.contextmanager
def stream_query(conn_id: str, sql: str, *, fetch_rows: int = FETCH_ROWS) -> Iterator[tuple[list[str], Iterator[Any]]]:
    """Run ``sql`` on a common-sql connection; yield its column names and a row iterator.

    PostgreSQL rows come from psycopg 3's chunked ``stream`` where libpq has it (17 and later),
    else a server-side (named) cursor; other databases use ``fetchmany``: the result set is
    never held in memory whole. SQLite text that is not valid
    UTF-8 is read with bad bytes shown as U+FFFD (the query is re-run in the same read
    transaction with a decoding text factory, only if such text turns up).
    """
    from airflow.sdk import BaseHook

    hook = BaseHook.get_connection(conn_id).get_hook()
    conn = hook.get_conn()
    try:
        if type(conn).__module__.startswith("sqlite3"):
            if not conn.in_transaction:
                conn.execute("BEGIN")  # one snapshot, should the query have to be re-run
            cursor = conn.cursor()
            with source_query(conn_id):
                cursor.execute(sql)
            columns = [d[0] for d in cursor.description or ()]
            yield columns, itertools.chain.from_iterable(_sqlite_batches(conn, cursor, sql, fetch_rows))
        else:
            first = None
            streamed = _chunked_stream(conn, sql, fetch_rows)
            if streamed is not None:
                cursor, stream = streamed
                try:
                    with source_query(conn_id):
                        first = next(stream, None)  # runs the query; its columns are known from the first row
                    if first is not None:
                        columns = [d[0] for d in cursor.description or ()]
                        yield columns, itertools.chain((first,), stream)
                finally:
                    stream.close()  # a stream left half read would hold the connection
            if first is None:  # no chunked stream, or an empty result (whose columns a stream does not give)
                cursor = _server_side_cursor(conn, fetch_rows)
                with source_query(conn_id):
                    cursor.execute(sql)
                columns = [d[0] for d in cursor.description or ()]
                yield columns, itertools.chain.from_iterable(iter(partial(cursor.fetchmany, fetch_rows), []))
        cursor.close()
    finally:
        with contextlib.suppress(Exception):
            conn.rollback()
        conn.close()


@contextlib.contextmanager
def source_query(conn_id: str) -> Iterator[None]:
    """Run the extract query in the block: a database's error (each driver has its own classes) becomes a
    :class:`~airflow_batchcode.exceptions.SourceQueryError` naming the connection."""
    try:
        yield
    except BatchCodeError:
        raise
    except Exception as exc:
        raise SourceQueryError(conn_id, exc) from exc


def _replace_bad_utf8(raw: bytes) -> str:
    return raw.decode("utf-8", "replace")


def _sqlite_batches(conn: Any, cursor: Any, sql: str, fetch_rows: int) -> Iterator[list[Any]]:
    """``fetchmany`` batches; on text that is not UTF-8, re-run with a decoding factory and skip what was read."""
    import sqlite3

    done = 0
    while True:
        try:
            while batch := cursor.fetchmany(fetch_rows):
                done += len(batch)
                yield batch
            return
        except sqlite3.OperationalError as exc:
            if conn.text_factory is _replace_bad_utf8 or "decode" not in str(exc):
                raise
        conn.text_factory = _replace_bad_utf8
        cursor = conn.cursor()
        cursor.execute(sql)
        skip = done
        while skip and (batch := cursor.fetchmany(min(skip, fetch_rows))):
            skip -= len(batch)


def _chunked_stream(conn: Any, sql: str, fetch_rows: int) -> tuple[Any, Generator[Any, None, None]] | None:
    """psycopg 3 over libpq 17 or later: a cursor and its ``stream`` of ``sql``'s rows in chunks of ``fetch_rows``.

    The server sends the rows without waiting to be asked for each batch (as with ``COPY``),
    and psycopg converts them a chunk at a time: half the time of a server-side cursor's
    ``fetchmany`` round trips. ``None`` for other drivers and older libpq.
    """
    module = type(conn).__module__
    if module != "psycopg" and not module.startswith("psycopg."):  # psycopg 3 (psycopg2 is another driver)
        return None
    try:
        from psycopg import capabilities
    except ImportError:
        return None
    if not capabilities.has_stream_chunked():
        return None
    cursor = conn.cursor()
    return cursor, cursor.stream(sql, size=fetch_rows)


def _server_side_cursor(conn: Any, fetch_rows: int) -> Any:
    module = type(conn).__module__
    if module.startswith(("psycopg2", "psycopg")):
        cursor = conn.cursor(name=f"batchcode_extract_{os.getpid()}")
        cursor.itersize = fetch_rows
        return cursor
    return conn.cursor()


def check_table_name(table: str) -> str:
    """A plain ``table`` or ``schema.table`` name (no quoting games, no injection).

    Every statement below interpolates only names checked here; values are always bound.
    """
    if not _IDENTIFIER.match(table):
        raise ConfigurationError(f"output_table {table!r} must be a plain name or schema.name")
    return table


def create_table_sql(table: str) -> list[str]:
    """DDL for the output table and its one index (portable across SQLite and PostgreSQL)."""
    columns = ",\n  ".join(f"{name} {column_type(name)}" for name in TABLE_COLUMNS)
    return [f"CREATE TABLE IF NOT EXISTS {table} (\n  {columns}\n)", run_index_sql(table)]


def run_index_sql(table: str) -> str:
    """The output table's index on ``(dag_id, dag_run_id, position)``: a run's rows (the load's delete, the
    report) and the review queue's keyset pages in position order.

    One index serves both. Output tables made by earlier versions of this package also have a
    2-column ``ix_<table>_run`` index, whose upkeep slows every insert (100,000 rows into PostgreSQL:
    0.95-1.05 s with both, 0.72-0.82 s with one); it is left in place, and can be dropped.
    """
    return f"CREATE INDEX IF NOT EXISTS ix_{table.replace('.', '_')}_queue ON {table} (dag_id, dag_run_id, position)"


def add_missing_columns_sql(cursor: Any, table: str) -> list[str]:
    """``ALTER TABLE`` statements adding columns a newer release of this package writes to an older table."""
    cursor.execute(f"SELECT * FROM {table} WHERE 1 = 0")  # noqa: S608
    existing = {column[0].lower() for column in cursor.description}
    cursor.fetchall()
    return [
        f"ALTER TABLE {table} ADD COLUMN {name} {column_type(name)}" for name in TABLE_COLUMNS if name not in existing
    ]


def prepare_table(cursor: Any, table: str) -> None:
    """Create ``table`` and its run index if missing, and add the columns an older table lacks (not committed)."""
    for statement in create_table_sql(table):
        cursor.execute(statement)
    for statement in add_missing_columns_sql(cursor, table):
        cursor.execute(statement)


AfterInsert = Callable[[Any, Any, Any], int]
"""``after(conn, cursor, loaded_at) -> rows it inserted``: more of the run's rows, written in the database
inside the load's transaction (:class:`airflow_batchcode.result_cache.RunFill`)."""


class CsvRows(NamedTuple):
    """A run's rows as blocks of CSV of all :data:`TABLE_COLUMNS` for PostgreSQL's ``COPY ... (FORMAT csv)``
    (an unquoted empty field is NULL, a quoted one empty text), as Arrow writes them
    (:func:`airflow_batchcode.columnar.load.ingest_run_batches`)."""

    blocks: Iterable[bytes]
    loaded_at: datetime


class Staged(NamedTuple):
    """A run's rows already bulk-loaded into a table of their own in the output's database
    (:func:`airflow_batchcode.columnar.load.ingest_run_batches`), all of :data:`TABLE_COLUMNS`."""

    table: str
    rows: int
    loaded_at: datetime | str


def replace_run_rows(
    conn_id: str,
    table: str,
    rows: Iterable[Row],
    *,
    dag_id: str,
    run_id: str,
    after: AfterInsert | None = None,
    staged: Staged | CsvRows | None = None,
) -> int:
    """Create ``table`` if needed, then replace the run's rows with ``rows`` in one transaction.

    :param after: run after ``rows`` are in (and before the reviews are applied), in the same transaction.
    :param staged: take the rows from this staging table instead of ``rows`` (``INSERT ... SELECT``), and drop
        it in the same transaction; or from these CSV blocks (``COPY``, PostgreSQL through psycopg).
    :return: the rows inserted.
    """
    from airflow.sdk import BaseHook

    from airflow_batchcode.ui.reviews import apply_reviews, review_ddl

    check_table_name(table)
    hook = BaseHook.get_connection(conn_id).get_hook()
    conn = hook.get_conn()
    now = load_time()
    # SQLite gets the text sqlite3's datetime adapter would store, converted once instead of per row
    loaded_at: datetime | str = now.isoformat(" ") if _is_sqlite(conn) else now
    if staged is not None:
        loaded_at = staged.loaded_at
    full = ((*row, dag_id, run_id, loaded_at) for row in rows)
    try:
        cursor = conn.cursor()
        prepare_table(cursor, table)
        for statement in review_ddl(table):
            cursor.execute(statement)
        conn.commit()
        placeholder = "?" if _is_sqlite(conn) else "%s"
        delete = f"DELETE FROM {table} WHERE dag_id = {placeholder} AND dag_run_id = {placeholder}"  # noqa: S608
        cursor.execute(delete, (dag_id, run_id))
        if staged is None:
            insert = _copy_loader(conn, cursor, table) or _executemany_loader(cursor, table, placeholder)
            count = insert(full)
        elif isinstance(staged, CsvRows):
            count = _copy_csv(conn, cursor, table, staged.blocks)
        else:
            count = _insert_staged(cursor, table, staged)
        if after is not None:
            count += after(conn, cursor, loaded_at)
        apply_reviews(conn, table, dag_id=dag_id, run_id=run_id)  # reviewers' decisions outlive a reload
        conn.commit()
        return count
    except Exception:
        conn.rollback()
        raise
    finally:
        conn.close()


def load_time() -> datetime:
    """The time a load stamps its rows with (``loaded_at``): now, in UTC, without a zone."""
    return datetime.now(UTC).replace(tzinfo=None)


def _insert_staged(cursor: Any, table: str, staged: Staged) -> int:
    """Move the staged rows into ``table`` and drop the staging table (not committed)."""
    names = ", ".join(TABLE_COLUMNS)
    cursor.execute(f"INSERT INTO {table} ({names}) SELECT {names} FROM {check_table_name(staged.table)}")  # noqa: S608
    if cursor.rowcount not in (-1, staged.rows):
        raise PartialLoadError(f"Moved {cursor.rowcount} staged rows of {staged.rows}: refusing a partial load")
    cursor.execute(f"DROP TABLE {staged.table}")
    return staged.rows


def _copy_csv(conn: Any, cursor: Any, table: str, blocks: Iterable[bytes]) -> int:
    """``COPY`` CSV ``blocks`` into ``table`` (not committed); return the rows copied."""
    return copy_blocks(conn, cursor, f"COPY {table} ({', '.join(TABLE_COLUMNS)}) FROM STDIN (FORMAT csv)", blocks)


def _is_sqlite(conn: Any) -> bool:
    return type(conn).__module__.startswith("sqlite3")


def _executemany_loader(cursor: Any, table: str, placeholder: str) -> RowLoader:
    values = ", ".join([placeholder] * len(TABLE_COLUMNS))
    statement = f"INSERT INTO {table} ({', '.join(TABLE_COLUMNS)}) VALUES ({values})"  # noqa: S608

    def load(rows: Iterable[TableRow]) -> int:
        count = 0
        source = iter(rows)
        while batch := list(itertools.islice(source, BATCH_ROWS)):
            cursor.executemany(statement, batch)
            count += len(batch)
        return count

    return load


def _copy_loader(conn: Any, cursor: Any, table: str) -> RowLoader | None:
    """``COPY ... FROM STDIN`` for psycopg 3 and psycopg2; ``None`` for other drivers."""
    return row_copier(conn, cursor, f"COPY {table} ({', '.join(TABLE_COLUMNS)}) FROM STDIN", batch_rows=BATCH_ROWS)
