"""The shipped DAGs load in Airflow with no import errors, and the nightly DAG has its UI params."""

from __future__ import annotations

from pathlib import Path

from airflow.dag_processing.dagbag import DagBag

ROOT = Path(__file__).parents[2]


def test_shipped_dags_import_cleanly() -> None:
    bag = DagBag(dag_folder=str(ROOT / "dags"))
    assert bag.import_errors == {}
    nightly = bag.dags["batchcode_nightly"]
    assert nightly.fileloc == str(ROOT / "dags" / "batchcode_nightly.py"), "workers re-parse the user's file"
    assert set(nightly.params) >= {"topic", "model", "from_date", "to_date"}
    assert {t.task_id for t in nightly.tasks} >= {
        "extract",
        "chunks",
        "code_chunk.create",
        "code_chunk.upload",
        "code_chunk.wait",
        "code_chunk.download",
        "load",
        "summary",
    }
    load = nightly.get_task("load")
    assert [a.uri for a in load.outlets] == ["batchcode-output://batchcode_warehouse/coded_occupations"]
    for service in ("refinery", "superai", "gravity"):
        dag = bag.dags[f"batchcode_{service}_nightly"]
        assert dag.get_task("code_chunk.create").batchcode_conn_id == f"batchcode_{service}"
        assert dag.fileloc == str(ROOT / "dags" / f"batchcode_{service}.py")


def test_test_dags_import_cleanly() -> None:
    bag = DagBag(dag_folder=str(ROOT / "tests" / "dags"))
    assert bag.import_errors == {}
    assert {"pipeline_test", "four_steps_deferred", "four_steps_poke", "four_steps_crash_once"} <= set(bag.dags)
