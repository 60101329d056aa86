"""The output table: created when missing, one run's rows replaced atomically, bulk-loaded.

Loading a run deletes that run's earlier rows and inserts the new ones in one transaction,
so re-running or clearing a run never duplicates. PostgreSQL gets ``COPY FROM STDIN``;
other databases get batched ``executemany``.
"""

from __future__ import annotations

import io
import itertools
import re
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from typing import Any

from airflow_batchcode.exceptions import ConfigurationError
from airflow_batchcode.results import COLUMNS, Row

TABLE_COLUMNS = (*COLUMNS, "dag_id", "dag_run_id", "loaded_at")
_TYPES = {
    "position": "BIGINT",
    "code_confidence": "DOUBLE PRECISION",
    "agreement": "DOUBLE PRECISION",
    "chunk": "INTEGER",
    "loaded_at": "TIMESTAMP",
}
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?$")
BATCH_ROWS = 10_000


def check_table_name(table: str) -> str:
    """A plain ``table`` or ``schema.table`` name (no quoting games, no injection).

    Every statement below interpolates only names checked here; values are always bound.
    """
    if not _IDENTIFIER.match(table):
        raise ConfigurationError(f"output_table {table!r} must be a plain name or schema.name")
    return table


def create_table_sql(table: str) -> list[str]:
    """DDL for the output table and its run index (portable across SQLite and PostgreSQL)."""
    columns = ",\n  ".join(f"{name} {_TYPES.get(name, 'TEXT')}" for name in TABLE_COLUMNS)
    index = f"ix_{table.replace('.', '_')}_run"
    return [
        f"CREATE TABLE IF NOT EXISTS {table} (\n  {columns}\n)",
        f"CREATE INDEX IF NOT EXISTS {index} ON {table} (dag_id, dag_run_id)",
    ]


def add_missing_columns_sql(cursor: Any, table: str) -> list[str]:
    """``ALTER TABLE`` statements adding columns a newer release of this package writes to an older table."""
    cursor.execute(f"SELECT * FROM {table} WHERE 1 = 0")  # noqa: S608
    existing = {column[0].lower() for column in cursor.description}
    cursor.fetchall()
    return [
        f"ALTER TABLE {table} ADD COLUMN {name} {_TYPES.get(name, 'TEXT')}"
        for name in TABLE_COLUMNS
        if name not in existing
    ]


def replace_run_rows(conn_id: str, table: str, rows: Iterable[Row], *, dag_id: str, run_id: str) -> int:
    """Create ``table`` if needed, then replace the run's rows with ``rows`` in one transaction.

    :return: the rows inserted.
    """
    from airflow.sdk import BaseHook

    check_table_name(table)
    hook = BaseHook.get_connection(conn_id).get_hook()
    conn = hook.get_conn()
    now = datetime.now(UTC).replace(tzinfo=None)
    # SQLite gets the text sqlite3's datetime adapter would store, converted once instead of per row
    loaded_at: datetime | str = now.isoformat(" ") if _is_sqlite(conn) else now
    full = ((*row, dag_id, run_id, loaded_at) for row in rows)
    try:
        cursor = conn.cursor()
        for statement in create_table_sql(table):
            cursor.execute(statement)
        for statement in add_missing_columns_sql(cursor, table):
            cursor.execute(statement)
        conn.commit()
        placeholder = "?" if _is_sqlite(conn) else "%s"
        delete = f"DELETE FROM {table} WHERE dag_id = {placeholder} AND dag_run_id = {placeholder}"  # noqa: S608
        cursor.execute(delete, (dag_id, run_id))
        insert = _copy_loader(conn, cursor, table) or _executemany_loader(cursor, table, placeholder)
        count = insert(full)
        conn.commit()
        return count
    except Exception:
        conn.rollback()
        raise
    finally:
        conn.close()


def _is_sqlite(conn: Any) -> bool:
    return type(conn).__module__.startswith("sqlite3")


def _executemany_loader(cursor: Any, table: str, placeholder: str) -> Callable[[Iterable[Row]], int]:
    values = ", ".join([placeholder] * len(TABLE_COLUMNS))
    statement = f"INSERT INTO {table} ({', '.join(TABLE_COLUMNS)}) VALUES ({values})"  # noqa: S608

    def load(rows: Iterable[Row]) -> int:
        count = 0
        source = iter(rows)
        while batch := list(itertools.islice(source, BATCH_ROWS)):
            cursor.executemany(statement, batch)
            count += len(batch)
        return count

    return load


def _copy_loader(conn: Any, cursor: Any, table: str) -> Callable[[Iterable[Row]], int] | None:
    """``COPY ... FROM STDIN`` for psycopg 3 and psycopg2; ``None`` for other drivers."""
    module = type(conn).__module__
    statement = f"COPY {table} ({', '.join(TABLE_COLUMNS)}) FROM STDIN"
    if module.startswith("psycopg2"):

        def load_psycopg2(rows: Iterable[Row]) -> int:
            stream = _CopyTextStream(rows)
            cursor.copy_expert(statement, stream, size=1 << 20)
            return stream.count

        return load_psycopg2
    if module.startswith("psycopg"):

        def load_psycopg(rows: Iterable[Row]) -> int:
            count = 0
            with cursor.copy(statement) as copy:
                write = copy.write_row
                for count, row in enumerate(rows, 1):  # noqa: B007
                    write(row)
            return count

        return load_psycopg
    return None


class _CopyTextStream(io.RawIOBase):
    """A readable file over rows in COPY's text format (``\\N`` for NULL), for psycopg2's ``copy_expert``."""

    def __init__(self, rows: Iterable[Row]) -> None:
        self._rows: Iterator[Row] = iter(rows)
        self._buffer = bytearray()
        self.count = 0

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        while size < 0 or len(self._buffer) < size:
            batch = list(itertools.islice(self._rows, BATCH_ROWS))
            if not batch:
                break
            block = _copy_block(batch)
            if block is None:
                block = "".join("\t".join(map(_copy_text, row)) + "\n" for row in batch)
            self._buffer += block.encode()
            self.count += len(batch)
        if size < 0 or size >= len(self._buffer):
            out = bytes(self._buffer)
            self._buffer.clear()
            return out
        out = bytes(self._buffer[:size])
        del self._buffer[:size]
        return out


_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def _copy_text(value: Any) -> str:
    if value is None:
        return "\\N"
    if isinstance(value, datetime):
        return value.isoformat(sep=" ")
    return str(value).translate(_COPY_ESCAPES)


_NULL_TEXT = "\\N"
_CONSTANT_TYPES = (str, type(None), datetime)
_NUMBER_TYPES = {int, float}


def _copy_block(rows: list[Row]) -> str | None:
    """``rows`` in COPY's text format, built a column at a time (as :func:`_copy_text` would, value by value).

    A join of :func:`_copy_text` per row costs 10-12 µs for our 22 columns; here each column
    is checked and converted whole with built-ins, columns with one value throughout (topic,
    run, load time...) are written once, and a row is one ``str.join``: about 4 µs. (psycopg
    3's own ``write_row``, in C, is faster still: that path keeps it.) ``None`` when a column
    holds a type other than text, numbers, ``NULL`` or one repeated ``datetime``: those rows
    are formatted value by value.
    """
    if len(set(map(len, rows))) != 1:
        return None
    columns: list[list[str]] = []
    constant: str | None = None  # a run of columns with one value each, joined
    for values in zip(*rows, strict=True):
        first = values[0]
        if type(first) in _CONSTANT_TYPES and values.count(first) == len(values):
            text = _copy_text(first)
            constant = text if constant is None else f"{constant}\t{text}"
            continue
        if constant is not None:
            columns.append([constant] * len(rows))
            constant = None
        texts = _copy_column(values)
        if texts is None:
            return None
        columns.append(texts)
    if constant is not None:
        columns.append([constant] * len(rows))
    return "\n".join(map("\t".join, zip(*columns, strict=True))) + "\n"


def _copy_column(values: tuple[Any, ...]) -> list[str] | None:
    """One column of texts and NULLs, or of numbers and NULLs, in COPY's text format (else ``None``)."""
    nulls = values.count(None)
    texts = [_NULL_TEXT if value is None else value for value in values] if nulls else list(values)
    try:
        joined = "".join(texts)
    except TypeError:
        kinds = set(map(type, values)) - {type(None)}
        if not kinds <= _NUMBER_TYPES:
            return None
        return [_NULL_TEXT if value is None else str(value) for value in values] if nulls else list(map(str, values))
    # every NULL brings one backslash; any other, or a tab or line break, needs escaping
    if joined.count("\\") != nulls or "\t" in joined or "\n" in joined or "\r" in joined:
        return [_NULL_TEXT if value is None else value.translate(_COPY_ESCAPES) for value in values]
    return texts
