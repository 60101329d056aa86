"""Figure 8: one request budget shared by two triggerers polling many open operations.

Two child processes (two triggerers) each run half of the operations' ``OperationStatusTrigger``s
against one Redis budget of 1 request/s (the connection's ``budget_url``); the emulator keeps every
operation ``in_progress``. Each child records when each status request was let through by the
budget. The parent merges them and reports the longest gap between two polls of one operation,
fairness (the longest gap over the shortest, over operations polled at least twice) and how many
requests the service would have answered 429: the merged send times replayed through the
emulator's own token bucket at the account's rate (the emulator itself runs unthrottled, so that
the set-up can create the operations quickly).

Full: 1,000 operations at 1 request/s for 2,400 s (each operation is polled about every 1,000 s,
so every one is polled at least twice). Quick: 100 operations at 1 request/s for 240 s.

The connection has no quota (``daily_quota`` 0), so the rate is what the operations share. With
ABS's default of 10,000 requests a day the planner would rightly spread 1,000 operations' polls
over the rest of the day instead (about one poll per operation every 10,000 s): until 2026-12-06
this figure measured that by mistake (1,201 polls in 2,400 s).
"""

from __future__ import annotations

import asyncio
import io
import itertools
import json
import time
import uuid
from pathlib import Path
from typing import Any

from bench.common import TOPIC, Figure, Report, Settings, abs_client, child, child_main, emulator, fmt

MANIFEST = b'{"recordId":"1","occp_text":"chef","tasks_text":"cooking"}\n'
REDIS_URL = "redis://127.0.0.1:6379/0"
RATE = 1.0


def _connection(base_url: str, prefix: str) -> str:
    from bench.common import CLIENT_ID, CLIENT_SECRET

    extra = {
        "service": "abs",
        "topic": TOPIC,
        "rate_limit": RATE,
        "daily_quota": 0,
        "budget_url": REDIS_URL,
        "budget_prefix": prefix,
    }
    return json.dumps(
        {"conn_type": "batchcode", "host": base_url, "login": CLIENT_ID, "password": CLIENT_SECRET, "extra": extra}
    )


async def _run(operations: list[str], seconds: float) -> dict[str, Any]:
    from airflow_batchcode.services.budget import Budget
    from airflow_batchcode.triggers.batchcode import OperationStatusTrigger

    sent: list[tuple[str, float]] = []
    acquire: Any = Budget.acquire_async

    async def recorded(self: Any, *, poll: bool = False, operation: str | None = None) -> None:
        await acquire(self, poll=poll, operation=operation)
        if operation:
            sent.append((operation, time.time()))

    Budget.acquire_async = recorded  # type: ignore[method-assign]
    deadline = time.time() + seconds + 3600
    triggers = [
        OperationStatusTrigger(
            batchcode_conn_id="batchcode_default", operation_id=op, topic=TOPIC, poll_interval=1.0, deadline=deadline
        )
        for op in operations
    ]

    async def consume(trigger: Any) -> None:
        async for _ in trigger.run():
            pass

    tasks = [asyncio.create_task(consume(trigger)) for trigger in triggers]
    await asyncio.sleep(seconds)
    ended = sum(1 for task in tasks if task.done())
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return {"sent": sent, "ended_early": ended}


def run(operations_file: str, seconds: float) -> dict[str, Any]:
    """One triggerer: poll the listed operations for ``seconds``; the send time of every status request."""
    operations = json.loads(Path(operations_file).read_text())
    return asyncio.run(_run(operations, seconds))


def _gaps(times: list[float]) -> list[float]:
    ordered = sorted(times)
    return [later - earlier for earlier, later in itertools.pairwise(ordered)]


def analyse(sent: list[tuple[str, float]], rate: float) -> dict[str, Any]:
    """Longest and shortest gap between two polls of one operation, and the 429s the service would give."""
    from airflow_batchcode.emulator.abs_service import TokenBucket

    by_operation: dict[str, list[float]] = {}
    for operation, when in sent:
        by_operation.setdefault(operation, []).append(when)
    longest = [max(_gaps(times)) for times in by_operation.values() if len(times) > 1]
    bucket = TokenBucket(rate)
    throttled = sum(1 for when in sorted(when for _, when in sent) if bucket.take(when) > 0)
    return {
        "requests": len(sent),
        "operations_polled": len(by_operation),
        "operations_polled_twice": len(longest),
        "longest_gap_s": max(longest, default=None),
        "shortest_longest_gap_s": min(longest, default=None),
        "fairness": (max(longest) / min(longest)) if longest and min(longest) > 0 else None,
        "would_be_429s": throttled,
        "closest_sends_s": min(_gaps([when for _, when in sent]), default=None),
    }


def figure_budget(
    report: Report,
    settings: Settings,
    work: Path,
    env: dict[str, str],
    log: Path,
    scale: tuple[int, float] | None = None,
) -> None:
    """Figure 8 (see the module docstring); ``scale`` (operations, seconds) overrides the run's size."""
    import redis

    count, seconds = scale or ((100, 240.0) if settings.quick else (1000, 2400.0))
    prefix = f"batchcode-bench:{uuid.uuid4().hex}"
    with emulator(log, "--processing-delay", "100000", "--awaiting-timeout", "100000") as base_url:
        client = abs_client(base_url)
        operations = []
        for _ in range(count):
            target = client.create_operation(TOPIC)
            client.upload_manifest(target, io.BytesIO(MANIFEST))
            operations.append(target.operation_id)
        client.close()
        halves = [operations[0::2], operations[1::2]]
        files = []
        for index, half in enumerate(halves):
            files.append(work / f"budget-operations-{index}.json")
            files[-1].write_text(json.dumps(half))
        child_env = {**env, "AIRFLOW_CONN_BATCHCODE_DEFAULT": _connection(base_url, prefix)}
        try:
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(2) as pool:
                futures = [
                    pool.submit(
                        child,
                        "budget",
                        "run",
                        {"operations_file": str(path), "seconds": seconds},
                        env=child_env,
                        log=log,
                        timeout=seconds + 600,
                    )
                    for path in files
                ]
                results = [future.result().result for future in futures]
        finally:
            server = redis.Redis.from_url(REDIS_URL)
            keys = list(server.scan_iter(f"{prefix}:*"))
            if keys:
                server.delete(*keys)
            server.close()
    sent = [(op, when) for result in results for op, when in result["sent"]]
    r = analyse(sent, RATE)
    details = {**r, "operations": count, "seconds": seconds, "rate": RATE}
    basis = f"{count} operations, 2 triggerers, shared budget {RATE:g} req/s, {fmt(seconds)} s; {r['requests']} polls"
    report.add(Figure("budget_longest_poll_gap", r["longest_gap_s"], "s", basis, details=details))
    report.add(
        Figure(
            "budget_poll_fairness",
            r["fairness"],
            "x",
            f"longest gap over the shortest longest gap, {r['operations_polled_twice']} operations polled twice",
        )
    )
    report.add(
        Figure(
            "budget_429s",
            r["would_be_429s"],
            "",
            "send times replayed through the service's token bucket",
            goal="0",
            met=r["would_be_429s"] == 0,
        )
    )


if __name__ == "__main__":
    child_main({"run": run})
