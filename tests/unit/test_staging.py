"""Where staged files live by default, and the error a task gets when an earlier task's file is not visible."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from airflow_batchcode.chunks import Chunk
from airflow_batchcode.dags import staging_root
from airflow_batchcode.exceptions import BatchCodeError, StagedFileMissingError
from airflow_batchcode.results import chunk_results
from airflow_batchcode.storage import airflow_home, open_for_reading, open_staged, read_staged_text
from airflow_batchcode.summary import RunSummary


def test_default_staging_is_under_the_airflow_home_airflow_resolved(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AIRFLOW__BATCHCODE__STAGING", raising=False)
    home = os.environ["AIRFLOW_HOME"]  # set by the test session before Airflow was imported
    assert airflow_home() == home
    assert staging_root(None) == os.path.join(home, "batchcode")
    assert staging_root("") == os.path.join(home, "batchcode")


def test_configured_staging_wins_over_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW__BATCHCODE__STAGING", "s3://bucket/batchcode/")
    assert staging_root(None) == "s3://bucket/batchcode"
    assert staging_root("/mnt/shared/staging/") == "/mnt/shared/staging"


@pytest.mark.parametrize("opener", ["open_for_reading", "open_staged", "read_staged_text"])
def test_a_missing_staged_file_names_the_file_and_the_setting(tmp_path: Path, opener: str) -> None:
    missing = tmp_path / "run" / "chunk-00000.jsonl"
    with pytest.raises(StagedFileMissingError) as caught:
        if opener == "open_for_reading":
            with open_for_reading(missing):
                pass
        elif opener == "open_staged":
            with open_staged(f"file://{missing}", "positions file"):
                pass
        else:
            read_staged_text(missing, "operation record")
    message = str(caught.value)
    assert str(missing) in message
    assert "[batchcode] staging" in message and "s3://" in message and "CeleryExecutor" in message
    assert isinstance(caught.value, BatchCodeError) and isinstance(caught.value, FileNotFoundError)


def test_load_of_a_chunk_whose_results_another_worker_wrote(tmp_path: Path) -> None:
    """The load task runs on a worker that cannot see the download's folder."""
    chunk = Chunk(
        index=1,
        manifest=str(tmp_path / "chunk-00000.jsonl"),
        positions=str(tmp_path / "chunk-00000.positions"),
        results=str(tmp_path / "results-00000"),
        records=3,
        bytes=120,
    )
    with pytest.raises(StagedFileMissingError, match=r"operation record .*results-00000.*not visible to this task"):
        list(chunk_results(chunk, "anzsco", RunSummary()))
