"""The ABS input rules for one record, and the optional sanitising that makes a record pass them.

A record the service would reject is caught here, before upload, with the reason; with
``sanitize=True`` it is repaired instead (whitespace folded, text transliterated to ASCII,
truncated) and the repair is reported.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from dataclasses import dataclass
from itertools import accumulate
from operator import add
from typing import Any

from text_unidecode import unidecode

MAX_CHARS = 300
"""Characters allowed across ``occp_text`` and ``tasks_text``."""

_WHITESPACE = re.compile(r"\s+")
_NOT_PRINTABLE = re.compile(r"[^\x20-\x7e]")
_PRINTABLE_ASCII = bytes(range(0x20, 0x7F))


@dataclass(frozen=True)
class Checked:
    """A record's texts after the rules: what to send, or why not; and what sanitising changed."""

    occp_text: str
    tasks_text: str
    error: str | None = None
    note: str | None = None


def as_text(value: object) -> str:
    """A database value as text: ``NULL`` becomes ``""``, bytes are decoded (bad bytes shown as U+FFFD)."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).decode("utf-8", "replace")
    return str(value)


def check(occp_text: str, tasks_text: str) -> Checked:
    """Apply the service's rules; never changes the texts."""
    if not occp_text.strip() and not tasks_text.strip():
        return Checked(occp_text, tasks_text, error="both occp_text and tasks_text are empty (or only whitespace)")
    for name, text in (("occp_text", occp_text), ("tasks_text", tasks_text)):
        if not (text.isascii() and text.isprintable()):
            bad = _NOT_PRINTABLE.search(text)
            where = f" {bad.group()!r} at character {bad.start() + 1}" if bad else ""
            return Checked(occp_text, tasks_text, error=f"{name} has a character outside printable ASCII{where}")
    total = len(occp_text) + len(tasks_text)
    if total > MAX_CHARS:
        return Checked(
            occp_text, tasks_text, error=f"texts are {total} characters; the service takes at most {MAX_CHARS}"
        )
    return Checked(occp_text, tasks_text)


def suspects(occp_texts: list[str], tasks_texts: list[str], joined: tuple[str, str] | None = None) -> list[int]:
    """Indexes of the records in a batch that :func:`check` rejects, found a column at a time.

    The batch form of the rules, for extracts of millions of records: built-in string methods
    mapped over whole columns, so only the few suspects go through :func:`check` one by one.
    ``joined`` may pass each column's concatenation when the caller has it. It must list every
    record :func:`check` rejects (a superset would do): change both together.
    """
    occp_joined, tasks_joined = joined or ("".join(occp_texts), "".join(tasks_texts))
    occp_lengths = list(map(len, occp_texts))
    tasks_lengths = list(map(len, tasks_texts))
    totals = list(map(add, occp_lengths, tasks_lengths))
    found: set[int] = set()
    blank: set[int] = set()
    _mark(occp_lengths, 0, blank)
    _mark(list(map(str.isspace, occp_texts)), True, blank)
    found.update(i for i in blank if not tasks_texts[i].strip())
    if max(totals, default=0) > MAX_CHARS:
        _mark(list(map(MAX_CHARS.__lt__, totals)), True, found)
    for texts, together, lengths in (
        (occp_texts, occp_joined, occp_lengths),
        (tasks_texts, tasks_joined, tasks_lengths),
    ):
        if not together.isascii():
            _mark(list(map(str.isascii, texts)), False, found)
        _mark_controls(together, lengths, found)
    return sorted(found)


def _mark_controls(together: str, lengths: list[int], into: set[int]) -> None:
    """Add the index of every text holding an ASCII control character (``together`` is the texts joined).

    ``str.isprintable`` looks every character up in the Unicode tables (~3 ns each); as bytes,
    one ``translate`` finds whether there is any control character at all, and ``find`` (a
    ``memchr``) where, jumping to the next text after each hit.
    """
    data = together.encode("ascii", "replace")  # one byte per character; anything not ASCII reads "?"
    controls = data.translate(None, _PRINTABLE_ASCII)
    if not controls:
        return
    ends = list(accumulate(lengths))
    for code in set(controls):
        at = data.find(code)
        while at >= 0:
            index = bisect_right(ends, at)
            into.add(index)
            at = data.find(code, ends[index])


def _mark(values: list[Any], target: object, into: set[int]) -> None:
    """Add the index of every item of ``values`` equal to ``target`` (a C-speed scan per hit)."""
    index = -1
    try:
        while True:
            index = values.index(target, index + 1)
            into.add(index)
    except ValueError:
        return


def sanitize(occp_text: str, tasks_text: str) -> Checked:
    """Repair what can be repaired, then :func:`check`; ``note`` lists what changed."""
    first = check(occp_text, tasks_text)
    if first.error is None:
        return first
    changes: list[str] = []
    occp, tasks = _fold(occp_text), _fold(tasks_text)
    if (occp, tasks) != (occp_text, tasks_text):
        changes.append("folded whitespace")
    if not (occp.isascii() and tasks.isascii()) or _NOT_PRINTABLE.search(occp + tasks):
        occp, tasks = _ascii(occp), _ascii(tasks)
        changes.append("transliterated to ASCII")
    if len(occp) + len(tasks) > MAX_CHARS:
        before = len(occp) + len(tasks)
        occp = occp[:MAX_CHARS]
        tasks = tasks[: MAX_CHARS - len(occp)].rstrip()
        changes.append(f"truncated from {before} to {len(occp) + len(tasks)} characters")
    result = check(occp, tasks)
    note = "sanitized: " + ", ".join(changes) if changes else None
    return Checked(result.occp_text, result.tasks_text, error=result.error, note=note)


def _fold(text: str) -> str:
    return _WHITESPACE.sub(" ", text).strip()


def _ascii(text: str) -> str:
    return _fold(_NOT_PRINTABLE.sub("", unidecode(text)))
