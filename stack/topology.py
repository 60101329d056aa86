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
the databases, Redis database and folder such a killed stack left (:func:`sweep_abandoned`).
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import requests

DAG_ID = "batchcode_nightly"
PG_ADMIN_DSN = os.environ.get("BATCHCODE_STACK_PG", "host=127.0.0.1 port=5432 user=postgres dbname=postgres")
REDIS_URL = os.environ.get("BATCHCODE_STACK_REDIS", "redis://127.0.0.1:6379")
ADMIN_USER = "admin"
CLAIM_KEY = "batchcode-stack:claim"
OWNER_PREFIX = "batchcode-stack owner="

DAG_FILE = '''"""The shipped nightly pipeline as the native stack runs it: fast polling, small chunks, no schedule."""

from airflow_batchcode.nightly import nightly_dag

dag = nightly_dag({dag_id!r}, poll_interval={poll_interval}, chunk_records={chunk_records}, staging={staging!r},
                  schedule=None)
'''

T = TypeVar("T")


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(what: str, probe: Callable[[], T | None], timeout: float, interval: float = 0.5) -> T:
    """Call ``probe`` until it returns something other than ``None``/``False``; raise after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            result = probe()
        except Exception as exc:  # a service still starting answers with all kinds of errors
            last_error, result = exc, None
        if result is not None and result is not False:
            return result
        time.sleep(interval)
    detail = f" (last error: {last_error})" if last_error else ""
    raise TimeoutError(f"{what} not ready after {timeout:.0f} s{detail}")


try:
    _LIBC: Any = ctypes.CDLL(None, use_errno=True)
except OSError:  # pragma: no cover - not Linux
    _LIBC = None


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """New process group; and ask Linux to SIGTERM the child when its parent dies (no orphans after a crash)."""
    os.setsid()
    if _LIBC is not None and sys.platform.startswith("linux"):
        _LIBC.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _abandoned(owner: str) -> bool:
    """True for ``host:pid:suffix`` of a stack on this host whose process no longer exists."""
    host, _, rest = owner.partition(":")
    pid = rest.partition(":")[0]
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def sweep_abandoned() -> None:
    """Remove what stacks on this host left when they were killed before cleaning up (SIGKILL, a lost CI job).

    Only what carries the owner mark of a stack whose process is gone: ``batchcode_stack_*`` databases
    (database comment), claimed Redis databases (claim key) and ``batchcode-stack-*`` temporary folders.
    """
    import psycopg
    import redis

    with psycopg.connect(PG_ADMIN_DSN, autocommit=True, connect_timeout=5) as server:
        rows = server.execute(
            "SELECT datname, shobj_description(oid, 'pg_database') FROM pg_database "
            "WHERE datname LIKE 'batchcode_stack_%'"
        ).fetchall()
        for name, comment in rows:
            if comment and comment.startswith(OWNER_PREFIX) and _abandoned(comment[len(OWNER_PREFIX) :]):
                server.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    for number in range(1, 16):
        client = redis.Redis.from_url(f"{REDIS_URL}/{number}", socket_timeout=5)
        try:
            claimed = client.get(CLAIM_KEY)
            owner = claimed.decode() if isinstance(claimed, bytes) else claimed
            if owner is not None and _abandoned(str(owner)):
                client.flushdb()
        except redis.ResponseError:
            break
        finally:
            client.close()
    for folder in Path(tempfile.gettempdir()).glob("batchcode-stack-*"):
        mark = folder / "owner"
        with contextlib.suppress(OSError):
            if mark.is_file() and _abandoned(mark.read_text().strip()):
                shutil.rmtree(folder, ignore_errors=True)


@dataclass
class StackOptions:
    """What the stack runs with.

    :param records: survey answers seeded into the warehouse, spread over ``days`` days from ``first_day``.
    :param chunk_records: records per remote operation (so one day makes several mapped chunks).
    :param poll_interval: seconds between the deferred sensor's status calls.
    :param worker_concurrency: Celery worker slots.
    :param processing_delay: seconds the emulator keeps an operation ``in_progress`` (the deferral window).
    :param work: folder for ``AIRFLOW_HOME``, DAGs, staging and logs; a temporary one (removed) when ``None``.
    """

    records: int = 400
    days: int = 2
    first_day: str = "2026-01-15"
    chunk_records: int = 150
    poll_interval: float = 2
    worker_concurrency: int = 4
    processing_delay: float = 8
    work: Path | None = None


@dataclass
class Resources:
    """Names and ports of one stack; unique per run."""

    suffix: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    api_port: int = field(default_factory=free_port)
    emulator_port: int = field(default_factory=free_port)
    scheduler_health_port: int = field(default_factory=free_port)
    worker_log_port: int = field(default_factory=free_port)
    trigger_log_port: int = field(default_factory=free_port)
    redis_db: int | None = None
    fernet_key: str = field(default_factory=lambda: _fernet_key())
    jwt_secret: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    admin_password: str = field(default_factory=lambda: secrets.token_urlsafe(12))
    client_id: str = "stack-client"
    client_secret: str = field(default_factory=lambda: "stack-secret-" + secrets.token_hex(8))

    @property
    def metadata_db(self) -> str:
        """Airflow's metadata database."""
        return f"batchcode_stack_meta_{self.suffix}"

    @property
    def warehouse_db(self) -> str:
        """The warehouse database (source table and coded output)."""
        return f"batchcode_stack_wh_{self.suffix}"


def _fernet_key() -> str:
    from cryptography.fernet import Fernet

    return Fernet.generate_key().decode()


@dataclass
class Service:
    """One long-running process of the stack (its own process group) and its log."""

    name: str
    argv: list[str]
    log: Path
    process: subprocess.Popen[bytes] | None = None

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

    def batchcode_connection(self) -> dict[str, Any]:
        """``batchcode_default``: the ABS emulator."""
        return {
            "conn_type": "batchcode",
            "host": self.emulator_url,
            "login": self.resources.client_id,
            "password": self.resources.client_secret,
            "extra": {"service": "abs", "topic": "anzsco", "rate_limit": 0},
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
        (self.dags / f"{DAG_ID}.py").write_text(
            DAG_FILE.format(
                dag_id=DAG_ID, poll_interval=o.poll_interval, chunk_records=o.chunk_records, staging=str(self.staging)
            )
        )
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
                "0",
                "--daily-quota",
                "0",
                "--data-dir",
                str(self.work / "emulator"),
            ],
            self.logs / "emulator.log",
        )
        self.services["emulator"] = emulator
        self._airflow("api-server", "api-server", "--host", "127.0.0.1", "--port", str(r.api_port))
        self._airflow("scheduler", "scheduler")
        self._airflow("dag-processor", "dag-processor")
        self._airflow("triggerer", "triggerer")
        self._airflow("celery-worker", "celery", "worker", "--celery-hostname", f"stack-{r.suffix}@%h")
        env = self.env()
        for service in self.services.values():
            with service.log.open("ab") as log:
                service.process = subprocess.Popen(
                    service.argv, env=env, stdout=log, stderr=subprocess.STDOUT, preexec_fn=_die_with_parent
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
