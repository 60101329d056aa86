#!/usr/bin/env bash
# Prerequisites of the native stack and its tests; installs only what is missing. `make stack` runs it;
# CI should run it before `make test` (see README, "Production deployment").
#
#   bash stack/setup.sh [PYTHON]
#
# - Debian's `chromium` for the headless browser check (apt-get, as root);
# - with PYTHON (the venv's python): the Celery provider, when the venv lacks a working one;
# - checks that PostgreSQL (127.0.0.1:5432) and Redis (127.0.0.1:6379) answer.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${1:-}"

if ! command -v chromium >/dev/null 2>&1; then
    if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
        echo "stack/setup.sh: installing Debian's chromium (headless browser check) ..."
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
    elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        echo "stack/setup.sh: installing Debian's chromium (headless browser check) ..."
        sudo -n apt-get update -qq
        sudo -n env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
    else
        echo "stack/setup.sh: chromium is missing and cannot be installed here (apt-get install chromium);" \
             "the browser test skips without it (and fails when CI is set)" >&2
    fi
fi

if [[ -n "$PYTHON" ]]; then
    if ! "$PYTHON" -c "import airflow.providers.celery.executors.celery_executor_utils" >/dev/null 2>&1; then
        echo "stack/setup.sh: installing the Celery provider into the venv ..."
        constraints=()
        [[ -f constraints.txt ]] && constraints=(-c constraints.txt)
        # celery 5.7 dropped celery.backends.database.retry, which the Celery provider 3.26 imports
        "$PYTHON" -m pip install --disable-pip-version-check --no-input -q "${constraints[@]}" \
            "apache-airflow-providers-celery>=3.26" "celery[redis]>=5.5,<5.7"
    fi
    "$PYTHON" - <<'PY'
import os, sys
import psycopg, redis
pg = os.environ.get("BATCHCODE_STACK_PG", "host=127.0.0.1 port=5432 user=postgres dbname=postgres")
url = os.environ.get("BATCHCODE_STACK_REDIS", "redis://127.0.0.1:6379")
problems = []
try:
    psycopg.connect(pg, connect_timeout=3).close()
except psycopg.OperationalError as exc:
    problems.append(f"PostgreSQL ({pg}): {exc}")
try:
    redis.Redis.from_url(url, socket_timeout=3).ping()
except redis.RedisError as exc:
    problems.append(f"Redis ({url}): {exc}")
if problems:
    sys.exit("stack/setup.sh: not reachable: " + "; ".join(problems))
PY
fi
