"""Realistic, messy survey answers about jobs, for the demo, the tests and the benchmarks.

Deterministic for a given seed. Most answers are ordinary; a few per cent are the kind of
thing real extracts hold: shouting capitals, slang, typos, empty duties, non-ASCII
characters, embedded newlines, over-long duties, and nothing at all.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass

# (job title variants, duty variants) per occupation
_JOBS: list[tuple[tuple[str, ...], tuple[str, ...]]] = [
    (
        ("software developer", "software engineer", "programmer", "web developer"),
        ("writing code and unit tests", "building web applications", "developing and testing software"),
    ),
    (("paramedic", "ambulance officer"), ("responding to medical emergencies", "treating patients in ambulances")),
    (("registered nurse", "RN", "nurse"), ("caring for patients on a hospital ward", "giving medication to patients")),
    (("aged care nurse",), ("looking after elderly residents", "managing medication in a nursing home")),
    (("brickie", "bricklayer"), ("laying bricks", "building brick walls on housing sites", "")),
    (("carpenter", "chippy"), ("framing houses", "building timber frames and fitting doors")),
    (("electrician", "sparky"), ("wiring houses", "installing and repairing electrical wiring")),
    (("plumber",), ("fixing leaking pipes", "installing hot water systems")),
    (("truck driver", "truckie"), ("driving semi trailers interstate", "delivering freight")),
    (("primary school teacher", "teacher"), ("teaching year 3", "teaching children to read and write")),
    (("high school teacher", "secondary teacher"), ("teaching maths to year 10", "teaching english and history")),
    (("accountant",), ("preparing tax returns", "preparing financial statements for clients")),
    (("bookkeeper",), ("doing the books", "processing invoices and payroll")),
    (("solicitor", "lawyer"), ("conveyancing", "advising clients on family law")),
    (("GP", "general practitioner", "doctor"), ("seeing patients in a medical clinic", "diagnosing and treating")),
    (("chef",), ("preparing meals in a restaurant kitchen", "planning menus")),
    (("cook",), ("cooking meals in a cafe", "cooking")),
    (("kitchenhand", "kitchen hand"), ("washing dishes", "cleaning the kitchen and preparing food")),
    (("barista",), ("making coffee", "making coffee and serving customers")),
    (("waiter", "waitress"), ("serving tables", "taking orders and serving food")),
    (("retail assistant", "sales assistant", "shop assistant"), ("serving customers", "stocking shelves")),
    (("checkout operator", "cashier"), ("scanning groceries", "operating the cash register")),
    (("store manager", "retail manager"), ("managing staff and stock", "running a supermarket")),
    (("cleaner",), ("cleaning offices", "vacuuming and mopping floors")),
    (("farm hand", "farmhand"), ("feeding livestock", "fencing and mustering sheep")),
    (("labourer",), ("digging trenches", "general labouring on building sites")),
    (("police officer", "cop"), ("patrolling and responding to incidents", "general duties policing")),
    (("public servant",), ("processing applications", "policy work for a government department")),
    (("receptionist",), ("answering phones", "greeting visitors and booking appointments")),
    (("admin assistant", "office administrator"), ("filing and data entry", "general office administration")),
    (("forklift driver",), ("moving pallets in a warehouse", "loading trucks")),
    (("storeperson", "warehouse worker"), ("picking and packing orders", "receiving stock")),
    (("mechanic", "motor mechanic"), ("servicing cars", "repairing engines and brakes")),
    (("hairdresser",), ("cutting and colouring hair", "styling hair")),
    (("child care worker", "childcare educator"), ("looking after children", "running activities at a daycare")),
    (("aged care worker", "personal care assistant"), ("helping elderly people shower and dress", "")),
    (("disability support worker",), ("supporting people with disability", "personal care and community access")),
    (("security guard",), ("patrolling premises", "crowd control at venues")),
    (("civil engineer",), ("designing roads and bridges", "managing construction projects")),
    (("project manager",), ("managing projects", "")),
    (("manager",), ("", "managing a team")),
    (("sales rep", "sales representative"), ("selling products to businesses", "visiting clients")),
    (("bus driver",), ("driving a city bus route", "")),
    (("pharmacist",), ("dispensing medicines", "advising customers on medication")),
    (("social worker",), ("case management", "supporting families in crisis")),
    (("graphic designer",), ("designing logos and brochures", "")),
    (("data analyst",), ("analysing data and building reports", "writing SQL queries")),
    (("painter",), ("painting houses", "painting and decorating")),
    (("welder",), ("welding steel", "fabricating metal")),
    (("uber driver", "taxi driver"), ("driving passengers", "")),
]

_VAGUE = [
    ("worker", ""),
    ("self employed", "own business"),
    ("casual", "various"),
    ("", "helping out"),
    ("contractor", ""),
]
_NON_ASCII = [
    ("café manager", "running the café"),
    ("kaiako", "teaching at a kōhanga reo"),
    ("chef \u2013 pastry", "desserts"),
]


@dataclass(frozen=True)
class SurveyResponse:
    """One respondent's answer to "What is your job?" and "What are your main duties?"."""

    respondent_id: str
    occp_text: str | None
    tasks_text: str | None


def survey_responses(count: int, *, seed: int = 2026, messy: bool = True) -> Iterator[SurveyResponse]:
    """Yield ``count`` answers; with ``messy`` about 8 % are vague, dirty or invalid."""
    rng = random.Random(seed)
    tasks: str | None
    for index in range(count):
        rid = f"R{index + 1:07d}"
        roll = rng.random() if messy else 1.0
        if roll < 0.02:
            occp, tasks = rng.choice(_VAGUE)
            yield SurveyResponse(rid, occp, tasks)
            continue
        if roll < 0.03:
            occp, tasks = rng.choice(_NON_ASCII)
            yield SurveyResponse(rid, occp, tasks)
            continue
        if roll < 0.035:
            yield SurveyResponse(rid, None, None if rng.random() < 0.5 else "")
            continue
        titles, duties = rng.choice(_JOBS)
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
