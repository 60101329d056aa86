"""The output table loaded from Arrow record batches: bulk-written, then the run's rows replaced in one transaction.

PostgreSQL: each record batch is written as CSV by Arrow's writer (in C++) and sent by ``COPY ...
FROM STDIN (FORMAT csv)`` inside :func:`airflow_batchcode.warehouse.replace_run_rows`'s own
transaction, on the connection's own hook (``CsvRows``). SQLite: the batches go by ADBC bulk
ingest into a staging table of the run's own, which the ADBC connection commits; then
``replace_run_rows`` moves them in one transaction (``Staged``) and drops it. Either way that
transaction does all it does for the DB-API path: the rows the load's joins fill in the
database (``after``), reviewers' decisions re-applied. Rows that fail part way leave the output
table as it was; a staging table left behind by a killed attempt is replaced by the next one.

Why two ways, measured on 200,000 rows read from ABS output (:mod:`.results`), one process:
PostgreSQL through ADBC ingest and a staging table took 1.8-2.7 s (stage 1.0-1.5 s, the move
0.6-1.1 s: every row written twice); through CSV ``COPY`` 1.05-1.25 s, of which reading the
results is 0.45-0.51 s and writing the CSV 0.10-0.12 s. The ``COPY`` itself is the floor: the
same table takes 0.73 s for these rows as CSV against 0.57-0.60 s as binary (psycopg's
``write_row`` of rows already built). Reading the next batch in a thread while this one is sent
measured no gain (1.08-1.28 s against 1.08-1.19 s), so there is none. Nor did binary ``COPY``
framed by Arrow (each field's length and bytes joined a column at a time): PostgreSQL reads it
faster, but building it took 0.21-0.30 s against the CSV's 0.10-0.14 s, and the loads took
0.90-1.04 s against 0.88-1.19 s (the same table contents, checked). SQLite has no ``COPY``;
its ingest and move took 1.7-1.8 s against 2.8-2.9 s for ``replace_run_rows``'s ``executemany``
of the same rows built in Python.

Rows built in Python (as most normalisers build them) reach the table faster through
``replace_run_rows`` itself: SQLite 1.63-1.70 s through ingest against 1.45-1.57 s through
``executemany``; PostgreSQL 2.9 s against 1.6 s through psycopg's ``COPY``, the conversion to
Arrow alone 0.5 s. So the ``load`` task takes this module only for results read into Arrow.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import itertools
from collections.abc import Iterable, Iterator
from datetime import datetime

import pyarrow as pa
import pyarrow.csv

from airflow_batchcode.columnar.adbc import AdbcSession, adbc_session, has_driver, system_allocator
from airflow_batchcode.rows import COLUMNS, Row
from airflow_batchcode.warehouse import AfterInsert, CsvRows, Staged, check_table_name, load_time, replace_run_rows

BATCH_ROWS = 10_000
"""Rows per ingested record batch (memory stays flat however many rows the run has)."""
STAGING_PREFIX = "batchcode_staging_"
_TEXT = pa.large_string()
_TYPES = {"position": pa.int64(), "code_confidence": pa.float64(), "agreement": pa.float64(), "chunk": pa.int64()}
_CSV = pyarrow.csv.WriteOptions(include_header=False, quoting_style="needed")
ROW_SCHEMA = pa.schema([(name, _TYPES.get(name, _TEXT)) for name in COLUMNS])
"""The Arrow schema of a :class:`~airflow_batchcode.rows.Row` (the output table's columns but the loader's)."""


def ingest_run_rows(
    conn_id: str, table: str, rows: Iterable[Row], *, dag_id: str, run_id: str, after: AfterInsert | None = None
) -> int:
    """:func:`~airflow_batchcode.warehouse.replace_run_rows` through ADBC (PostgreSQL and SQLite connections)."""
    return ingest_run_batches(conn_id, table, row_batches(rows), dag_id=dag_id, run_id=run_id, after=after)


@system_allocator()
def ingest_run_batches(
    conn_id: str,
    table: str,
    batches: Iterable[pa.RecordBatch],
    *,
    dag_id: str,
    run_id: str,
    after: AfterInsert | None = None,
) -> int:
    """Replace the run's rows in ``table`` with ``batches`` (of :data:`ROW_SCHEMA`) in one transaction of
    :func:`~airflow_batchcode.warehouse.replace_run_rows`: sent as CSV to PostgreSQL, staged through ADBC
    ingest elsewhere (see the module's docstring). Arrow allocates from the C library's allocator meanwhile
    (:func:`~airflow_batchcode.columnar.adbc.system_allocator`).

    :return: the rows inserted.
    """
    replace = functools.partial(replace_run_rows, conn_id, table, (), dag_id=dag_id, run_id=run_id, after=after)
    if has_driver(conn_id, "postgres"):
        loaded_at = load_time()
        watched = _Watched(batches)
        with watched.own_error():
            return replace(staged=CsvRows(csv_blocks(watched, dag_id, run_id, loaded_at), loaded_at))
    staging = staging_table(table, dag_id, run_id)
    staged = stage(conn_id, staging, batches, dag_id=dag_id, run_id=run_id)
    try:
        return replace(staged=staged)
    except BaseException:
        with contextlib.suppress(Exception):
            _drop(conn_id, staging)
        raise


def csv_blocks(batches: Iterable[pa.RecordBatch], dag_id: str, run_id: str, loaded_at: datetime) -> Iterator[bytes]:
    """``batches`` with the loader's three columns, each a block of CSV (:class:`~airflow_batchcode.warehouse.CsvRows`).

    Arrow quotes every text, so an empty one is ``""`` and a null an unquoted empty field, as ``COPY`` reads them.
    """
    stamp = pa.scalar(loaded_at, pa.timestamp("us"))
    schema = _table_schema(stamp.type)
    for batch in batches:
        sink = pa.BufferOutputStream()
        pyarrow.csv.write_csv(_with_run(batch, schema, dag_id, run_id, stamp), sink, _CSV)
        yield sink.getvalue().to_pybytes()


def _drop(conn_id: str, staging: str) -> None:
    """Drop a staging table if it is there (committed)."""
    with _session(conn_id) as session:
        session.execute(f"DROP TABLE IF EXISTS {staging}")
        session.commit()


def staging_table(table: str, dag_id: str, run_id: str) -> str:
    """The staging table of one run's load into ``table``: a name of its own, so runs may load at once."""
    check_table_name(table)
    return STAGING_PREFIX + hashlib.blake2b(f"{table}\0{dag_id}\0{run_id}".encode(), digest_size=8).hexdigest()


@contextlib.contextmanager
def _session(conn_id: str) -> Iterator[AdbcSession]:
    session = adbc_session(conn_id)
    if session is None:
        raise ValueError(f"connection {conn_id!r} has no ADBC driver")
    try:
        yield session
    finally:
        session.close()


def stage(conn_id: str, staging: str, batches: Iterable[pa.RecordBatch], *, dag_id: str, run_id: str) -> Staged:
    """Ingest ``batches`` with the loader's three columns into a new table ``staging`` (replacing one left by an
    attempt killed before it was moved), committed."""
    now = load_time()
    with _session(conn_id) as session:
        # SQLite stores the text sqlite3's datetime adapter would (as the DB-API path does)
        loaded_at: pa.Scalar = pa.scalar(now.isoformat(" ") if session.sqlite else now)
        watched = _Watched(batches)
        with watched.own_error():
            try:
                session.execute(f"DROP TABLE IF EXISTS {staging}")
                schema = _table_schema(loaded_at.type)
                full = (_with_run(batch, schema, dag_id, run_id, loaded_at) for batch in watched)
                # not temporary: the move runs on another connection, the hook's
                session.ingest(staging, pa.RecordBatchReader.from_batches(schema, full), temporary=False)
                session.commit()
            except BaseException:
                with contextlib.suppress(Exception):
                    session.rollback()
                raise
    return Staged(staging, watched.count, loaded_at.as_py())


def _table_schema(loaded_at: pa.DataType) -> pa.Schema:
    """The output table's columns: a row's, and the loader's three."""
    return pa.schema([*ROW_SCHEMA, ("dag_id", _TEXT), ("dag_run_id", _TEXT), ("loaded_at", loaded_at)])


class _Watched:
    """Record batches passed through, their rows counted and their error kept (ADBC would wrap it in its own)."""

    def __init__(self, batches: Iterable[pa.RecordBatch]) -> None:
        self._batches = iter(batches)
        self.count = 0
        self.error: BaseException | None = None

    def __iter__(self) -> Iterator[pa.RecordBatch]:
        try:
            for batch in self._batches:
                self.count += batch.num_rows
                yield batch
        except BaseException as exc:  # a KeyboardInterrupt too: ADBC would wrap it in its own error
            self.error = exc
            raise

    @contextlib.contextmanager
    def own_error(self) -> Iterator[None]:
        """Raise the rows' own error (a missing staged file, misaligned results...) where a driver
        consuming them raised its wrapping of it."""
        try:
            yield
        except BaseException:
            if self.error is not None:
                raise self.error from None
            raise


def row_batches(rows: Iterable[Row]) -> Iterator[pa.RecordBatch]:
    """``rows`` as record batches of :data:`ROW_SCHEMA`, at most :data:`BATCH_ROWS` each."""
    source = iter(rows)
    while batch := list(itertools.islice(source, BATCH_ROWS)):
        columns = [
            pa.array(values, kind) for values, kind in zip(zip(*batch, strict=True), ROW_SCHEMA.types, strict=True)
        ]
        yield pa.RecordBatch.from_arrays(columns, schema=ROW_SCHEMA)


def _with_run(
    batch: pa.RecordBatch, schema: pa.Schema, dag_id: str, run_id: str, loaded_at: pa.Scalar
) -> pa.RecordBatch:
    """``batch`` and the loader's three columns."""
    size = batch.num_rows
    extra = [
        pa.repeat(pa.scalar(dag_id, _TEXT), size),
        pa.repeat(pa.scalar(run_id, _TEXT), size),
        pa.repeat(loaded_at, size),
    ]
    return pa.RecordBatch.from_arrays([*batch.columns, *extra], schema=schema)
