"""Realistic, messy survey answers about jobs, for the demo, the tests and the benchmarks.

Deterministic for a given seed. Most answers are ordinary; a few per cent are the kind of
thing real extracts hold: shouting capitals, slang, typos, empty duties, non-ASCII
characters, embedded newlines, over-long duties, and nothing at all.
"""

from __future__ import annotations

import functools
import json
import random
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import resources

VOCABULARY = "data/survey_vocabulary.json"
"""The answers are drawn from: occupations with their title and duty variants, and the vague and
non-ASCII answers. Data, kept beside the package as JSON so it reads and edits as a table."""


@dataclass(frozen=True)
class _Vocabulary:
    jobs: list[tuple[tuple[str, ...], tuple[str, ...]]]
    vague: list[tuple[str, str]]
    non_ascii: list[tuple[str, str]]


@functools.cache
def _vocabulary() -> _Vocabulary:
    document = json.loads(resources.files("airflow_batchcode").joinpath(VOCABULARY).read_text(encoding="utf-8"))
    return _Vocabulary(
        jobs=[(tuple(titles), tuple(duties)) for titles, duties in document["jobs"]],
        vague=[(occp, tasks) for occp, tasks in document["vague"]],
        non_ascii=[(occp, tasks) for occp, tasks in document["non_ascii"]],
    )


@dataclass(frozen=True)
class SurveyResponse:
    """One respondent's answer to "What is your job?" and "What are your main duties?"."""

    respondent_id: str
    occp_text: str | None
    tasks_text: str | None


def survey_responses(count: int, *, seed: int = 2026, messy: bool = True) -> Iterator[SurveyResponse]:
    """Yield ``count`` answers; with ``messy`` about 8 % are vague, dirty or invalid."""
    rng = random.Random(seed)
    vocabulary = _vocabulary()
    tasks: str | None
    for index in range(count):
        rid = f"R{index + 1:07d}"
        roll = rng.random() if messy else 1.0
        if roll < 0.02:
            occp, tasks = rng.choice(vocabulary.vague)
            yield SurveyResponse(rid, occp, tasks)
            continue
        if roll < 0.03:
            occp, tasks = rng.choice(vocabulary.non_ascii)
            yield SurveyResponse(rid, occp, tasks)
            continue
        if roll < 0.035:
            yield SurveyResponse(rid, None, None if rng.random() < 0.5 else "")
            continue
        titles, duties = rng.choice(vocabulary.jobs)
        occp, tasks = rng.choice(titles), rng.choice(duties)
        if roll < 0.05:
            occp = occp.upper()
        elif roll < 0.06:
            occp = _typo(occp, rng)
        elif roll < 0.065:
            tasks = f"{tasks}\nand other duties as required"
        elif roll < 0.07:
            tasks = ", ".join([tasks or "general duties"] * 30)
        elif roll < 0.08:
            tasks = None
        yield SurveyResponse(rid, occp, tasks)


def _typo(text: str, rng: random.Random) -> str:
    if len(text) < 4:
        return text
    i = rng.randrange(1, len(text) - 1)
    return text[:i] + text[i + 1] + text[i] + text[i + 2 :]


def seed_sqlite(
    path: str, count: int, *, days: int = 1, start: str = "2026-01-01", seed: int = 2026, messy: bool = True
) -> int:
    """Create (or refill) table ``survey_responses`` in the SQLite file ``path`` with ``count`` answers.

    Answers are spread evenly over ``days`` days from ``start`` (column ``answered_on``, ISO date),
    so a daily schedule or a backfill selects one day's slice.
    """
    import sqlite3
    from datetime import date, timedelta

    first = date.fromisoformat(start)
    with sqlite3.connect(path) as conn:
        conn.execute("DROP TABLE IF EXISTS survey_responses")
        conn.execute(
            "CREATE TABLE survey_responses (respondent_id TEXT, answered_on TEXT, occupation TEXT, duties TEXT)"
        )
        rows = (
            (r.respondent_id, (first + timedelta(days=i % days)).isoformat(), r.occp_text, r.tasks_text)
            for i, r in enumerate(survey_responses(count, seed=seed, messy=messy))
        )
        conn.executemany("INSERT INTO survey_responses VALUES (?, ?, ?, ?)", rows)
        conn.execute("CREATE INDEX ix_survey_responses_day ON survey_responses (answered_on)")
    return count
