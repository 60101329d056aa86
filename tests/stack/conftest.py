"""The native production topology for the ``stack`` tests: started once per session, always stopped.

Needs PostgreSQL (127.0.0.1:5432), Redis (127.0.0.1:6379) and the Celery provider; without
them the tests skip with a message, except on CI (``CI`` set), where they fail.
Screenshots, observations and the service logs go to ``artifacts/stack/`` (``BATCHCODE_ARTIFACTS``
moves the ``artifacts`` folder).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from stack.host import PG_ADMIN_DSN, REDIS_URL
from stack.topology import Stack, StackOptions

ROOT = Path(__file__).resolve().parents[2]


def unavailable(reason: str) -> None:
    """Skip with ``reason``, or fail on CI, where every prerequisite is part of the machine."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI is set, so this is a failure, not a skip)")
    pytest.skip(f"{reason}; set CI=1 to make this a failure")


def _check_prerequisites() -> None:
    if importlib.util.find_spec("airflow.providers.celery") is None:
        unavailable("apache-airflow-providers-celery is not installed (pip install -e '.[celery]')")
    import psycopg
    import redis

    try:
        psycopg.connect(PG_ADMIN_DSN, connect_timeout=3).close()
    except psycopg.OperationalError as exc:
        unavailable(f"PostgreSQL not reachable ({PG_ADMIN_DSN}): {exc}")
    try:
        redis.Redis.from_url(REDIS_URL, socket_timeout=3).ping()
    except redis.RedisError as exc:
        unavailable(f"Redis not reachable ({REDIS_URL}): {exc}")


@pytest.fixture(scope="session")
def artifacts() -> Path:
    """``artifacts/stack/``: screenshots, observations and logs of the stack tests."""
    base = Path(os.environ.get("BATCHCODE_ARTIFACTS", ROOT / "artifacts"))
    folder = base / "stack"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def started(options: StackOptions, logs: Path) -> Iterator[Stack]:
    """A started :class:`~stack.topology.Stack` with ``options``; always stopped (processes, databases,
    Redis), its service logs copied to ``logs`` (emptied first)."""
    _check_prerequisites()
    running = Stack(options)
    try:
        running.start()
        yield running
    finally:
        running.stop()
        shutil.rmtree(logs, ignore_errors=True)
        logs.mkdir(parents=True)
        for log in running.logs_of():
            shutil.copy(log, logs / log.name)
        shutil.rmtree(running.work, ignore_errors=True)


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory, artifacts: Path) -> Iterator[Stack]:
    """A started :class:`~stack.topology.Stack`; stopped (processes, databases, Redis) at the end of the session."""
    # three days of 200 answers (116 to 122 distinct texts a day): chunks of 70 make two remote
    # operations a day, and a backfill has three slices. Every run defers (no real-time remainder) and
    # codes its day afresh (no result cache): the tests code the same days more than once.
    options = StackOptions(
        work=tmp_path_factory.mktemp("stack"),
        records=600,
        days=3,
        chunk_records=70,
        worker_concurrency=2,
        processing_delay=20,
        result_cache=False,
        realtime_max_records=0,
    )
    yield from started(options, artifacts / "logs")
