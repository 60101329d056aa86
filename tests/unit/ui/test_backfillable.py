"""Backfill from the UI: the trigger dialog offers it only when the REST API's ``is_backfillable`` is true.

Airflow computes it from the parsed DAG: ``timetable_periodic`` (the deserialised timetable's
``periodic``) and ``allowed_run_types`` (unset, or containing ``backfill``). The stack used to
write its nightly DAG with ``schedule=None`` (a ``NullTimetable``, not periodic), which is why
the dialog's Backfill option was disabled; it now keeps the daily timetable and starts today,
so the scheduler's first run of its own is not due before midnight.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from airflow.api_fastapi.core_api.datamodels.dags import DAGResponse
from airflow.serialization.serialized_objects import DagSerialization, LazyDeserializedDAG

from airflow_batchcode.nightly import nightly_dag
from stack.topology import StackOptions, dag_file


def backfillable(dag: Any) -> tuple[bool, Any]:
    """(``is_backfillable`` as the REST API computes it, the allowed run types) from the DAG as the processor stores it."""
    parsed = LazyDeserializedDAG(data=DagSerialization.to_dict(dag))
    allowed = sorted(parsed.allowed_run_types) if parsed.allowed_run_types else None
    response = DAGResponse.model_construct(timetable_periodic=parsed.timetable.periodic, allowed_run_types=allowed)
    return response.is_backfillable, allowed


def test_the_shipped_nightly_dag_is_backfillable() -> None:
    assert backfillable(nightly_dag())[0] is True


def test_the_stack_dag_is_backfillable_and_not_due_before_midnight() -> None:
    from datetime import UTC, datetime, timedelta

    from airflow.timetables.base import TimeRestriction

    namespace: dict[str, Any] = {}
    source = dag_file(StackOptions(poll_interval=1, chunk_records=50), Path("/tmp/s"))
    exec(source, namespace)
    dag = namespace["dag"]
    assert backfillable(dag) == (True, None)
    parsed = LazyDeserializedDAG(data=DagSerialization.to_dict(dag))
    first = parsed.timetable.next_dagrun_info(
        last_automated_data_interval=None, restriction=TimeRestriction(dag.start_date, None, catchup=False)
    )
    midnight = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1)
    assert first is not None and first.run_after >= midnight, "no scheduled run while the stack's tests run"


def test_no_schedule_is_what_disabled_backfill() -> None:
    assert backfillable(nightly_dag(schedule=None))[0] is False
