"""Several processes sharing one Redis request budget against the ABS emulator: their combined calls
stay within the account's rate and window quota, by the emulator's own counters (it refuses with
429 whatever exceeds either)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import admin, emulator

ROOT = Path(__file__).resolve().parents[2]
RATE, QUOTA, WINDOW, CALLS, PROCESSES = 1.0, 5, 8.0, 4, 3
CALLER = """
import json, sys
from airflow_batchcode.services.abs import AbsClient, AbsSettings
from airflow_batchcode.services.budget import QuotaSettings
from airflow_batchcode.services.http.settings import HttpSettings
from airflow_batchcode.services.http.retry import RetryPolicy

base_url, url, prefix, rate, quota, window, calls = json.loads(sys.argv[1])
http = HttpSettings(
    retry=RetryPolicy(max_attempts=1),
    quota=QuotaSettings(daily_quota=quota, quota_window=window, budget_url=url, budget_prefix=prefix),
)
client = AbsClient(AbsSettings(base_url, "demo-client", "demo-secret", rate_limit=rate, http=http))
for _ in range(calls):
    client.list_topics()
print(json.dumps(client.budget.status().shared))
"""


@pytest.fixture
def redis_prefix() -> Iterator[str]:
    redis = pytest.importorskip("redis")
    client = redis.Redis("127.0.0.1", 6379)
    try:
        client.ping()
    except redis.RedisError:
        pytest.skip("no Redis at 127.0.0.1:6379")
    prefix = f"batchcode-test:{uuid.uuid4().hex}"
    yield prefix
    keys = list(client.scan_iter(f"{prefix}:*"))
    if keys:
        client.delete(*keys)
    client.close()


def test_processes_sharing_a_redis_budget_stay_within_the_rate_and_the_window_quota(redis_prefix: str) -> None:
    overrides = {"rate_limit": RATE, "daily_quota": QUOTA, "quota_window": WINDOW, "token_limit": 0}
    with emulator(**overrides) as server:
        argument = json.dumps([server.base_url, "redis://127.0.0.1:6379/0", redis_prefix, RATE, QUOTA, WINDOW, CALLS])
        started = time.time()
        callers = [
            subprocess.Popen([sys.executable, "-c", CALLER, argument], cwd=ROOT, stdout=subprocess.PIPE, text=True)
            for _ in range(PROCESSES)
        ]
        outputs = [caller.communicate(timeout=120)[0] for caller in callers]
        stats = admin(server, "stats")
    assert [caller.returncode for caller in callers] == [0] * PROCESSES
    assert all(json.loads(out.strip().splitlines()[-1]) is True for out in outputs), "each drew from Redis"
    assert stats["requests"]["GET /v1/topics"] == CALLS * PROCESSES
    assert stats["throttled"] == {}, "neither the per-second rate nor the window quota was exceeded"
    windows = (CALLS * PROCESSES + QUOTA - 1) // QUOTA
    assert time.time() - started >= (windows - 1) * WINDOW - WINDOW, "the quota made them wait for new windows"
