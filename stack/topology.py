"""The production topology as real processes on one machine.

The same services as ``docker-compose.airflow.yml`` — ``airflow db migrate`` on PostgreSQL,
``scheduler``, ``dag-processor``, ``triggerer``, ``api-server``, ``celery worker`` with Redis
as the broker, and the ABS emulator — each a process of its own sharing one set of
settings (:meth:`Stack.settings`), like the compose file's ``x-airflow-common`` anchor.

Every external resource is made fresh and removed again: a uniquely named metadata database
and warehouse database on the PostgreSQL server, a Redis database number claimed while
empty, free loopback ports, a temporary ``AIRFLOW_HOME``. :meth:`Stack.stop` ends every
process group it started and drops what it made, also after a failed start; the processes get
SIGTERM from Linux if the process that started them dies, and the next stack on the host sweeps
the databases, Redis database and folder such a killed stack left (:func:`stack.host.sweep_abandoned`).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from stack.host import (
    CLAIM_KEY,
    OWNER_PREFIX,
    PG_ADMIN_DSN,
    REDIS_URL,
    Resources,
    die_with_parent,
    free_port,
    sweep_abandoned,
    wait_for,
)

DAG_ID = "batchcode_nightly"
ADMIN_USER = "admin"

DAG_FILE = '''"""The shipped nightly pipeline as the native stack runs it: fast polling, small chunks.

It keeps the nightly's daily timetable, so the UI offers Backfill (``schedule=None`` is not
periodic and Airflow disables the option): a backfill makes one run per day, each coding its
day's slice. Starting today (without catch-up), the scheduler's first run of its own is due at
midnight, so while the stack serves, runs are only the ones the tests or a person start.
"""

from datetime import datetime

from airflow_batchcode.nightly import nightly_dag

dag = nightly_dag({dag_id!r}, poll_interval={poll_interval}, chunk_records={chunk_records}, staging={staging!r},
                  dedupe={dedupe}, result_cache={result_cache}, realtime_max_records={realtime_max_records},
                  start_date=datetime.fromisoformat({start_date!r}))
'''


def today_utc() -> str:
    """Midnight UTC today, as the stack DAG's ``start_date`` (ISO)."""
    from datetime import UTC, datetime

    return datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0).isoformat()


def dag_file(options: StackOptions, staging: Path) -> str:
    """The stack's DAG file (:data:`DAG_FILE`) for ``options``, staging under ``staging``, starting today."""
    return DAG_FILE.format(
        dag_id=DAG_ID,
        poll_interval=options.poll_interval,
        chunk_records=options.chunk_records,
        staging=str(staging),
        dedupe=options.dedupe,
        result_cache=options.result_cache,
        realtime_max_records=options.realtime_max_records,
        start_date=today_utc(),
    )


@dataclass
class StackOptions:
    """What the stack runs with.

    :param records: survey answers seeded into the warehouse, spread over ``days`` days from ``first_day``.
    :param chunk_records: records per remote operation (so one day makes several mapped chunks).
    :param poll_interval: seconds between the deferred sensor's status calls.
    :param worker_concurrency: Celery worker slots.
    :param processing_delay: seconds the emulator keeps an operation ``in_progress`` (the deferral window).
    :param work: folder for ``AIRFLOW_HOME``, DAGs, staging and logs; a temporary one (removed) when ``None``.
    :param triggerers: triggerer processes (the compose file's ``--scale airflow-triggerer=N``); triggers are
        shared out between the live ones.
    :param triggerer_capacity: triggers each triggerer runs at once (``--capacity``); Airflow's default when ``None``.
    :param rate_limit: the account's API requests per second, enforced by the emulator and set on the
        ``batchcode_default`` connection (0: none).
    :param daily_quota: the account's API requests per ``quota_window``, enforced by the emulator and set on
        the connection (0: none on the emulator, and the connection keeps the service's default).
    :param quota_window: the quota window in seconds.
    :param shared_budget: give the connection a ``budget_url`` (the stack's Redis database, under a key prefix
        of its own), so that every worker and triggerer draws from one request budget.
    """

    records: int = 400
    days: int = 2
    first_day: str = "2026-01-15"
    chunk_records: int = 150
    poll_interval: float = 2
    worker_concurrency: int = 4
    processing_delay: float = 8
    work: Path | None = None
    triggerers: int = 1
    triggerer_capacity: int | None = None
    rate_limit: float = 0
    daily_quota: int = 0
    quota_window: float = 86400
    shared_budget: bool = False
    dedupe: bool = True
    result_cache: bool = True
    realtime_max_records: int = 300


@dataclass
class Service:
    """One long-running process of the stack (its own process group) and its log."""

    name: str
    argv: list[str]
    log: Path
    process: subprocess.Popen[bytes] | None = None
    env: dict[str, str] = field(default_factory=dict)
    """Settings of this process only, over the shared ones (e.g. a second triggerer's log server port)."""

    def running(self) -> bool:
        """True while the process lives."""
        return self.process is not None and self.process.poll() is None

    def tail(self, lines: int = 40) -> str:
        """The last lines of the log."""
        if not self.log.exists():
            return ""
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


class Stack:
    """scheduler + dag-processor + triggerer + api-server + Celery worker + emulator, on PostgreSQL and Redis.

    Use as a context manager, or call :meth:`start` and (always) :meth:`stop`.

    :param options: sizes and timings (:class:`StackOptions`).
    """

    def __init__(self, options: StackOptions | None = None) -> None:
        self.options = options or StackOptions()
        self.resources = Resources()
        self._own_work = self.options.work is None
        self.work = self.options.work or Path(tempfile.gettempdir()) / f"batchcode-stack-{self.resources.suffix}"
        self.home, self.dags, self.staging, self.logs = (
            self.work / "airflow",
            self.work / "dags",
            self.work / "staging",
            self.work / "logs",
        )
        self.services: dict[str, Service] = {}
        self.timings: dict[str, float] = {}
        self._made_dbs: list[str] = []
        self._redis_claimed = False
        self._token: str | None = None
        self._session = requests.Session()

    @property
    def owner(self) -> str:
        """``host:pid:suffix``, recorded on what the stack makes so that a later stack can tell it was abandoned."""
        return f"{socket.gethostname()}:{os.getpid()}:{self.resources.suffix}"

    # --- settings shared by every process (the compose file's x-airflow-common) ---------------------------

    @property
    def api_url(self) -> str:
        """Base URL of the api-server (UI, REST API, execution API)."""
        return f"http://127.0.0.1:{self.resources.api_port}"

    @property
    def emulator_url(self) -> str:
        """Base URL of the ABS emulator."""
        return f"http://127.0.0.1:{self.resources.emulator_port}"

    @property
    def broker_url(self) -> str:
        """Celery broker: this stack's own Redis database."""
        return f"{REDIS_URL}/{self.resources.redis_db}"

    def pg_dsn(self, dbname: str) -> str:
        """libpq connection string of one of this stack's databases."""
        base = " ".join(part for part in PG_ADMIN_DSN.split() if not part.startswith("dbname="))
        return f"{base} dbname={dbname}"

    def _pg_url(self, scheme: str, dbname: str) -> str:
        fields = dict(part.split("=", 1) for part in PG_ADMIN_DSN.split())
        auth = fields.get("user", "postgres") + (f":{fields['password']}" if "password" in fields else "")
        return f"{scheme}://{auth}@{fields.get('host', '127.0.0.1')}:{fields.get('port', '5432')}/{dbname}"

    def warehouse_connection(self) -> dict[str, Any]:
        """``batchcode_warehouse``: the PostgreSQL warehouse."""
        fields = dict(part.split("=", 1) for part in PG_ADMIN_DSN.split())
        conn: dict[str, Any] = {
            "conn_type": "postgres",
            "host": fields.get("host", "127.0.0.1"),
            "port": int(fields.get("port", "5432")),
            "login": fields.get("user", "postgres"),
            "schema": self.resources.warehouse_db,
        }
        if "password" in fields:
            conn["password"] = fields["password"]
        return conn

    @property
    def budget_prefix(self) -> str:
        """The Redis key prefix of the shared request budget (in the broker's database, apart from Celery's keys)."""
        return f"batchcode-stack-budget:{self.resources.suffix}"

    def batchcode_connection(self) -> dict[str, Any]:
        """``batchcode_default``: the ABS emulator, with the account's limits and, if asked, a shared budget."""
        o = self.options
        extra: dict[str, Any] = {"service": "abs", "topic": "anzsco", "rate_limit": o.rate_limit}
        if o.daily_quota:
            extra.update(daily_quota=o.daily_quota, quota_window=o.quota_window)
        if o.shared_budget:
            extra.update(budget_url=self.broker_url, budget_prefix=self.budget_prefix)
        return {
            "conn_type": "batchcode",
            "host": self.emulator_url,
            "login": self.resources.client_id,
            "password": self.resources.client_secret,
            "extra": extra,
        }

    def settings(self) -> dict[str, str]:
        """The Airflow settings every process gets (compare ``x-airflow-common`` in ``docker-compose.airflow.yml``)."""
        r = self.resources
        metadata = r.metadata_db
        return {
            "AIRFLOW_HOME": str(self.home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(self.dags),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
            "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
            "AIRFLOW__CORE__FERNET_KEY": r.fernet_key,
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.api_url}/execution/",
            "AIRFLOW__CORE__AUTH_MANAGER": (
                "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
            ),
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{ADMIN_USER}:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(self.home / "passwords.json"),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": self._pg_url("postgresql+psycopg2", metadata),
            "AIRFLOW__CELERY__BROKER_URL": self.broker_url,
            "AIRFLOW__CELERY__RESULT_BACKEND": self._pg_url("db+postgresql", metadata),
            "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(self.options.worker_concurrency),
            "AIRFLOW__API__BASE_URL": self.api_url,
            "AIRFLOW__API__SECRET_KEY": r.jwt_secret,
            "AIRFLOW__API_AUTH__JWT_SECRET": r.jwt_secret,
            "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "True",
            "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_HOST": "127.0.0.1",
            "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_PORT": str(r.scheduler_health_port),
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(r.worker_log_port),
            "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(r.trigger_log_port),
            "AIRFLOW__TRIGGERER__JOB_HEARTBEAT_SEC": "2",
            "AIRFLOW__BATCHCODE__STAGING": str(self.staging),
            "AIRFLOW_CONN_BATCHCODE_WAREHOUSE": json.dumps(self.warehouse_connection()),
            "AIRFLOW_CONN_BATCHCODE_DEFAULT": json.dumps(self.batchcode_connection()),
        }

    def env(self) -> dict[str, str]:
        """A stack process's environment: this machine's without any Airflow settings, plus :meth:`settings`."""
        base = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
        bin_dir = str(Path(sys.executable).parent)
        base["PATH"] = bin_dir + os.pathsep + base.get("PATH", "")
        base["PYTHONUNBUFFERED"] = "1"
        return {**base, **self.settings()}

    # --- lifecycle -------------------------------------------------------------------------------------------

    def __enter__(self) -> Stack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> Stack:
        """Make the resources, migrate, start every service and wait until all are healthy and the DAG is parsed."""
        started = time.monotonic()
        try:
            self._prepare()
            self._step("db migrate", self._migrate)
            self._step("services healthy", self._start_services)
            self._step("dag parsed", self._wait_for_dag)
        except BaseException:
            self.stop()
            raise
        self.timings["start-up"] = time.monotonic() - started
        return self

    def _step(self, name: str, action: Callable[[], None]) -> None:
        begun = time.monotonic()
        action()
        self.timings[name] = time.monotonic() - begun

    def _prepare(self) -> None:
        import psycopg

        from stack.seed import seed_postgres

        for folder in (self.home, self.dags, self.staging, self.logs):
            folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        (self.work / "owner").write_text(self.owner)
        sweep_abandoned()
        self._claim_redis_db()
        with psycopg.connect(PG_ADMIN_DSN, autocommit=True, connect_timeout=5) as server:
            for name in (self.resources.metadata_db, self.resources.warehouse_db):
                server.execute(f'CREATE DATABASE "{name}"')
                self._made_dbs.append(name)
                server.execute(f"COMMENT ON DATABASE \"{name}\" IS '{OWNER_PREFIX}{self.owner}'")
        o = self.options
        seed_postgres(self.pg_dsn(self.resources.warehouse_db), o.records, days=o.days, start=o.first_day)
        (self.dags / f"{DAG_ID}.py").write_text(dag_file(o, self.staging))
        (self.home / "passwords.json").write_text(json.dumps({ADMIN_USER: self.resources.admin_password}))

    def _claim_redis_db(self) -> None:
        """Take a Redis database number that holds nothing, marking it with a claim key (SET NX)."""
        import redis

        candidates = list(range(1, 16))
        random.shuffle(candidates)
        for number in candidates:
            client = redis.Redis.from_url(f"{REDIS_URL}/{number}", socket_timeout=5)
            try:
                if client.set(CLAIM_KEY, self.owner, nx=True):
                    if client.dbsize() == 1:
                        self.resources.redis_db = number
                        self._redis_claimed = True
                        return
                    client.delete(CLAIM_KEY)
            except redis.ResponseError:  # a server with fewer databases
                continue
            finally:
                client.close()
        raise RuntimeError(f"no empty Redis database (1-15) at {REDIS_URL} to claim")

    def _migrate(self) -> None:
        with (self.logs / "db-migrate.log").open("wb") as log:
            subprocess.run(
                [sys.executable, "-m", "airflow", "db", "migrate"],
                env=self.env(),
                stdout=log,
                stderr=subprocess.STDOUT,
                check=True,
                timeout=300,
            )

    def _airflow(self, name: str, *args: str) -> Service:
        service = Service(name, [sys.executable, "-m", "airflow", *args], self.logs / f"{name}.log")
        self.services[name] = service
        return service

    def _start_services(self) -> None:
        r, o = self.resources, self.options
        script = Path(sys.executable).with_name("batchcode")
        command = [str(script)] if script.exists() else [sys.executable, "-m", "airflow_batchcode.cli"]
        emulator = Service(
            "emulator",
            [
                *command,
                "emulator",
                "--port",
                str(r.emulator_port),
                "--client",
                f"{r.client_id}:{r.client_secret}",
                "--processing-delay",
                str(o.processing_delay),
                "--rate-limit",
                str(o.rate_limit),
                "--daily-quota",
                str(o.daily_quota),
                "--quota-window",
                str(o.quota_window),
                "--data-dir",
                str(self.work / "emulator"),
            ],
            self.logs / "emulator.log",
        )
        self.services["emulator"] = emulator
        self._airflow("api-server", "api-server", "--host", "127.0.0.1", "--port", str(r.api_port))
        self._airflow("scheduler", "scheduler")
        self._airflow("dag-processor", "dag-processor")
        capacity = [] if o.triggerer_capacity is None else ["--capacity", str(o.triggerer_capacity)]
        self._airflow("triggerer", "triggerer", *capacity)
        for number in range(2, o.triggerers + 1):  # each serves its trigger logs on a port of its own
            extra = self._airflow(f"triggerer-{number}", "triggerer", *capacity)
            extra.env["AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT"] = str(free_port())
        self._airflow("celery-worker", "celery", "worker", "--celery-hostname", f"stack-{r.suffix}@%h")
        env = self.env()
        for service in self.services.values():
            with service.log.open("ab") as log:
                service.process = subprocess.Popen(
                    service.argv,
                    env={**env, **service.env},
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    preexec_fn=die_with_parent,
                )
        self.wait_healthy(timeout=180)

    def health(self) -> dict[str, bool]:
        """Each service's health check, as the compose file's ``healthcheck`` entries define them."""
        checks: dict[str, Callable[[], bool]] = {
            "emulator": lambda: requests.get(f"{self.emulator_url}/_emulator/health", timeout=2).ok,
            "api-server": lambda: requests.get(f"{self.api_url}/api/v2/version", timeout=2).ok,
            "scheduler": lambda: (
                requests.get(f"http://127.0.0.1:{self.resources.scheduler_health_port}/health", timeout=2).ok
            ),
            "dag-processor": lambda: self._monitor_status("dag_processor"),
            "triggerer": lambda: self._monitor_status("triggerer"),
            "triggerers": lambda: self.live_triggerers() >= self.options.triggerers,
            "celery-worker": lambda: bool(self.celery_ping()),
        }
        result = {}
        for name, check in checks.items():
            try:
                result[name] = bool(check())
            except Exception:
                result[name] = False
        return result

    def _monitor_status(self, component: str) -> bool:
        body = requests.get(f"{self.api_url}/api/v2/monitor/health", timeout=2).json()
        return bool(body.get(component, {}).get("status") == "healthy")

    def live_triggerers(self) -> int:
        """Triggerer jobs running with a heartbeat in the last 30 s (one per live triggerer process)."""
        return int(
            self.metadata_query(
                "SELECT COUNT(*) FROM job WHERE job_type = 'TriggererJob' AND state = 'running' "
                "AND latest_heartbeat > NOW() - INTERVAL '30 seconds'"
            )[0][0]
        )

    def wait_healthy(self, timeout: float) -> None:
        """Wait until every service passes its health check; fail early, with its log, when one exits."""
        deadline = time.monotonic() + timeout
        status: dict[str, bool] = {}
        while time.monotonic() < deadline:
            for service in self.services.values():
                if not service.running():
                    raise RuntimeError(f"{service.name} exited during start-up:\n{service.tail()}")
            status = self.health()
            if all(status.values()):
                return
            time.sleep(1)
        raise TimeoutError(f"services not healthy after {timeout:.0f} s: {status}")

    def _wait_for_dag(self) -> None:
        wait_for(f"DAG {DAG_ID} parsed", lambda: self.api("GET", f"dags/{DAG_ID}", check=False).ok or None, 180)
        self.api("PATCH", f"dags/{DAG_ID}", json={"is_paused": False})

    def stop(self) -> None:
        """Stop every process group (SIGTERM, then SIGKILL), drop the databases, release Redis, remove temp files."""
        for name in reversed(list(self.services)):
            self._terminate(self.services[name])
        self._session.close()
        if self._made_dbs:
            import psycopg

            with (
                contextlib.suppress(psycopg.Error),
                psycopg.connect(PG_ADMIN_DSN, autocommit=True, connect_timeout=5) as server,
            ):
                for name in self._made_dbs:
                    server.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            self._made_dbs.clear()
        if self._redis_claimed:
            import redis

            client = redis.Redis.from_url(self.broker_url, socket_timeout=5)
            with contextlib.suppress(redis.RedisError):
                if client.get(CLAIM_KEY) == self.owner.encode():
                    client.flushdb()
            client.close()
            self._redis_claimed = False
        if self._own_work:
            shutil.rmtree(self.work, ignore_errors=True)

    @staticmethod
    def _terminate(service: Service, grace: float = 20) -> None:
        process = service.process
        if process is None:
            return
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(grace)
        # children of the group (task runners, pool processes, gunicorn/uvicorn workers) go too
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(5)

    # --- talking to it -----------------------------------------------------------------------------------------

    def token(self, refresh: bool = False) -> str:
        """A JWT for the REST API, from ``POST /auth/token`` with the admin's password."""
        if self._token is None or refresh:
            response = self._session.post(
                f"{self.api_url}/auth/token",
                json={"username": ADMIN_USER, "password": self.resources.admin_password},
                timeout=10,
            )
            response.raise_for_status()
            self._token = str(response.json()["access_token"])
        return self._token

    def api(self, method: str, path: str, *, check: bool = True, **kwargs: Any) -> requests.Response:
        """Call ``/api/v2/<path>`` with the admin's token; raise on HTTP errors unless ``check`` is false."""
        url = f"{self.api_url}/api/v2/{path.lstrip('/')}"
        headers = {"Authorization": f"Bearer {self.token()}"}
        response = self._session.request(method, url, headers=headers, timeout=30, **kwargs)
        if response.status_code == 401:
            headers["Authorization"] = f"Bearer {self.token(refresh=True)}"
            response = self._session.request(method, url, headers=headers, timeout=30, **kwargs)
        if check and not response.ok:
            raise RuntimeError(f"{method} {url} -> {response.status_code}: {response.text[:500]}")
        return response

    def celery_ping(self) -> list[dict[str, Any]]:
        """Replies of the Celery workers on this stack's broker."""
        return list(self._celery().control.ping(timeout=1.0, limit=1) or [])

    def celery_active(self) -> dict[str, list[dict[str, Any]]]:
        """Tasks each Celery worker is executing right now (the worker slots in use); the stack has one worker."""
        return dict(self._celery().control.inspect(timeout=2.0, limit=1).active() or {})

    def _celery(self) -> Any:
        if not hasattr(self, "_celery_app"):
            from celery import Celery

            self._celery_app = Celery("batchcode-stack-probe", broker=self.broker_url)
        return self._celery_app

    def trigger(self, conf: dict[str, Any], *, run_id: str, logical_date: str | None = None) -> dict[str, Any]:
        """Trigger :data:`DAG_ID` through the REST API; return the new run."""
        body = {"dag_run_id": run_id, "logical_date": logical_date, "conf": conf}
        return dict(self.api("POST", f"dags/{DAG_ID}/dagRuns", json=body).json())

    def run_state(self, run_id: str) -> str:
        """State of one run of :data:`DAG_ID`."""
        return str(self.api("GET", f"dags/{DAG_ID}/dagRuns/{run_id}").json()["state"])

    def task_instances(self, run_id: str) -> list[dict[str, Any]]:
        """Every task instance of one run (mapped ones included)."""
        body = self.api("GET", f"dags/{DAG_ID}/dagRuns/{run_id}/taskInstances", params={"limit": 100}).json()
        return list(body["task_instances"])

    def metadata_query(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        """Rows of a query on the metadata database."""
        import psycopg

        with psycopg.connect(self.pg_dsn(self.resources.metadata_db)) as conn:
            return list(conn.execute(sql, params).fetchall())

    def warehouse_query(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        """Rows of a query on the warehouse database."""
        import psycopg

        with psycopg.connect(self.pg_dsn(self.resources.warehouse_db)) as conn:
            return list(conn.execute(sql, params).fetchall())

    def logs_of(self) -> Iterator[Path]:
        """The service logs (for artifacts)."""
        yield from sorted(self.logs.glob("*.log"))
