"""Per-service readers of raw output files, turning each service's results into :class:`Coded` rows.

ABS output is read by :mod:`airflow_batchcode.results` directly (its fast path). Every other
service has a module here, ``normalise/<service>.py``, with two functions:

``coded(output, metadata, lines) -> Iterator[Coded]``
    Reads the raw output file the client's ``download_results`` wrote (``output`` is an open
    binary file, seekable) and yields exactly ``lines`` items, one per manifest line, in manifest
    line order. A line the service returned nothing for becomes an ``error`` item saying so;
    output for a line number outside ``range(lines)`` raises ``UnexpectedResponseError``.
    Memory may grow with ``lines`` (one chunk) only by small per-line indexes, never by content.

``usage(metadata) -> dict[str, float]``
    Numbers from the operation's metadata (the job object) to add up in the run summary, e.g.
    ``{"billed_usage_dollars": 0.02}`` for Gravity or ``{"invalid_inputs": 3}`` for super.ai.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator, Mapping
from typing import IO, Any, NamedTuple


class Coded(NamedTuple):
    """One record's outcome, in the shared shape (``successful`` | ``unsuccessful`` | ``error``).

    :param item_id: the service's own id of this record's task or job (Refinery task, super.ai job).
    :param agreement: share of workers agreeing with the label (Refinery's agreement_count / worker_count).
    :param details: JSON text of service-specific values worth keeping (consensus, job state, raw columns).
    """

    record_id: str | None
    code_status: str
    code_category: str | None = None
    code_label: str | None = None
    code_confidence: float | None = None
    suggestions: str | None = None
    error: str | None = None
    item_id: str | None = None
    agreement: float | None = None
    details: str | None = None


def missing(line: int) -> Coded:
    """The outcome of a manifest line the service returned nothing for."""
    return Coded(None, "error", error=f"the service returned no result for manifest line {line}")


CodedReader = Callable[[IO[bytes], Mapping[str, Any], int], Iterator[Coded]]
UsageReader = Callable[[Mapping[str, Any]], dict[str, float]]


def reader_for(service: str) -> tuple[CodedReader, UsageReader]:
    """The ``coded`` and ``usage`` functions of a (non-ABS) service."""
    module = importlib.import_module(f"airflow_batchcode.normalise.{service}")
    return module.coded, module.usage
