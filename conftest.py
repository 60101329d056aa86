"""Test-session set-up shared by every suite: an isolated, throwaway Airflow home and metadata DB.

The environment is set before anything imports Airflow, so its configuration sees it:
a temporary ``AIRFLOW_HOME`` (SQLite metadata DB), the test DAGs folder, and a Fernet key.
Each test also gets the marker of its ``tests/`` folder (``unit``, ``integration``, ...), which the
Makefile selects by.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

ROOT = Path(__file__).parent
FOLDER_MARKERS = {"unit", "integration", "reliability", "stack"}
"""The folders of ``tests/`` holding tests; each is also the name of a marker declared in pyproject.toml."""
_home = tempfile.mkdtemp(prefix="batchcode-test-airflow-")
os.environ["AIRFLOW_HOME"] = _home
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(ROOT / "tests" / "dags")
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ.setdefault("AIRFLOW__CORE__FERNET_KEY", Fernet.generate_key().decode())


@pytest.fixture(scope="session")
def airflow_db() -> Iterator[Path]:
    """Migrate the session's SQLite metadata DB once; yield ``AIRFLOW_HOME``."""
    subprocess.run(
        [sys.executable, "-m", "airflow", "db", "migrate"],
        check=True,
        capture_output=True,
        env=os.environ.copy(),
        timeout=300,
    )
    yield Path(_home)


def pytest_itemcollected(item: pytest.Item) -> None:
    """Mark each test with its folder's marker (``tests/unit/...`` → ``unit``), before ``-m`` selects."""
    parts = item.path.relative_to(ROOT).parts if item.path.is_relative_to(ROOT) else ()
    if len(parts) > 2 and parts[0] == "tests":
        if parts[1] not in FOLDER_MARKERS:
            raise pytest.UsageError(f"tests/{parts[1]}/ has no marker: add it to FOLDER_MARKERS and pyproject.toml")
        item.add_marker(parts[1])
