"""Figures 3 and 4: upload/download throughput against curl, and peak RSS of each step at two sizes.

Both run against one ABS emulator in its own process on loopback (processing delay 0, no rate
limit). After each upload the emulator codes the manifest; the next timing waits until it has
finished, so its coding threads never compete with a measurement.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path
from typing import Any

from bench.common import (
    EXTRACT_SQL,
    TOPIC,
    Figure,
    Report,
    Settings,
    abs_client,
    batchcode_connection,
    best,
    child,
    fmt,
    seed_sqlite,
    sleep_until,
    sqlite_connection,
    wait_complete,
)

KMS_HEADER = "x-amz-server-side-encryption-aws-kms-key-id"
START_AFTER = 6.0
"""Seconds from the end of one transfer to the start of the next, for curl and ours alike."""


def make_manifest(path: Path, size: int) -> Path:
    """A valid manifest of about ``size`` bytes whose coding the emulator gets through quickly.

    Long record ids (the service does not limit them) make lines of about 1 KB, so a 1 GB
    manifest is a million records from a small pool of texts the emulator codes from its
    cache: waiting for it between timings costs seconds, not minutes. Only bytes on the
    wire are measured here.
    """
    from airflow_batchcode.sample_data import survey_responses

    pool = []
    for index, answer in enumerate(survey_responses(2000, seed=7, messy=False)):
        duties = f"{answer.tasks_text or 'general duties'}; " * 12
        tasks = duties[: 290 - len(answer.occp_text or "")]
        record_id = f"T{index:07d}-" + "x" * 700
        pool.append(
            b'{"recordId":"%s","occp_text":"%s","tasks_text":"%s"}\n'
            % (record_id.encode(), (answer.occp_text or "").encode(), tasks.encode())
        )
    block = b"".join(pool)
    with path.open("wb") as sink:
        written = 0
        while written + len(block) <= size:
            sink.write(block)
            written += len(block)
        rest = block[: size - written]
        sink.write(rest[: rest.rfind(b"\n") + 1])
    return path


def _curl(arguments: list[str]) -> tuple[float, int, float]:
    """curl's own time, the bytes it moved and the CPU seconds it spent (user and system)."""
    command = ["curl", "-sS", "-f", "-w", "%{time_total} %{size_upload} %{size_download}", *arguments]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    stdout, stderr = proc.stdout.read(), proc.stderr.read()  # a few bytes each: no pipe fills up
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise subprocess.CalledProcessError(proc.returncode, command, stdout, stderr)
    out = stdout.decode().split()
    return float(out[0]), int(float(out[1])) or int(float(out[2])), usage.ru_utime + usage.ru_stime


def curl_put(manifest: Path, target: Any) -> tuple[float, float]:
    seconds, _, cpu = _curl(
        [
            *("-o", "/dev/null", "-X", "PUT", "-T", str(manifest), "-H", "Expect:"),
            *("-H", "x-amz-server-side-encryption: aws:kms", "-H", f"{KMS_HEADER}: {target.kms_key_arn}"),
            *("-H", "Content-Type: application/x-ndjson", target.upload_url),
        ]
    )
    return seconds, cpu


def curl_get(url: str, destination: Path) -> tuple[float, int, float]:
    return _curl(["-o", str(destination), url])


def _target(target: Any) -> dict[str, str]:
    return {"operation_id": target.operation_id, "upload_url": target.upload_url, "kms_key_arn": target.kms_key_arn}


def figure_transfer(
    report: Report, settings: Settings, work: Path, env: dict[str, str], log: Path, base_url: str
) -> None:
    """Figure 3: upload and download of a large manifest, ours (requests, in a child) against curl.

    Every transfer starts :data:`START_AFTER` seconds after the one before it ended (the previous
    upload's operation complete), ours and curl's alike: ours is a fresh Python process that needs
    2-4 s to import Airflow and build the hook, and the emulator received the same gigabyte 2-3x
    more slowly 4 s after its last work than at once (curl alone, best of 4: 0.89 s against 0.38 s),
    so starting curl at once and ours seconds later timed ours in the slower condition.

    Beside the throughput, each side's own CPU time per transfer (user and system, the child's
    timed window and curl's whole process), which does not depend on how busy the server is.

    Both sides download into ``/dev/null``; the same downloads into a file are context only
    (``download_to_file_vs_curl``). Writing 1.1 GB of fresh pages into a file cost the kernel more
    than the whole transfer, and by more each time: on 2026-12-07 (AMD EPYC, 4 rounds each, in turn)
    into a file curl took 1.25-2.87 s and ours 1.11-2.75 s, CPU-bound and nearly all system time;
    into ``/dev/null`` curl took 0.27-0.63 s and ours 0.28-0.46 s, with 0.12-0.21 s of CPU each.
    The ratio of two draws from that spread said little about the client: 0.53x of curl one day,
    1.13x another.
    """
    manifest = make_manifest(work / "transfer.jsonl", settings.manifest_bytes)
    size = manifest.stat().st_size
    env = {**env, "AIRFLOW_CONN_BATCHCODE_DEFAULT": batchcode_connection(base_url)}
    client = abs_client(base_url)
    up: dict[str, list[float]] = {"curl": [], "ours": []}
    up_cpu: dict[str, list[float]] = {"curl": [], "ours": []}
    operations: list[str] = []
    late: dict[str, list[float]] = {"upload": [], "download": []}
    for rep in range(settings.transfer_reps):
        for who in ("curl", "ours") if rep % 2 == 0 else ("ours", "curl"):
            target = client.create_operation(TOPIC)
            start_at = time.time() + START_AFTER
            if who == "curl":
                sleep_until(start_at)
                seconds, cpu = curl_put(manifest, target)
            else:
                arguments = {"manifest": str(manifest), "target": _target(target), "start_at": start_at}
                result = child("steps", "upload", arguments, env=env, log=log).result
                seconds, cpu = result["seconds"], result["cpu_seconds"]
                late["upload"].append(result["late_s"])
            up[who].append(seconds)
            up_cpu[who].append(cpu)
            wait_complete(client, target.operation_id)
            operations.append(target.operation_id)
    manifest.unlink()
    down, down_cpu, late["download"], downloaded = _downloads(
        client, operations[0], Path(os.devnull), settings, env, log
    )
    to_file, to_file_cpu, _, _ = _downloads(client, operations[0], work / "transfer-output.jsonl", settings, env, log)
    client.close()
    for direction, times, cpus, nbytes, goal in (
        ("upload", up, up_cpu, size, 0.8),
        ("download", down, down_cpu, downloaded, 0.8),
    ):
        ours, curl = nbytes / best(times["ours"]) / 1e6, nbytes / best(times["curl"]) / 1e6
        report.add(
            Figure(
                f"{direction}_throughput",
                ours,
                "MB/s",
                f"curl {fmt(curl)} MB/s, {fmt(nbytes / 1e6)} MB over loopback"
                f"{' into /dev/null' if direction == 'download' else ''}; each transfer starts "
                f"{fmt(START_AFTER)} s after the one before (ours at most {max(late[direction]) * 1000:.1f} ms late)",
                details={
                    "ours_s": times["ours"],
                    "curl_s": times["curl"],
                    "bytes": nbytes,
                    "ours_late_s": late[direction],
                },
            )
        )
        report.add(
            Figure(
                f"{direction}_vs_curl",
                ours / curl,
                "x",
                f"curl {fmt(curl)} MB/s",
                goal=f">= {goal}",
                met=ours / curl >= goal,
            )
        )
        gigabytes = nbytes / 1e9
        ours_cpu, curl_cpu = best(cpus["ours"]) / gigabytes, best(cpus["curl"]) / gigabytes
        report.add(
            Figure(
                f"{direction}_client_cpu_per_gb",
                ours_cpu,
                "s",
                f"context only: curl {fmt(curl_cpu)} s of CPU per GB (user and system, best of "
                f"{len(cpus['curl'])}); ours {fmt(ours_cpu / curl_cpu)}x of curl's",
                details={"ours_cpu_s": cpus["ours"], "curl_cpu_s": cpus["curl"]},
            )
        )

    ours_file, curl_file = best(to_file["ours"]), best(to_file["curl"])
    report.add(
        Figure(
            "download_to_file_vs_curl",
            curl_file / ours_file,
            "x",
            f"context only: the same downloads into a file, ours {fmt(ours_file)} s, curl {fmt(curl_file)} s "
            f"(best of {len(to_file['ours'])}); CPU ours {fmt(best(to_file_cpu['ours']))} s, curl "
            f"{fmt(best(to_file_cpu['curl']))} s, nearly all the kernel's writing of the file",
            details={
                "ours_s": to_file["ours"],
                "curl_s": to_file["curl"],
                "ours_cpu_s": to_file_cpu["ours"],
                "curl_cpu_s": to_file_cpu["curl"],
            },
        )
    )


def _downloads(
    client: Any, operation_id: str, sink: Path, settings: Settings, env: dict[str, str], log: Path
) -> tuple[dict[str, list[float]], dict[str, list[float]], list[float], int]:
    """Download one operation's output into ``sink`` ``transfer_reps`` times each, curl and ours in turn.

    :return: seconds and CPU seconds by side, how late ours started each time, and the bytes moved.
    """
    times: dict[str, list[float]] = {"curl": [], "ours": []}
    cpus: dict[str, list[float]] = {"curl": [], "ours": []}
    late: list[float] = []
    downloaded = 0
    for rep in range(settings.transfer_reps):
        for who in ("curl", "ours") if rep % 2 == 0 else ("ours", "curl"):
            start_at = time.time() + START_AFTER
            if who == "curl":
                url = str(client.get_operation(operation_id, TOPIC).response_url)
                sleep_until(start_at)
                seconds, downloaded, cpu = curl_get(url, sink)
            else:
                arguments = {
                    "operation_id": operation_id,
                    "destination": str(sink),
                    "atomic": False,
                    "start_at": start_at,
                }
                result = child("steps", "download", arguments, env=env, log=log).result
                seconds, cpu = result["seconds"], result["cpu_seconds"]
                late.append(result["late_s"])
            times[who].append(seconds)
            cpus[who].append(cpu)
            if sink != Path(os.devnull):
                sink.unlink(missing_ok=True)
    return times, cpus, late, downloaded


def figure_memory(
    report: Report, settings: Settings, work: Path, env: dict[str, str], log: Path, base_url: str
) -> None:
    """Figure 4: peak RSS of extract, upload, download and load, each in a fresh process, at two sizes.

    Extract and load are measured on both paths: the pipeline's default (the DB-API path, the
    ``peak_rss_extract`` and ``peak_rss_load`` figures) and the opt-in columnar path (``columnar=True``,
    the ``_columnar`` figures), whose pyarrow and ADBC imports cost a fixed 50-95 MB.
    """
    env = {**env, "AIRFLOW_CONN_BATCHCODE_DEFAULT": batchcode_connection(base_url)}
    client = abs_client(base_url)
    steps = ("extract", "extract_columnar", "upload", "download", "load", "load_columnar")
    peaks: dict[str, dict[int, float]] = {step: {} for step in steps}
    seconds: dict[str, dict[int, float]] = {step: {} for step in peaks}
    for count in settings.memory_sizes:
        db = seed_sqlite(work / ("warehouse.db" if count == settings.records else f"memory-{count}.db"), count)
        folder = work / f"memory-{count}"
        step_env = {
            **env,
            "AIRFLOW_CONN_BENCH_MEMORY": sqlite_connection(db),
            "AIRFLOW_CONN_BENCH_MEMORY_OUT": sqlite_connection(work / f"memory-{count}-out.db"),
        }
        runs: dict[str, Any] = {}
        for columnar in (False, True):
            runs["extract_columnar" if columnar else "extract"] = child(
                "steps",
                "extract",
                {
                    "conn_id": "bench_memory",
                    "sql": EXTRACT_SQL,
                    "folder": str(folder) + ("-columnar" if columnar else ""),
                    "chunk_records": count,
                    "columnar": columnar,
                },
                env=step_env,
                log=log,
            )
        summary = runs["extract"].result["summary"]
        (chunk,) = summary["chunks"]
        target = client.create_operation(TOPIC)
        runs["upload"] = child(
            "steps", "upload", {"manifest": chunk["manifest"], "target": _target(target)}, env=step_env, log=log
        )
        wait_complete(client, target.operation_id)
        output = f"{chunk['results']}output.jsonl"
        runs["download"] = child(
            "steps", "download", {"operation_id": target.operation_id, "destination": output}, env=step_env, log=log
        )
        loaded = {
            "output": output,
            "positions": chunk["positions"],
            "manifest": chunk["manifest"],
            "index": chunk["index"],
            "operation_id": target.operation_id,
        }
        for columnar in (False, True):
            step = "load_columnar" if columnar else "load"
            runs[step] = child(
                "steps",
                "load",
                {
                    "conn_id": "bench_memory_out",
                    "chunks": [loaded],
                    "rejects": summary["rejects"],
                    "run_id": "memory",
                    "table": f"coded_memory_{step}",
                    "columnar": columnar,
                },
                env=step_env,
                log=log,
            )
            if runs[step].result["rows"] != summary["rows"]:
                raise RuntimeError(f"memory run ({step}) loaded {runs[step].result['rows']} rows of {summary['rows']}")
        for step, run in runs.items():
            peaks[step][count] = run.peak_rss_mb
            seconds[step][count] = run.result["seconds"]
    client.close()
    small, large = settings.memory_sizes
    for step, by_size in peaks.items():
        growth = by_size[large] - by_size[small]
        report.add(
            Figure(
                f"peak_rss_{step}",
                by_size[large],
                "MB",
                f"{fmt(by_size[small])} MB at {small:,} records; {growth:+.1f} MB at {large:,}",
                goal="< 150 MB at both sizes, growth < 20 MB",
                met=max(by_size.values()) < 150 and growth < 20,
                details={"peak_mb": by_size, "seconds": seconds[step]},
            )
        )
