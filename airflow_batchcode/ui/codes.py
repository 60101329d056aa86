"""The codes a topic knows, for checking a reviewer's code: the classification lists shipped in the package.

``emulator/data/<topic>.csv`` holds each topic's codes and labels (the ABS topics ``anzsco``
and ``osca``). A topic without a list accepts any 1 to 6 digit code: there is nothing to check
it against, and refusing every decision would make the queue useless.
"""

from __future__ import annotations

import csv
import functools
import io
import re
from importlib import resources

CODE_PATTERN = re.compile(r"^[0-9]{1,6}$")


@functools.cache
def topic_codes(topic: str) -> dict[str, str] | None:
    """code → label of ``topic``, or ``None`` when the package ships no list for it."""
    if not re.fullmatch(r"[a-z0-9_]+", topic or ""):
        return None
    source = resources.files("airflow_batchcode.emulator").joinpath("data", f"{topic}.csv")
    if not source.is_file():
        return None
    reader = csv.DictReader(io.StringIO(source.read_text(encoding="utf-8")))
    return {row["code"].strip(): row["label"].strip() for row in reader}


def check_code(topic: str, code: str) -> str | None:
    """Why ``code`` is not acceptable for ``topic`` (a sentence), or ``None`` when it is."""
    if not CODE_PATTERN.match(code):
        return "a code is 1 to 6 digits"
    known = topic_codes(topic)
    if known is not None and code not in known:
        return f"{code} is not a {topic} code"
    return None


def label_of(topic: str, code: str) -> str | None:
    """The label of ``code`` in ``topic``'s list, when there is one."""
    return (topic_codes(topic) or {}).get(code)
