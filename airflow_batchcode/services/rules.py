"""Which input rules apply to which service: ABS's strict ones, or UTF-8 text within a service's limits.

ABS takes printable ASCII only, at most 300 characters across both fields (its seed); those rules
live in :mod:`airflow_batchcode.records`. super.ai, Refinery and Gravity take UTF-8 text, so a
non-ASCII answer is sent as it is; each has only a size limit (below) and the shared rule that a
record with nothing to code is not sent. Each service's spec (:mod:`airflow_batchcode.services.catalogue`)
names its rules or its UTF-8 limit; :func:`input_rules` asks it.

Limits of the UTF-8 services (see the README's per-service table for their sources):

=========  =====================================  ==========================================
service    limit per record (texts, UTF-8 bytes)   source
=========  =====================================  ==========================================
superai    4 MB                                    inline inputs ≤ 4 MB (public docs)
refinery   1 MB                                    assumption: the seed names no limit
gravity    1 MB                                    assumption: the seed names no limit
=========  =====================================  ==========================================
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

from airflow_batchcode import records
from airflow_batchcode.exceptions import ConfigurationError
from airflow_batchcode.records import Checked

MB = 1024 * 1024

Rule = Callable[[str, str], Checked]
Suspects = Callable[[list[str], list[str], "tuple[str, str] | None"], list[int]]


@dataclass(frozen=True)
class InputRules:
    """The rules records must pass before they are sent to one service.

    :param name: what the rules are called in messages (``"ABS"``, ``"UTF-8 text up to 4 MB"``).
    :param check: a record's texts → :class:`~airflow_batchcode.records.Checked` (never changes them).
    :param sanitize: a record's texts → repaired texts that pass ``check``, or the reason they cannot.
    :param suspects: a batch's two text columns → indexes of every record ``check`` may reject.
    """

    name: str
    check: Rule
    sanitize: Rule
    suspects: Suspects

    def __post_init__(self) -> None:
        if not self.name:
            raise ConfigurationError("input rules need a name")


ABS_RULES = InputRules("ABS (printable ASCII, 300 characters)", records.check, records.sanitize, records.suspects)


def _utf8_check(limit: int, occp_text: str, tasks_text: str) -> Checked:
    """Not both empty, encodable as UTF-8, at most ``limit`` bytes across both texts."""
    if not occp_text.strip() and not tasks_text.strip():
        return Checked(occp_text, tasks_text, error="both occp_text and tasks_text are empty (or only whitespace)")
    try:
        size = len(occp_text.encode()) + len(tasks_text.encode())
    except UnicodeEncodeError as exc:
        error = f"texts are not valid Unicode (a lone surrogate at {exc.start + 1})"
        return Checked(occp_text, tasks_text, error=error)
    if size > limit:
        error = f"texts are {size} bytes of UTF-8; the service takes at most {limit}"
        return Checked(occp_text, tasks_text, error=error)
    return Checked(occp_text, tasks_text)


def _utf8_sanitize(limit: int, occp_text: str, tasks_text: str) -> Checked:
    """Drop lone surrogates and cut the texts to ``limit`` bytes (at a character boundary); note what changed."""
    first = _utf8_check(limit, occp_text, tasks_text)
    if first.error is None:
        return first
    changes = []
    occp = occp_text.encode("utf-8", "ignore").decode()
    tasks = tasks_text.encode("utf-8", "ignore").decode()
    if (occp, tasks) != (occp_text, tasks_text):
        changes.append("dropped invalid characters")
    size = len(occp.encode()) + len(tasks.encode())
    if size > limit:
        occp = occp.encode()[:limit].decode("utf-8", "ignore")
        tasks = tasks.encode()[: limit - len(occp.encode())].decode("utf-8", "ignore")
        changes.append(f"truncated from {size} to {len(occp.encode()) + len(tasks.encode())} bytes")
    result = _utf8_check(limit, occp, tasks)
    note = "sanitized: " + ", ".join(changes) if changes else None
    return Checked(result.occp_text, result.tasks_text, error=result.error, note=note)


def _utf8_suspects(limit: int, occp: list[str], tasks: list[str], joined: tuple[str, str] | None = None) -> list[int]:
    """Every record that may fail :func:`_utf8_check`: blank, or long enough (4 bytes a character) to exceed."""
    most = limit // 4
    return [
        i
        for i, (o, t) in enumerate(zip(occp, tasks, strict=True))
        if len(o) + len(t) > most or not (o.strip() or t.strip()) or not (o.isascii() and t.isascii())
    ]


def utf8_rules(limit: int) -> InputRules:
    """UTF-8 text, not both empty, at most ``limit`` bytes across both texts."""
    if limit < 1:
        raise ConfigurationError(f"a UTF-8 limit must be positive, got {limit}")
    return InputRules(
        f"UTF-8 text up to {limit} bytes",
        partial(_utf8_check, limit),
        partial(_utf8_sanitize, limit),
        partial(_utf8_suspects, limit),
    )


def input_rules(service: str) -> InputRules:
    """The rules of a service in the catalogue (``abs``, ``superai``, ``refinery``, ``gravity``)."""
    from airflow_batchcode.services.catalogue import spec_for

    return spec_for(service).rules()
