"""Run every benchmark, print one line per figure and write them all to ``bench/results.json``.

Environment: ``BENCH_QUICK=1`` (100,000 records, 20 s of triggers, results in
``bench/results-quick.json``), ``BENCH_ONLY=extract,load,transfer,memory,triggers,budget,e2e,frugal,emulator_model``
(a subset),
``BENCH_WORKDIR`` (work there and keep it; default: a temporary folder, removed at the end),
``BENCH_PG`` (admin DSN of the PostgreSQL server; default 127.0.0.1:5432 as ``postgres``).
"""

from __future__ import annotations

import os
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.common import (
    ROOT,
    Report,
    Settings,
    base_env,
    clean,
    emulator,
    machine,
    postgres_connection,
    postgres_database,
    seed_sqlite,
    sqlite_connection,
)

FIGURES = ("extract", "load", "transfer", "memory", "triggers", "budget", "e2e", "frugal", "emulator_model")


def main() -> int:
    settings = Settings.from_env()
    only = {name.strip() for name in os.environ.get("BENCH_ONLY", "").split(",") if name.strip()} or set(FIGURES)
    keep = bool(os.environ.get("BENCH_WORKDIR"))
    work = Path(os.environ.get("BENCH_WORKDIR") or tempfile.mkdtemp(prefix="batchcode-bench-")).resolve()
    work.mkdir(parents=True, exist_ok=True)
    log = work / "bench.log"
    target = ROOT / "bench" / ("results-quick.json" if settings.quick else "results.json")
    report = Report(target, settings)
    info = machine()
    print(
        f"# {'quick' if settings.quick else 'full'} run on {info['nproc']} x {info['cpu']}, {info['memory_mb']} MB, "
        f"Python {info['python']}, Airflow {info.get('apache-airflow')}, PostgreSQL {info['postgresql'] or 'none'}; "
        f"log: {log}",
        flush=True,
    )
    env = base_env(work)
    failures = 0

    def figure(name: str, run: Callable[[], Any]) -> Any:
        nonlocal failures
        if name not in only:
            return None
        started = time.monotonic()
        try:
            return run()
        except Exception as exc:
            failures += 1
            report.note(f"{name} failed: {exc}")
            with log.open("a") as sink:
                sink.write(traceback.format_exc())
            return None
        finally:
            report.note(f"{name} took {time.monotonic() - started:.0f} s")

    try:
        started = time.monotonic()
        warehouse = seed_sqlite(work / "warehouse.db", settings.records)
        report.note(f"seeded {settings.records:,} survey answers in {time.monotonic() - started:.0f} s")
        env["AIRFLOW_CONN_BENCH_SQLITE"] = sqlite_connection(warehouse)
        with postgres_database(warehouse) if {"extract", "load"} & only else _nothing() as pg:
            if pg is not None:
                env["AIRFLOW_CONN_BENCH_PG"] = postgres_connection(pg)
            from bench.load import figure_load
            from bench.throughput import extract_only, figure_extract

            summary = figure("extract", lambda: figure_extract(report, settings, work, env, log, pg))
            if summary is None and "load" in only:
                summary = extract_only(work, env, log)
            if summary is not None:
                figure("load", lambda: figure_load(report, settings, work, env, log, pg, summary))
        if {"transfer", "memory"} & only:
            from bench.transfer import figure_memory, figure_transfer

            with emulator(log, "--processing-delay", "0") as base_url:
                figure("transfer", lambda: figure_transfer(report, settings, work, env, log, base_url))
                figure("memory", lambda: figure_memory(report, settings, work, env, log, base_url))
        from bench.triggers import figure_triggers

        figure("triggers", lambda: figure_triggers(report, settings, work, env, log))
        from bench.budget import figure_budget

        figure("budget", lambda: figure_budget(report, settings, work, env, log))
        from bench.e2e import figure_e2e

        figure("e2e", lambda: figure_e2e(report, settings, work, env, log, warehouse))
        from bench.frugal import figure_frugal

        figure("frugal", lambda: figure_frugal(report, settings, work, env, log, warehouse))
        from bench.emulator_model import figure_emulator_model

        figure("emulator_model", lambda: figure_emulator_model(report))
    finally:
        report.write()
        print(f"# results written to {target.relative_to(ROOT)} in {time.time() - report.started:.0f} s", flush=True)
        if not keep and not failures:
            clean(work)
        elif failures:
            print(f"# {failures} figure(s) failed; work folder kept: {work}", flush=True)
    return 1 if failures else 0


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None
