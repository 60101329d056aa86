"""Helpers shared by the integration suites: an emulator on loopback, its admin API, connections, scans."""

from __future__ import annotations

import importlib.util
import io
import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import closing, contextmanager, suppress
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import requests

from airflow_batchcode.emulator.config import EmulatorConfig
from airflow_batchcode.emulator.server import EmulatorServer

SIGNATURE_MARKERS = ("X-Amz-Signature", "X-Amz-Credential", "Signature=")
FAST_EMULATOR: dict[str, Any] = {
    "processing_delay": 0.2,
    "rate_limit": 0,
    "daily_quota": 0,
    "url_ttl": 600,
    "awaiting_timeout": 600,
    "retention": 3600,
    "token_ttl": 48 * 3600,
}
"""Emulator settings for tests: quick processing, no throttling, times small enough to pass with the clock
(tokens live long so that moving the clock forward does not expire them)."""


@contextmanager
def emulator(service: str = "abs", **overrides: Any) -> Iterator[EmulatorServer]:
    """A started emulator of ``service`` with :data:`FAST_EMULATOR` settings (overridable)."""
    with EmulatorServer(EmulatorConfig(**{**FAST_EMULATOR, **overrides}), service=service) as server:
        yield server


def admin(server: EmulatorServer, path: str, body: dict[str, Any] | None = None) -> Any:
    """Call the emulator's ``/_emulator`` admin API (GET, or POST with ``body``)."""
    url = f"{server.base_url}/_emulator/{path}"
    response = requests.post(url, json=body, timeout=5) if body is not None else requests.get(url, timeout=5)
    response.raise_for_status()
    return response.json()


@contextmanager
def env_connection(conn_id: str, value: dict[str, Any]) -> Iterator[None]:
    """Set ``AIRFLOW_CONN_<ID>`` to ``value`` (JSON) for the block."""
    name = f"AIRFLOW_CONN_{conn_id.upper()}"
    previous = os.environ.get(name)
    os.environ[name] = json.dumps(value)
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = previous


@contextmanager
def batchcode_connection(
    server: EmulatorServer,
    conn_id: str = "batchcode_default",
    *,
    client_id: str = "demo-client",
    secret: str = "demo-secret",
    **extra: Any,
) -> Iterator[None]:
    """Point an Airflow ``batchcode`` connection (environment variable) at the emulator.

    For the API-key services the password is the API key: it defaults to the emulator's ``demo-key``.
    """
    service = getattr(server, "service_name", "abs")
    if service != "abs" and secret == "demo-secret":
        secret = "demo-key"
    value = {
        "conn_type": "batchcode",
        "host": server.base_url,
        "login": client_id,
        "password": secret,
        "extra": {"service": service, "rate_limit": 0, "backoff_base": 0.05, **extra},
    }
    with env_connection(conn_id, value):
        yield


def jsonl_manifest(records: Iterable[dict[str, Any]]) -> io.BytesIO:
    """A manifest in memory: one JSON line per record."""
    return io.BytesIO(b"".join(json.dumps(record).encode() + b"\n" for record in records))


def wait_terminal(
    client: Any, operation_id: str, topic: str = "anzsco", *, timeout: float = 15.0, pause: float = 0.03
) -> Any:
    """Poll ``client`` until the operation is terminal (complete, failed, timed out); its last status."""
    deadline = time.monotonic() + timeout
    while True:
        operation = client.get_operation(operation_id, topic)
        if operation.state.is_terminal():
            return operation
        if time.monotonic() > deadline:
            raise AssertionError(f"operation {operation_id} did not finish within {timeout:g} s")
        time.sleep(pause)


def issued_tokens(server: EmulatorServer) -> list[str]:
    """Every access token the emulator has issued (to scan for leaks)."""
    return list(server.service._tokens)


def write_manifest(path: Path, records: Iterable[dict[str, Any]]) -> Path:
    """Write records as JSONL."""
    with path.open("w", encoding="utf-8") as sink:
        for record in records:
            sink.write(json.dumps(record) + "\n")
    return path


def scan_sqlite(db: Path, needles: Iterable[str]) -> list[str]:
    """Every ``table.column`` of a SQLite DB whose text holds one of ``needles``."""
    needles = [n for n in needles if n]
    found: list[str] = []
    with sqlite3.connect(db) as conn:
        tables = [row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        for table in tables:
            columns = [row[1] for row in conn.execute(f'PRAGMA table_info("{table}")')]
            for row in conn.execute(f'SELECT * FROM "{table}"'):
                for column, value in zip(columns, row, strict=True):
                    if isinstance(value, bytes):
                        value = value.decode("utf-8", "replace")
                    if isinstance(value, str):
                        found += [f"{table}.{column}: {n[:12]}..." for n in needles if n in value]
    return found


ENCRYPTED_COLUMNS = {"trigger": ("kwargs",), "connection": ("password", "extra"), "variable": ("val",)}
"""The metadata DB columns Airflow encrypts with the Fernet key: a scan of the raw DB sees only ciphertext."""


def decrypted_values(db: Path, fernet_key: str | None = None) -> list[tuple[str, str]]:
    """``(table.column, text)`` of every value in :data:`ENCRYPTED_COLUMNS`, decrypted with the Fernet key.

    Values that are not Fernet tokens (Airflow writes plain text when no key is set) are returned
    as they are. ``fernet_key`` defaults to ``AIRFLOW__CORE__FERNET_KEY`` (a comma-separated list of keys).
    """
    from cryptography.fernet import Fernet, InvalidToken, MultiFernet

    keys = (fernet_key or os.environ["AIRFLOW__CORE__FERNET_KEY"]).split(",")
    fernet = MultiFernet([Fernet(key.strip().encode()) for key in keys if key.strip()])
    values: list[tuple[str, str]] = []
    with closing(sqlite3.connect(db, timeout=10)) as conn:
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        for table, columns in ENCRYPTED_COLUMNS.items():
            if table not in tables:
                continue
            for column in columns:
                for (value,) in conn.execute(f'SELECT "{column}" FROM "{table}" WHERE "{column}" IS NOT NULL'):
                    raw = value if isinstance(value, bytes) else str(value).encode()
                    try:
                        text = fernet.decrypt(raw.strip().strip(b'"')).decode("utf-8", "replace")
                    except InvalidToken:
                        text = raw.decode("utf-8", "replace")
                    values.append((f"{table}.{column}", text))
    return values


def scan_encrypted(db: Path, needles: Iterable[str], fernet_key: str | None = None) -> list[str]:
    """Every encrypted ``table.column`` (:data:`ENCRYPTED_COLUMNS`) whose decrypted text holds one of ``needles``."""
    needles = [n for n in needles if n]
    return [
        f"{where} (decrypted): {n[:12]}..."
        for where, text in decrypted_values(db, fernet_key)
        for n in needles
        if n in text
    ]


class EncryptedSampler:
    """Reads the encrypted columns, decrypted, every ``interval`` seconds while a run goes on.

    Trigger rows live only as long as their wait: a scan after the run finds none, so a test
    samples them during the run (in a thread: plain sqlite3, never Airflow's ORM) and scans
    what it saw afterwards with :meth:`leaks`, once every token is known.
    """

    def __init__(self, db: Path, interval: float = 0.2) -> None:
        self.db = db
        self.interval = interval
        self.seen: set[tuple[str, str]] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> EncryptedSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)
        self._sample()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def _sample(self) -> None:
        with suppress(sqlite3.Error):  # a busy metadata DB: look again next time
            self.seen.update(decrypted_values(self.db))

    def rows_of(self, column: str) -> int:
        """How many distinct values of ``table.column`` were seen."""
        return sum(1 for where, _ in self.seen if where == column)

    def leaks(self, needles: Iterable[str]) -> list[str]:
        """Every sampled value holding one of ``needles``."""
        needles = [n for n in needles if n]
        return [f"{where} (decrypted): {n[:12]}..." for where, text in sorted(self.seen) for n in needles if n in text]


def scan_files(folder: Path, needles: Iterable[str]) -> list[str]:
    """Every file under ``folder`` (task, trigger and component logs) holding one of ``needles``."""
    needles = [n for n in needles if n]
    found: list[str] = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        text = path.read_text("utf-8", errors="replace")
        found += [f"{path.relative_to(folder)}: {n[:12]}..." for n in needles if n in text]
    return found


def scanned_log_files(folder: Path) -> int:
    """How many files :func:`scan_files` reads under ``folder`` (a scan of nothing proves nothing)."""
    return sum(1 for p in folder.rglob("*") if p.is_file())


@contextmanager
def postgres_database() -> Iterator[dict[str, Any]]:
    """A fresh PostgreSQL database on 127.0.0.1:5432 (dropped afterwards), as connection fields.

    Skips the test with a clear message when no server answers, except on CI (``CI`` set),
    where the server is part of the machine and its absence is a failure.
    """
    import uuid

    import psycopg
    import pytest

    admin_dsn = os.environ.get("BATCHCODE_TEST_PG", "host=127.0.0.1 port=5432 user=postgres dbname=postgres")
    try:
        server = psycopg.connect(admin_dsn, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        if os.environ.get("CI"):
            raise
        pytest.skip(f"PostgreSQL not reachable at 127.0.0.1:5432 ({exc}); set CI=1 to make this a failure")
    name = f"batchcode_test_{uuid.uuid4().hex[:12]}"
    with server:
        server.execute(f'CREATE DATABASE "{name}"')
        try:
            yield {"conn_type": "postgres", "host": "127.0.0.1", "port": 5432, "login": "postgres", "schema": name}
        finally:
            server.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


PIPELINE_DAG = Path(__file__).parent / "dags" / "batchcode_pipeline.py"


def run_pipeline(tmp_path: Path, day: str = "2026-01-01", *, use_executor: bool = False, **env: str) -> Any:
    """Run tests/dags/batchcode_pipeline.py for ``day`` with dag.test(); ``env`` configures it (see its docstring).

    The run id is fixed by the day, so running the same day again re-runs the same run.
    """
    os.environ["BATCHCODE_TEST_STAGING"] = str(tmp_path / "staging")
    for key, value in env.items():
        os.environ[key] = value
    try:
        spec = importlib.util.spec_from_file_location("batchcode_pipeline", PIPELINE_DAG)
        assert spec and spec.loader
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        logical = datetime.fromisoformat(day).replace(tzinfo=UTC) + timedelta(days=1)
        return module.pipeline.test(logical_date=logical, run_after=logical, use_executor=use_executor)
    finally:
        for key in env:
            os.environ.pop(key, None)


def unfinished_tasks(airflow_home: Path, dag_run: Any) -> str:
    """The run's state and its task instances that did not succeed, for an assertion's message."""
    with closing(sqlite3.connect(airflow_home / "airflow.db", timeout=10)) as conn:
        rows = conn.execute(
            "SELECT task_id, map_index, state, try_number FROM task_instance "
            "WHERE dag_id = ? AND run_id = ? AND (state IS NULL OR state NOT IN ('success', 'skipped')) "
            "ORDER BY task_id, map_index",
            (dag_run.dag_id, dag_run.run_id),
        ).fetchall()
    tasks = ", ".join(f"{task}[{index}] {state} (try {tries})" for task, index, state, tries in rows)
    return f"run {dag_run.run_id} ended {dag_run.state}; not done: {tasks or 'none'}"


def output(connect: Any, run_id: str | None = None) -> list[tuple[Any, ...]]:
    """Rows of the test pipeline's output table (optionally of one run), by run and position."""
    with closing(connect()) as conn:
        cursor = conn.cursor()
        query = "SELECT record_id, position, code_status, error, note, code_category, suggestions, dag_run_id FROM coded_responses"
        cursor.execute(query + " ORDER BY dag_run_id, position")
        rows = cursor.fetchall()
    return [r for r in rows if run_id is None or r[-1] == run_id]


def sqlite_warehouse(tmp_path: Path, records: int = 0, *, messy: bool = True) -> Path:
    """A SQLite warehouse with ``records`` survey answers dated 2026-01-01, as connection ``test_warehouse``."""
    from airflow_batchcode.sample_data import seed_sqlite

    path = tmp_path / "warehouse.db"
    os.environ["AIRFLOW_CONN_TEST_WAREHOUSE"] = json.dumps({"conn_type": "sqlite", "host": str(path)})
    seed_sqlite(str(path), records, start="2026-01-01", messy=messy)
    return path
