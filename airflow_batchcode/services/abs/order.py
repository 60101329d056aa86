"""ABS output lines checked against the manifest lines they answer, and re-joined when out of order.

ABS's seed shows one output line per input line, each echoing the input's ``recordId`` and its
texts (``input``), but it never promises the output keeps the input's order. So every output
line is compared with the manifest line at the same place: while they agree the rows stream
through untouched. From the first line that disagrees on, the rest of the chunk is re-joined by
its (``recordId``, ``occp_text``, ``tasks_text``) key: a key that is unknown, used twice, or
shared by several waiting manifest lines refuses the load with :class:`OutputOrderError`, so a
code is never attached to the wrong source row.

Assumptions (not in the seed): the echo is the exact text the manifest sent; an output line
without an echo is checked by its ``recordId`` alone while the order holds, and cannot be
re-joined once it does not.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import msgspec

from airflow_batchcode.exceptions import OutputOrderError

Key = tuple[str | None, Any, Any]
"""What identifies a record to the service: (``recordId`` or ``None``, ``occp_text``, ``tasks_text``)."""


class _ManifestLine(msgspec.Struct):
    recordId: Any = None
    occp_text: Any = None
    tasks_text: Any = None


_decode_manifest = msgspec.json.Decoder(_ManifestLine).decode


def _record_id(value: Any) -> str | None:
    """``None`` for an absent id (the service answers ``null`` or ``""``), else the id as text."""
    return None if value is None or value == "" else str(value)


def manifest_key(line: bytes) -> Key:
    """The key of one manifest line (always a JSON object this package wrote)."""
    record = _decode_manifest(line)
    return _record_id(record.recordId), record.occp_text, record.tasks_text


def output_key(record_id: Any, occp: Any, tasks: Any, echoed: bool) -> Key | None:
    """The key an output line echoes, or ``None`` when it echoes no ``input`` object."""
    return (_record_id(record_id), occp, tasks) if echoed else None


def agrees(expected: Key, got: Key | None, record_id: Any) -> bool:
    """Whether an output line answers this manifest line: same key, or (no echo) the same ``recordId``."""
    if got is None:
        return _record_id(record_id) == expected[0]
    return got == expected


def rejoin(
    rows: Iterable[tuple[tuple[Any, ...], Key | None]],
    waiting: Iterable[tuple[bytes, tuple[int, str | None]]],
    *,
    operation_id: str | None,
    chunk: int,
    matched: int,
) -> Iterator[tuple[tuple[Any, ...], int, str | None]]:
    """Re-join the rest of a chunk by key; yield each row with its manifest line's position and note.

    :param rows: the remaining output rows, each with its key (``None`` when it echoes none).
    :param waiting: the remaining manifest lines, each with its (position, note) from the positions file.
    :param matched: how many lines before these were in order (for the messages).
    :raises OutputOrderError: when a row's key is missing, unknown, ambiguous or used twice,
        or when manifest lines are left unanswered.
    """
    where = f"Output of ABS operation {operation_id} (chunk {chunk})"
    slots: dict[Key, list[tuple[int, str | None]]] = {}
    for line, place in waiting:
        slots.setdefault(manifest_key(line), []).append(place)
    ambiguous = sum(1 for places in slots.values() if len(places) > 1)
    if ambiguous:
        raise OutputOrderError(
            f"{where} is not in input order after line {matched}, and {ambiguous} (recordId, input) "
            "keys of the rest name several source rows: refusing to load results that cannot be "
            "attached to their rows with certainty (give the source a unique record id)"
        )
    for count, (row, key) in enumerate(rows, start=matched + 1):
        if key is None:
            raise OutputOrderError(
                f"{where} is not in input order and its line {count} echoes no input: cannot re-join it to its row"
            )
        places = slots.pop(key, None)
        if places is None:
            raise OutputOrderError(
                f"{where} line {count} answers no waiting manifest line (recordId {key[0]!r}): "
                "refusing to load misaligned results"
            )
        position, note = places[0]
        yield row, position, note
    if slots:
        raise OutputOrderError(
            f"{where} leaves {len(slots)} manifest lines unanswered: refusing to load misaligned results"
        )
