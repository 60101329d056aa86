"""Code each distinct text once: the extract's choice, per record, of what is sent and what is reused.

A record is known by a digest of the texts the service would receive (after the input rules
and any sanitising): :func:`text_digest`. While the extract streams, :class:`TextReuse` keeps
the first position of every digest of the run; a later record with the same digest is not sent
but listed as a ``duplicate`` of that first row. With the result cache on, a new digest is
first looked up in the cache (a batch of digests per query, in the database:
:class:`~airflow_batchcode.result_cache.ResultCache`); a hit is listed as ``cache`` and not sent.
The load fills both kinds of row in the database from the list (``reused.jsonl``), so every
source row still gets its own output row.

Memory grows with the run's distinct texts only: one dict entry per digest, about 150 bytes
(100,000 distinct answers: 15 MB). The digest costs about 1 µs a record (BLAKE2b, 128 bits:
the chance of two different texts sharing one is negligible at any survey's size).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from hashlib import blake2b
from typing import IO, Any, Protocol

from airflow_batchcode.staging import CACHED, DUPLICATE, REJECTED, SENT, Reused, reused_line

DIGEST_MEMO = 1 << 14
"""Texts whose digests the extract remembers (least recently seen forgotten first), while texts repeat.

Survey answers repeat: on 1,000,000 of the sample's (1,874 distinct texts), :meth:`TextReuse.choose`
took 0.54-0.63 s with it against 1.02-1.04 s (the digests alone: 0.08 s against 0.56 s). Where most
of the first :data:`DIGEST_MEMO` texts are new it is dropped, since looking each text up first costs
more than hashing it (all-distinct answers: 1.03-1.04 s against 1.01-1.09 s). Full, it holds 3.8 MB
and keeps its texts alive (about 2.5 MB of the sample's).
"""


def text_digest(occp_text: str, tasks_text: str) -> str:
    """The digest of the texts one record sends: BLAKE2b-128 of ``"<len(occp)>:" + occp + tasks``, in hex.

    The length prefix keeps ``("ab", "c")`` and ``("a", "bc")`` apart.
    """
    return blake2b(f"{len(occp_text)}:{occp_text}{tasks_text}".encode(), digest_size=16).hexdigest()


class CacheLookup(Protocol):
    """Which digests the result cache holds an outcome for (under the run's service, topic and model)."""

    def hits(self, digests: Sequence[str]) -> set[str]: ...


@dataclass
class ReuseCounts:
    """What :class:`TextReuse` decided, for the run summary.

    :param distinct: distinct texts among the records that passed the rules.
    :param duplicates: records sharing the texts of an earlier record of the run.
    :param cached: records answered from the result cache.
    """

    distinct: int = 0
    duplicates: int = 0
    cached: int = 0


Batch = tuple[list[str] | None, list[str], list[str], Sequence[int], dict[int, str]]
"""A batch of valid records as the manifest writer takes it: ids, job titles, duties, positions, notes by index."""


class TextReuse:
    """Decides, batch by batch, which records are sent and which reuse another outcome; lists the reused ones.

    :param sink: where ``reused.jsonl`` lines go.
    :param dedupe: send each distinct text once per run.
    :param cache: the result cache to look new texts up in, or ``None``.
    :param list_sent: also list the sent records with their digests (the load stores their outcomes in the cache).
    """

    def __init__(self, sink: IO[bytes], *, dedupe: bool, cache: CacheLookup | None, list_sent: bool) -> None:
        self.sink = sink
        self.dedupe = dedupe
        self.cache = cache
        self.list_sent = list_sent
        self.counts = ReuseCounts()
        self._first: dict[str, int] = {}
        self._digest: Callable[[str, str], str] = functools.lru_cache(maxsize=DIGEST_MEMO)(text_digest)

    def select(self, batch: Batch, recode_of: Sequence[Any] | None = None) -> Batch:
        """The records of ``batch`` to send; the others are listed. ``recode_of`` (per record) bypasses the cache."""
        send = self.choose(batch, recode_of)
        if send is None:
            return batch
        ids, occp, tasks, positions, notes = batch
        kept_notes = {j: notes[i] for j, i in enumerate(send) if i in notes}
        return (
            [ids[i] for i in send] if ids is not None else None,
            [occp[i] for i in send],
            [tasks[i] for i in send],
            [positions[i] for i in send],
            kept_notes,
        )

    def choose(self, batch: Batch, recode_of: Sequence[Any] | None = None) -> list[int] | None:
        """:meth:`select`'s choice as the indexes of the records to send, in order; ``None`` when all are."""
        _, occp, tasks, positions, _ = batch
        digests = list(map(self._digest, occp, tasks))
        self._forget_unless_repeating()
        send: list[int] = []
        look_up: list[int] = []
        lines: list[bytes] = []
        for i, digest in enumerate(digests):
            if self.dedupe:
                first = self._first.get(digest)
                if first is not None:
                    lines.append(self._line(batch, i, DUPLICATE, digest, recode_of, first=first))
                    self.counts.duplicates += 1
                    continue
                self._first[digest] = positions[i]
            self.counts.distinct += 1
            if self.cache is not None and (recode_of is None or recode_of[i] is None):
                look_up.append(i)
            else:
                send.append(i)
        if look_up:
            assert self.cache is not None
            hits = self.cache.hits([digests[i] for i in look_up])
            for i in look_up:
                if digests[i] in hits:
                    lines.append(self._line(batch, i, CACHED, digests[i], recode_of))
                    self.counts.cached += 1
                else:
                    send.append(i)
            send.sort()
        for i in send:
            if self.list_sent or (recode_of is not None and recode_of[i] is not None):
                lines.append(self._line(batch, i, SENT, digests[i], recode_of))
        self.sink.write(b"".join(lines))
        return None if len(send) == len(occp) else send

    def _forget_unless_repeating(self) -> None:
        """Stop remembering digests once :data:`DIGEST_MEMO` texts have been seen if most were new."""
        cache_info = getattr(self._digest, "cache_info", None)
        if cache_info is not None:
            seen = cache_info()
            if seen.hits + seen.misses >= DIGEST_MEMO and seen.hits < seen.misses:
                self._digest = text_digest

    def rejected(self, position: int, record_id: str | None, recode_of: Any) -> None:
        """List a record caught by the input rules when it re-codes an earlier run's row (for its ``recode_of``)."""
        if recode_of is not None:
            self.sink.write(reused_line(Reused(position, REJECTED, record_id=record_id, recode_of=str(recode_of))))

    @staticmethod
    def _line(
        batch: Batch, i: int, kind: str, digest: str, recode_of: Sequence[Any] | None, *, first: int | None = None
    ) -> bytes:
        ids, _, _, positions, notes = batch
        origin = recode_of[i] if recode_of is not None else None
        return reused_line(
            Reused(
                positions[i],
                kind,
                digest,
                first,
                ids[i] if ids is not None else None,
                notes.get(i),
                None if origin is None else str(origin),
            )
        )
