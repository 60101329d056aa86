"""The baseline of figure 6: the glue teams hand-write today, as one PythonOperator.

Reads the whole query into memory (``fetchall``), ``json.dumps`` per row, one ``requests.put``
of the whole body, ``time.sleep`` polling, ``json.loads`` per output line and the hook's
``insert_rows``. It writes how long each phase took to ``$BENCH_NAIVE_TIMES``.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import requests

COLUMNS = [
    "record_id",
    "code_status",
    "code_category",
    "code_label",
    "code_confidence",
    "suggestions",
    "error",
    "dag_run_id",
]


def naive_code(**context: Any) -> None:
    from airflow.sdk import BaseHook

    times: dict[str, float] = {}
    mark = time.monotonic()

    def phase(name: str) -> None:
        nonlocal mark
        now = time.monotonic()
        times[name] = now - mark
        mark = now

    start, end = context["data_interval_start"], context["data_interval_end"]
    warehouse = BaseHook.get_connection("batchcode_warehouse").get_hook()
    rows = warehouse.get_records(
        "SELECT respondent_id, occupation, duties FROM survey_responses "
        f"WHERE answered_on >= '{start:%Y-%m-%d}' AND answered_on < '{end:%Y-%m-%d}' ORDER BY respondent_id"
    )
    phase("read")
    body = "\n".join(json.dumps({"recordId": r[0], "occp_text": r[1], "tasks_text": r[2]}) for r in rows) + "\n"
    phase("serialise")

    service = BaseHook.get_connection("batchcode_default")
    token = requests.post(
        f"{service.host}/oauth2/token",
        auth=(service.login or "", service.password or ""),
        data={"grant_type": "client_credentials"},
        timeout=60,
    ).json()["access_token"]
    headers = {"Authorization": token}
    operation = requests.post(f"{service.host}/v1/topics/anzsco/batch-code", headers=headers, timeout=60).json()
    requests.put(
        operation["requestUploadUrl"],
        data=body.encode(),
        headers={
            "x-amz-server-side-encryption": "aws:kms",
            "x-amz-server-side-encryption-aws-kms-key-id": operation["bucketKmsKeyArn"],
        },
        timeout=600,
    ).raise_for_status()
    phase("upload")
    while True:
        status = requests.get(
            f"{service.host}/v1/topics/anzsco/batch-code/operations/{operation['operationId']}",
            headers=headers,
            timeout=60,
        ).json()
        if status["operationStatus"] in ("complete", "failed", "timed_out"):
            break
        time.sleep(1)
    phase("wait")
    text = requests.get(status["responseDownloadUrl"], timeout=600).text
    phase("download")
    out = []
    for line in text.splitlines():
        data = json.loads(line)
        result = data.get("result") or {}
        suggestions = data.get("suggestions")
        out.append(
            (
                data.get("recordId"),
                "error" if data.get("error") else data.get("codeStatus"),
                result.get("codeCategory"),
                result.get("codeLabel"),
                result.get("codeConfidence"),
                json.dumps(suggestions) if suggestions else None,
                data.get("error"),
                context["run_id"],
            )
        )
    phase("parse")
    warehouse.run(f"CREATE TABLE IF NOT EXISTS naive_coded ({', '.join(COLUMNS)})")
    warehouse.insert_rows("naive_coded", out, target_fields=COLUMNS)
    phase("load")
    with open(os.environ["BENCH_NAIVE_TIMES"], "w") as sink:
        json.dump({**times, "rows": len(out)}, sink)
