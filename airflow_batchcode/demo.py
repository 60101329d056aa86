"""``batchcode demo``: the nightly pipeline, end to end, on a fresh machine with nothing else installed.

Starts the ABS emulator (or, with ``--service``, the super.ai, Gravity-AI or ASG Refinery one) on a
free loopback port, makes a temporary ``AIRFLOW_HOME`` with a SQLite metadata DB, seeds a SQLite
warehouse with realistic (and some messy) survey answers, runs the shipped nightly DAG with
``dag.test()`` and prints what came out.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import date, datetime, timedelta
from pathlib import Path

from airflow_batchcode.services.catalogue import DEFAULT_SERVICE, SERVICES, ServiceSpec, spec_for

DEMO_DAY = "2026-01-15"
DAG_FILE = '''"""The nightly pipeline, as `batchcode demo` runs it (fast polling, small chunks)."""
from airflow_batchcode.nightly import nightly_dag

dag = nightly_dag(chunk_records={chunk_records}, poll_interval=1, staging={staging!r})
'''


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The demo's command-line options."""
    parser.add_argument(
        "--service", choices=list(SERVICES), default=DEFAULT_SERVICE, help="which service's emulator codes the answers"
    )
    parser.add_argument(
        "--records",
        type=int,
        default=20000,
        help="survey answers to code (default 20000: 515 distinct texts, one remote operation; "
        "3000 leaves 264, which go to real-time coding instead)",
    )
    parser.add_argument("--chunk-records", type=int, default=1000, help="records per remote operation")
    parser.add_argument("--keep", action="store_true", help="keep the warehouse, outputs and logs")
    parser.add_argument("--output-dir", type=Path, help="work here instead of a temporary folder (implies --keep)")


@contextmanager
def _workdir(output_dir: Path | None, keep: bool) -> Iterator[Path]:
    if output_dir is not None:
        output_dir.mkdir(parents=True, exist_ok=True)
        yield output_dir.resolve()
        return
    path = Path(tempfile.mkdtemp(prefix="batchcode-demo-"))
    try:
        yield path
    finally:
        if not keep:
            shutil.rmtree(path, ignore_errors=True)


def run(args: argparse.Namespace) -> int:
    """Run the demo; return a process exit code."""
    from cryptography.fernet import Fernet

    from airflow_batchcode.emulator.config import EmulatorConfig
    from airflow_batchcode.emulator.server import EmulatorServer
    from airflow_batchcode.sample_data import seed_sqlite

    started = time.monotonic()
    with _workdir(args.output_dir, args.keep) as work:
        home, dags, staging = work / "airflow", work / "dags", work / "staging"
        warehouse = work / "warehouse.db"
        for folder in (home, dags, staging):
            folder.mkdir(parents=True, exist_ok=True)
        (dags / "batchcode_nightly.py").write_text(
            DAG_FILE.format(chunk_records=args.chunk_records, staging=str(staging))
        )
        seed_sqlite(str(warehouse), args.records, days=1, start=DEMO_DAY)
        print(f"Seeded {args.records} survey answers for {DEMO_DAY} into {warehouse}")
        spec = spec_for(args.service)
        with ExitStack() as stack:
            s3 = stack.enter_context(_local_s3()) if spec.object_storage else None
            config = EmulatorConfig(processing_delay=2.0, s3_endpoint_url=s3)
            emulator = stack.enter_context(EmulatorServer(config, service=args.service))
            staged = f"; manifests staged on a local S3 server at {s3}" if s3 else ""
            print(f"{spec.label} emulator ({emulator.base_url}{staged})")
            env = {
                **os.environ,
                "AIRFLOW_HOME": str(home),
                "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
                "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                "AIRFLOW__CORE__FERNET_KEY": Fernet.generate_key().decode(),
                "AIRFLOW_CONN_BATCHCODE_WAREHOUSE": json.dumps({"conn_type": "sqlite", "host": str(warehouse)}),
                **_service_connections(spec, emulator.base_url, s3),
            }
            print("Preparing a temporary Airflow (SQLite metadata DB) ...")
            _airflow(["db", "migrate"], env, work / "airflow-db-migrate.log")
            print("Running the nightly DAG with dag.test() ...")
            log = work / "dag-test.log"
            code = _dag_test(dags / "batchcode_nightly.py", env, log)
        if code != 0:
            print(f"The DAG run failed; see {log}")
            print(log.read_text()[-4000:])
            return 1
        _print_summary(warehouse, home / "airflow.db", staging, args.records, time.monotonic() - started)
        _print_usage(home / "airflow.db")
        if args.keep or args.output_dir:
            print(f"\nEverything is kept in {work} (dag-test.log has the task logs).")
    return 0


def _service_connections(spec: ServiceSpec, base_url: str, s3: str | None) -> dict[str, str]:
    """``batchcode_default`` pointing at the emulator (and, for a service reading its manifests from object
    storage, an aws connection to the local S3 server)."""
    emulator = spec.emulator_connection
    extra: dict[str, object] = {"service": spec.name, "topic": "anzsco", **emulator.get("extra", {})}
    connections: dict[str, str] = {}
    if spec.object_storage:
        extra.update(manifest_location="s3://batchcode-demo/manifests", storage_conn_id="batchcode_demo_s3")
        aws = {"conn_type": "aws", "login": "demo", "password": "demo", "extra": {"endpoint_url": s3}}
        connections["AIRFLOW_CONN_BATCHCODE_DEMO_S3"] = json.dumps(aws)
    login, password = emulator.get("login", ""), emulator.get("password", "")
    connections["AIRFLOW_CONN_BATCHCODE_DEFAULT"] = json.dumps(
        {"conn_type": "batchcode", "host": base_url, "login": login, "password": password, "extra": extra}
    )
    return connections


@contextmanager
def _local_s3() -> Iterator[str]:
    """A local S3 server (moto, from the ``[demo]`` extra) with the demo's bucket; yields its URL."""
    try:
        import boto3
        from moto.server import ThreadedMotoServer
    except ImportError:
        raise SystemExit("The Refinery demo needs a local S3 server: pip install 'airflow-batchcode[demo]'") from None
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        url = f"http://{host}:{port}"
        key = "demo"  # the local S3 server takes any key; a real deployment's never appears in code
        s3 = boto3.client(
            "s3", endpoint_url=url, region_name="us-east-1", aws_access_key_id=key, aws_secret_access_key=key
        )
        s3.create_bucket(Bucket="batchcode-demo")
        yield url
    finally:
        server.stop()


def _print_usage(metadata_db: Path) -> None:
    """What was sent and what was reused, and what the service reported about usage (Gravity's billed
    dollars, super.ai's jobs), from the run summary."""
    with sqlite3.connect(metadata_db) as conn:
        row = conn.execute("SELECT value FROM xcom WHERE task_id = 'summary' AND key = 'return_value'").fetchone()
    summary = json.loads(row[0]) if row and row[0] else {}
    if isinstance(summary, str):
        summary = json.loads(summary)
    if not isinstance(summary, dict):
        return
    texts = summary.get("texts")
    if texts:
        print(
            f"Records in: {texts['records_in']}; distinct texts: {texts['distinct_texts']}; "
            f"served from the cache: {texts['from_cache']}; sent in batch: {texts['sent_batch']}; "
            f"sent in real time: {texts['sent_realtime']}"
        )
    usage = summary.get("usage")
    if usage:
        print(f"{summary.get('service')} usage: " + ", ".join(f"{name} {value:g}" for name, value in usage.items()))


def _airflow(arguments: list[str], env: dict[str, str], log: Path) -> None:
    with log.open("w") as sink:
        subprocess.run([sys.executable, "-m", "airflow", *arguments], env=env, stdout=sink, stderr=sink, check=True)


def _dag_test(dag_file: Path, env: dict[str, str], log: Path) -> int:
    logical_date = datetime.combine(date.fromisoformat(DEMO_DAY) + timedelta(days=1), datetime.min.time())
    script = (
        "import importlib.util, sys\n"
        "from datetime import datetime, timezone\n"
        f"spec = importlib.util.spec_from_file_location('batchcode_nightly', {str(dag_file)!r})\n"
        "module = importlib.util.module_from_spec(spec); spec.loader.exec_module(module)\n"
        f"run = module.dag.test(logical_date=datetime.fromisoformat({logical_date.isoformat()!r})"
        ".replace(tzinfo=timezone.utc))\n"
        "sys.exit(0 if run.state == 'success' else 1)\n"
    )
    with log.open("w") as sink:
        return subprocess.run([sys.executable, "-c", script], env=env, stdout=sink, stderr=sink).returncode


def _print_summary(warehouse: Path, metadata_db: Path, staging: Path, records: int, seconds: float) -> None:
    with sqlite3.connect(warehouse) as conn:
        counts = dict(conn.execute("SELECT code_status, COUNT(*) FROM coded_occupations GROUP BY 1").fetchall())
        total = sum(counts.values())
        operations = conn.execute("SELECT COUNT(DISTINCT operation_id) FROM coded_occupations").fetchone()[0]
        lengths = conn.execute(
            "SELECT LENGTH(code_category), COUNT(*) FROM coded_occupations "
            "WHERE code_status = 'successful' GROUP BY 1 ORDER BY 1 DESC"
        ).fetchall()
        examples = {
            status: conn.execute(
                "SELECT occp_text, tasks_text, code_category, code_label, code_confidence, suggestions, error "
                "FROM coded_occupations WHERE code_status = ? ORDER BY position LIMIT 2",
                (status,),
            ).fetchall()
            for status in ("successful", "unsuccessful", "error")
        }
    print()
    print("=" * 78)
    print(f"Nightly run for {DEMO_DAY}: {records} records in, {total} rows out, {operations} remote operation(s)")
    print("-" * 78)
    for status, label in (
        ("successful", "coded"),
        ("unsuccessful", "unsuccessful, with suggestions"),
        ("error", "errors (rejected before upload or by the service)"),
    ):
        count = counts.get(status, 0)
        print(f"  {count:>7}  {100 * count / max(total, 1):5.1f} %  {label}")
        for occp, tasks, category, label_, confidence, suggestions, error in examples[status]:
            shown = f"{(occp or '')[:30]!r} / {(tasks or '')[:30]!r}"
            if status == "successful":
                detail = f"{category} {label_} ({confidence:.2f})"
            elif status == "unsuccessful":
                offered = json.loads(suggestions) if suggestions else []
                detail = "suggests " + ", ".join(f"{s['codeCategory']} {s['codeLabel']}" for s in offered[:2])
                detail = detail if offered else "no code, no suggestions"
            else:
                detail = error
            print(f"             e.g. {shown} -> {detail}")
    print("  code lengths: " + ", ".join(f"{n}-digit {c}" for n, c in lengths))
    print("-" * 78)
    print("Time by step (summed over chunks):")
    for step, spent in _step_times(metadata_db):
        print(f"  {step:<28}" + (f"{'skipped':>8}" if spent is None else f"{spent:6.1f} s"))
    print(f"  {'whole demo':<28}{seconds:6.1f} s")
    print("  (the first step's time includes the seconds dag.test() takes to start Airflow's in-process API)")
    print("-" * 78)
    print(f"Outputs: table coded_occupations in {warehouse}")
    print(f"         raw service output and manifests under {staging}")
    print("=" * 78)


def _step_times(metadata_db: Path) -> list[tuple[str, float | None]]:
    """Seconds per step of the run, summed over chunks; ``None`` for a step that was skipped throughout."""
    with sqlite3.connect(metadata_db) as conn:
        rows = conn.execute("SELECT task_id, state, start_date, end_date FROM task_instance").fetchall()
    spent: dict[str, float] = {}
    skipped: set[str] = set()
    for task_id, state, start, end in rows:
        step = task_id.split(".")[-1]
        if state == "skipped":
            skipped.add(step)
        elif start is not None and end is not None:
            seconds = (datetime.fromisoformat(str(end)) - datetime.fromisoformat(str(start))).total_seconds()
            spent[step] = spent.get(step, 0.0) + seconds
    order = ["extract", "chunks", "code_realtime", "create", "upload", "wait", "download", "load", "summary"]
    return [(step, spent.get(step)) for step in order if step in spent or step in skipped]
