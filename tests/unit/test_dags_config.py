"""``coding_dag`` and ``coding_task_group`` take one :class:`PipelineConfig` or its fields as keywords, not both."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

import pytest
from airflow.sdk import DAG
from airflow.serialization.serialized_objects import DagSerialization

from airflow_batchcode.dags import PipelineConfig, coding_dag, coding_task_group
from airflow_batchcode.exceptions import ConfigurationError
from airflow_batchcode.manifests import ChunkOptions

FIELDS: dict[str, Any] = {
    "source_conn_id": "warehouse",
    "source_sql": "SELECT id, job, duties FROM answers WHERE day = '{{ ds }}'",
    "field_map": {"record_id": "id", "occp_text": "job", "tasks_text": "duties"},
    "output_conn_id": "warehouse",
    "output_table": "coded",
    "topic": "osca",
    "chunk_records": 5000,
    "poll_interval": 30.0,
    "min_success_rate": 0.75,
    "wait_timeout": timedelta(hours=3),
    "max_chunk_bytes": 10_000_000,
}
DAG_KWARGS: dict[str, Any] = {"schedule": "@daily", "start_date": datetime(2026, 1, 1), "catchup": False}


def serialized(dag: Any) -> dict[str, Any]:
    """Everything Airflow stores about ``dag``: tasks, their arguments and templates, dependencies, groups."""
    return DagSerialization.to_dict(dag)


def test_coding_dag_builds_the_same_dag_from_a_config_or_from_keywords() -> None:
    from_keywords = coding_dag("same", **FIELDS, **DAG_KWARGS)
    from_config = coding_dag("same", config=PipelineConfig(**FIELDS), **DAG_KWARGS)
    assert serialized(from_config) == serialized(from_keywords)
    other_topic = coding_dag("same", config=replace(PipelineConfig(**FIELDS), topic="anzsco"), **DAG_KWARGS)
    assert serialized(other_topic) != serialized(from_config), "the comparison sees the pipeline's settings"
    assert from_config.schedule == "@daily" and from_config.tags == {"batchcode"}
    assert from_config.get_task("code_chunk.wait").poll_interval == 30.0


def test_coding_task_group_builds_the_same_group_from_a_config_or_from_keywords() -> None:
    with DAG("group", **DAG_KWARGS) as from_keywords:
        coding_task_group("coding", **FIELDS)
    with DAG("group", **DAG_KWARGS) as from_config:
        coding_task_group("coding", config=PipelineConfig(**FIELDS))
    assert serialized(from_config) == serialized(from_keywords)
    assert "coding.code_chunk.create" in from_config.task_dict


def test_one_config_object_serves_both_factories() -> None:
    config = PipelineConfig(**FIELDS)
    dag = coding_dag("whole", config=config, **DAG_KWARGS)
    with DAG("outer", **DAG_KWARGS) as outer:
        coding_task_group("batchcode", config=config)
    assert {f"batchcode.{task_id}" for task_id in dag.task_dict} == set(outer.task_dict)


@pytest.mark.parametrize("factory", ["dag", "task_group"])
def test_config_and_keyword_fields_together_are_refused(factory: str) -> None:
    config = PipelineConfig(**FIELDS)
    with pytest.raises(ConfigurationError, match=r"either as config=PipelineConfig\(\.\.\.\) or as keywords.*topic"):
        if factory == "dag":
            coding_dag("both", config=config, topic="anzsco", **DAG_KWARGS)
        else:
            with DAG("both", **DAG_KWARGS):
                coding_task_group(config=config, topic="anzsco")


def test_config_must_be_a_pipeline_config() -> None:
    with pytest.raises(ConfigurationError, match="config must be a PipelineConfig, got dict"):
        coding_dag("wrong", config=FIELDS, **DAG_KWARGS)  # type: ignore[arg-type]


def test_keyword_form_still_reports_a_missing_field() -> None:
    fields = {key: value for key, value in FIELDS.items() if key != "output_table"}
    with pytest.raises(TypeError, match="output_table"):
        coding_dag("missing", **fields, **DAG_KWARGS)


def test_frugal_settings_are_checked_and_the_cache_table_defaults_beside_the_output() -> None:
    config = PipelineConfig(**FIELDS)
    assert (config.dedupe, config.result_cache, config.realtime_max_records) == (True, False, 300)
    assert config.cache_table == "coded_cache" and config.reuses
    assert replace(config, result_cache_table="audit.cache").cache_table == "audit.cache"
    assert not replace(config, dedupe=False).reuses
    with pytest.raises(ConfigurationError, match="realtime_max_records"):
        replace(config, realtime_max_records=-1)
    recoding = {**FIELDS["field_map"], "recode_of": "earlier_run"}  # the Arrow path reuses and re-codes too
    assert replace(config, columnar=True, result_cache=True, field_map=recoding).columnar
    with pytest.raises(ConfigurationError, match="must be a plain name"):
        replace(config, result_cache_table="cache; DROP TABLE x")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"chunk_records": 0}, "chunk_records must be at least 1, got 0"),
        ({"max_chunk_bytes": 1023}, "max_chunk_bytes must be between 1 KiB and 5 GB, got 1023"),
        ({"max_chunk_bytes": 6 * 1024**3}, "max_chunk_bytes must be between 1 KiB and 5 GB"),
    ],
)
def test_chunk_limits_out_of_range_fail_as_the_dag_is_parsed(change: dict[str, int], message: str) -> None:
    config = PipelineConfig(**FIELDS)
    assert config.chunk_options == ChunkOptions(5000, 10_000_000, sanitize_records=False)
    with pytest.raises(ConfigurationError, match=message):
        replace(config, **change)
    with pytest.raises(ConfigurationError, match=message):
        coding_dag("chunk_limits", **{**FIELDS, **change}, **DAG_KWARGS)


def test_the_pipeline_has_a_real_time_task_between_the_extract_and_the_load() -> None:
    dag = coding_dag("frugal", **FIELDS, **DAG_KWARGS)
    realtime = dag.get_task("code_realtime")
    assert realtime.upstream_task_ids == {"extract"} and "load" in realtime.downstream_task_ids


def test_nightly_dag_takes_any_pipeline_field_by_name_and_caches_results_by_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from airflow_batchcode import dags
    from airflow_batchcode.nightly import nightly_dag

    options = {"batchcode_conn_id": "coder", "poll_interval": 30.0, "wait_timeout": timedelta(hours=3)}
    nightly = nightly_dag("nightly", **options)
    wait = nightly.get_task("code_chunk.wait")
    assert (wait.batchcode_conn_id, wait.poll_interval, wait.timeout) == ("coder", 30.0, 10_800)
    assert nightly.schedule is not None and not nightly.catchup, "the nightly's DAG defaults apply"
    assert nightly_dag("nightly", schedule=None).schedule is None, "and DAG keywords override them"

    built: list[PipelineConfig] = []
    monkeypatch.setattr(dags, "_build", built.append)
    nightly_dag("nightly", dedupe=False)
    nightly_dag("nightly", result_cache=False, realtime_max_records=0)
    assert [(c.result_cache, c.dedupe, c.realtime_max_records) for c in built] == [(True, False, 300), (False, True, 0)]
    assert built[0].output_table == "coded_occupations" and built[0].topic == "{{ params.topic }}"
