"""The plugin's FastAPI app, mounted by the api-server under ``/batchcode``.

Routes (all behind Airflow's auth manager, through the api-server's own dependencies):

- ``GET /dags/{dag_id}/runs/{run_id}``: the run report (DAG run read permission);
- ``GET /dags/{dag_id}/runs/{run_id}/rows.csv`` and ``rows.parquet``: the run's rows;
- ``GET /dags/{dag_id}``: success rate and volume night by night;
- ``GET /review``: the review queue over every DAG the user may read;
- ``POST /dags/{dag_id}/reviews``: a decision (edit permission on the DAG), JSON only, so a
  cross-site form cannot post one with the user's cookie.

A signed-in user is the api-server's JWT (``Authorization: Bearer`` or the UI's ``_token``
cookie) resolved by ``GetUserDep``; ``requires_access_dag`` asks the configured auth manager's
``is_authorized_dag``. Anonymous requests get 401, users without the permission 403.
"""

from __future__ import annotations

import csv
import html
import io
import json
import tempfile
from collections.abc import Iterator
from datetime import date
from typing import Annotated, Any
from urllib.parse import quote, urlencode

from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity
from airflow.api_fastapi.core_api.security import GetUserDep, requires_access_dag
from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, StreamingResponse

from airflow_batchcode.ui import pages, queries, reviews, runs
from airflow_batchcode.ui.store import OutputTable, connect, dags_with_outputs, outputs_of

MAX_BODY = 4096
URL_PREFIX = "/batchcode"

ReadRun = Depends(requires_access_dag("GET", DagAccessEntity.RUN))
EditDag = Depends(requires_access_dag("PUT"))


def output_of(dag_id: str) -> OutputTable:
    """The DAG's output table, or 404 when the DAG writes none."""
    found = outputs_of(dag_id)
    if not found:
        raise HTTPException(404, f"DAG {dag_id} writes no coded output table")
    return found[0]


def _base(request: Request) -> str:
    return html.escape(str(request.scope.get("root_path", "")).rstrip("/"), quote=True)


def _segment(value: str) -> str:
    """``value`` as one URL path segment, safe inside an HTML attribute."""
    return html.escape(quote(value, safe=""), quote=True)


def create_app() -> FastAPI:
    """The app the plugin hands to the api-server."""
    app = FastAPI(title="Batch coding", docs_url=None, redoc_url=None, openapi_url=None)

    @app.get("/", include_in_schema=False)
    def home(request: Request, user: GetUserDep) -> RedirectResponse:
        return RedirectResponse(f"{_base(request)}/review", status_code=303)

    @app.get("/dags/{dag_id}/runs/{run_id}", response_class=HTMLResponse, dependencies=[ReadRun])
    def report(request: Request, dag_id: str, run_id: str) -> str:
        output = output_of(dag_id)
        with connect(output.conn_id) as db:
            if db.table_exists(output.table):
                report = queries.run_report(db, output.table, dag_id, run_id)
            else:
                report = queries.RunReport(0, {}, [0] * queries.HISTOGRAM_BINS, {}, [])
        base = f"{_base(request)}/dags/{_segment(dag_id)}/runs/{_segment(run_id)}"
        return pages.report_page(
            dag_id,
            run_id,
            output.table,
            report,
            runs.run_xcoms(dag_id, run_id),
            runs.timeline(dag_id, run_id),
            base,
            state=runs.run_state(dag_id, run_id),
        )

    @app.get("/dags/{dag_id}/runs/{run_id}/rows.csv", dependencies=[ReadRun])
    def rows_csv(dag_id: str, run_id: str) -> StreamingResponse:
        output = output_of(dag_id)
        _require_table(output)

        def lines() -> Iterator[str]:
            buffer = io.StringIO()
            writer = csv.writer(buffer)
            with connect(output.conn_id) as db:
                for batch in db.stream(queries.export_statement(output.table), (dag_id, run_id)):
                    writer.writerows(map(queries.spreadsheet_safe, batch))
                    yield buffer.getvalue()
                    buffer.seek(0)
                    buffer.truncate()

        name = _filename(dag_id, run_id, "csv")
        return StreamingResponse(
            lines(), media_type="text/csv", headers={"Content-Disposition": f"attachment; filename={name}"}
        )

    @app.get("/dags/{dag_id}/runs/{run_id}/rows.parquet", dependencies=[ReadRun])
    def rows_parquet(dag_id: str, run_id: str) -> StreamingResponse:
        try:
            import pyarrow as pa
            import pyarrow.parquet as pq
        except ImportError:
            raise HTTPException(501, "Parquet downloads need pyarrow on the api-server (pip install pyarrow)") from None
        output = output_of(dag_id)
        _require_table(output)
        spool = tempfile.TemporaryFile()  # noqa: SIM115 - closed by the response's generator
        writer = None
        with connect(output.conn_id) as db:
            batches = db.stream(queries.export_statement(output.table), (dag_id, run_id))
            names = [str(n) for n in next(batches)[0]]
            for batch in batches:
                table = pa.Table.from_pylist([dict(zip(names, map(_plain, row), strict=True)) for row in batch])
                writer = writer or pq.ParquetWriter(spool, table.schema)
                writer.write_table(table.cast(writer.schema) if table.schema != writer.schema else table)
        if writer is None:
            writer = pq.ParquetWriter(spool, pa.schema([(n, pa.string()) for n in names]))
        writer.close()
        spool.seek(0)

        def chunks() -> Iterator[bytes]:
            with spool:
                while block := spool.read(1 << 20):
                    yield block

        name = _filename(dag_id, run_id, "parquet")
        return StreamingResponse(
            chunks(),
            media_type="application/vnd.apache.parquet",
            headers={"Content-Disposition": f"attachment; filename={name}"},
        )

    @app.get("/dags/{dag_id}", response_class=HTMLResponse, dependencies=[ReadRun])
    def dag_history(request: Request, dag_id: str) -> str:
        output = output_of(dag_id)
        with connect(output.conn_id) as db:
            nights = queries.history(db, output.table, dag_id) if db.table_exists(output.table) else []
        nights = runs.with_airflow_runs(dag_id, nights)
        return pages.dag_page(dag_id, output.table, nights, f"{_base(request)}/dags/{_segment(dag_id)}")

    @app.get("/review", response_class=HTMLResponse)
    def review(
        request: Request,
        user: GetUserDep,
        dag_id: Annotated[str | None, Query(max_length=250)] = None,
        run_id: Annotated[str | None, Query(max_length=250)] = None,
        date_: Annotated[str | None, Query(alias="date", max_length=20)] = None,
        topic: Annotated[str | None, Query(max_length=50)] = None,
        threshold: Annotated[str, Query(max_length=20)] = str(queries.DEFAULT_THRESHOLD),
        after: Annotated[str | None, Query(max_length=600)] = None,
        errors: bool = False,
        record: Annotated[str | None, Query(max_length=250)] = None,
    ) -> str:
        readable = sorted(set(dags_with_outputs()) & _readable_dags(request, user))
        chosen = dag_id if dag_id in readable else (readable[0] if readable else None)
        if dag_id and dag_id not in readable:
            raise HTTPException(403, "Forbidden")
        filters = {
            "dag_id": chosen or "",
            "run_id": run_id or "",
            "date": date_ or "",
            "topic": topic or "",
            "threshold": threshold,
            "errors": "1" if errors else "",
            "record": record or "",
        }
        day, confidence, problem = _queue_filters(date_, threshold)
        rows: list[dict[str, Any]] = []
        recent: list[tuple[Any, ...]] = []
        next_url = None
        editable = bool(chosen) and chosen in _editable_dags(user)
        if chosen and not problem:
            output = output_of(chosen)
            where = queries.QueueFilter(
                (chosen,), run_id or None, day, topic or None, confidence, _cursor(after), errors, record or None
            )
            with connect(output.conn_id) as db:
                if db.table_exists(output.table):
                    rows = queries.review_queue(db, output.table, where)
                recent = reviews.recent_reviews(db, output.table, [chosen])
            if len(rows) == queries.QUEUE_PAGE:
                last = rows[-1]
                cursor = json.dumps([last["dag_id"], last["dag_run_id"], last["position"]])
                next_url = (
                    f"{_base(request)}/review?{urlencode({**{k: v for k, v in filters.items() if v}, 'after': cursor})}"
                )
        return pages.review_page(
            readable, filters, rows, recent, next_url, _base(request), editable=editable, problem=problem
        )

    @app.post("/dags/{dag_id}/reviews", dependencies=[EditDag])
    async def decide(request: Request, dag_id: str, user: GetUserDep) -> dict[str, Any]:
        if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
            raise HTTPException(415, "send the decision as application/json")
        body = await _bounded_body(request)
        try:
            data = json.loads(body)
            decision = reviews.Decision(
                dag_id=dag_id,
                run_id=_text(data, "run_id"),
                position=data.get("position"),
                record_id=None if data.get("record_id") is None else str(data.get("record_id")),
                code=_text(data, "code"),
                reviewer=user.get_name(),
            )
        except (ValueError, AttributeError, TypeError) as exc:
            status = exc.status if isinstance(exc, reviews.ReviewRejected) else 400
            raise HTTPException(
                status,
                str(exc)
                if isinstance(exc, reviews.ReviewRejected)
                else "a JSON object with run_id, position, record_id and code",
            ) from None
        output = output_of(dag_id)
        _require_table(output)
        from starlette.concurrency import run_in_threadpool

        def store() -> dict[str, Any]:
            with connect(output.conn_id) as db:
                return reviews.record_decision(db, output.table, decision)

        try:
            review = await run_in_threadpool(store)
        except reviews.ReviewRejected as exc:
            raise HTTPException(exc.status, str(exc)) from None
        return {**review, "reviewed_at": str(review["reviewed_at"])}

    return app


def _queue_filters(day: str | None, threshold: str) -> tuple[date | None, float, str | None]:
    """The queue form's date and threshold, read; a sentence for the page instead of a bare 422."""
    try:
        confidence = float(threshold or queries.DEFAULT_THRESHOLD)
        if not 0 <= confidence <= 1:
            raise ValueError
    except ValueError:
        return (
            None,
            queries.DEFAULT_THRESHOLD,
            f"Confidence below must be a number from 0 to 1 (0.6 for 60 %), not {threshold!r}",
        )
    try:
        return (date.fromisoformat(day) if day else None), confidence, None
    except ValueError:
        return None, confidence, f"Loaded on must be a date (YYYY-MM-DD), not {day!r}"


def _editable_dags(user: Any) -> set[str]:
    from airflow.api_fastapi.app import get_auth_manager

    return set(get_auth_manager().get_authorized_dag_ids(user=user, method="PUT"))


def _readable_dags(request: Request, user: Any) -> set[str]:
    from airflow.api_fastapi.app import get_auth_manager

    return set(get_auth_manager().get_authorized_dag_ids(user=user, method="GET"))


def _require_table(output: OutputTable) -> None:
    with connect(output.conn_id) as db:
        if not db.table_exists(output.table):
            raise HTTPException(404, f"{output.table} has no rows yet")


def _text(data: Any, key: str) -> str:
    value = data.get(key)
    if not isinstance(value, str) or not value or len(value) > 250:
        raise ValueError(f"{key} must be a non-empty string")
    return value


def _cursor(after: str | None) -> tuple[str, str, int] | None:
    if not after:
        return None
    try:
        dag, run, position = json.loads(after)
        return str(dag), str(run), int(position)
    except (ValueError, TypeError):
        raise HTTPException(400, "after must be a cursor from the previous page") from None


async def _bounded_body(request: Request) -> bytes:
    declared = request.headers.get("content-length")
    if declared and (not declared.isdigit() or int(declared) > MAX_BODY):
        raise HTTPException(413, f"a decision is at most {MAX_BODY} bytes")
    body = b""
    async for part in request.stream():
        body += part
        if len(body) > MAX_BODY:
            raise HTTPException(413, f"a decision is at most {MAX_BODY} bytes")
    return body


def _plain(value: Any) -> Any:
    return value if value is None or isinstance(value, str | int | float | bool) else str(value)


def _filename(dag_id: str, run_id: str, suffix: str) -> str:
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in f"{dag_id}__{run_id}")
    return f"{safe}.{suffix}"
