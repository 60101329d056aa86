"""``make stack``: bring the production topology up as real processes, prove it with one nightly run, keep serving.

    python -m stack.run            # up, one smoke run of the nightly DAG, then serve until Ctrl-C
    python -m stack.run --once     # up, smoke run, down (exit code 0 when the run succeeded)
    python -m stack.run --no-smoke # up and serve only
    python -m stack.run --triggerers 2 --shared-budget --rate-limit 1 --daily-quota 20 --quota-window 30
                                   # two triggerers and the worker on one Redis request budget, against
                                   # an emulator enforcing that rate and quota

Needs PostgreSQL on 127.0.0.1:5432 and Redis on 127.0.0.1:6379 (``BATCHCODE_STACK_PG`` /
``BATCHCODE_STACK_REDIS`` override them). Everything it makes — databases, the Redis
database it claims, processes, the temporary folder — is removed on exit.
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import Any

from stack.host import wait_for
from stack.topology import ADMIN_USER, DAG_ID, Stack, StackOptions


def smoke_run(stack: Stack, day: str, *, topic: str = "osca", timeout: float = 240) -> dict[str, Any]:
    """Trigger :data:`DAG_ID` for ``day`` with a conf overriding its Params, wait, and summarise the output."""
    run_id = f"stack_smoke_{day}_{int(time.time())}"
    stack.trigger({"from_date": day, "to_date": day, "topic": topic}, run_id=run_id)
    seen: set[str] = set()

    def finished() -> str | None:
        for ti in stack.task_instances(run_id):
            seen.add(f"{ti['task_id']}:{ti['state']}")
        state = stack.run_state(run_id)
        return state if state in ("success", "failed") else None

    state = wait_for(f"run {run_id}", finished, timeout, interval=1)
    counts = dict(
        stack.warehouse_query(
            "SELECT code_status, COUNT(*) FROM coded_occupations WHERE dag_run_id = %s GROUP BY 1", run_id
        )
    )
    deferred = "code_chunk.wait:deferred" in seen
    return {"run_id": run_id, "state": state, "rows_by_status": counts, "deferred_seen": deferred}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the stack; return an exit code."""
    parser = argparse.ArgumentParser(prog="python -m stack.run", description=__doc__.splitlines()[0])
    parser.add_argument("--once", action="store_true", help="stop after the smoke run")
    parser.add_argument("--no-smoke", action="store_true", help="do not trigger a smoke run")
    parser.add_argument("--work", type=Path, help="keep AIRFLOW_HOME, DAGs, staging and logs here")
    parser.add_argument("--records", type=int, default=400, help="survey answers seeded (over two days)")
    parser.add_argument("--triggerers", type=int, default=1, help="triggerer processes")
    parser.add_argument("--rate-limit", type=float, default=0, help="API requests/s of the account (0 = none)")
    parser.add_argument("--daily-quota", type=int, default=0, help="API requests per quota window (0 = none)")
    parser.add_argument("--quota-window", type=float, default=86400, help="quota window (s)")
    parser.add_argument("--shared-budget", action="store_true", help="one request budget in the stack's Redis")
    parser.add_argument(
        "--realtime-max-records",
        type=int,
        default=0,
        help="code a day of at most this many records in real time (the nightly's default is 300; 0, the "
        "stack's default, sends every day through remote operations so the deferral shows)",
    )
    args = parser.parse_args(argv)

    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):  # a second Ctrl-C must not cut the clean-up short
            signal.signal(sig, signal.SIG_IGN)
        stop.set()
        raise KeyboardInterrupt

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, on_signal)
    options = StackOptions(
        records=args.records,
        work=args.work,
        triggerers=args.triggerers,
        rate_limit=args.rate_limit,
        daily_quota=args.daily_quota,
        quota_window=args.quota_window,
        shared_budget=args.shared_budget,
        realtime_max_records=args.realtime_max_records,
    )
    stack = Stack(options)
    print("Starting: airflow db migrate, scheduler, dag-processor, triggerer, api-server, celery worker, emulator ...")
    code = 1
    try:
        stack.start()
        r = stack.resources
        steps = ", ".join(f"{step} {seconds:.0f} s" for step, seconds in stack.timings.items())
        print(f"Up in {stack.timings['start-up']:.0f} s ({steps})")
        print(f"  UI / REST API   {stack.api_url}   user {ADMIN_USER} password {r.admin_password}")
        print(f"  metadata DB     {r.metadata_db}   warehouse DB {r.warehouse_db}")
        print(f"  Celery broker   {stack.broker_url}")
        print(f"  ABS emulator    {stack.emulator_url}")
        print(f"  logs            {stack.logs}")
        code = 0
        if not args.no_smoke:
            print(f"Smoke run: triggering {DAG_ID} for {options.first_day} (conf topic=osca) ...")
            result = smoke_run(stack, options.first_day)
            print(json.dumps(result, indent=2))
            code = 0 if result["state"] == "success" and result["deferred_seen"] else 1
        if not args.once:
            print("Serving; Ctrl-C stops everything and removes what the stack made.")
            while not stop.wait(1):
                exited = [name for name, service in stack.services.items() if not service.running()]
                if exited:
                    print(f"exited: {', '.join(exited)}; stopping", file=sys.stderr)
                    code = 1
                    break
    except KeyboardInterrupt:
        print("Stopping ...")
    except Exception as exc:
        print(f"The stack failed: {exc}", file=sys.stderr)
        code = 1
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN)
        if code and stack.logs.exists():
            kept = _keep_logs(stack)
            print(f"Logs kept in {kept}", file=sys.stderr)
        stack.stop()
    print("Stopped; databases dropped, Redis database released, processes ended.")
    return code


def _keep_logs(stack: Stack) -> Path:
    """Copy the service and task logs to ``artifacts/stack-run/`` before the stack's folder goes."""
    target = Path(__file__).resolve().parents[1] / "artifacts" / "stack-run"
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(stack.logs, target / "services")
    if (stack.home / "logs").exists():
        shutil.copytree(stack.home / "logs", target / "tasks")
    return target


if __name__ == "__main__":
    sys.exit(main())
