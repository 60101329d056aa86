"""A reviewer's code: checked for its form, labelled from the row's suggestions or the shipped lists.

A code is 1 to 6 digits (major group to occupation). The package ships no full classification:
``emulator/data/<topic>.csv`` holds samples of ANZSCO and OSCA (the emulator's vocabulary), so a
code missing from them may well be real (ANZSCO's 121311 Apiarist is not in the sample) and is
accepted. Its label is the one a suggestion on the row gave it, else the sample's, else none.
"""

from __future__ import annotations

import csv
import functools
import io
import json
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


def check_code(code: str) -> str | None:
    """Why ``code`` is not a code (a sentence), or ``None`` when it is one."""
    return None if CODE_PATTERN.match(code) else "a code is 1 to 6 digits"


def label_of(topic: str, code: str, suggestions: str | None = None) -> str | None:
    """The label of ``code``: from the row's ``suggestions`` (its JSON text) when one names the code,
    else from ``topic``'s sample list, else ``None``."""
    try:
        offered = json.loads(suggestions) if suggestions else []
    except ValueError:
        offered = []
    for suggestion in offered if isinstance(offered, list) else []:
        if isinstance(suggestion, dict) and str(suggestion.get("codeCategory")) == code and suggestion.get("codeLabel"):
            return str(suggestion["codeLabel"])
    return (topic_codes(topic) or {}).get(code)
