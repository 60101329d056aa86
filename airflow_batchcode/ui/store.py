"""The output table as the UI sees it: which table a DAG writes, and a DB-API connection to it.

A pipeline's ``load`` task declares the output table as its outlet Asset,
``batchcode-output://<output_conn_id>/<output_table>`` (:attr:`PipelineConfig.asset
<airflow_batchcode.dags.PipelineConfig.asset>`). Airflow records every task's outlets in its
metadata database, so the UI finds a DAG's output table there: no extra XCom, no parsing of
DAG files in the api-server, and it is right for every run the DAG version made.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from airflow_batchcode.exceptions import ConfigurationError
from airflow_batchcode.warehouse import check_table_name

OUTPUT_SCHEME = "batchcode-output://"
_CONN_ID = re.compile(r"^[A-Za-z0-9_.-]+$")


@dataclass(frozen=True)
class OutputTable:
    """One pipeline's output table.

    :param conn_id: the common-sql connection holding it.
    :param table: ``table`` or ``schema.table`` (checked: it is interpolated into SQL).
    """

    conn_id: str
    table: str

    def __post_init__(self) -> None:
        check_table_name(self.table)
        if not _CONN_ID.match(self.conn_id):
            raise ConfigurationError(f"connection id {self.conn_id!r} is not a plain name")

    @classmethod
    def from_uri(cls, uri: str) -> OutputTable | None:
        """The table an outlet URI names, or ``None`` for another kind of asset."""
        if not uri.startswith(OUTPUT_SCHEME):
            return None
        conn_id, _, table = uri[len(OUTPUT_SCHEME) :].partition("/")
        try:
            return cls(conn_id, table)
        except ConfigurationError:
            return None

    @property
    def reviews(self) -> str:
        """``<table>_reviews``: the review decisions."""
        return f"{self.table}_reviews"

    @property
    def latest(self) -> str:
        """``<table>_latest``: each record's latest outcome, reviews included."""
        return f"{self.table}_latest"


def outputs_of(dag_id: str) -> list[OutputTable]:
    """The output tables ``dag_id``'s tasks write, from the outlets Airflow recorded (first: the DAG's own)."""
    from airflow.models.asset import AssetModel, TaskOutletAssetReference
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        uris = session.scalars(
            select(AssetModel.uri)
            .join(TaskOutletAssetReference, TaskOutletAssetReference.asset_id == AssetModel.id)
            .where(TaskOutletAssetReference.dag_id == dag_id, AssetModel.uri.startswith(OUTPUT_SCHEME))
            .order_by(TaskOutletAssetReference.task_id)
        ).all()
    found = [OutputTable.from_uri(uri) for uri in dict.fromkeys(uris)]
    return [output for output in found if output is not None]


def dags_with_outputs() -> list[str]:
    """Every DAG that writes a coded output table."""
    from airflow.models.asset import AssetModel, TaskOutletAssetReference
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        return list(
            session.scalars(
                select(TaskOutletAssetReference.dag_id)
                .join(AssetModel, TaskOutletAssetReference.asset_id == AssetModel.id)
                .where(AssetModel.uri.startswith(OUTPUT_SCHEME))
                .distinct()
                .order_by(TaskOutletAssetReference.dag_id)
            ).all()
        )


class Database:
    """A DB-API connection with its placeholder, running statements written with ``?``.

    :param conn: an open DB-API connection (sqlite3, psycopg2, psycopg 3, ...).
    """

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        module = sys.modules.get(type(conn).__module__.split(".")[0])
        self.qmark = getattr(module, "paramstyle", "qmark") == "qmark"
        self.sqlite = type(conn).__module__.startswith("sqlite3")

    def sql(self, statement: str) -> str:
        """``statement`` with each ``?`` turned into this driver's placeholder."""
        return statement if self.qmark else statement.replace("?", "%s")

    def query(self, statement: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        cursor = self.conn.cursor()
        try:
            cursor.execute(self.sql(statement), tuple(params))
            return [tuple(row) for row in cursor.fetchall()]
        finally:
            cursor.close()

    def stream(self, statement: str, params: Sequence[Any] = (), size: int = 5000) -> Iterator[list[tuple[Any, ...]]]:
        """The rows of ``statement`` in batches of ``size`` (never all in memory); the first batch names no rows."""
        cursor = self.conn.cursor()
        try:
            cursor.execute(self.sql(statement), tuple(params))
            yield [tuple(column[0] for column in cursor.description)]
            while batch := cursor.fetchmany(size):
                yield [tuple(row) for row in batch]
        finally:
            cursor.close()

    def execute(self, statement: str, params: Sequence[Any] = ()) -> None:
        cursor = self.conn.cursor()
        try:
            cursor.execute(self.sql(statement), tuple(params))
        finally:
            cursor.close()

    def table_exists(self, table: str) -> bool:
        """Whether ``table`` can be selected from (a failed probe is rolled back)."""
        try:
            self.query(f"SELECT 1 FROM {check_table_name(table)} WHERE 1 = 0")  # noqa: S608
            return True
        except Exception:
            self.conn.rollback()
            return False


@contextmanager
def connect(conn_id: str) -> Iterator[Database]:
    """An open :class:`Database` on Airflow connection ``conn_id`` (from the api-server's secrets backends)."""
    from airflow.models.connection import Connection

    hook = Connection.get_connection_from_secrets(conn_id).get_hook()
    conn = hook.get_conn()
    try:
        yield Database(conn)
    finally:
        conn.close()
