"""What every benchmark shares: settings, figures, child processes and their peak RSS, data, the emulator.

The parent (``bench.run``) never imports Airflow: each measured step runs in a fresh child
process (``python -m bench.<module> <function> '<json kwargs>'``) whose last stdout line is
its JSON result, and whose peak RSS is read from ``os.wait4`` when it exits.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import shutil
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CLIENT_ID, CLIENT_SECRET = "demo-client", "demo-secret"
TOPIC = "anzsco"
FIELD_MAP = {"record_id": "respondent_id", "occp_text": "occupation", "tasks_text": "duties"}
EXTRACT_SQL = "SELECT respondent_id, occupation, duties FROM survey_responses"
PG_ADMIN_DSN = os.environ.get("BENCH_PG", "host=127.0.0.1 port=5432 user=postgres dbname=postgres")


@dataclass(frozen=True)
class Settings:
    """Sizes of one run: the full one, or the quick check (``BENCH_QUICK=1``)."""

    quick: bool
    records: int
    reps: int
    load_reps: int
    manifest_bytes: int
    transfer_reps: int
    memory_sizes: tuple[int, int]
    trigger_count: int
    trigger_seconds: float
    trigger_interval: float
    trigger_whatif_seconds: float
    e2e_records: int
    e2e_chunk_records: int

    @classmethod
    def from_env(cls) -> Settings:
        if os.environ.get("BENCH_QUICK", "") not in ("", "0"):
            return cls(
                quick=True,
                records=100_000,
                reps=2,
                load_reps=2,
                manifest_bytes=100_000_000,
                transfer_reps=1,
                memory_sizes=(10_000, 100_000),
                trigger_count=1000,
                trigger_seconds=20.0,
                trigger_interval=5.0,
                trigger_whatif_seconds=20.0,
                e2e_records=100_000,
                e2e_chunk_records=25_000,
            )
        return cls(
            quick=False,
            records=1_000_000,
            reps=3,
            load_reps=4,  # best of 4 each, in turn: on two shared cores one run in three can take 1.5x
            manifest_bytes=1_000_000_000,
            transfer_reps=4,
            memory_sizes=(100_000, 1_000_000),
            trigger_count=1000,
            trigger_seconds=120.0,
            trigger_interval=5.0,
            trigger_whatif_seconds=30.0,
            e2e_records=1_000_000,
            e2e_chunk_records=250_000,
        )


@dataclass
class Figure:
    """One measured figure and the baseline it is measured against."""

    name: str
    value: float | None
    unit: str
    baseline: str
    goal: str = ""
    met: bool | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def line(self) -> str:
        value = "n/a" if self.value is None else fmt(self.value)
        verdict = "" if self.met is None else f" [goal {self.goal}: {'met' if self.met else 'MISSED'}]"
        return f"{self.name} {value} {self.unit} (baseline {self.baseline}){verdict}"


def fmt(value: float) -> str:
    """Three significant digits, no exponent for the sizes we print."""
    if value == 0 or not math.isfinite(value):
        return str(value)
    digits = max(0, 2 - math.floor(math.log10(abs(value))))
    return f"{value:.{digits}f}"


class Report:
    """Collects figures, prints each as it comes, and writes them all as JSON."""

    def __init__(self, path: Path, settings: Settings) -> None:
        self.path = path
        self.settings = settings
        self.figures: list[Figure] = []
        self.notes: list[str] = []
        self.started = time.time()

    def add(self, figure: Figure) -> Figure:
        self.figures.append(figure)
        print(figure.line(), flush=True)
        return figure

    def note(self, text: str) -> None:
        self.notes.append(text)
        print(f"# {text}", flush=True)

    def write(self) -> None:
        body = {
            "machine": machine(),
            "settings": asdict(self.settings),
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.started)),
            "seconds": round(time.time() - self.started, 1),
            "figures": [asdict(f) for f in self.figures],
            "notes": self.notes,
        }
        self.path.write_text(json.dumps(body, indent=2) + "\n")


def machine() -> dict[str, Any]:
    """What the figures were taken on."""
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    memory = 0
    with contextlib.suppress(OSError, ValueError, IndexError):
        memory = int(Path("/proc/meminfo").read_text().split()[1]) // 1024
    versions: dict[str, str] = {}
    from importlib.metadata import PackageNotFoundError, version

    for package in ("apache-airflow", "msgspec", "psycopg", "requests", "httpx", "uvicorn"):
        with contextlib.suppress(PackageNotFoundError):
            versions[package] = version(package)
    postgres = ""
    with contextlib.suppress(Exception):
        import psycopg

        with psycopg.connect(PG_ADMIN_DSN, connect_timeout=3) as conn:
            row = conn.execute("SHOW server_version").fetchone()
            postgres = str(row[0]) if row else ""
    curl = ""
    with contextlib.suppress(Exception):
        curl = subprocess.run(["curl", "--version"], capture_output=True, text=True).stdout.split()[1]
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "memory_mb": memory,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "postgresql": postgres,
        "curl": curl,
        **versions,
    }


# --- child processes ---------------------------------------------------------------------------


@dataclass
class ChildResult:
    """A child's JSON result, its peak RSS and its wall time."""

    result: dict[str, Any]
    peak_rss_mb: float
    seconds: float


class ChildFailed(RuntimeError):
    """A benchmark child exited non-zero."""


def child(
    module: str,
    function: str,
    kwargs: dict[str, Any],
    *,
    env: dict[str, str],
    log: Path,
    timeout: float = 900,
) -> ChildResult:
    """Run ``bench.<module>.<function>(**kwargs)`` in a fresh interpreter; return its result and peak RSS."""
    started = time.monotonic()
    with log.open("a") as err:
        err.write(f"\n=== {module}.{function} {json.dumps(kwargs)[:300]}\n")
        err.flush()
        proc = subprocess.Popen(
            [sys.executable, "-m", f"bench.{module}", function, json.dumps(kwargs)],
            stdout=subprocess.PIPE,
            stderr=err,
            env=env,
            cwd=ROOT,
        )
        timer = threading.Timer(timeout, proc.kill)
        timer.start()
        try:
            assert proc.stdout is not None
            output = proc.stdout.read().decode("utf-8", "replace")
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            timer.cancel()
        proc.returncode = os.waitstatus_to_exitcode(status)
    lines = [line for line in output.splitlines() if line.startswith("{")]
    with log.open("a") as err:
        err.writelines(line + "\n" for line in output.splitlines() if not line.startswith("{"))
    if proc.returncode != 0:
        raise ChildFailed(f"bench.{module}.{function} exited {proc.returncode}; see {log}")
    if not lines:
        raise ChildFailed(f"bench.{module}.{function} printed no result; see {log}")
    return ChildResult(json.loads(lines[-1]), usage.ru_maxrss / 1024, time.monotonic() - started)


def child_main(functions: dict[str, Callable[..., dict[str, Any]]]) -> None:
    """Entry point of a child: ``python -m bench.<module> <function> '<json kwargs>'``."""
    name, raw = sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else "{}"
    result = functions[name](**json.loads(raw))
    sys.stdout.flush()
    print(json.dumps(result), flush=True)


def sleep_until(moment: float) -> float:
    """Sleep until ``moment`` (wall clock, so parent and child agree on it); return how late we got there (s)."""
    time.sleep(max(0.0, moment - time.time()))
    return max(0.0, time.time() - moment)


def best(times: list[float]) -> float:
    """The fastest of repeated timings: background load only ever adds time."""
    return min(times)


# --- environment -------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def base_env(work: Path) -> dict[str, str]:
    """Environment of every child: a throwaway ``AIRFLOW_HOME``, quiet logs, the package importable."""
    from cryptography.fernet import Fernet

    home = work / "airflow"
    home.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__FERNET_KEY": Fernet.generate_key().decode(),
        "AIRFLOW__CORE__DAGS_FOLDER": str(work / "dags"),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH", "")])),
    }
    env.pop("BENCH_QUICK", None)
    return env


def migrate_metadata_db(env: dict[str, str], log: Path) -> float:
    """``airflow db migrate`` for the children's metadata DB (idempotent); return the seconds it took.

    Every figure that runs ``dag.test()`` calls it: a subset (``BENCH_ONLY=frugal``) must not rely
    on another figure having made the tables.
    """
    started = time.monotonic()
    with log.open("a") as sink:
        command = [sys.executable, "-m", "airflow", "db", "migrate"]
        subprocess.run(command, env=env, stdout=sink, stderr=sink, check=True)
    return time.monotonic() - started


def sqlite_connection(path: Path) -> str:
    return json.dumps({"conn_type": "sqlite", "host": str(path)})


def postgres_connection(dbname: str) -> str:
    return json.dumps(
        {"conn_type": "postgres", "host": "127.0.0.1", "port": 5432, "login": "postgres", "schema": dbname}
    )


def batchcode_connection(base_url: str) -> str:
    return json.dumps(
        {
            "conn_type": "batchcode",
            "host": base_url,
            "login": CLIENT_ID,
            "password": CLIENT_SECRET,
            # the emulator runs with its rate limit and quota off: so does the client's budget (with ABS's
            # default 10,000 a day, 1,000 triggers' adaptive polls would be spread over the day)
            "extra": {"service": "abs", "topic": TOPIC, "rate_limit": 0, "daily_quota": 0},
        }
    )


@contextlib.contextmanager
def emulator(log: Path, *flags: str) -> Iterator[str]:
    """The ABS emulator in its own process (rate limit and quota off); yield its base URL."""
    port = free_port()
    command = [
        *(sys.executable, "-m", "airflow_batchcode.cli", "emulator", "--port", str(port)),
        *("--rate-limit", "0", "--daily-quota", "0", "--token-limit", "0", "--url-ttl", "36000"),
        *flags,
    ]
    with log.open("a") as err:
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=err, cwd=ROOT, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if "listening on" not in line:
            raise RuntimeError(f"the emulator did not start: {line!r}; see {log}")
        yield line.rsplit(" ", 1)[1].strip()
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def abs_client(base_url: str) -> Any:
    """A sync ABS client for the parent's own set-up calls (create operations, wait for them)."""
    from airflow_batchcode.services.abs import AbsClient, AbsSettings

    return AbsClient(AbsSettings(base_url, CLIENT_ID, CLIENT_SECRET, rate_limit=0))


def wait_complete(client: Any, operation_id: str, timeout: float = 600) -> Any:
    """Poll until the operation is complete (or fail)."""
    deadline = time.monotonic() + timeout
    while True:
        operation = client.get_operation(operation_id, TOPIC)
        if operation.state.value == "complete":
            return operation
        if operation.state.is_terminal():
            raise RuntimeError(f"operation {operation_id} ended {operation.state.value}: {operation.error}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"operation {operation_id} still {operation.state.value} after {timeout} s")
        time.sleep(0.2)


# --- data --------------------------------------------------------------------------------------


def seed_sqlite(path: Path, count: int) -> Path:
    """A SQLite warehouse with ``count`` realistic, messy survey answers (reused when already there)."""
    import sqlite3

    from airflow_batchcode.sample_data import seed_sqlite as seed

    if path.exists():
        with contextlib.closing(sqlite3.connect(path)) as conn:
            if conn.execute("SELECT COUNT(*) FROM survey_responses").fetchone()[0] == count:
                return path
    seed(str(path), count)
    return path


@contextlib.contextmanager
def postgres_database(sqlite_source: Path) -> Iterator[str | None]:
    """A fresh, uniquely named PostgreSQL database holding the SQLite warehouse's rows; dropped after.

    Yields ``None`` when no server answers on 127.0.0.1:5432.
    """
    import sqlite3

    try:
        import psycopg

        admin = psycopg.connect(PG_ADMIN_DSN, autocommit=True, connect_timeout=3)
    except Exception as exc:
        print(f"# PostgreSQL not reachable ({exc}); skipping its figures", flush=True)
        yield None
        return
    name = f"batchcode_bench_{uuid.uuid4().hex[:12]}"
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            with psycopg.connect(f"{PG_ADMIN_DSN.replace('dbname=postgres', '')} dbname={name}") as conn:
                conn.execute(
                    "CREATE TABLE survey_responses (respondent_id TEXT, answered_on TEXT, occupation TEXT, duties TEXT)"
                )
                with (
                    contextlib.closing(sqlite3.connect(sqlite_source)) as source,
                    conn.cursor().copy("COPY survey_responses FROM STDIN") as copy,
                ):
                    source.text_factory = bytes
                    for row in source.execute(
                        "SELECT respondent_id, answered_on, occupation, duties FROM survey_responses"
                    ):
                        copy.write_row([None if v is None else v.decode("utf-8", "replace") for v in row])
                conn.execute("ANALYZE survey_responses")
            yield name
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def pg_dsn(dbname: str) -> str:
    return f"{PG_ADMIN_DSN.replace('dbname=postgres', '')} dbname={dbname}"


def clean(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
