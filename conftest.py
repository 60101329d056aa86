"""Test-session set-up shared by every suite: an isolated, throwaway Airflow home and metadata DB.

The environment is set before anything imports Airflow, so its configuration sees it:
a temporary ``AIRFLOW_HOME`` (SQLite metadata DB), the test DAGs folder, and a Fernet key.
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
