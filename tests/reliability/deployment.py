"""A small real Airflow deployment for process-fault tests: api-server and triggerer as processes.

``dag.test(use_executor=True)`` then plays the scheduler: it queues tasks to the
LocalExecutor, whose worker processes run them through the supervisor and talk to the
api-server's execution API; deferred tasks wait in the triggerer process. Tests can kill a
task's process or the triggerer and watch Airflow recover.

Two traps this module keeps the tests out of (both seen as hangs on a busy machine), and a leak:

* **Which process to kill.** The LocalExecutor forks its workers from the test process, which
  also hosts the emulator and polls its admin API: a worker forked while such a call is in
  flight inherits the socket, and keeps it for its whole life. Looking for "processes with a
  connection to the emulator" then also finds idle workers (psutil names one holder per socket:
  the newest process, so the task process hides the workers only for the sockets they share);
  killing the idle worker that is blocked in the executor's queue, holding the queue's
  inter-process read lock, leaves every other worker waiting on that lock forever, and the
  retried task stays ``queued``. :func:`running_task` therefore names the one process that runs a
  task instance: the pid Airflow recorded for the running try.
* **Bounding ``dag.test()``.** Parsing the DAG folder inside ``dag.test()`` installs Airflow's own
  ``SIGALRM`` handler and cancels the timer, which silently disables pytest-timeout's signal
  method for the rest of the test. :meth:`Deployment.within` bounds the run itself and fails with
  the state of every task instance, the executor's workers and the last log lines.
* **Orphans.** SIGKILLing only the triggerer's main process left its log server running after the
  test; each process now gets its own session, and :meth:`Deployment.crash` kills all of it.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager, suppress
from pathlib import Path
from typing import Any

import psutil
import requests

FINISHED = frozenset({"success", "failed", "skipped", "upstream_failed", "removed"})
WORKER_TITLE = "airflow worker -- "
"""How the LocalExecutor's workers (``… LocalExecutor: …``) and their task processes title themselves."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def metadata_db() -> Path:
    return Path(os.environ["AIRFLOW_HOME"]) / "airflow.db"


def query(sql: str, *params: Any) -> list[tuple[Any, ...]]:
    """Rows from the metadata DB with plain sqlite3 (safe in a thread beside ``dag.test()``)."""
    with closing(sqlite3.connect(metadata_db(), timeout=10)) as conn:
        return conn.execute(sql, params).fetchall()


def running_task(dag_id: str, task_id: str) -> tuple[int, int] | None:
    """(pid, try number) of the process running ``task_id`` (any map index) right now, if one is.

    The pid is the one the supervisor reported when the try started: the forked task process that
    executes the operator (checked to be alive and titled as a task process, not as a worker).
    """
    rows = query(
        "SELECT pid, try_number FROM task_instance WHERE dag_id = ? AND task_id = ? AND state = 'running'",
        dag_id,
        task_id,
    )
    for pid, try_number in rows:
        if not pid:
            continue
        with suppress(psutil.Error):
            title = " ".join(psutil.Process(pid).cmdline())
            if title.startswith(WORKER_TITLE) and "LocalExecutor" not in title:
                return int(pid), int(try_number)
    return None


def task_instances(dag_id: str | None = None) -> list[dict[str, Any]]:
    """Every task instance (of ``dag_id``) in the metadata DB, as dicts."""
    columns = ("dag_id", "run_id", "task_id", "map_index", "state", "try_number", "pid", "last_heartbeat_at")
    sql = f"SELECT {', '.join(columns)} FROM task_instance"
    rows = query(sql + " WHERE dag_id = ?", dag_id) if dag_id else query(sql)
    return [dict(zip(columns, row, strict=True)) for row in rows]


def task_history(dag_id: str, task_id: str) -> list[dict[str, Any]]:
    """The archived earlier tries of ``task_id`` (``task_instance_history``), oldest first."""
    columns = ("run_id", "map_index", "try_number", "state", "pid")
    rows = query(
        f"SELECT {', '.join(columns)} FROM task_instance_history WHERE dag_id = ? AND task_id = ? ORDER BY try_number",
        dag_id,
        task_id,
    )
    return [dict(zip(columns, row, strict=True)) for row in rows]


def executor_processes() -> list[psutil.Process]:
    """Our descendants that are LocalExecutor workers or the task processes they forked."""
    found = []
    for child in psutil.Process().children(recursive=True):
        with suppress(psutil.Error):
            if " ".join(child.cmdline()).startswith(WORKER_TITLE):
                found.append(child)
    return found


def _tail(path: Path, lines: int) -> str:
    if not path.exists():
        return f"    ({path} does not exist)"
    text = path.read_text(errors="replace").splitlines()[-lines:]
    return "\n".join(f"    {line[:400]}" for line in text)


class PipelineStuck(AssertionError):
    """``dag.test()`` did not finish in its time; the message holds the deployment's state."""


class _Interrupted(BaseException):
    """Raised in the main thread by :meth:`Deployment.within`'s watchdog (a BaseException: nothing swallows it)."""


class Deployment:
    """The api-server (and triggerers) of one test, with their logs under ``logs``.

    Each process runs in its own session, so that :meth:`crash` and :meth:`stop` reach its
    children too (the triggerer's trigger runner and log server).
    """

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.port = free_port()
        self.api: subprocess.Popen[bytes] | None = None
        self.triggerers: list[subprocess.Popen[bytes]] = []

    def _start(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        with (self.logs / f"{name}.log").open("ab") as log:
            return subprocess.Popen(
                [sys.executable, "-m", "airflow", *args],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=os.environ.copy(),
                start_new_session=True,
            )

    def start_api(self) -> None:
        self.api = self._start("api-server", "api-server", "--host", "127.0.0.1", "--port", str(self.port))
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.api.poll() is not None:
                break
            try:
                requests.get(f"http://127.0.0.1:{self.port}/api/v2/monitor/health", timeout=2)
                return
            except requests.RequestException:
                time.sleep(0.5)
        raise RuntimeError(
            f"api-server did not start; see {self.logs / 'api-server.log'}:\n{self.log_tail('api-server')}"
        )

    def start_triggerer(self) -> subprocess.Popen[bytes]:
        # The trigger logs are read from their files: no log server (one process less per triggerer).
        process = self._start(f"triggerer-{len(self.triggerers) + 1}", "triggerer", "--skip-serve-logs")
        self.triggerers.append(process)
        return process

    def crash(self, process: subprocess.Popen[bytes]) -> None:
        """SIGKILL ``process`` and every process of its session, as when its machine or container dies."""
        with suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(30)

    def log(self, name: str) -> str:
        path = self.logs / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def log_tail(self, name: str, lines: int = 25) -> str:
        return _tail(self.logs / f"{name}.log", lines)

    def describe(self) -> str:
        """What a stuck run looks like: task instances, executor processes, the last log lines."""
        parts = ["task instances (metadata DB):"]
        try:
            tis = task_instances()
        except sqlite3.Error as exc:
            tis = []
            parts.append(f"    (cannot read the metadata DB: {exc})")
        for ti in sorted(tis, key=lambda t: (t["dag_id"], t["run_id"], t["task_id"], t["map_index"])):
            parts.append(
                "    {dag_id} {run_id} {task_id}[{map_index}]: {state} try={try_number} pid={pid} "
                "last_heartbeat={last_heartbeat_at}".format(**ti)
            )
        parts.append("executor processes (LocalExecutor workers and task processes):")
        for proc in executor_processes():
            with suppress(psutil.Error):
                parts.append(f"    pid={proc.pid} ppid={proc.ppid()} {proc.status()}: {' '.join(proc.cmdline())}")
        home = Path(os.environ["AIRFLOW_HOME"]) / "logs"
        for ti in tis:
            if ti["state"] in FINISHED or not ti["try_number"]:
                continue
            folder = home / f"dag_id={ti['dag_id']}" / f"run_id={ti['run_id']}" / f"task_id={ti['task_id']}"
            for path in sorted(folder.glob(f"**/attempt={ti['try_number']}.log")):
                parts.append(f"last lines of {path.relative_to(home)}:\n{_tail(path, 15)}")
        names = ["api-server"] + [f"triggerer-{n}" for n in range(1, len(self.triggerers) + 1)]
        for name in names:
            parts.append(f"last lines of {name}.log:\n{self.log_tail(name, 15)}")
        return "\n".join(parts)

    @contextmanager
    def within(self, seconds: float, what: str) -> Iterator[None]:
        """Bound the block (a ``dag.test()``) to ``seconds``; past that, interrupt it and fail with :meth:`describe`.

        Must be entered in the main thread. A watchdog thread takes the snapshot and then signals
        the main thread (SIGUSR1), whose handler raises an exception no ``except Exception`` in
        Airflow can swallow; it leaves this block as :class:`PipelineStuck`, after the executor's
        worker processes (which the interrupted ``dag.test()`` no longer stops) are killed.
        """
        done = threading.Event()
        report: list[str] = []
        main = threading.main_thread()

        def interrupt(signum: int, frame: Any) -> None:
            if not done.is_set() and report:
                raise _Interrupted

        def watchdog() -> None:
            if done.wait(seconds):
                return
            report.append(self.describe())
            while main.ident is not None and not done.is_set():
                signal.pthread_kill(main.ident, signal.SIGUSR1)
                done.wait(5)

        previous = signal.signal(signal.SIGUSR1, interrupt)
        thread = threading.Thread(target=watchdog, name="deployment-watchdog", daemon=True)
        thread.start()
        try:
            yield
        except _Interrupted:
            done.set()
            self.stop_executor()
            raise PipelineStuck(f"{what} did not finish within {seconds:.0f} s.\n{report[0]}") from None
        finally:
            done.set()
            thread.join(30)
            signal.signal(signal.SIGUSR1, previous)

    @staticmethod
    def stop_executor() -> None:
        """Kill the LocalExecutor's workers and task processes left by an interrupted ``dag.test()``."""
        processes = executor_processes()
        for proc in processes:
            with suppress(psutil.Error):
                proc.kill()
        psutil.wait_procs(processes, timeout=10)
        multiprocessing.active_children()  # reap them, so that interpreter exit does not wait for them
        with suppress(Exception):
            from airflow import settings

            if settings.Session is not None:
                settings.Session.remove()  # the interrupted session may hold an open transaction

    def stop(self) -> None:
        processes = [p for p in [*self.triggerers, self.api] if p is not None]
        for process in processes:
            if process.poll() is None:
                process.terminate()
        for process in processes:
            with suppress(subprocess.TimeoutExpired):
                process.wait(30)
            with suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)  # whatever of its session is still there
            with suppress(subprocess.TimeoutExpired):
                process.wait(10)


@contextmanager
def deployment(logs: Path, *, triggerer: bool = False) -> Iterator[Deployment]:
    """Start an api-server (and a triggerer) for this session's AIRFLOW_HOME; stop them afterwards."""
    logs.mkdir(parents=True, exist_ok=True)
    deployed = Deployment(logs)
    saved = {key: os.environ.get(key) for key in _SETTINGS}
    os.environ.update(
        {
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__PARALLELISM": "4",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{deployed.port}/execution/",
            "AIRFLOW__API_AUTH__JWT_SECRET": "batchcode-reliability-tests-jwt-secret",
            "AIRFLOW__TRIGGERER__JOB_HEARTBEAT_SEC": "1",
            "AIRFLOW__TRIGGERER__TRIGGERER_HEALTH_CHECK_THRESHOLD": "4",
            "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "10",
        }
    )
    try:
        deployed.start_api()
        if triggerer:
            deployed.start_triggerer()
        yield deployed
    finally:
        deployed.stop()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


_SETTINGS = (
    "AIRFLOW__CORE__EXECUTOR",
    "AIRFLOW__CORE__PARALLELISM",
    "AIRFLOW__CORE__EXECUTION_API_SERVER_URL",
    "AIRFLOW__API_AUTH__JWT_SECRET",
    "AIRFLOW__TRIGGERER__JOB_HEARTBEAT_SEC",
    "AIRFLOW__TRIGGERER__TRIGGERER_HEALTH_CHECK_THRESHOLD",
    "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT",
)


def connected_to(pid: int, port: int) -> bool:
    """True when process ``pid`` has an open TCP connection to ``127.0.0.1:port``."""
    with suppress(psutil.Error):
        return any(c.raddr and c.raddr.port == port for c in psutil.Process(pid).net_connections(kind="tcp"))
    return False


def kill(pid: int) -> None:
    """SIGKILL: the process gets no chance to clean up, as when a worker node dies."""
    os.kill(pid, signal.SIGKILL)
