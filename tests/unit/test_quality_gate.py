"""The quality gate: a run below ``min_success_rate`` fails after its outputs are written; a run of nothing passes."""

from __future__ import annotations

import pytest

from airflow_batchcode.exceptions import QualityGateError
from airflow_batchcode.summary import RunSummary, quality_gate


def test_a_run_of_no_records_passes_any_gate() -> None:
    empty = RunSummary().to_dict()
    assert empty["records"] == 0
    quality_gate(empty, 0.99)  # a day without answers, or a re-code with nothing left to re-code


def test_a_run_below_the_rate_fails_naming_the_counts() -> None:
    summary = {"records": 4, "successful": 3, "success_rate": 0.75}
    quality_gate(summary, 0.75)
    quality_gate(summary, None)
    with pytest.raises(QualityGateError, match=r"Success rate 75.0% is below the required 80.0% \(3 of 4 records"):
        quality_gate(summary, 0.8)
