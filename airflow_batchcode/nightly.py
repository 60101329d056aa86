"""The shipped nightly pipeline: survey answers of the day → ANZSCO/OSCA codes in the warehouse.

Scheduled daily, each run codes the answers of its data interval; an analyst can trigger a
re-code from the UI form (topic, model, date range; "Re-code what failed" codes again only the
records whose latest outcome failed) and a data engineer can backfill with
``airflow backfill create``. ``dags/batchcode_nightly.py`` builds it with the defaults below.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from airflow.sdk import DAG, Param
from airflow.sdk.definitions.timetables.interval import CronDataIntervalTimetable

from airflow_batchcode.dags import coding_dag
from airflow_batchcode.ui.reviews import latest_rows_sql

ANSWERED_IN_RANGE = """\
{column} >= '{{{{ params.from_date or data_interval_start.strftime('%Y-%m-%d') }}}}'
  AND {column} < '{{{{ macros.ds_add(params.to_date, 1) if params.to_date
                     else data_interval_end.strftime('%Y-%m-%d') }}}}'"""
"""The days of the trigger form's dates (both inclusive), else of the run's data interval; as a half-open
range of dates, so that a column holding times selects all of its last day too."""

SOURCE_SQL = """\
{{% if params.recode %}}
SELECT s.respondent_id, s.occupation, s.duties, l.dag_run_id AS recode_of
FROM {table} s
JOIN ({latest_before_this_run}) l ON l.record_id = CAST(s.respondent_id AS TEXT)
WHERE {in_range_recode}
  AND (l.code_status IN ('unsuccessful', 'error'){{% if params.recode_below is not none %}}
       OR (l.code_status = 'successful' AND l.code_confidence < {{{{ params.recode_below }}}}){{% endif %}})
{{% else %}}
SELECT respondent_id, occupation, duties, NULL AS recode_of
FROM {table}
WHERE {in_range}
{{% endif %}}
ORDER BY 1
"""
"""The nightly extract; in re-code mode, the answers whose latest outcome in this DAG's other runs
failed (or was coded with less than ``recode_below`` confidence). The latest outcome is ranked as in
``<output>_latest``, leaving out this run's own rows: a cleared re-code run selects what it selected
the first time, not what it has since coded."""


def source_sql(table: str, output_table: str) -> str:
    """The nightly extract over ``table`` (re-code mode reads ``output_table`` too)."""
    return SOURCE_SQL.format(
        table=table,
        latest_before_this_run=latest_rows_sql(
            output_table, where="o.dag_id = '{{ dag.dag_id }}' AND o.dag_run_id <> '{{ run_id }}'"
        ),
        in_range=ANSWERED_IN_RANGE.format(column="answered_on"),
        in_range_recode=ANSWERED_IN_RANGE.format(column="s.answered_on"),
    )


def _date_param(title: str, what: str) -> Param:
    """An optional ``YYYY-MM-DD`` date of the trigger form; empty means the run's data interval."""
    return Param(
        None,
        type=["null", "string"],
        format="date",
        pattern=r"^\d{4}-\d{2}-\d{2}$",
        title=title,
        description=f"{what}; empty for the run's data interval.",
    )


PARAMS = {
    "topic": Param(
        "anzsco", type="string", enum=["anzsco", "osca"], title="Topic", description="Classification to code into."
    ),
    "model": Param(
        None,
        type=["null", "string"],
        title="Model id",
        description="A model GUID of the topic; empty for the service's latest model.",
    ),
    "from_date": _date_param("From date", "First answer date to code (inclusive)"),
    "to_date": _date_param("To date", "Last answer date to code (inclusive)"),
    "recode": Param(
        False,
        type="boolean",
        title="Re-code what failed",
        description=(
            "Code again, bypassing the result cache, the records of the date range whose latest outcome is "
            "unsuccessful or an error (or below the confidence threshold); the new rows name the run they re-code."
        ),
    ),
    "recode_below": Param(
        None,
        type=["null", "number"],
        minimum=0,
        maximum=1,
        title="Re-code below confidence",
        description="In re-code mode, also re-code coded records whose confidence is below this (0 to 1).",
    ),
}


def nightly_dag(
    dag_id: str = "batchcode_nightly",
    *,
    source_table: str = "survey_responses",
    warehouse_conn_id: str = "batchcode_warehouse",
    output_table: str = "coded_occupations",
    **options: Any,
) -> DAG:
    """The nightly DAG over ``source_table(respondent_id, answered_on, occupation, duties)``.

    Scheduled daily at midnight UTC with a data interval of the day before (a
    ``CronDataIntervalTimetable``: Airflow 3's plain ``"@daily"`` has zero-length intervals),
    so each run, and each backfilled day, selects exactly one day of answers.

    :param warehouse_conn_id: the connection the answers are read from and the codes written to.
    :param options: as for :func:`~airflow_batchcode.dags.coding_dag`: keywords naming
        :class:`~airflow_batchcode.dags.PipelineConfig` fields (``batchcode_conn_id``, ``chunk_records``,
        ``poll_interval``, ``staging``, ``columnar``, ...) configure the pipeline, with its defaults but
        for ``result_cache``, on here; every other keyword goes to ``DAG``, over the schedule and
        defaults below. The source, output, field map, topic and model are this function's to set.
    """
    options.setdefault("result_cache", True)
    options.setdefault("schedule", CronDataIntervalTimetable("0 0 * * *", timezone="UTC"))
    options.setdefault("start_date", datetime(2026, 1, 1))
    options.setdefault("catchup", False)
    options.setdefault("max_active_runs", 4)
    options.setdefault("default_args", {"retries": 2, "retry_delay": timedelta(minutes=2)})
    options.setdefault("params", PARAMS)
    return coding_dag(
        dag_id,
        source_conn_id=warehouse_conn_id,
        source_sql=source_sql(source_table, output_table),
        field_map={
            "record_id": "respondent_id",
            "occp_text": "occupation",
            "tasks_text": "duties",
            "recode_of": "recode_of",
        },
        output_conn_id=warehouse_conn_id,
        output_table=output_table,
        topic="{{ params.topic }}",
        model="{{ params.model or '' }}",
        **options,
    )
