"""Each emulator setting declares its ``batchcode emulator`` flag beside its default.

A field made with :func:`setting` carries a :class:`Flag` (its help line, its group of the
``--help`` output, and how the flag's text becomes a value); :func:`flagged` lists them in
declaration order, and the CLI adds one ``--the-name`` per field. A new setting is then one line
in :class:`~airflow_batchcode.emulator.config.EmulatorConfig` or
:class:`~airflow_batchcode.emulator.faults.FaultSettings`, with no second list to keep in step.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import Field, dataclass, field, fields
from typing import Any

AUTH = "auth and limits"
STORAGE = "operations and storage"
API_KEYS = "API-key services"
FAULTS = "fault injection"
GROUPS = (AUTH, STORAGE, API_KEYS, FAULTS)
"""The groups of ``batchcode emulator --help``, in the order they are shown."""

_SIZE = re.compile(r"^\s*(\d+)\s*([KMGT]i?B?|B)?\s*$", re.IGNORECASE)
_POWERS = {"K": 1, "M": 2, "G": 3, "T": 4}


def parse_size(text: str) -> int:
    """``5368709120``, ``5GiB``, ``500MB`` or ``100k`` → bytes (``KiB`` and the like are powers of 1024)."""
    match = _SIZE.match(text)
    if match is None:
        raise ValueError(f"not a size: {text!r}")
    number, unit = int(match.group(1)), (match.group(2) or "B").upper()
    if unit[0] == "B":
        return number
    return number * (1024 if "I" in unit else 1000) ** _POWERS[unit[0]]


@dataclass(frozen=True)
class Flag:
    """How a setting appears on the command line.

    :param group: one of :data:`GROUPS`.
    :param help: the flag's help line (its default is shown beside it unless ``None``).
    :param parse: text → value; ``None`` = the type of the default (``str`` for a ``None`` default).
    :param metavar: the placeholder in ``--help``; ``None`` = argparse's own.
    """

    group: str
    help: str
    parse: Callable[[str], Any] | None = None
    metavar: str | None = None

    def __post_init__(self) -> None:
        if self.group not in GROUPS:
            raise ValueError(f"unknown flag group {self.group!r}; expected one of {GROUPS}")


def setting(
    default: Any, help: str, *, group: str, parse: Callable[[str], Any] | None = None, metavar: str | None = None
) -> Any:
    """A dataclass field with ``default`` and the flag that sets it."""
    return field(default=default, metadata={"flag": Flag(group, help, parse, metavar)})


def flagged(cls: type) -> Iterator[tuple[Field[Any], Flag]]:
    """The fields of dataclass ``cls`` that have a flag, with it, in declaration order."""
    for item in fields(cls):
        flag = item.metadata.get("flag")
        if flag is not None:
            yield item, flag
