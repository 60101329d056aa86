"""Test-session set-up shared by every suite: an isolated, throwaway AIRFLOW_HOME."""

from __future__ import annotations

import os
import tempfile

_home = tempfile.mkdtemp(prefix="batchcode-test-airflow-")
os.environ.setdefault("AIRFLOW_HOME", _home)
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
os.environ.setdefault("AIRFLOW__CORE__UNIT_TEST_MODE", "True")
