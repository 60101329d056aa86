"""The manifest's JSON lines, built a batch of records at a time.

``{"recordId": ..., "occp_text": ..., "tasks_text": ...}`` per record, byte for byte what
``msgspec.json.encode`` gives each record: the texts interleaved with the fixed JSON between them,
and only the texts that need escaping go through the encoder (measured reason in
:func:`manifest_lines`). :mod:`airflow_batchcode.manifests` decides which columns are known plain.
"""

from __future__ import annotations

import bisect
import itertools
import re

import msgspec

_encode = msgspec.json.Encoder().encode
_ESCAPED = re.compile(r"[^\x20\x21\x23-\x5b\x5d-\x7e]")
"""A character JSON escapes (or that the fast path leaves to the encoder): outside printable ASCII, ``"``, ``\\``."""
_WITH_ID = ('{"recordId":"', None, '","occp_text":"', None, '","tasks_text":"', None, '"}\n')
_WITHOUT_ID = ('{"occp_text":"', None, '","tasks_text":"', None, '"}\n')


def manifest_lines(
    ids: list[str] | None, occp: list[str], tasks: list[str], plain: tuple[bool, bool, bool] = (False, False, False)
) -> bytes:
    """JSONL manifest lines ``{"recordId", "occp_text", "tasks_text"}`` for columns of texts, built a batch at once.

    Byte for byte what ``msgspec.json.encode`` gives each record: the lines are the texts
    interleaved with the fixed JSON between them, and only the few texts that need escaping go
    through the encoder. ``plain`` tells which columns are known to need none (printable ASCII
    without quotes or backslashes). Measured on 10,000 sample answers (2026-12-07, best of 40):
    1.0-1.2 ms against 1.9-2.2 ms for one ``encode`` of a dict per record when the texts are
    printable ASCII, as most are; 3.0-3.2 ms against 2.2-2.4 ms on the messy sample, where 1 % of
    the texts need the encoder and finding them (a regular expression over 360 KB of text that
    is not all ASCII) is most of the cost.
    """
    parts: list[str | None]
    if ids is None:
        parts = list(_WITHOUT_ID) * len(occp)
        parts[1::5] = occp if plain[1] else _json_strings(occp)
        parts[3::5] = tasks if plain[2] else _json_strings(tasks)
    else:
        parts = list(_WITH_ID) * len(occp)
        parts[1::7] = ids if plain[0] else _json_strings(ids)
        parts[3::7] = occp if plain[1] else _json_strings(occp)
        parts[5::7] = tasks if plain[2] else _json_strings(tasks)
    return "".join(parts).encode()  # type: ignore[arg-type]  # every None is filled in above


def needs_no_escaping(joined: str) -> bool:
    """True when text needs no JSON escaping: printable ASCII without quotes or backslashes."""
    return joined.isascii() and joined.isprintable() and '"' not in joined and "\\" not in joined


def may_need_escaping(joined: str, ascii_only: bool) -> bool:
    """Whether texts may need JSON escaping: quotes or backslashes, and (unless the rules keep
    them to printable ASCII) control characters."""
    if '"' in joined or "\\" in joined:
        return True
    return not ascii_only and not joined.isprintable()


def _json_strings(texts: list[str]) -> list[str]:
    """``texts`` as they read between the quotes of a JSON string (escaped only where they need it)."""
    joined = "".join(texts)
    if needs_no_escaping(joined):
        return texts
    ends = list(itertools.accumulate(map(len, texts)))
    escape = {bisect.bisect_right(ends, match.start()) for match in _ESCAPED.finditer(joined)}
    texts = list(texts)
    for i in escape:
        texts[i] = _encode(texts[i])[1:-1].decode()
    return texts
