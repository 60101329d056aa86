"""``docker-compose.airflow.yml`` checked structurally (no Docker engine on CI), and against the native stack.

The native stack (``make stack``, ``tests/stack/test_stack_pipeline.py``) proves the topology
with real processes; these checks keep the compose file describing the same one.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from stack.topology import Stack

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.airflow.yml"
AIRFLOW_SERVICES = (
    "airflow-apiserver",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-triggerer",
    "airflow-worker",
)
SCALABLE = ("airflow-worker", "airflow-triggerer")
ENVIRONMENT = {  # what an operator's .env provides
    "AIRFLOW_FERNET_KEY": "test-fernet-key",
    "AIRFLOW_JWT_SECRET": "test-jwt-secret",
    "AIRFLOW_ADMIN_PASSWORD": "test-admin-password",
}
_VARIABLE = re.compile(r"\$\{(\w+)(?::([-?])([^}]*))?\}")


def interpolate(text: str, env: dict[str, str]) -> str:
    """Compose's ``${VAR}``, ``${VAR:-default}`` and ``${VAR:?error}`` (``$$`` stays a literal ``$``)."""

    def value(match: re.Match[str]) -> str:
        name, kind, rest = match.groups()
        if env.get(name):
            return env[name]
        if kind == "?":
            raise KeyError(f"{name}: {rest}")
        return rest if kind == "-" else ""

    return "$$".join(_VARIABLE.sub(value, part) for part in text.split("$$"))


@pytest.fixture(scope="module")
def raw() -> str:
    return COMPOSE.read_text()


@pytest.fixture(scope="module")
def compose(raw: str) -> dict[str, Any]:
    return dict(yaml.safe_load(interpolate(raw, ENVIRONMENT)))


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return dict(compose["services"])


def test_every_service_of_the_topology_is_there(services: dict[str, dict[str, Any]]) -> None:
    expected = {"postgres", "redis", "airflow-init", "batchcode-emulator", *AIRFLOW_SERVICES}
    assert expected <= set(services)
    assert services["airflow-scheduler"]["command"] == "scheduler"
    assert services["airflow-dag-processor"]["command"] == "dag-processor"
    assert services["airflow-triggerer"]["command"] == "triggerer"
    assert services["airflow-apiserver"]["command"] == "api-server"
    assert services["airflow-worker"]["command"] == "celery worker"
    emulator = services["batchcode-emulator"]
    assert "emulator" in emulator["command"]
    assert emulator["build"] == services["airflow-scheduler"]["build"], "built like the Airflow services, not pulled"


def test_airflow_services_share_the_common_anchor(raw: str, compose: dict[str, Any], services: dict[str, Any]) -> None:
    assert re.search(r"^x-airflow-common:\s*\n\s*&airflow-common\b", raw, re.MULTILINE)
    common = compose["x-airflow-common"]
    for name in (*AIRFLOW_SERVICES, "airflow-init"):
        block = re.search(rf"^  {name}:\n(.*?)(?=^  \S|\Z)", raw, re.MULTILINE | re.DOTALL)
        assert block and "<<: *airflow-common" in block.group(1), f"{name} does not merge x-airflow-common"
        service = services[name]
        assert service["image"] == common["image"]
        for key, value in common["environment"].items():
            assert service["environment"][key] == value, f"{name} overrides {key}"


def test_the_image_is_the_official_airflow_3_3_with_the_package(compose: dict[str, Any]) -> None:
    build = compose["x-airflow-common"]["build"]
    dockerfile = (ROOT / build["context"] / build["dockerfile"]).read_text()
    assert build["args"]["AIRFLOW_IMAGE"].startswith("apache/airflow:3.3.")
    assert re.search(r"^ARG AIRFLOW_IMAGE=apache/airflow:3\.3\.\d+", dockerfile, re.MULTILINE)
    assert re.search(r"^FROM \$\{AIRFLOW_IMAGE\}", dockerfile, re.MULTILINE)
    assert re.search(r"pip install .*\"apache-airflow==\$\{AIRFLOW_VERSION\}\"", dockerfile)
    assert "/opt/batchcode[postgres,celery,emulator]" in dockerfile, "the compose file runs the emulator from it"
    ignore_file = (ROOT / build["context"] / (build["dockerfile"] + ".dockerignore")).read_text()
    ignore = [line.strip() for line in ignore_file.splitlines() if line.strip() and not line.startswith("#")]
    assert ignore[0] == "*" and "!airflow_batchcode/" in ignore, "only the package goes into the build context"


def test_celery_executor_postgres_and_redis(compose: dict[str, Any]) -> None:
    env = compose["x-airflow-common"]["environment"]
    assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql+psycopg2://")
    assert "@postgres/" in env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
    assert (
        env["AIRFLOW__CELERY__BROKER_URL"].startswith("redis://")
        and "@redis:6379/" in env["AIRFLOW__CELERY__BROKER_URL"]
    )
    assert env["AIRFLOW__CELERY__RESULT_BACKEND"].startswith("db+postgresql://")
    assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://airflow-apiserver:8080/execution/"


def test_shared_secrets_are_required_not_defaulted(raw: str) -> None:
    for variable in ("AIRFLOW_FERNET_KEY", "AIRFLOW_JWT_SECRET", "AIRFLOW_ADMIN_PASSWORD"):
        assert re.search(rf"\$\{{{variable}:\?", raw), f"{variable} must be required (${{{variable}:?...}})"
    with pytest.raises(KeyError, match="AIRFLOW_FERNET_KEY"):
        interpolate(raw, {})
    example = (ROOT / "stack" / "compose.env.example").read_text()
    for variable in ("AIRFLOW_FERNET_KEY", "AIRFLOW_JWT_SECRET", "AIRFLOW_ADMIN_PASSWORD"):
        assert re.search(rf"^{variable}=", example, re.MULTILINE)


def test_connections_point_at_the_emulator_and_the_warehouse(compose: dict[str, Any]) -> None:
    env = compose["x-airflow-common"]["environment"]
    coder = json.loads(env["AIRFLOW_CONN_BATCHCODE_DEFAULT"])
    assert coder["conn_type"] == "batchcode" and coder["host"] == "http://batchcode-emulator:8090"
    assert coder["extra"]["service"] == "abs" and coder["extra"]["allow_insecure_http"] is True
    warehouse = json.loads(env["AIRFLOW_CONN_BATCHCODE_WAREHOUSE"])
    assert warehouse["conn_type"] == "postgres" and warehouse["host"] == "postgres"
    assert warehouse["schema"] == "warehouse"


def test_health_checks_and_start_order(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        if name == "airflow-init":
            assert "healthcheck" not in service, "a one-shot job: others wait for it to complete"
            continue
        assert service.get("healthcheck", {}).get("test"), f"{name} has no health check"
    for name in AIRFLOW_SERVICES:
        depends = services[name]["depends_on"]
        assert depends["postgres"] == {"condition": "service_healthy"}
        assert depends["redis"] == {"condition": "service_healthy"}
        assert depends["airflow-init"] == {"condition": "service_completed_successfully"}
    assert services["airflow-worker"]["depends_on"]["airflow-apiserver"] == {"condition": "service_healthy"}
    for name, service in services.items():
        for dependency, rule in (service.get("depends_on") or {}).items():
            assert dependency in services, f"{name} depends on unknown {dependency}"
            assert rule["condition"] in ("service_healthy", "service_completed_successfully")
            if rule["condition"] == "service_healthy":
                assert "healthcheck" in services[dependency], f"{name} waits for {dependency}, which has no check"


def test_dags_logs_and_staging_are_mounted(compose: dict[str, Any], services: dict[str, dict[str, Any]]) -> None:
    dags_folder = compose["x-airflow-common"]["environment"]["AIRFLOW__CORE__DAGS_FOLDER"]
    staging = compose["x-airflow-common"]["environment"]["AIRFLOW__BATCHCODE__STAGING"]
    assert (ROOT / "dags" / "batchcode_nightly.py").exists()
    for name in AIRFLOW_SERVICES:
        volumes = services[name]["volumes"]
        assert any(v.split(":")[:2] == ["./dags", dags_folder] for v in volumes), f"{name} lacks ./dags"
        assert any(v.split(":")[1] == staging and not v.startswith(".") for v in volumes), (
            f"{name}: the staging folder must be one volume shared by every worker"
        )
    assert {"airflow-logs", "batchcode-staging", "postgres-db-volume"} <= set(compose["volumes"])


def test_workers_and_triggerers_scale_out(services: dict[str, dict[str, Any]]) -> None:
    for name in SCALABLE:
        service = services[name]
        assert "container_name" not in service and "ports" not in service, f"{name} could not be --scale'd"
        assert "hostname" not in service, f"{name}: replicas need their own host names for health checks"


def test_the_native_stack_sets_what_the_compose_file_sets(compose: dict[str, Any]) -> None:
    """Every Airflow setting of ``x-airflow-common`` is also given to every process of ``make stack``."""
    native = Stack().settings()  # nothing is started or made until start()
    common = compose["x-airflow-common"]["environment"]
    missing = sorted(key for key in common if key.startswith("AIRFLOW") and key not in native)
    assert not missing, f"the native stack does not set {missing}"
    same = ("AIRFLOW__CORE__EXECUTOR", "AIRFLOW__CORE__LOAD_EXAMPLES", "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK")
    for key in same:
        assert native[key].lower() == common[key].lower(), key
    for key in (
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",
        "AIRFLOW__CELERY__BROKER_URL",
        "AIRFLOW__CELERY__RESULT_BACKEND",
    ):
        assert native[key].split("://")[0] == common[key].split("://")[0], key
    assert native["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"].endswith("/execution/")
    assert native["AIRFLOW__API_AUTH__JWT_SECRET"] == native["AIRFLOW__API__SECRET_KEY"]
