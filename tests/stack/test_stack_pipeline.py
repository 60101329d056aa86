"""The nightly DAG on the real multi-process topology: REST trigger, Celery worker, deferral to the triggerer.

Proves what ``dag.test()`` cannot: tasks run in Celery worker processes that talk to the
api-server's execution API, the sensor's wait is handed to the triggerer process (the task
instance is ``deferred``, a trigger row is owned by a live triggerer job, and no Celery task
for it is active, so it holds no worker slot), and two runs go through at once.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from stack.topology import Stack

pytestmark = [pytest.mark.stack, pytest.mark.timeout(420)]

TRIGGER_CLASS = "airflow_batchcode.triggers.batchcode.OperationStatusTrigger"
WAIT = "code_chunk.wait"


@dataclass
class Watch:
    """What was seen of some runs, sampled until they finished."""

    states: dict[str, set[str]] = field(default_factory=dict)
    """``task_id[map_index]`` → every state it was seen in."""
    deferral_proofs: list[dict[str, Any]] = field(default_factory=list)
    """Samples where a wait task was deferred, its trigger owned by a live triggerer and no Celery task ran it."""
    run_states: dict[str, set[str]] = field(default_factory=dict)
    celery_tasks_seen: set[str] = field(default_factory=set)
    max_deferred: int = 0
    max_running_runs: int = 0
    max_active_celery: int = 0
    final: dict[str, str] = field(default_factory=dict)
    samples: int = 0


def _active_workloads(stack: Stack) -> list[tuple[str, str, int]]:
    """``(run_id, task_id, map_index)`` of every task a Celery worker executes now."""
    found = []
    for tasks in stack.celery_active().values():
        for task in tasks:
            workload = json.loads(task["args"][0]) if task.get("args") else {}
            ti = workload.get("ti", {})
            found.append((str(ti.get("run_id")), str(ti.get("task_id")), int(ti.get("map_index", -1))))
    return found


def _triggers(stack: Stack, run_ids: list[str]) -> dict[tuple[str, str, int], tuple[Any, ...]]:
    """Trigger rows of the runs' deferred task instances, with the triggerer job that owns each."""
    rows = stack.metadata_query(
        "SELECT ti.run_id, ti.task_id, ti.map_index, ti.state, t.id, t.classpath, t.triggerer_id, j.job_type, j.state "
        "FROM task_instance ti JOIN trigger t ON t.id = ti.trigger_id LEFT JOIN job j ON j.id = t.triggerer_id "
        "WHERE ti.dag_id = 'batchcode_nightly' AND ti.run_id = ANY(%s)",
        run_ids,
    )
    return {(r[0], r[1], r[2]): r[3:] for r in rows}


def watch_runs(stack: Stack, run_ids: list[str], timeout: float) -> Watch:
    """Sample task states (REST API), trigger rows (metadata DB) and Celery's active tasks until every run ends."""
    watch = Watch()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        watch.samples += 1
        deferred: list[tuple[str, str, int]] = []
        running = 0
        for run_id in run_ids:
            state = stack.run_state(run_id)
            watch.run_states.setdefault(run_id, set()).add(state)
            running += state == "running"
            for ti in stack.task_instances(run_id):
                label = f"{run_id}:{ti['task_id']}[{ti['map_index']}]"
                watch.states.setdefault(label, set()).add(str(ti["state"]))
                if ti["state"] == "deferred":
                    deferred.append((run_id, ti["task_id"], ti["map_index"]))
        active = _active_workloads(stack)
        watch.celery_tasks_seen.update(task_id for _, task_id, _ in active)
        watch.max_active_celery = max(watch.max_active_celery, len(active))
        watch.max_deferred = max(watch.max_deferred, len(deferred))
        watch.max_running_runs = max(watch.max_running_runs, running)
        if deferred:
            triggers = _triggers(stack, run_ids)
            for key in deferred:
                trigger = triggers.get(key)
                if (
                    key[1] == WAIT
                    and trigger is not None
                    and trigger[0] == "deferred"
                    and trigger[2] == TRIGGER_CLASS
                    and trigger[3] is not None
                    and trigger[4] == "TriggererJob"
                    and trigger[5] == "running"
                    and key not in active
                ):
                    watch.deferral_proofs.append(
                        {
                            "task": f"{key[0]}:{key[1]}[{key[2]}]",
                            "trigger_id": trigger[1],
                            "triggerer_job_id": trigger[3],
                            "celery_active_tasks": [f"{r}:{t}[{m}]" for r, t, m in active],
                            "deferred_now": len(deferred),
                        }
                    )
        finished = {run_id: stack.run_state(run_id) for run_id in run_ids}
        if all(state in ("success", "failed") for state in finished.values()):
            watch.final = finished
            return watch
        time.sleep(0.5)
    raise TimeoutError(f"runs not finished after {timeout:.0f} s: {watch.run_states}")


def _celery_executions(stack: Stack) -> int:
    """How many task executions the Celery result backend has recorded as successful so far."""
    return int(stack.metadata_query("SELECT COUNT(*) FROM celery_taskmeta WHERE status = 'SUCCESS'")[0][0])


def _source_count(stack: Stack, day: str) -> int:
    return int(stack.warehouse_query("SELECT COUNT(*) FROM survey_responses WHERE answered_on = %s", day)[0][0])


def _output(stack: Stack, run_id: str) -> list[tuple[Any, ...]]:
    return stack.warehouse_query(
        "SELECT record_id, code_status, topic, operation_id FROM coded_occupations WHERE dag_run_id = %s", run_id
    )


def _save(artifacts: Path, name: str, watch: Watch, **extra: Any) -> None:
    body = {
        "final": watch.final,
        "samples": watch.samples,
        "max_deferred_at_once": watch.max_deferred,
        "max_runs_running_at_once": watch.max_running_runs,
        "max_active_celery_tasks": watch.max_active_celery,
        "celery_tasks_seen": sorted(watch.celery_tasks_seen),
        "states_seen": {k: sorted(v) for k, v in sorted(watch.states.items())},
        "deferral_proofs": watch.deferral_proofs[:10],
        **extra,
    }
    (artifacts / name).write_text(json.dumps(body, indent=2, default=str))


def test_nightly_run_defers_to_the_triggerer_without_holding_a_worker_slot(stack: Stack, artifacts: Path) -> None:
    day = stack.options.first_day
    run_id = f"stack_nightly_{uuid.uuid4().hex[:8]}"
    executed_before = _celery_executions(stack)
    stack.trigger({"from_date": day, "to_date": day, "topic": "osca"}, run_id=run_id)

    watch = watch_runs(stack, [run_id], timeout=240)
    tis = stack.task_instances(run_id)
    _save(artifacts, "deferral.json", watch, run_id=run_id, timings=stack.timings)

    assert watch.final == {run_id: "success"}, watch.states
    # every task succeeded but the real-time branch, skipped: the day went through remote operations
    assert {ti["task_id"] for ti in tis if ti["state"] == "skipped"} == {"code_realtime"}, tis
    assert {ti["state"] for ti in tis if ti["task_id"] != "code_realtime"} == {"success"}, tis
    waits = [ti for ti in tis if ti["task_id"] == WAIT]
    rows = _output(stack, run_id)
    operations = {r[3] for r in rows if r[3]}
    # the day's distinct texts are split into chunks, each with its own remote operation and wait
    assert len(waits) == len(operations) >= 2, (len(waits), len(operations))
    for ti in waits:
        seen = watch.states[f"{run_id}:{WAIT}[{ti['map_index']}]"]
        assert "deferred" in seen, f"wait[{ti['map_index']}] never deferred: {seen}"
        assert ti["try_number"] == 1, "deferring and resuming is one try, not a retry"
    proven = {proof["task"] for proof in watch.deferral_proofs}
    assert proven == {f"{run_id}:{WAIT}[{ti['map_index']}]" for ti in waits}, watch.deferral_proofs
    # while the sensors waited, at some moment no Celery slot at all was busy
    assert any(not proof["celery_active_tasks"] for proof in watch.deferral_proofs), watch.deferral_proofs
    # the trigger rows are gone once their events were delivered
    assert not _triggers(stack, [run_id])

    # every task of this run went through Celery: one result row per execution in the result backend
    # (database), counted from before the trigger (earlier runs of the session left rows too); a wait
    # that deferred and resumed is executed twice
    executions = _celery_executions(stack) - executed_before
    assert len(tis) <= executions <= len(tis) + len(waits), (executions, len(tis))

    # every source row has its own output row, repeated texts sharing their operation's outcome
    assert len(rows) == _source_count(stack, day) == len({r[0] for r in rows})
    assert {r[2] for r in rows} == {"osca"}, "the conf overrode the topic Param"
    assert {r[1] for r in rows} <= {"successful", "unsuccessful", "error"}
    assert sum(r[1] == "successful" for r in rows) > len(rows) / 4


def test_two_runs_at_once(stack: Stack, artifacts: Path) -> None:
    first, second = stack.options.first_day, "2026-01-16"
    runs = {}
    for day in (first, second):
        run_id = f"stack_pair_{day}_{uuid.uuid4().hex[:6]}"
        stack.trigger({"from_date": day, "to_date": day}, run_id=run_id)
        runs[run_id] = day

    watch = watch_runs(stack, list(runs), timeout=300)
    _save(artifacts, "two-runs.json", watch, runs=runs)

    assert watch.final == dict.fromkeys(runs, "success"), watch.states
    assert watch.max_running_runs == 2, "both runs were running at the same time"
    for run_id, day in runs.items():
        rows = _output(stack, run_id)
        assert len(rows) == _source_count(stack, day) == len({r[0] for r in rows}), run_id
        assert {r[2] for r in rows} == {"anzsco"}, "the Param default applies without a conf override"
    # more sensors waited at once than the worker has slots: they were not holding them
    assert watch.max_deferred > stack.options.worker_concurrency, watch.max_deferred
