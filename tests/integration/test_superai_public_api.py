"""The super.ai emulator driven with plain HTTP calls shaped as super.ai's public API and its own client call them.

Base URL ending in ``/v1``, the ``API-KEY`` header, ``POST /apps/{app}/jobs``, ``GET /apps/{app}/batches``,
``GET /apps/{app}/batches/{batch}``, ``GET /apps/{app}/jobs?page&size&statusIn&sortBy&orderBy&createdStartDate``,
``GET /jobs/{id}``, ``GET /jobs/{id}/response`` and ``POST /jobs/{id}/cancel``; anything else answers 501.
"""

from __future__ import annotations

from typing import Any

import requests

from airflow_batchcode.services.superai import SuperAiClient, SuperAiSettings
from tests.support import admin, emulator, jsonl_manifest

APP = "5f0c2a9e-7d41-4b8e-a3c6-91e2f4b7d058"
KEY = {"API-KEY": "demo-key"}


def _call(base: str, method: str, path: str, **kwargs: Any) -> requests.Response:
    return requests.request(method, f"{base}{path}", headers=KEY, timeout=10, **kwargs)


def test_a_client_shaped_as_super_ais_drives_the_emulator() -> None:
    with emulator("superai", processing_delay=4.0) as server:
        base = f"{server.base_url}/v1"
        single = _call(base, "POST", f"/apps/{APP}/jobs", json={"inputs": [{"job_title": "nurse"}], "metadata": {}})
        assert single.status_code == 202
        assert {"batch_id", "uuid", "message"} <= set(single.json()), "a single input also answers its job uuid"
        many = _call(
            base,
            "POST",
            f"/apps/{APP}/jobs",
            json={
                "inputs": [{"job_title": "chef"}, {"job_title": "pilot", "duties": "flying"}, {"duties": "x"}],
                "callbackUrl": "https://hooks.example.org/x",
                "metadata": {"run": "r-1"},
            },
        ).json()
        assert "uuid" not in many
        admin(server, "clock", {"advance": 1.5})
        listed_batches = _call(base, "GET", f"/apps/{APP}/batches").json()
        assert [b["batch_id"] for b in listed_batches] == [single.json()["batch_id"], many["batch_id"]]
        batch = _call(base, "GET", f"/apps/{APP}/batches/{many['batch_id']}").json()
        assert batch["batch_processed"] is True and batch["valid_count"] == 2
        assert batch["invalid_index"] == 2 and isinstance(batch["invalid_index"], int)
        clean = _call(base, "GET", f"/apps/{APP}/batches/{single.json()['batch_id']}").json()
        assert clean["invalid_index"] == -1, "an integer even when every input is valid"
        params = [
            ("page", 0),
            ("size", 500),
            ("statusIn", "SCHEDULED"),
            ("statusIn", "IN_PROGRESS"),
            ("sortBy", "id"),
            ("orderBy", "asc"),
            ("createdStartDate", "2000-01-01T00:00:00Z"),
        ]
        page = _call(base, "GET", f"/apps/{APP}/jobs", params=params).json()
        assert set(page) == {"jobs", "page", "size", "pages", "total"} and page["total"] == 3
        job = page["jobs"][0]
        assert {"uuid", "batchId", "state", "createdDate", "completedDate", "metadata", "input"} <= set(job)
        assert "id" not in job and "batch_id" not in job and "input_index" not in job
        assert job["uuid"] == single.json()["uuid"]
        mine = [j for j in page["jobs"] if j["batchId"] == many["batch_id"]]
        assert [j["input"]["job_title"] for j in mine] == ["chef", "pilot"] and mine[0]["metadata"] == {"run": "r-1"}
        later = _call(base, "GET", f"/apps/{APP}/jobs", params={"createdStartDate": "2999-01-01T00:00:00Z"}).json()
        assert later["total"] == 0
        assert _call(base, "GET", f"/jobs/{job['uuid']}").json()["state"] in ("SCHEDULED", "IN_PROGRESS")
        cancelled = _call(base, "POST", f"/jobs/{mine[1]['uuid']}/cancel")
        assert cancelled.status_code == 200 and cancelled.json()["state"] == "CANCELED"
        admin(server, "clock", {"advance": 5})
        answer = _call(base, "GET", f"/jobs/{mine[0]['uuid']}/response").json()
        assert answer["response"]["code"] or answer["response"]["suggestions"]
        for method, path in (("POST", f"/jobs/{job['uuid']}/review"), ("GET", f"/apps/{APP}/jobs/download")):
            missing = _call(base, method, path)
            assert (missing.status_code, set(missing.json())) == (501, {"message"}), path
            assert "not emulated" in missing.json()["message"]
        assert requests.get(f"{base}/jobs/{job['uuid']}", timeout=5).status_code == 401


def test_the_client_matches_its_batch_among_the_apps_jobs() -> None:
    with emulator("superai", processing_delay=1.0) as server:
        settings = SuperAiSettings(server.base_url, "demo-key", APP, page_size=2)
        with SuperAiClient(settings) as client:
            records = [{"occp_text": f"job {i}", "tasks_text": "work"} for i in range(3)]
            first = client.create_operation("anzsco", manifest=jsonl_manifest(records))
            other = client.create_operation("anzsco", manifest=jsonl_manifest(records[:2]))
            admin(server, "clock", {"advance": 2})
            mine = [job for jobs in client.iter_job_pages(first.operation_id) for job in jobs]
            theirs = [job for jobs in client.iter_job_pages(other.operation_id) for job in jobs]
            assert len(mine) == 3 and len(theirs) == 2 and not {j["id"] for j in mine} & {j["id"] for j in theirs}
            assert client.get_operation(first.operation_id, "anzsco").state.value == "complete"
