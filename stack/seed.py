"""Seed a PostgreSQL warehouse with ``survey_responses`` (the nightly DAG's source table).

Used by the native stack and by the ``airflow-init`` service of ``docker-compose.airflow.yml``::

    python -m stack.seed "host=postgres user=airflow password=airflow dbname=warehouse" --create-database --if-missing
"""

from __future__ import annotations

import argparse
from datetime import date, timedelta

from airflow_batchcode.sample_data import survey_responses


def seed_postgres(dsn: str, count: int, *, days: int = 1, start: str = "2026-01-15", seed: int = 2026) -> int:
    """(Re)create ``survey_responses(respondent_id, answered_on, occupation, duties)`` with ``count`` answers.

    Answers are spread evenly over ``days`` days from ``start``, as :func:`airflow_batchcode.sample_data.seed_sqlite`.

    :param dsn: libpq connection string of the warehouse database.
    :param count: number of answers.
    :param days: number of consecutive days the answers are spread over.
    :param start: first day (ISO date).
    :param seed: random seed of the generator.
    :return: the number of rows written.
    """
    import psycopg

    first = date.fromisoformat(start)
    with psycopg.connect(dsn) as conn, conn.cursor() as cursor:
        cursor.execute("DROP TABLE IF EXISTS survey_responses")
        cursor.execute(
            "CREATE TABLE survey_responses (respondent_id TEXT PRIMARY KEY, answered_on DATE NOT NULL, "
            "occupation TEXT, duties TEXT)"
        )
        with cursor.copy("COPY survey_responses (respondent_id, answered_on, occupation, duties) FROM STDIN") as copy:
            for index, answer in enumerate(survey_responses(count, seed=seed)):
                day = first + timedelta(days=index % days)
                copy.write_row((answer.respondent_id, day, answer.occp_text, answer.tasks_text))
        cursor.execute("CREATE INDEX ix_survey_responses_day ON survey_responses (answered_on)")
    return count


def ensure_database(dsn: str) -> bool:
    """Create the database ``dsn`` names when the server lacks it (connecting to ``postgres``); True if made."""
    import psycopg
    from psycopg import sql
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    name = str(conninfo_to_dict(dsn)["dbname"])
    with psycopg.connect(make_conninfo(dsn, dbname="postgres"), autocommit=True) as server:
        if server.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
            return False
        server.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return True


def _table_exists(dsn: str) -> bool:
    import psycopg

    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT to_regclass('survey_responses') IS NOT NULL").fetchone()
    return bool(row and row[0])


def main(argv: list[str] | None = None) -> int:
    """Command line: ``python -m stack.seed DSN [--records N] [--days D] [--start YYYY-MM-DD]``."""
    parser = argparse.ArgumentParser(prog="python -m stack.seed", description=__doc__.splitlines()[0])
    parser.add_argument("dsn", help="libpq connection string of the warehouse database")
    parser.add_argument("--records", type=int, default=3000)
    parser.add_argument("--days", type=int, default=7)
    parser.add_argument("--start", default="2026-01-15", help="first answer date")
    parser.add_argument("--if-missing", action="store_true", help="leave an existing survey_responses table alone")
    parser.add_argument("--create-database", action="store_true", help="create the database when it is missing")
    args = parser.parse_args(argv)
    if args.create_database and ensure_database(args.dsn):
        print("created the warehouse database")
    if args.if_missing and _table_exists(args.dsn):
        print("survey_responses exists; left as it is")
        return 0
    written = seed_postgres(args.dsn, args.records, days=args.days, start=args.start)
    print(f"seeded {written} survey answers over {args.days} day(s) from {args.start}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
