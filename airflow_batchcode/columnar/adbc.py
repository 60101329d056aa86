"""ADBC sessions from Airflow connections: the extract query streamed as Arrow record batches, and bulk ingest.

A connection of type ``postgres`` or ``sqlite`` has an ADBC driver here; :func:`adbc_session`
opens it with the Airflow connection's own credentials (host, port, login, password, schema
and the libpq options of its extras) and returns ``None`` for every other type, whose callers
keep the DB-API path.

:class:`AdbcSession` speaks to ``adbc_driver_manager``'s own statements, not to its DB-API
module: that module imports Polars and ``pyarrow.dataset`` for conversions this package never
asks for. Measured on this machine, after Airflow's own imports (113 MB): the DB-API module
took the process to 184 MB before any data, the driver manager with ``pyarrow`` to 138 MB;
an extract of 100,000 SQLite rows peaked at 225 MB through the DB-API module.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
from collections.abc import Generator, Iterable, Iterator
from typing import Any
from urllib.parse import quote, urlencode

import pyarrow as pa

from airflow_batchcode.warehouse import source_query

DRIVERS = ("postgres", "sqlite")
"""Connection types with an ADBC driver."""
BATCH_BYTES = 1 << 20
"""PostgreSQL: the size a record batch aims at (memory stays flat however large the extract).

Measured on 1,000,000 rows (3 text columns), best of 3: 8 MB batches took 0.60-0.76 s at a peak
RSS of 291-296 MB, 4 MB 0.62-0.63 s at 235 MB, 2 MB 0.56-0.57 s at 214 MB, 1 MB 0.58 s at 201 MB.
Smaller batches cost no time (each one's columns stay in the CPU's caches) and hold less.
"""
BATCH_ROWS = 10_000
"""SQLite: rows per record batch."""
_LIBPQ_EXTRAS = (
    "sslmode",
    "sslcert",
    "sslkey",
    "sslrootcert",
    "sslcrl",
    "connect_timeout",
    "application_name",
    "options",
)


def has_driver(conn_id: str, *types: str) -> bool:
    """Whether the connection ``conn_id`` has an ADBC driver (of one of ``types``, when given)."""
    from airflow.sdk import BaseHook

    return BaseHook.get_connection(conn_id).conn_type in (types or DRIVERS)


class AdbcSession:
    """One ADBC connection in a transaction of its own (autocommit off): query, execute, ingest, commit."""

    def __init__(self, database: Any, *, sqlite: bool) -> None:
        import adbc_driver_manager

        self._manager = adbc_driver_manager
        self.sqlite = sqlite
        """SQLite (``?`` placeholders, row-count batches) rather than PostgreSQL (``$1``, byte-size batches)."""
        self._database = database
        self._conn = adbc_driver_manager.AdbcConnection(database)
        self._conn.set_autocommit(False)
        self._statements: list[Any] = []

    def _statement(self) -> Any:
        statement = self._manager.AdbcStatement(self._conn)
        self._statements.append(statement)
        return statement

    def query(self, sql: str) -> pa.RecordBatchReader:
        """``sql``'s result as a stream of record batches of bounded size (the result is never held whole)."""
        statement = self._statement()
        options = (
            {"adbc.sqlite.query.batch_rows": str(BATCH_ROWS)}
            if self.sqlite
            else {"adbc.postgresql.batch_size_hint_bytes": str(BATCH_BYTES)}
        )
        statement.set_options(**options)
        statement.set_sql_query(sql)
        stream, _ = statement.execute_query()
        return pa.RecordBatchReader.from_stream(stream)

    def execute(self, sql: str, *params: str) -> int:
        """Run one statement with text parameters (``?`` for SQLite, ``$1`` for PostgreSQL); rows affected or -1."""
        statement = self._statement()
        statement.set_sql_query(sql)
        if params:
            names = [f"p{index}" for index in range(len(params))]
            statement.bind(pa.record_batch([pa.array([value]) for value in params], names=names))
        affected: int = statement.execute_update()
        return affected

    def ingest(self, table: str, batches: pa.RecordBatchReader, *, temporary: bool = True) -> int:
        """Create ``table`` and stream ``batches`` into it (binary ``COPY`` on PostgreSQL); rows ingested or -1."""
        statement = self._statement()
        statement.set_options(
            **{
                self._manager.INGEST_OPTION_TARGET_TABLE: table,
                self._manager.INGEST_OPTION_MODE: self._manager.INGEST_OPTION_MODE_CREATE,
                "adbc.ingest.temporary": "true" if temporary else "false",
            }
        )
        statement.bind_stream(batches)
        affected: int = statement.execute_update()
        return affected

    def commit(self) -> None:
        self._conn.commit()

    def rollback(self) -> None:
        self._conn.rollback()

    def close(self) -> None:
        """Release the statements, then the connection and the database (ADBC wants that order)."""
        for resource in (*reversed(self._statements), self._conn, self._database):
            with contextlib.suppress(Exception):
                resource.close()
        self._statements.clear()


def adbc_session(conn_id: str) -> AdbcSession | None:
    """An :class:`AdbcSession` for ``conn_id``, or ``None`` when its type has no driver here."""
    from airflow.sdk import BaseHook

    conn = BaseHook.get_connection(conn_id)
    if conn.conn_type == "sqlite":
        import adbc_driver_sqlite

        return AdbcSession(adbc_driver_sqlite.connect(_sqlite_uri(conn.host or "")), sqlite=True)
    if conn.conn_type == "postgres":
        import adbc_driver_postgresql

        return AdbcSession(adbc_driver_postgresql.connect(postgres_uri(conn)), sqlite=False)
    return None


@contextlib.contextmanager
def system_allocator() -> Iterator[None]:
    """Arrow's allocations inside the block from the C library's allocator, not Arrow's default (mimalloc).

    mimalloc keeps freed pages for reuse, and across the blocks of a run they add up; glibc's
    allocator hands them back. Measured on this machine, peak RSS of one process: the columnar
    load of 195,000 ABS results into SQLite 256 MB with the default pool, 201 MB with this one,
    in the same time (200,000 results read in 0.46-0.48 s against 0.48-0.51 s). The extract
    keeps the default pool: this one saved it 9 MB (200,000 SQLite rows, 183 -> 174 MB) but
    slowed 1,000,000 PostgreSQL rows from 0.91-0.94 s to 0.96-1.04 s (alternating, one process).
    The process's default pool is set back on the way out; buffers made inside keep their own pool.
    """
    previous = pa.default_memory_pool()
    pa.set_memory_pool(pa.system_memory_pool())
    try:
        yield
    finally:
        pa.set_memory_pool(previous)


def read_ahead(batches: Iterable[pa.RecordBatch]) -> Generator[pa.RecordBatch, None, None]:
    """``batches`` (a reader's, or made by a generator), the next one made by a thread while the caller works
    on this one.

    The driver reads without holding the GIL, so on a machine with two cores the read and our
    column work overlap. Measured on 1,000,000 PostgreSQL rows (8 batches): reading took 0.32 s
    of the extract's 1.25 s when done in turn. At most one batch is read ahead, so memory stays
    bounded by two batches. Once the caller is done with each batch, Arrow's pool gives its
    unused memory back: its default pool (mimalloc) keeps freed pages for reuse, and across the
    batches of an extract they added up (100,000 SQLite rows: peak RSS 193 MB without the
    release, 181 MB with it). Close the iterator before the reader: that waits for a read under way.
    """
    pool = pa.default_memory_pool()
    source = iter(batches)
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="read-ahead") as reading:
        pending = reading.submit(next, source, None)
        while (batch := pending.result()) is not None:
            pending = reading.submit(next, source, None)
            yield batch
            del batch
            pool.release_unused()


def _sqlite_uri(path: str) -> str:
    """SQLite's URI for a database file (as the SQLite hook opens it), or the path as given when it is one."""
    if path.startswith("file:") or not path:
        return path or ":memory:"
    return f"file:{quote(path)}"


def postgres_uri(conn: Any) -> str:
    """A libpq URI from an Airflow PostgreSQL connection (it holds the password: never log it)."""
    login = quote(conn.login or "", safe="")
    password = quote(conn.password or "", safe="")
    auth = f"{login}:{password}@" if password else (f"{login}@" if login else "")
    port = f":{conn.port}" if conn.port else ""
    extras = {key: str(value) for key, value in (conn.extra_dejson or {}).items() if key in _LIBPQ_EXTRAS}
    query = f"?{urlencode(extras)}" if extras else ""
    return f"postgresql://{auth}{conn.host or 'localhost'}{port}/{quote(conn.schema or '', safe='')}{query}"


@contextlib.contextmanager
def stream_batches(conn_id: str, sql: str) -> Iterator[tuple[list[str], Iterator[pa.RecordBatch]] | None]:
    """Run ``sql`` through ADBC; yield its column names and an iterator of ``pyarrow.RecordBatch``.

    Yields ``None`` when the connection has no ADBC driver (the caller uses
    :func:`airflow_batchcode.warehouse.stream_query`). Batches are bounded (:data:`BATCH_BYTES`
    on PostgreSQL, :data:`BATCH_ROWS` on SQLite): the result is never held whole.
    """
    session = adbc_session(conn_id)
    if session is None:
        yield None
        return
    batches: Generator[pa.RecordBatch, None, None] | None = None
    try:
        with source_query(conn_id):
            reader = session.query(sql)
        batches = read_ahead(reader)
        yield list(reader.schema.names), batches
    finally:
        if batches is not None:
            batches.close()  # waits for a read under way
        with contextlib.suppress(Exception):
            session.rollback()
        session.close()
