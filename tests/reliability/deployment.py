"""A small real Airflow deployment for process-fault tests: api-server and triggerer as processes.

``dag.test(use_executor=True)`` then plays the scheduler: it queues tasks to the
LocalExecutor, whose worker processes run them through the supervisor and talk to the
api-server's execution API; deferred tasks wait in the triggerer process. Tests can kill a
task's process or the triggerer and watch Airflow recover.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil
import requests


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Deployment:
    """The api-server (and triggerers) of one test, with their logs under ``logs``."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.port = free_port()
        self.api: subprocess.Popen[bytes] | None = None
        self.triggerers: list[subprocess.Popen[bytes]] = []

    def _start(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        log = (self.logs / f"{name}.log").open("ab")
        return subprocess.Popen(
            [sys.executable, "-m", "airflow", *args], stdout=log, stderr=subprocess.STDOUT, env=os.environ.copy()
        )

    def start_api(self) -> None:
        self.api = self._start("api-server", "api-server", "--host", "127.0.0.1", "--port", str(self.port))
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                requests.get(f"http://127.0.0.1:{self.port}/api/v2/monitor/health", timeout=2)
                return
            except requests.RequestException:
                time.sleep(0.5)
        raise RuntimeError(f"api-server did not start; see {self.logs / 'api-server.log'}")

    def start_triggerer(self) -> subprocess.Popen[bytes]:
        os.environ["AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT"] = str(free_port())
        process = self._start(f"triggerer-{len(self.triggerers) + 1}", "triggerer")
        self.triggerers.append(process)
        return process

    def log(self, name: str) -> str:
        path = self.logs / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        for process in [*self.triggerers, self.api]:
            if process is not None and process.poll() is None:
                process.terminate()
        for process in [*self.triggerers, self.api]:
            if process is not None:
                try:
                    process.wait(30)
                except subprocess.TimeoutExpired:
                    process.kill()


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
    "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT",
)


def processes_talking_to(port: int) -> list[int]:
    """Pids other than ours with an open TCP connection to ``127.0.0.1:port``."""
    found = set()
    for conn in psutil.net_connections(kind="tcp"):
        if conn.raddr and conn.raddr.port == port and conn.pid and conn.pid != os.getpid():
            found.add(conn.pid)
    return sorted(found)


def kill(pid: int) -> None:
    """SIGKILL: the process gets no chance to clean up, as when a worker node dies."""
    os.kill(pid, signal.SIGKILL)
