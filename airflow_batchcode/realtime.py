"""Real-time coding of a small remainder: a chunk's manifest through the service's synchronous endpoint.

When what a run must send is at most ``realtime_max_records`` records and the service codes in
real time (its catalogue spec's ``realtime_batch``: ABS takes up to 300 records a call at
``POST /v1/topics/{topic}[/models/{model}]/code``), the pipeline codes the chunks here instead
of creating remote operations. The results folder gets the same three files a download leaves
(the service's output lines, each with the ``input`` it answers, ``metadata.json`` naming the
model, and ``operation.json`` marked ``source = "realtime"``), so the load reads them with the
service's own normaliser and the rows are the rows a batch operation would give.

One bad record fails a whole real-time call; the input rules have already kept such records
out (they are rejected before upload, as for a batch).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from typing import Any

import msgspec

from airflow_batchcode.chunks import Chunk, ChunkResult
from airflow_batchcode.exceptions import UnexpectedResponseError
from airflow_batchcode.staging import DEFAULT_OUTPUT, METADATA_FILE, OPERATION_FILE, Provenance
from airflow_batchcode.storage import as_storage_path, open_staged, write_atomically

CodeCall = Callable[[list[dict[str, Any]]], list[dict[str, Any]]]
"""One real-time call: records (``{"recordId"?, "occp_text", "tasks_text"}``) → one response object each, in order."""

_decode = msgspec.json.Decoder(dict[str, Any]).decode
_encode = msgspec.json.Encoder().encode


def code_chunk_in_realtime(
    chunk: Chunk, code: CodeCall, *, per_call: int, service: str, topic: str, model: str | None
) -> ChunkResult:
    """Code ``chunk``'s manifest ``per_call`` records at a time; leave its results folder as a download would."""
    folder = as_storage_path(chunk.results)
    started = time.monotonic()
    calls = 0
    size = 0

    def write_output(sink: Any) -> None:
        nonlocal calls, size
        with open_staged(chunk.manifest, "manifest") as lines:
            while batch := list(itertools.islice(lines, per_call)):
                records = [_decode(line) for line in batch]
                answers = code(records)
                calls += 1
                if len(answers) != len(records):
                    raise UnexpectedResponseError(
                        f"Real-time coding of chunk {chunk.index} answered {len(answers)} records for {len(records)}"
                    )
                for record, answer in zip(records, answers, strict=True):
                    given = {"occp_text": record.get("occp_text"), "tasks_text": record.get("tasks_text")}
                    line = _encode({**answer, "input": answer.get("input", given)}) + b"\n"
                    sink.write(line)
                    size += len(line)

    write_atomically(folder / DEFAULT_OUTPUT, write_output)
    metadata = _encode({"model": {"modelId": model}, "source": "realtime", "calls": calls})
    write_atomically(folder / METADATA_FILE, lambda sink: sink.write(metadata))
    provenance = Provenance(
        service=service,
        operation_id=f"realtime-{chunk.digest[:16] or chunk.index}",
        topic=topic,
        model=model,
        output=DEFAULT_OUTPUT,
        output_bytes=size,
        downloaded_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        source="realtime",
    )
    write_atomically(folder / OPERATION_FILE, lambda sink: sink.write(provenance.to_json()))
    print(
        f"Coded chunk {chunk.index} ({chunk.records} records) in real time: {calls} call(s), "
        f"{time.monotonic() - started:.1f} s"
    )
    return ChunkResult(str(folder), provenance, len(metadata))
