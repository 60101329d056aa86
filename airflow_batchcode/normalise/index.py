"""The two passes a normaliser makes over an output file whose items come in any order.

Pass one notes where each manifest line's item starts (:class:`LineIndex`, 8 bytes a line, never
the content); pass two reads the items back in manifest line order (:meth:`LineIndex.in_order`).
"""

from __future__ import annotations

from array import array
from collections.abc import Callable, Iterator
from typing import IO, TypeVar

T = TypeVar("T")

NONE = -1
"""The offset of a line without an item."""


class LineIndex:
    """Where each of ``lines`` manifest lines' item starts in an output file.

    :param lines: the manifest's line count.
    """

    def __init__(self, lines: int) -> None:
        self.lines = lines
        self.offsets = array("q", [NONE]) * lines

    def __contains__(self, line: int) -> bool:
        return self.offsets[line] != NONE

    def __setitem__(self, line: int, offset: int) -> None:
        self.offsets[line] = offset

    def in_order(self, read: Callable[[int, int], T], absent: Callable[[int], T]) -> Iterator[T]:
        """Pass two: ``read(line, offset)`` for each line with an item, ``absent(line)`` for each without,
        in manifest line order."""
        for line in range(self.lines):
            offset = self.offsets[line]
            yield absent(line) if offset == NONE else read(line, offset)


def nonblank_lines(output: IO[bytes]) -> Iterator[tuple[int, int, bytes]]:
    """Pass one over a JSONL file, from its start: ``(offset, number, raw)`` of each line that is not
    blank, ``number`` counting every line from 1."""
    output.seek(0)
    offset = 0
    for number, raw in enumerate(iter(output.readline, b""), 1):
        if raw.strip():
            yield offset, number, raw
        offset += len(raw)


def line_at(output: IO[bytes], offset: int) -> bytes:
    """The line of ``output`` starting at ``offset``."""
    output.seek(offset)
    return output.readline()
