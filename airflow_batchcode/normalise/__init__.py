"""Per-service readers of raw output files, turning each service's results into :class:`Coded` rows.

Every service has a module here, ``normalise/<service>.py``, named by its catalogue spec
(:mod:`airflow_batchcode.services.catalogue`), with two functions:

``coded(output, metadata, lines) -> Iterator[Coded]``
    Reads the raw output file the client's ``download_results`` wrote (``output`` is an open
    binary file, seekable) and yields exactly ``lines`` items, one per manifest line, in manifest
    line order. A line the service returned nothing for becomes an ``error`` item saying so;
    output for a line number outside ``range(lines)`` raises ``UnexpectedResponseError``.
    Memory may grow with ``lines`` (one chunk) only by small per-line indexes, never by content.

``usage(metadata) -> dict[str, float]``
    Numbers from the operation's metadata (the job object) to add up in the run summary, e.g.
    ``{"billed_usage_dollars": 0.02}`` for Gravity or ``{"invalid_inputs": 3}`` for super.ai.

and optionally three more:

``model_id(metadata) -> str | None``
    The model that coded the operation, when the metadata says (else the operation's own ``model``).

``chunk_rows(output, positions, *, manifest, stamp) -> Iterator[Row]``
    A fast path for services whose output echoes each record's input (ABS): whole rows from the
    output file and the positions sidecar (locations, not open files), each echo checked against
    the manifest line it answers (``stamp``: what every row of the chunk is stamped with). The
    pipeline takes it instead of joining :func:`coded`'s items to the manifest
    (:func:`airflow_batchcode.results.service_chunk_rows`); both give the same rows.

``chunk_batches(output, positions, *, manifest, stamp)``
    ``chunk_rows``' rows as Arrow record batches (:mod:`airflow_batchcode.columnar`), for the
    pipeline's columnar load; importing pyarrow only when called.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import IO, Any, NamedTuple, Protocol

from airflow_batchcode.rows import Row, Stamp
from airflow_batchcode.services.catalogue import spec_for


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


class RowsReader(Protocol):
    """A normaliser's ``chunk_rows`` fast path (see above)."""

    def __call__(self, output: str, positions: str, *, manifest: str, stamp: Stamp) -> Iterator[Row]: ...


def _no_model(metadata: Mapping[str, Any]) -> str | None:
    return None


@dataclass(frozen=True)
class Normaliser:
    """One service's normaliser module, its optional functions filled in."""

    coded: CodedReader
    usage: UsageReader
    model_id: Callable[[Mapping[str, Any]], str | None] = _no_model
    chunk_rows: RowsReader | None = None
    chunk_batches: Callable[..., Iterator[Any]] | None = None


def normaliser_for(service: str) -> Normaliser:
    """The normaliser the catalogue names for ``service``."""
    module = importlib.import_module(spec_for(service).normaliser)
    return Normaliser(
        coded=module.coded,
        usage=module.usage,
        model_id=getattr(module, "model_id", _no_model),
        chunk_rows=getattr(module, "chunk_rows", None),
        chunk_batches=getattr(module, "chunk_batches", None),
    )


def reader_for(service: str) -> tuple[CodedReader, UsageReader]:
    """The ``coded`` and ``usage`` functions of a service."""
    normaliser = normaliser_for(service)
    return normaliser.coded, normaliser.usage
