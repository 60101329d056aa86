"""The run summary (counts by status, success rate, confidence, service usage) and the quality gate.

The ``load`` task counts every row it loads into a :class:`RunSummary`; the ``summary`` task
prints it (:func:`describe`) and fails the run below the configured success rate
(:func:`quality_gate`).
"""

from __future__ import annotations

import itertools
from bisect import bisect_right
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from airflow_batchcode.exceptions import QualityGateError
from airflow_batchcode.rows import Row
from airflow_batchcode.services.catalogue import DEFAULT_SERVICE

CONFIDENCE_BUCKETS = (0.5, 0.7, 0.9)


@dataclass
class RunSummary:
    """Counts by status, success rate and confidence distribution of a run's rows."""

    by_status: Counter[str] = field(default_factory=Counter)
    confidence: Counter[str] = field(default_factory=Counter)
    code_lengths: Counter[int] = field(default_factory=Counter)
    sanitized: int = 0
    operations: int = 0
    service: str = DEFAULT_SERVICE
    usage: Counter[str] = field(default_factory=Counter)
    operation_ids: list[str] = field(default_factory=list)
    requests: dict[str, Any] = field(default_factory=dict)
    """API requests of the run and what is left in the quota window (the connection's request budget)."""
    texts: dict[str, int] = field(default_factory=dict)
    """Records in, distinct texts, served from the cache, sent in batch and in real time (:meth:`count_texts`)."""

    def count_texts(
        self, *, records: int, distinct: int, duplicates: int, cached: int, sent: int, realtime: bool
    ) -> None:
        """What the extract sent and what it reused (:mod:`airflow_batchcode.dedupe`)."""
        self.texts = {
            "records_in": records,
            "distinct_texts": distinct,
            "duplicates": duplicates,
            "from_cache": cached,
            "sent_batch": 0 if realtime else sent,
            "sent_realtime": sent if realtime else 0,
        }

    def add_usage(self, numbers: Mapping[str, float]) -> None:
        """Add what the service reported about one operation (e.g. billed usage) to the run's totals."""
        self.usage.update(numbers)

    def add(self, row: Row) -> None:
        """Count one row."""
        status = row.code_status
        self.by_status[status] += 1
        if row.note:
            self.sanitized += 1
        if status == "successful":
            if row.code_confidence is not None:
                self.confidence[_BUCKET_NAMES[bisect_right(CONFIDENCE_BUCKETS, row.code_confidence)]] += 1
            if row.code_category:
                self.code_lengths[len(row.code_category)] += 1

    def add_counted(
        self, status: str, bucket: int | None, code_length: int | None, sanitized: bool, count: int
    ) -> None:
        """Count ``count`` rows at once, as the database aggregated them (rows filled by the load's joins)."""
        self.by_status[status] += count
        if sanitized:
            self.sanitized += count
        if status == "successful":
            if bucket is not None:
                self.confidence[_BUCKET_NAMES[bucket]] += count
            if code_length:
                self.code_lengths[int(code_length)] += count

    @property
    def total(self) -> int:
        return sum(self.by_status.values())

    @property
    def success_rate(self) -> float:
        return self.by_status["successful"] / self.total if self.total else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "records": self.total,
            "successful": self.by_status["successful"],
            "unsuccessful": self.by_status["unsuccessful"],
            "error": self.by_status["error"],
            "success_rate": round(self.success_rate, 4),
            "sanitized": self.sanitized,
            "operations": self.operations,
            "confidence": {bucket: self.confidence[bucket] for bucket in _bucket_names()},
            "code_lengths": {str(n): c for n, c in sorted(self.code_lengths.items(), reverse=True)},
            "service": self.service,
            "usage": {name: round(value, 6) for name, value in sorted(self.usage.items())},
            "requests": self.requests,
            "texts": self.texts,
        }


def _bucket_names() -> list[str]:
    edges = (0.0, *CONFIDENCE_BUCKETS, 1.0)
    return [f"{low:.1f}-{high:.1f}" for low, high in itertools.pairwise(edges)]


_BUCKET_NAMES = tuple(_bucket_names())


def _bucket(confidence: float) -> str:
    """The name of the bucket ``confidence`` falls in (below the first edge ... at or above the last)."""
    return _BUCKET_NAMES[bisect_right(CONFIDENCE_BUCKETS, confidence)]


def describe(summary: dict[str, Any]) -> str:
    """A readable multi-line account of a summary dict."""
    total = summary["records"] or 1
    lines = [
        f"{summary['records']} records in {summary['operations']} operation(s): "
        f"{summary['successful']} coded ({100 * summary['successful'] / total:.1f} %), "
        f"{summary['unsuccessful']} unsuccessful with suggestions, {summary['error']} errors"
        + (f", {summary['sanitized']} sanitized" if summary["sanitized"] else ""),
        "confidence of coded records: " + ", ".join(f"{k}: {v}" for k, v in summary["confidence"].items()),
        "code lengths: " + ", ".join(f"{k}-digit: {v}" for k, v in summary["code_lengths"].items()),
    ]
    texts = summary.get("texts") or {}
    if texts:
        lines.append(
            f"{texts['records_in']} records in, {texts['distinct_texts']} distinct texts: "
            f"{texts['from_cache']} served from the cache, {texts['sent_batch']} sent in batch, "
            f"{texts['sent_realtime']} sent in real time ({texts['duplicates']} repeats coded once)"
        )
    usage = summary.get("usage") or {}
    if usage:
        lines.append(
            f"{summary.get('service', 'service')} usage: " + ", ".join(_usage_text(k, v) for k, v in usage.items())
        )
    requests = summary.get("requests") or {}
    if requests:
        left = requests.get("left_in_window")
        lines.append(
            f"API requests: {requests['used']} used by this run"
            + ("" if requests.get("shared") else " (as counted by this process's budget)")
            + (f", {left} left in the quota window (resets {requests['window_resets']})" if left is not None else "")
        )
    return "\n".join(lines)


def _usage_text(name: str, value: float) -> str:
    if name.endswith("_dollars"):
        return f"{name.removesuffix('_dollars').replace('_', ' ')} ${value:,.3f}"
    return f"{name.replace('_', ' ')} {value:g}"


def quality_gate(summary: dict[str, Any], min_success_rate: float | None) -> None:
    """Raise :class:`QualityGateError` when the success rate is under ``min_success_rate``.

    A run of no records passes: nothing failed (a day without answers, a re-code with nothing left).
    """
    if min_success_rate is None or not summary["records"]:
        return
    rate = summary["success_rate"]
    if rate < min_success_rate:
        raise QualityGateError(
            f"Success rate {rate:.1%} is below the required {min_success_rate:.1%} "
            f"({summary['successful']} of {summary['records']} records coded). "
            "The outputs are written; inspect the error and unsuccessful rows before re-running."
        )
