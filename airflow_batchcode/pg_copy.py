"""PostgreSQL's ``COPY ... FROM STDIN`` for the output table: the driver calls and the text format.

:func:`copy_blocks` sends blocks of bytes through psycopg 3 or psycopg2; :func:`row_copier`
streams rows, through psycopg 3's ``write_row`` (in C) or, for psycopg2, as blocks of COPY's
text format built here a column at a time (:func:`copy_block`, measured reason in its docstring).
:mod:`airflow_batchcode.warehouse` names the table and its columns; nothing here knows them.
"""

from __future__ import annotations

import io
import itertools
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from typing import Any

from airflow_batchcode.exceptions import ConfigurationError

TableRow = tuple[Any, ...]
"""A row as ``COPY`` receives it: one value per column of the statement."""
RowLoader = Callable[[Iterable[TableRow]], int]
"""Writes rows and returns how many it wrote."""


def copy_blocks(conn: Any, cursor: Any, statement: str, blocks: Iterable[bytes]) -> int:
    """Run a ``COPY ... FROM STDIN`` with ``blocks`` as its data (psycopg 3 or psycopg2); return the rows copied."""
    module = type(conn).__module__
    if module.startswith("psycopg2"):
        cursor.copy_expert(statement, BlockStream(blocks), size=1 << 20)
    elif module.startswith("psycopg"):
        with cursor.copy(statement) as copy:
            for block in blocks:
                copy.write(block)
    else:
        raise ConfigurationError(f"COPY needs a psycopg connection, not {module}")
    return int(cursor.rowcount)


def row_copier(conn: Any, cursor: Any, statement: str, *, batch_rows: int) -> RowLoader | None:
    """A loader that streams rows through ``statement`` (a text-format ``COPY ... FROM STDIN``).

    psycopg 3 writes each row itself; psycopg2 gets blocks of ``batch_rows`` rows in COPY's text
    format. ``None`` for other drivers (the caller falls back to ``executemany``).
    """
    module = type(conn).__module__
    if module.startswith("psycopg2"):

        def load_psycopg2(rows: Iterable[TableRow]) -> int:
            return copy_blocks(conn, cursor, statement, text_blocks(rows, batch_rows))

        return load_psycopg2
    if module.startswith("psycopg"):

        def load_psycopg(rows: Iterable[TableRow]) -> int:
            count = 0
            with cursor.copy(statement) as copy:
                write = copy.write_row
                for count, row in enumerate(rows, 1):  # noqa: B007
                    write(row)
            return count

        return load_psycopg
    return None


class BlockStream(io.RawIOBase):
    """A readable file over blocks of bytes, for psycopg2's ``copy_expert``."""

    def __init__(self, blocks: Iterable[bytes]) -> None:
        self._blocks: Iterator[bytes] = iter(blocks)
        self._buffer = bytearray()

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        while size < 0 or len(self._buffer) < size:
            block = next(self._blocks, None)
            if block is None:
                break
            self._buffer += block
        if size < 0 or size >= len(self._buffer):
            out = bytes(self._buffer)
            self._buffer.clear()
            return out
        out = bytes(self._buffer[:size])
        del self._buffer[:size]
        return out


def text_blocks(rows: Iterable[TableRow], batch_rows: int) -> Iterator[bytes]:
    """``rows`` in COPY's text format (``\\N`` for NULL), ``batch_rows`` a block."""
    source = iter(rows)
    while batch := list(itertools.islice(source, batch_rows)):
        block = copy_block(batch)
        if block is None:
            block = "".join("\t".join(map(copy_text, row)) + "\n" for row in batch)
        yield block.encode()


_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def copy_text(value: Any) -> str:
    """One value in COPY's text format: ``\\N`` for NULL, backslash, tab and line breaks escaped."""
    if value is None:
        return "\\N"
    if isinstance(value, datetime):
        return value.isoformat(sep=" ")
    return str(value).translate(_COPY_ESCAPES)


_NULL_TEXT = "\\N"
_CONSTANT_TYPES = (str, type(None), datetime)
_NUMBER_TYPES = {int, float}


def copy_block(rows: list[TableRow]) -> str | None:
    """``rows`` in COPY's text format, built a column at a time (as :func:`copy_text` would, value by value).

    A join of :func:`copy_text` per row costs 10-12 µs for our 22 columns; here each column
    is checked and converted whole with built-ins, columns with one value throughout (topic,
    run, load time...) are written once, and a row is one ``str.join``: about 4 µs. (psycopg
    3's own ``write_row``, in C, is faster still: that path keeps it.) ``None`` when a column
    holds a type other than text, numbers, ``NULL`` or one repeated ``datetime``: those rows
    are formatted value by value.
    """
    if len(set(map(len, rows))) != 1:
        return None
    columns: list[list[str]] = []
    constant: str | None = None  # a run of columns with one value each, joined
    for values in zip(*rows, strict=True):
        first = values[0]
        if type(first) in _CONSTANT_TYPES and values.count(first) == len(values):
            text = copy_text(first)
            constant = text if constant is None else f"{constant}\t{text}"
            continue
        if constant is not None:
            columns.append([constant] * len(rows))
            constant = None
        texts = _copy_column(values)
        if texts is None:
            return None
        columns.append(texts)
    if constant is not None:
        columns.append([constant] * len(rows))
    return "\n".join(map("\t".join, zip(*columns, strict=True))) + "\n"


def _copy_column(values: tuple[Any, ...]) -> list[str] | None:
    """One column of texts and NULLs, or of numbers and NULLs, in COPY's text format (else ``None``)."""
    nulls = values.count(None)
    texts = [_NULL_TEXT if value is None else value for value in values] if nulls else list(values)
    try:
        joined = "".join(texts)
    except TypeError:
        kinds = set(map(type, values)) - {type(None)}
        if not kinds <= _NUMBER_TYPES:
            return None
        return [_NULL_TEXT if value is None else str(value) for value in values] if nulls else list(map(str, values))
    # every NULL brings one backslash; any other, or a tab or line break, needs escaping
    if joined.count("\\") != nulls or "\t" in joined or "\n" in joined or "\r" in joined:
        return [_NULL_TEXT if value is None else value.translate(_COPY_ESCAPES) for value in values]
    return texts
