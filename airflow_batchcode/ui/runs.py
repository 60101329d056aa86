"""What Airflow's metadata database knows about a run: its XCom summaries and each chunk's task times.

``extract`` returns the extract summary (``rows``: records in); ``load`` returns the run
summary (operations, service, billed usage). The per-chunk timeline is read from the task
instances of ``code_chunk.create/upload/wait/download`` (one map index per chunk) and ``load``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from airflow_batchcode.ui.queries import Night

log = logging.getLogger(__name__)
STEPS = ("create", "upload", "wait", "download")


@dataclass(frozen=True)
class Span:
    """One task try's time on the timeline.

    :param lane: ``chunk <n>`` or the task's name.
    :param step: create, upload, wait, download, extract or load.
    :param start: when it started.
    :param end: when it ended (``None``: still running).
    :param state: its state.
    """

    lane: str
    step: str
    start: datetime
    end: datetime | None
    state: str


def _step(task_id: str) -> str:
    return task_id.rsplit(".", 1)[-1]


def run_xcoms(dag_id: str, run_id: str) -> dict[str, Any]:
    """``{"extract": ..., "load": ...}``: the return values of the pipeline's extract and load tasks."""
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    found: dict[str, Any] = {}
    with create_session() as session:
        rows = session.execute(
            select(XComModel.task_id, XComModel.value).where(
                XComModel.dag_id == dag_id,
                XComModel.run_id == run_id,
                XComModel.key == "return_value",
                XComModel.map_index == -1,
            )
        ).all()
    for task_id, value in rows:
        step = _step(task_id)
        if step in ("extract", "load", "summary"):
            try:
                found[step] = XComModel.deserialize_value(_Row(value))
            except Exception:  # a value this page cannot read is left out, not an error page
                log.warning("Cannot read the %s XCom of %s %s", step, dag_id, run_id)
    return found


class _Row:
    """The one attribute :meth:`XComModel.deserialize_value` reads."""

    def __init__(self, value: Any) -> None:
        self.value = value


def run_state(dag_id: str, run_id: str) -> str | None:
    """The run's state in Airflow (``success``, ``failed``, ``running``, ...), ``None`` for a run it does not know."""
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        state = session.scalar(select(DagRun.state).where(DagRun.dag_id == dag_id, DagRun.run_id == run_id))
    return None if state is None else str(state)


def with_airflow_runs(dag_id: str, loaded: list[Night], limit: int = 60) -> list[Night]:
    """``loaded`` (the runs with rows in the output table) and the DAG's latest ``limit`` runs in Airflow,
    each named by the day it coded and its state: a night that failed before loading anything is there
    too, with no rows. Ordered by that day, then by load time."""
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        known = session.execute(
            select(DagRun.run_id, DagRun.data_interval_start, DagRun.run_after, DagRun.state, DagRun.conf)
            .where(DagRun.dag_id == dag_id)
            .order_by(DagRun.run_after.desc())
            .limit(limit)
        ).all()
    airflow = {
        run: (_night_of(interval or after, conf), str(state or "")) for run, interval, after, state, conf in known
    }
    nights = [
        replace(night, night=airflow[night.run_id][0], state=airflow[night.run_id][1])
        if night.run_id in airflow
        else replace(night, night=night.loaded[:10])
        for night in loaded
    ]
    have = {night.run_id for night in loaded}
    nights += [Night(run, "", 0, 0, night, state) for run, (night, state) in airflow.items() if run not in have]
    return sorted(nights, key=lambda night: (night.night, night.loaded))


def _night_of(moment: datetime | None, conf: Any) -> str:
    """The days a run coded: its data interval's, or the dates its trigger form named (the nightly DAG's
    ``from_date`` and ``to_date``), marked when it re-coded them."""
    form = conf if isinstance(conf, dict) else {}
    first, last = form.get("from_date"), form.get("to_date")
    night = str(first) if first else ("" if moment is None else moment.strftime("%Y-%m-%d"))
    if last and str(last) != night:
        night += f" to {last}"
    return night + (" re-code" if form.get("recode") else "")


def timeline(dag_id: str, run_id: str) -> list[Span]:
    """The run's extract, per-chunk create/upload/wait/download, and load task times, in start order."""
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        rows = session.execute(
            select(
                TaskInstance.task_id,
                TaskInstance.map_index,
                TaskInstance.start_date,
                TaskInstance.end_date,
                TaskInstance.state,
            ).where(TaskInstance.dag_id == dag_id, TaskInstance.run_id == run_id, TaskInstance.start_date.is_not(None))
        ).all()
    spans = []
    for task_id, map_index, start, end, state in rows:
        step = _step(task_id)
        if step in STEPS:
            lane = f"chunk {map_index}"
        elif step in ("extract", "load"):
            lane = step
        else:
            continue
        if start is not None:
            spans.append(Span(lane, step, start, end, str(state or "")))
    return sorted(spans, key=lambda span: span.start)
