"""Process faults on a real multi-process Airflow: a task's worker process killed mid-upload and
mid-download, and the triggerer killed mid-wait. Airflow retries; nothing is done twice or lost.

Each ``dag.test()`` runs under :meth:`Deployment.within`: a run that stops making progress fails
after ``RUN_BUDGET`` seconds with the state of every task instance and the last log lines, instead
of hanging (see ``deployment.py`` for the two hangs this harness was built to avoid).
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from tests.reliability.deployment import (
    connected_to,
    deployment,
    kill,
    query,
    running_task,
    task_history,
    task_instances,
)
from tests.reliability.test_pipeline_faults import assert_no_leaks
from tests.support import (
    EncryptedSampler,
    admin,
    batchcode_connection,
    emulator,
    issued_tokens,
    output,
    run_pipeline,
    scanned_log_files,
    sqlite_warehouse,
    write_manifest,
)

DAY = "2026-01-01"

pytestmark = [
    pytest.mark.process_faults,  # its own pytest session (own metadata DB): see the Makefile
    pytest.mark.slow,
    # A backstop only (``Deployment.within`` bounds each run and explains what is stuck). Not the
    # default signal method: dag.test() parses the DAG folder under Airflow's own SIGALRM timer, which
    # replaces pytest-timeout's handler and cancels its alarm.
    pytest.mark.timeout(300, method="thread"),
]
RECORDS = 3000
CLIENT = "process-client"
RUN_BUDGET = 150
"""Seconds one ``dag.test()`` may take (about 25-45 s on a 2-core machine, under twice that when it is busy)."""


def kill_when(
    condition: Callable[[], list[int]],
    killed: list[int],
    problems: list[str],
    timeout: float = 120,
    act: Callable[[int], None] = kill,
) -> threading.Thread:
    """In the background: wait for ``condition`` to name processes, then ``act`` on (SIGKILL) them, once.

    A ``condition`` that raises (a busy metadata DB, a slow admin call) is asked again; what it
    raised is kept in ``problems`` for the failure message.
    """

    def watch() -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                pids = condition()
            except Exception as exc:
                problems.append(repr(exc))
                pids = []
            if pids:
                for pid in pids:
                    act(pid)
                killed.extend(pids)
                return
            time.sleep(0.1)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


@pytest.mark.parametrize(("step", "route"), [("upload", r"^PUT /_storage/"), ("download", r"^GET /_storage/")])
def test_a_worker_killed_mid_transfer_is_retried_without_a_second_operation_or_duplicate_rows(
    step: str, route: str, airflow_db: Path, tmp_path: Path
) -> None:
    warehouse = sqlite_warehouse(tmp_path, RECORDS, messy=False)
    task_id = f"code_chunk.{step}"
    killed: list[int] = []
    killed_try: list[int] = []
    problems: list[str] = []
    secret = f"s3cr3t-{uuid.uuid4().hex}"
    with (
        emulator(clients={CLIENT: secret}, fault_only=route, fault_slow_rate=1.0, fault_slow_seconds=6.0) as server,
        batchcode_connection(server, client_id=CLIENT, secret=secret),
        deployment(tmp_path / "logs") as deployed,
    ):

        def in_transfer() -> list[int]:
            """The step's task process, once the emulator holds its transfer (the only request slowed)."""
            if admin(server, "stats")["faults"].get("slow", 0) < 1:
                return []
            # The pid Airflow recorded for the running try, not "whoever has a socket to the emulator":
            # LocalExecutor workers forked while an admin call was open hold such a socket too.
            running = running_task("pipeline_test", task_id)
            if running is None or not connected_to(running[0], server.port):
                return []
            admin(server, "faults", {"fault_slow_rate": 0.0})
            killed_try.append(running[1])
            return [running[0]]

        watcher = kill_when(in_transfer, killed, problems)
        with deployed.within(RUN_BUDGET, f"the pipeline run whose {step} task was killed"):
            dag_run = run_pipeline(tmp_path, use_executor=True, BATCHCODE_TEST_RETRIES="1", BATCHCODE_TEST_CHUNK="5000")
        watcher.join(1)
        stats = admin(server, "stats")
        tokens = issued_tokens(server)
    assert killed, f"no task process was killed during the {step} (watcher problems: {problems})"
    assert_logs_and_db_clean(airflow_db, tmp_path / "logs", [secret, *tokens])
    evidence = airflow_lost_the_retry(dag_run.run_id, task_id, killed_try[0])
    if dag_run.state == "failed" and evidence:
        # Our part still holds, and exactly: the chunk has its one operation, the killed upload was
        # never accepted (or the one before the killed download was), and nothing was loaded.
        assert stats["operations_created"] == {CLIENT: 1}
        assert stats["uploads"]["accepted"] == (0 if step == "upload" else 1)
        with closing(sqlite3.connect(warehouse)) as conn:
            loaded = conn.execute("SELECT name FROM sqlite_master WHERE name = 'coded_responses'").fetchone()
        rows = output(lambda: sqlite3.connect(warehouse)) if loaded else []
        assert rows == [], "the chunk whose task was killed and not retried loaded nothing"
        print(f"\n[process faults] Airflow lost the retry of the killed {step}: {evidence}")
        pytest.xfail(
            "Airflow 3.3 did not retry the SIGKILLed task: its supervisor takes UP_FOR_RETRY for a state the "
            "task process sends itself (STATES_SENT_DIRECTLY) and never calls finish(), so the executor's "
            "'success' event finds the try still running and fails it (upstream race, seen under heavy load)"
        )
    assert dag_run.state == "success"
    tries = [
        (t["state"], t["try_number"])
        for t in task_instances("pipeline_test")
        if t["task_id"] == task_id and t["run_id"] == dag_run.run_id
    ]
    assert tries == [("success", killed_try[0] + 1)], f"Airflow retried the killed {step} once: {tries}"
    history = {h["try_number"]: h for h in task_history("pipeline_test", task_id) if h["run_id"] == dag_run.run_id}
    first = history.get(killed_try[0], {})
    assert first.get("pid") == killed[0] and first.get("state") in {"failed", "up_for_retry"}, (
        f"the try that was killed is recorded as a failed try: {first}"
    )
    assert stats["operations_created"] == {CLIENT: 1}, "the retry re-attached to the chunk's operation"
    assert stats["uploads"]["accepted"] == 1
    rows = output(lambda: sqlite3.connect(warehouse))
    assert sorted(r[1] for r in rows) == list(range(1, RECORDS + 1)), "every record once, no duplicates"


def airflow_lost_the_retry(run_id: str, task_id: str, killed_try: int) -> str | None:
    """The evidence that Airflow lost the retry it owed the killed try, or ``None`` when there is none.

    All three must hold: the task had a retry left (``max_tries`` above the killed try, so retries
    were configured), the killed try is the last one and ended ``failed`` (none was scheduled), and
    the scheduler recorded the upstream race for that try: a ``state mismatch`` row in the audit log
    saying the executor reported ``success`` while the try was still ``running``.
    """
    tries = query(
        "SELECT state, try_number, max_tries FROM task_instance WHERE dag_id = ? AND run_id = ? AND task_id = ?",
        "pipeline_test",
        run_id,
        task_id,
    )
    if len(tries) != 1 or tries[0][:2] != ("failed", killed_try) or tries[0][2] < killed_try:
        return None
    mismatches = query(
        "SELECT extra FROM log WHERE event = 'state mismatch' AND dag_id = ? AND run_id = ? AND task_id = ?",
        "pipeline_test",
        run_id,
        task_id,
    )
    found = [
        extra
        for (extra,) in mismatches
        if "finished with state" in (extra or "") and "state attribute is running" in (extra or "")
    ]
    return f"max_tries {tries[0][2]}, try {killed_try} failed, scheduler: {found[0][:160]!r}" if found else None


def assert_logs_and_db_clean(
    home: Path, logs: Path, secrets: list[str], sampled: EncryptedSampler | None = None
) -> None:
    """No secret in the multi-process run's log files (task, trigger, component logs) nor, decrypted,
    in the metadata DB (after the run and, when ``sampled``, during it); and there were log files to scan."""
    assert scanned_log_files(home / "logs") > 0, "the run wrote no task log files to scan"
    assert_no_leaks("", home, secrets, logs=(logs,), sampled=sampled)


def existing_triggers() -> set[tuple[Any, ...]]:
    """(id, created date) of the trigger rows so far: rows of earlier tests may linger (a stopped triggerer
    does not clean up), and SQLite reuses the ids of deleted rows, so an id alone does not tell them apart."""
    return set(query("SELECT id, created_date FROM trigger"))


def deferred_triggers(before: set[tuple[Any, ...]] | None = None) -> list[tuple[int, int | None, float | None]]:
    """(trigger id, triggerer job id, deadline) of our trigger rows not among ``before``, read with
    sqlite3 and the Fernet key.

    (Plain SQL, not Airflow's ORM: this runs in a thread beside ``dag.test()``.)
    """
    from cryptography.fernet import Fernet

    fernet = Fernet(os.environ["AIRFLOW__CORE__FERNET_KEY"].encode())
    found = []
    for trigger_id, created, classpath, triggerer_id, encrypted in query(
        "SELECT id, created_date, classpath, triggerer_id, kwargs FROM trigger"
    ):
        if classpath.endswith("OperationStatusTrigger") and (trigger_id, created) not in (before or set()):
            text = encrypted if isinstance(encrypted, str) else json.dumps(encrypted)
            kwargs = json.loads(text if text.startswith(("{", '"')) else fernet.decrypt(text.encode()))
            if isinstance(kwargs, str):
                kwargs = json.loads(kwargs if kwargs.startswith("{") else fernet.decrypt(kwargs.encode()))
            found.append((trigger_id, triggerer_id, _find(kwargs, "deadline")))
    return found


def _find(value: Any, key: str) -> Any:
    """The first value under ``key`` anywhere in a nested JSON value (serde wraps kwargs)."""
    if isinstance(value, dict):
        if key in value:
            return value[key]
        value = list(value.values())
    if isinstance(value, list):
        for item in value:
            found = _find(item, key)
            if found is not None:
                return found
    return None


def trigger_logs(run_id: str = "*") -> dict[str, str]:
    """The wait task's trigger logs (one file per triggerer that ran the trigger), by file name."""
    home = Path(os.environ["AIRFLOW_HOME"]) / "logs"
    pattern = f"dag_id=four_steps_deferred/run_id={run_id}/task_id=wait/attempt=*.log.trigger.*.log"
    return {path.name: path.read_text(errors="replace") for path in home.glob(pattern)}


def test_a_triggerer_killed_mid_wait_is_replaced_and_the_wait_keeps_its_deadline(
    airflow_db: Path, tmp_path: Path
) -> None:
    from tests.integration.test_operators_dag import RECORDS as FOUR_STEP_RECORDS
    from tests.integration.test_operators_dag import load_dag

    manifest = write_manifest(tmp_path / "manifest.jsonl", FOUR_STEP_RECORDS)
    killed: list[int] = []
    problems: list[str] = []
    seen: dict[str, Any] = {}
    baseline = existing_triggers()
    secret = f"s3cr3t-{uuid.uuid4().hex}"
    with (
        emulator(processing_delay=20.0, clients={CLIENT: secret}) as server,
        batchcode_connection(server, client_id=CLIENT, secret=secret),
        deployment(tmp_path / "logs", triggerer=True) as deployed,
    ):
        first = deployed.triggerers[0]

        def trigger_running() -> list[int]:
            running = [t for t in deferred_triggers(baseline) if t[1] is not None]
            if not running or not any("Waiting on abs operation" in log for log in trigger_logs().values()):
                return []
            seen["before"] = running[0]
            deployed.start_triggerer()
            return [first.pid]

        def crash_first(pid: int) -> None:
            deployed.crash(first)  # the triggerer with its trigger runner, as when its container dies

        observed: list[tuple[int, int, Any]] = []  # (trigger id, owning triggerer job, deadline), in order
        stop = threading.Event()

        def observe() -> None:
            while not stop.is_set():
                try:
                    triggers = deferred_triggers(baseline)
                except sqlite3.Error as exc:  # a busy metadata DB: look again
                    problems.append(repr(exc))
                    triggers = []
                observed.extend((t, owner, deadline) for t, owner, deadline in triggers if owner is not None)
                time.sleep(0.1)

        observer = threading.Thread(target=observe, daemon=True)
        observer.start()
        watcher = kill_when(trigger_running, killed, problems, timeout=240, act=crash_first)
        conf: dict[str, Any] = {"manifest": str(manifest), "destination": str(tmp_path / "results")}
        with (
            deployed.within(RUN_BUDGET, "the deferred run whose triggerer was killed"),
            EncryptedSampler(airflow_db / "airflow.db") as sampled,
        ):
            dag_run = load_dag("four_steps_deferred").test(run_conf=conf, use_executor=True)
        watcher.join(1)
        stop.set()
        observer.join(2)
        time.sleep(1)  # let the triggerers' log handlers flush
        tokens = issued_tokens(server)
    assert killed == [first.pid], f"the first triggerer was killed while running the wait (problems: {problems})"
    logs = trigger_logs(dag_run.run_id)
    pattern = r"Waiting on abs operation (\S+) \(topic anzsco\): polling every [\d.]+ s, deadline ([^\"]+ UTC)"
    waits = {name: set(re.findall(pattern, text)) for name, text in logs.items()}
    logged_in = [name for name, found in waits.items() if found]
    assert len(logged_in) >= 2, f"the wait ran (and logged its deadline) in two triggerers: {list(logs)}"
    assert len(set().union(*waits.values())) == 1, "same operation and deadline in every triggerer's log"
    # The trigger row, read beside the run: owned by the first triggerer, then by another one, with
    # the same wall-clock deadline seen under both owners.
    _, first_owner, first_deadline = seen["before"]
    takeover = [i for i, (_, owner, _) in enumerate(observed) if owner != first_owner]
    assert first_deadline is not None and takeover, f"a second triggerer took the trigger over: {set(observed)}"
    before = {deadline for _, owner, deadline in observed[: takeover[0]] if owner == first_owner}
    after = {deadline for _, _, deadline in observed[takeover[0] :]}
    assert before == after == {first_deadline}, f"the deadline before {before} and after {after} the takeover"
    assert_logs_and_db_clean(airflow_db, tmp_path / "logs", [secret, *tokens], sampled)
    assert any("is complete" in text for text in logs.values())
    assert dag_run.state == "success"
    assert len((tmp_path / "results" / "output.jsonl").read_text().splitlines()) == len(FOUR_STEP_RECORDS)
