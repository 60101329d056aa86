"""Two triggerers and a Celery worker sharing one Redis request budget (issue 15), on the native stack.

The ABS emulator enforces a rate of 1 request/s and a quota of 20 requests per 30 s window for the
stack's client. The nightly run codes six chunks, polled every second: six waits held by two
triggerer processes (three each at most, so both hold some) while the worker creates, uploads and
downloads. On per-process budgets each triggerer would poll at the full rate and spend the full
quota of every window on its own, and each task process of the worker would too; sharing the
budget through Redis, their combined calls stay within the rate and the quota, which the emulator's
busiest-second and busiest-window counters and its zero 429s (``Too Many Requests`` for the rate,
``Limit Exceeded`` for the quota) show.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from stack.topology import DAG_ID, Stack, StackOptions
from tests.stack.conftest import started

pytestmark = [pytest.mark.stack, pytest.mark.timeout(600)]

RATE, QUOTA, WINDOW = 1, 20, 30.0
CHUNKS, CHUNK_RECORDS = 6, 50
TRIGGER_LOG = re.compile(r"\.trigger\.(\d+)\.log$")


@pytest.fixture(scope="module")
def budget_stack(tmp_path_factory: pytest.TempPathFactory, artifacts: Path) -> Iterator[Stack]:
    """A stack of its own: two triggerers of capacity 3, the account's limits, the budget in Redis."""
    options = StackOptions(
        work=tmp_path_factory.mktemp("budget-stack"),
        records=CHUNKS * CHUNK_RECORDS,
        days=1,
        chunk_records=CHUNK_RECORDS,
        poll_interval=1,
        worker_concurrency=3,
        processing_delay=30,
        triggerers=2,
        triggerer_capacity=CHUNKS // 2,
        rate_limit=RATE,
        daily_quota=QUOTA,
        quota_window=WINDOW,
        shared_budget=True,
        # six operations' worth of calls: every record sent, none in real time
        dedupe=False,
        result_cache=False,
        realtime_max_records=0,
    )
    yield from started(options, artifacts / "budget-logs")


def _trigger_owners(stack: Stack, run_id: str) -> dict[int, int]:
    """Trigger id → the live triggerer job holding it, for the run's deferred task instances."""
    rows = stack.metadata_query(
        "SELECT t.id, t.triggerer_id FROM task_instance ti JOIN trigger t ON t.id = ti.trigger_id "
        "JOIN job j ON j.id = t.triggerer_id "
        "WHERE ti.dag_id = %s AND ti.run_id = %s AND j.job_type = 'TriggererJob' AND j.state = 'running'",
        DAG_ID,
        run_id,
    )
    return {int(trigger): int(owner) for trigger, owner in rows}


def _trigger_logs(stack: Stack, run_id: str) -> dict[int, int]:
    """Triggerer job id → how many trigger log files of the run it wrote (``*.log.trigger.<job id>.log``)."""
    found: dict[int, int] = {}
    for log in (stack.home / "logs").rglob("*.trigger.*.log"):
        match = TRIGGER_LOG.search(log.name)
        if match and f"run_id={run_id}" in str(log) and "Poll " in log.read_text(errors="replace"):
            found[int(match[1])] = found.get(int(match[1]), 0) + 1
    return found


def _watch(stack: Stack, run_id: str, timeout: float) -> dict[str, Any]:
    """Sample the run's trigger owners every second until the run ends."""
    owners_seen: dict[int, set[int]] = {}
    both_at_once = 0
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        owners = _trigger_owners(stack, run_id)
        for trigger, owner in owners.items():
            owners_seen.setdefault(owner, set()).add(trigger)
        both_at_once += len(set(owners.values())) >= 2
        state = stack.run_state(run_id)
        if state in ("success", "failed"):
            return {"state": state, "owners": owners_seen, "samples_with_both_triggerers_holding_waits": both_at_once}
        time.sleep(1)
    raise TimeoutError(f"run {run_id} not finished after {timeout:.0f} s")


def test_two_triggerers_and_a_worker_stay_within_the_rate_and_the_window_quota(
    budget_stack: Stack, artifacts: Path
) -> None:
    stack = budget_stack
    assert stack.live_triggerers() == 2
    run_id = f"stack_budget_{uuid.uuid4().hex[:8]}"
    began = time.monotonic()
    stack.trigger({"from_date": stack.options.first_day, "to_date": stack.options.first_day}, run_id=run_id)
    seen = _watch(stack, run_id, timeout=420)
    took = time.monotonic() - began
    stats = requests.get(f"{stack.emulator_url}/_emulator/stats", timeout=10).json()
    logs = _trigger_logs(stack, run_id)
    client = stack.resources.client_id
    api_calls = sum(n for route, n in stats["requests"].items() if route.split(" ", 1)[1].startswith("/v1/"))
    import redis

    with redis.Redis.from_url(stack.broker_url, socket_timeout=5) as shared:
        budget_keys = sorted(key.decode() for key in shared.scan_iter(f"{stack.budget_prefix}:*"))
    waits = [ti for ti in stack.task_instances(run_id) if ti["task_id"] == "code_chunk.wait"]
    (artifacts / "budget.json").write_text(
        json.dumps(
            {
                "run_id": run_id,
                "seconds": round(took),
                "limits": {"rate": RATE, "quota": QUOTA, "window": WINDOW},
                "triggerer_jobs_and_their_triggers": {str(k): sorted(v) for k, v in seen["owners"].items()},
                "samples_with_both_triggerers_holding_waits": seen["samples_with_both_triggerers_holding_waits"],
                "trigger_logs_by_triggerer_job": logs,
                "api_calls": api_calls,
                "emulator_stats": {k: stats[k] for k in ("requests", "throttled", "calls_busiest_second")}
                | {"calls_busiest_window": stats["calls_busiest_window"]},
                "budget_keys": budget_keys,
                "timings": stack.timings,
            },
            indent=2,
        )
    )

    assert seen["state"] == "success", seen
    assert len(waits) == CHUNKS
    # both triggerer processes held waits of the run, at the same time, and ran them (their trigger logs)
    assert len(seen["owners"]) == 2, seen["owners"]
    assert seen["samples_with_both_triggerers_holding_waits"] > 0
    assert set(logs) == set(seen["owners"]), (logs, seen["owners"])
    # the budget was the shared one, in the stack's Redis database
    assert budget_keys, "no budget keys under the connection's budget_prefix"
    # the run needed more than one window's quota, so the quota was binding, not idle
    assert api_calls > QUOTA, api_calls
    # the service never refused: neither 429 Too Many Requests (rate) nor 429 Limit Exceeded (quota)
    assert stats["throttled"] == {}, stats["throttled"]
    # and by its own counters, every call of the two triggerers and the worker together kept within both
    assert 1 <= stats["calls_busiest_second"][client] <= RATE, stats["calls_busiest_second"]
    assert 1 <= stats["calls_busiest_window"][client] <= QUOTA, stats["calls_busiest_window"]
