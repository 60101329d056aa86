"""OpenLineage: a pipeline run emits extract and load events with the source and coded tables, schema and column lineage.

The OpenLineage provider's own file transport writes the events the run's listener emitted;
the facets are also checked directly for a PostgreSQL source (namespaces and qualified names).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from airflow_batchcode.dags import PipelineConfig
from tests.support import batchcode_connection, emulator, env_connection, sqlite_warehouse

ROOT = Path(__file__).resolve().parents[2]

pytest.importorskip("airflow.providers.openlineage", reason="apache-airflow-providers-openlineage is not installed")


def test_facets_name_the_source_and_coded_tables_with_column_lineage() -> None:
    from airflow_batchcode.lineage import lineage

    config = PipelineConfig(
        source_conn_id="lineage_pg",
        source_sql="SELECT respondent_id, occupation, duties FROM survey.responses WHERE answered_on >= '2026-01-01'",
        field_map={"record_id": "respondent_id", "occp_text": "occupation", "tasks_text": "duties"},
        output_conn_id="lineage_pg",
        output_table="coded_occupations",
    )
    fields = {"conn_type": "postgres", "host": "db.example", "port": 5433, "schema": "warehouse", "login": "u"}
    with env_connection("lineage_pg", fields):
        result = lineage(config, config.source_sql)
    [source] = result.inputs
    [coded] = result.outputs
    assert (source.namespace, source.name) == ("postgres://db.example:5433", "warehouse.survey.responses")
    assert (coded.namespace, coded.name) == ("postgres://db.example:5433", "warehouse.public.coded_occupations")
    assert [f.name for f in source.facets["schema"].fields] == ["respondent_id", "occupation", "duties"]
    assert {"record_id", "code_category", "dag_run_id"} <= {f.name for f in coded.facets["schema"].fields}
    columns = coded.facets["columnLineage"].fields
    assert [(i.name, i.field) for i in columns["occp_text"].inputFields] == [
        ("warehouse.survey.responses", "occupation")
    ]
    assert {i.field for i in columns["code_category"].inputFields} == {"occupation", "duties"}
    assert result.job_facets["sql"].query == config.source_sql


def events(path: Path) -> list[dict[str, Any]]:
    found = []
    for file in sorted(path.parent.glob(path.name + "*")):
        found += [json.loads(line) for line in file.read_text().splitlines() if line.strip()]
    return found


def test_a_run_emits_lineage_through_the_file_transport(airflow_db: Path, tmp_path: Path) -> None:
    log = tmp_path / "lineage" / "events.jsonl"
    log.parent.mkdir()
    settings = {
        "AIRFLOW__OPENLINEAGE__TRANSPORT": json.dumps({"type": "file", "log_file_path": str(log), "append": True}),
        "AIRFLOW__OPENLINEAGE__NAMESPACE": "batchcode-test",
        "AIRFLOW__OPENLINEAGE__DISABLED": "False",
    }
    # a process of its own: OpenLineage reads its settings and registers its listener once per process
    script = (
        "import sys; from pathlib import Path; from tests.support import run_pipeline; "
        'print("RUN-STATE", run_pipeline(Path(sys.argv[1])).state)'
    )
    try:
        warehouse = sqlite_warehouse(tmp_path, 30)
        with emulator() as server, batchcode_connection(server):
            done = subprocess.run(
                [sys.executable, "-c", script, str(tmp_path)],
                cwd=ROOT,
                env={**os.environ, **settings},
                capture_output=True,
                text=True,
                timeout=240,
            )
    finally:
        os.environ.pop("AIRFLOW_CONN_TEST_WAREHOUSE", None)
    assert done.returncode == 0 and "RUN-STATE success" in done.stdout, (done.stdout + done.stderr)[-3000:]
    complete = {e["job"]["name"].rsplit(".", 1)[-1]: e for e in events(log) if e.get("eventType") == "COMPLETE"}
    for task in ("extract", "load"):
        assert task in complete, sorted(complete)
        event = complete[task]
        assert [(d["namespace"], d["name"]) for d in event["inputs"]] == [(f"sqlite://{warehouse}", "survey_responses")]
        [coded] = event["outputs"]
        assert (coded["namespace"], coded["name"]) == (f"sqlite://{warehouse}", "coded_responses")
        lineage = coded["facets"]["columnLineage"]["fields"]
        assert lineage["tasks_text"]["inputFields"][0]["field"] == "duties"
        assert "schema" in coded["facets"] and "sql" in event["job"]["facets"]
