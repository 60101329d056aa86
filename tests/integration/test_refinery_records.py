"""Refinery records by presigned https URL or (opt-in) ``data:`` URL code the same as by ``s3://`` URL.

Its own module: moto's signature checking (on for the other Refinery tests) cannot take presigned GETs.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from urllib.parse import unquote

import pytest

from tests.integration.test_refinery_client import RECORDS, client_for, refinery, run_job
from tests.s3 import S3Sandbox, s3_sandbox


@pytest.fixture(scope="module")
def open_storage() -> Iterator[S3Sandbox]:
    with s3_sandbox("refinery_s3_open") as sandbox:
        yield sandbox


@pytest.mark.parametrize("mode", ["presigned", "data"])
def test_records_by_presigned_url_or_opt_in_data_url_code_the_same(open_storage: S3Sandbox, mode: str) -> None:
    storage, secrets = open_storage, list[str]()
    with refinery(storage) as server, client_for(server, storage, secrets) as plain:
        _, _, _, expected = run_job(plain, RECORDS[:6], name=f"plain-{mode}")
        with client_for(server, storage, secrets, record_urls=mode) as client:
            _, _, _, rows = run_job(client, RECORDS[:6], name=f"chunk-{mode}")
    staged = [json.loads(line) for line in storage.read(f"manifests/chunk-{mode}.jsonl").decode().splitlines()]
    if mode == "presigned":
        assert all(line["data_url"].startswith(storage.endpoint_url) for line in staged)
        assert all("Signature" in line["data_url"] for line in staged), "read without the job's credentials"
        assert all(line["data_url"] in secrets for line in staged), "presigned URLs are masked like secrets"
    else:
        assert all(line["data_url"].startswith("data:application/json;charset=utf-8,") for line in staged)
        first = json.loads(unquote(staged[0]["data_url"].split(",", 1)[1]))
        assert first == {"occp_text": "software developer", "tasks_text": "writing code and unit tests"}
        assert not storage.keys(f"manifests/chunk-{mode}.record-"), "no record objects when opted in to data: URLs"
    assert [(r.code_status, r.code_category) for r in rows] == [(r.code_status, r.code_category) for r in expected]
