"""A pipeline with no staging configured, run from an empty working directory (issue: staging landed in ``./``).

Nothing may be written to the current directory: every manifest, positions file and raw result
belongs under ``$AIRFLOW_HOME/batchcode``, the same folder on every component.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
from pathlib import Path

import pytest

from tests.support import batchcode_connection, emulator, output, run_pipeline, sqlite_warehouse


def test_unconfigured_staging_goes_under_airflow_home_not_the_working_directory(
    airflow_db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AIRFLOW__BATCHCODE__STAGING", raising=False)
    warehouse = sqlite_warehouse(tmp_path, 40, messy=True)
    default_root = Path(os.environ["AIRFLOW_HOME"]) / "batchcode"
    shutil.rmtree(default_root, ignore_errors=True)
    workdir = tmp_path / "empty-cwd"
    workdir.mkdir()
    monkeypatch.chdir(workdir)
    try:
        with emulator() as server, batchcode_connection(server):
            dag_run = run_pipeline(tmp_path, BATCHCODE_TEST_STAGING="", BATCHCODE_TEST_CHUNK="25")
        assert dag_run.state == "success"
        assert len(output(lambda: sqlite3.connect(warehouse))) == 40
        assert list(workdir.iterdir()) == [], "nothing may be written to the working directory"
        run_folders = list((default_root / "pipeline_test").iterdir())
        assert len(run_folders) == 1, run_folders
        staged = sorted(p.name for p in run_folders[0].rglob("*") if p.is_file())
        assert any(name.endswith(".jsonl") for name in staged), staged
        assert "operation.json" in staged, staged
        assert not (tmp_path / "staging").exists(), "the test's own staging folder must not have been used"
    finally:
        shutil.rmtree(default_root, ignore_errors=True)
