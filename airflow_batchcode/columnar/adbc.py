"""ADBC connections from Airflow connections, and the extract query streamed as Arrow record batches.

A connection of type ``postgres`` or ``sqlite`` has an ADBC driver here; :func:`adbc_connect`
opens it with the Airflow connection's own credentials (host, port, login, password, schema
and the libpq options of its extras) and returns ``None`` for every other type, whose callers
keep the DB-API path.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote, urlencode

DRIVERS = ("postgres", "sqlite")
"""Connection types with an ADBC driver."""
BATCH_BYTES = 8 << 20
"""PostgreSQL: the size a record batch aims at (memory stays flat however large the extract)."""
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


def adbc_connect(conn_id: str, *, autocommit: bool = False) -> Any | None:
    """An ADBC DB-API connection for ``conn_id``, or ``None`` when its type has no driver here."""
    from airflow.sdk import BaseHook

    conn = BaseHook.get_connection(conn_id)
    if conn.conn_type == "sqlite":
        import adbc_driver_sqlite.dbapi

        return adbc_driver_sqlite.dbapi.connect(_sqlite_uri(conn.host or ""), autocommit=autocommit)
    if conn.conn_type == "postgres":
        import adbc_driver_postgresql.dbapi

        return adbc_driver_postgresql.dbapi.connect(postgres_uri(conn), autocommit=autocommit)
    return None


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
def stream_batches(conn_id: str, sql: str) -> Iterator[tuple[list[str], Iterator[Any]] | None]:
    """Run ``sql`` through ADBC; yield its column names and an iterator of ``pyarrow.RecordBatch``.

    Yields ``None`` when the connection has no ADBC driver (the caller uses
    :func:`airflow_batchcode.warehouse.stream_query`). Batches are bounded (:data:`BATCH_BYTES`
    on PostgreSQL, :data:`BATCH_ROWS` on SQLite): the result is never held whole.
    """
    conn = adbc_connect(conn_id)
    if conn is None:
        yield None
        return
    try:
        cursor = conn.cursor()
        options = (
            {"adbc.sqlite.query.batch_rows": str(BATCH_ROWS)}
            if conn.adbc_get_info().get("vendor_name", "").lower().startswith("sqlite")
            else {"adbc.postgresql.batch_size_hint_bytes": str(BATCH_BYTES)}
        )
        cursor.adbc_statement.set_options(**options)
        cursor.execute(sql)
        reader = cursor.fetch_record_batch()
        yield list(reader.schema.names), iter(reader)
        cursor.close()
    finally:
        with contextlib.suppress(Exception):
            conn.rollback()
        conn.close()
