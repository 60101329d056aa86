"""``batchcode demo``: code a batch of realistic survey answers against the local ABS emulator.

Runs on a fresh machine with nothing else installed: starts the emulator on a free
loopback port, writes a JSONL manifest, and drives one batch operation through the
provider's client (create → upload → poll → download), then prints a summary.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from airflow_batchcode.emulator.config import EmulatorConfig
from airflow_batchcode.emulator.server import EmulatorServer
from airflow_batchcode.sample_data import survey_responses
from airflow_batchcode.services.abs import AbsClient, AbsSettings
from airflow_batchcode.services.base import OperationState


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The demo's command-line options."""
    parser.add_argument("--records", type=int, default=3000, help="survey answers to code (default 3000)")
    parser.add_argument("--topic", default="anzsco", choices=("anzsco", "osca"))
    parser.add_argument("--keep", action="store_true", help="keep the manifest and outputs (path is printed)")
    parser.add_argument("--output-dir", type=Path, help="where to write files (default: a temporary folder)")


@contextmanager
def _workdir(output_dir: Path | None, keep: bool) -> Iterator[Path]:
    if output_dir is not None:
        output_dir.mkdir(parents=True, exist_ok=True)
        yield output_dir
        return
    path = Path(tempfile.mkdtemp(prefix="batchcode-demo-"))
    try:
        yield path
    finally:
        if not keep:
            shutil.rmtree(path, ignore_errors=True)


def run(args: argparse.Namespace) -> int:
    """Run the demo; return a process exit code."""
    timings: dict[str, float] = {}
    with _workdir(args.output_dir, args.keep) as work, EmulatorServer(EmulatorConfig(processing_delay=1.0)) as emulator:
        print(f"ABS emulator on {emulator.base_url}; working folder {work}")
        mark = time.monotonic()
        manifest = work / "manifest.jsonl"
        with manifest.open("w", encoding="utf-8") as sink:
            for response in survey_responses(args.records):
                record = {
                    "recordId": response.respondent_id,
                    "occp_text": response.occp_text or "",
                    "tasks_text": response.tasks_text or "",
                }
                sink.write(json.dumps(record) + "\n")
        timings["write manifest"] = time.monotonic() - mark

        settings = AbsSettings(base_url=emulator.base_url, client_id="demo-client", client_secret="demo-secret")  # noqa: S106 (emulator demo client)
        with AbsClient(settings) as client:
            mark = time.monotonic()
            target = client.create_operation(args.topic)
            timings["create operation"] = time.monotonic() - mark
            mark = time.monotonic()
            sent = client.upload_manifest(target, manifest)
            timings["upload"] = time.monotonic() - mark
            mark = time.monotonic()
            while True:
                operation = client.get_operation(target.operation_id, args.topic)
                if operation.state.is_terminal():
                    break
                time.sleep(1.0)
            timings["wait"] = time.monotonic() - mark
            if operation.state is not OperationState.COMPLETE:
                print(f"Operation ended badly: {operation.describe()}")
                return 1
            mark = time.monotonic()
            output = work / "output.jsonl"
            with output.open("wb") as out, (work / "metadata.json").open("wb") as meta:
                client.download_results(target.operation_id, args.topic, out, meta)
            timings["download"] = time.monotonic() - mark

        _print_summary(output, args.records, sent, target.operation_id, timings, work if args.keep else None)
    return 0


def _print_summary(
    output: Path, records: int, sent: int, operation_id: str, timings: dict[str, float], kept: Path | None
) -> None:
    statuses: Counter[str] = Counter()
    lengths: Counter[int] = Counter()
    examples: dict[str, str] = {}
    with output.open(encoding="utf-8") as lines:
        for line in lines:
            row = json.loads(line)
            status = "error" if row.get("error") else row["codeStatus"]
            statuses[status] += 1
            text = row.get("input")
            shown = f"{text.get('occp_text')!r} / {text.get('tasks_text')!r}" if isinstance(text, dict) else repr(text)
            if status == "successful":
                lengths[len(row["result"]["codeCategory"])] += 1
                detail = f"{row['result']['codeCategory']} {row['result']['codeLabel']}"
            elif status == "unsuccessful":
                detail = "suggestions: " + ", ".join(s["codeCategory"] for s in row.get("suggestions", []))
            else:
                detail = row["error"].strip()
            examples.setdefault(status, f"{shown} -> {detail}")
    total = sum(statuses.values())
    print()
    print(f"Operation {operation_id}: {records} records in, {total} results out ({sent / 1e6:.2f} MB uploaded)")
    for status in ("successful", "unsuccessful", "error"):
        share = 100 * statuses[status] / max(total, 1)
        print(f"  {status:<13}{statuses[status]:>7}  ({share:5.1f} %)   e.g. {examples.get(status, '-')}")
    digits = ", ".join(f"{n}-digit: {count}" for n, count in sorted(lengths.items(), reverse=True))
    print(f"  code lengths of successful records: {digits}")
    print("  timings: " + ", ".join(f"{step} {seconds:.2f} s" for step, seconds in timings.items()))
    if kept is not None:
        print(f"  files kept in {kept}")
    if total != records:
        raise SystemExit(f"Expected {records} result lines, got {total}")
