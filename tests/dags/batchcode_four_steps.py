"""Test DAGs: the four steps of one batch operation, deferrable, poking, and crashing once per task.

The manifest, output folder and topic come from the run's conf (``params``), so the tests
run the same DAG file against any emulator and data. In ``four_steps_crash_once`` each task
named in ``params.crash`` does its work and then dies on its first try, as a worker killed
at the worst moment would; its retry must pick up the remote state instead of redoing it.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from airflow.sdk import DAG, Param

from airflow_batchcode.operators.batchcode import (
    CreateOperationOperator,
    DownloadResultsOperator,
    UploadManifestOperator,
)
from airflow_batchcode.sensors.batchcode import OperationStatusSensor

PARAMS = {
    "manifest": Param("", type="string"),
    "destination": Param("", type="string"),
    "topic": Param("anzsco", type="string"),
    "crash": Param([], type="array"),
}


class SimulatedWorkerLoss(RuntimeError):
    """Raised after a task's work is done, on its first try only."""


def crash_once(cls: type) -> type:
    """A subclass of operator ``cls`` that dies right after its work on try 1 when listed in ``params.crash``."""

    def die_if_asked(self: Any, context: Any) -> None:
        if self.task_id in context["params"].get("crash", []) and context["ti"].try_number == 1:
            raise SimulatedWorkerLoss(f"{self.task_id}: worker lost after the work was done")

    def execute(self: Any, context: Any) -> Any:
        result = cls.execute(self, context)
        die_if_asked(self, context)
        return result

    def execute_complete(self: Any, context: Any, event: Any = None) -> Any:
        result = cls.execute_complete(self, context, event)
        die_if_asked(self, context)
        return result

    members: dict[str, Any] = {"execute": execute}
    if hasattr(cls, "execute_complete"):
        members["execute_complete"] = execute_complete
    return type(f"CrashOnce{cls.__name__}", (cls,), members)


def four_steps(dag_id: str, *, deferrable: bool, crashy: bool = False) -> DAG:
    wrap = crash_once if crashy else (lambda cls: cls)
    defaults = {"retries": 1, "retry_delay": timedelta(seconds=0)} if crashy else {}
    with DAG(
        dag_id, schedule=None, start_date=datetime(2026, 1, 1), params=PARAMS, catchup=False, default_args=defaults
    ) as dag:
        create = wrap(CreateOperationOperator)(task_id="create", topic="{{ params.topic }}")
        upload = wrap(UploadManifestOperator)(
            task_id="upload", operation=create.output, manifest="{{ params.manifest }}"
        )
        wait = wrap(OperationStatusSensor)(
            task_id="wait", operation=create.output, poll_interval=0.5, timeout=600, deferrable=deferrable
        )
        download = wrap(DownloadResultsOperator)(
            task_id="download", operation=create.output, destination="{{ params.destination }}"
        )
        create >> upload >> wait >> download
    return dag


four_steps_deferred = four_steps("four_steps_deferred", deferrable=True)
four_steps_poke = four_steps("four_steps_poke", deferrable=False)
four_steps_crash_once = four_steps("four_steps_crash_once", deferrable=True, crashy=True)
