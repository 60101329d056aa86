"""Shape checks every service client applies to what it sends and what comes back.

Identifiers that go into URL paths must be plain (letters, digits, ``.``, ``_``, ``-``) so no input
can reshape a URL; JSON answers are checked for the shape a contract promises before any field is
read, with messages that say what came instead.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import IO, Any
from urllib.parse import quote

from airflow_batchcode.exceptions import ConfigurationError, UnexpectedResponseError
from airflow_batchcode.services.base import ManifestSource

SAFE_ID = re.compile(r"^[A-Za-z0-9._-]{1,128}$")
"""A plain identifier: safe in a URL path as it is."""


def is_plain_id(value: Any) -> bool:
    """True for a string matching :data:`SAFE_ID`."""
    return isinstance(value, str) and SAFE_ID.match(value) is not None


def plain_id(value: Any, what: str, error: type[Exception] = ConfigurationError) -> str:
    """``value`` checked to be a plain identifier; ``error`` names ``what`` it was meant to be."""
    if not is_plain_id(value):
        shown = value[:80] if isinstance(value, str) else type(value).__name__
        raise error(f"Invalid {what} {shown!r}: expected letters, digits, '.', '_' or '-'")
    return str(value)


def segment(value: str, what: str) -> str:
    """A path segment checked to be a plain identifier, so no input can reshape the URL."""
    return quote(plain_id(value, what), safe="")


def json_kind(value: Any) -> str:
    """The JSON name of ``value``'s type, for messages about off-contract responses."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return "a list" if isinstance(value, list) else "an object"


def json_object(raw: bytes) -> dict[str, Any] | None:
    """The JSON object ``raw`` holds, or ``None`` when it is not JSON or holds another kind of value
    (a manifest or output line; the caller says what it expected)."""
    try:
        value = json.loads(raw)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def require_object(body: Any, what: str) -> dict[str, Any]:
    """``body`` when it is a JSON object, else an :class:`UnexpectedResponseError` naming what it is."""
    if not isinstance(body, dict):
        raise UnexpectedResponseError(f"{what}: response is {json_kind(body)}, not a JSON object")
    return body


def require_list_of_objects(body: Any, what: str) -> list[dict[str, Any]]:
    """``body`` when it is a JSON list of objects."""
    if not isinstance(body, list):
        raise UnexpectedResponseError(f"{what}: response is {json_kind(body)}, not a list")
    for index, item in enumerate(body):
        if not isinstance(item, dict):
            raise UnexpectedResponseError(f"{what}: entry {index} is {json_kind(item)}, not an object")
    return body


def require_strings(body: Mapping[str, Any], what: str, *keys: str) -> None:
    """Every ``key`` must be a non-empty string; the error names each one that is not, and why."""
    problems = []
    for key in keys:
        value = body.get(key)
        if key not in body or value is None or value == "":
            problems.append(f"{key} is missing")
        elif not isinstance(value, str):
            problems.append(f"{key} is {json_kind(value)}, not a string")
    if problems:
        raise UnexpectedResponseError(f"{what}: {'; '.join(problems)}")


def numbers(body: Mapping[str, Any], keys: Iterable[str]) -> dict[str, Any]:
    """The ``keys`` of ``body`` whose values are numbers (booleans are not), e.g. a job's counters."""
    return {
        key: body[key] for key in keys if isinstance(body.get(key), int | float) and not isinstance(body.get(key), bool)
    }


@contextlib.contextmanager
def opened(manifest: ManifestSource) -> Iterator[IO[bytes]]:
    """A manifest as an open binary file: a path is opened (and closed after), a file is used as it is."""
    if isinstance(manifest, Path):
        with manifest.open("rb") as handle:
            yield handle
    else:
        yield manifest
