"""The provider's metadata passes Airflow's own schema and Airflow finds the package."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib import resources
from importlib.metadata import entry_points
from pathlib import Path

import jsonschema
import pytest

from airflow_batchcode.get_provider_info import get_provider_info


def test_provider_info_passes_airflows_schema() -> None:
    schema = json.loads(resources.files("airflow").joinpath("provider_info.schema.json").read_text())
    jsonschema.validate(get_provider_info(), schema)


def test_entry_point_is_registered() -> None:
    found = [ep for ep in entry_points(group="apache_airflow_provider") if ep.value.startswith("airflow_batchcode")]
    assert found and found[0].load()()["package-name"] == "airflow-batchcode"


def test_connection_type_declares_form_fields_and_relabels_secrets() -> None:
    (conn,) = get_provider_info()["connection-types"]
    assert conn["connection-type"] == "batchcode"
    assert conn["hook-class-name"] == "airflow_batchcode.hooks.batchcode.BatchCodeHook"
    assert {"service", "topic", "auth_url", "rate_limit"} <= set(conn["conn-fields"])
    assert conn["ui-field-behaviour"]["relabeling"]["password"].startswith("Client secret")


def test_providers_manager_sees_the_connection_type() -> None:
    from airflow.providers_manager import ProvidersManager
    from airflow.sdk.providers_manager_runtime import ProvidersManagerTaskRuntime

    manager = ProvidersManager()
    assert "airflow-batchcode" in manager.providers
    hook = ProvidersManagerTaskRuntime().hooks["batchcode"]
    assert hook is not None and hook.hook_class_name.endswith("BatchCodeHook")
    assert "extra__batchcode__service" in manager.connection_form_widgets
    assert manager.field_behaviours["batchcode"]["relabeling"]["login"] == "Client ID (ABS)"


def test_batchcode_config_section_is_declared() -> None:
    options = get_provider_info()["config"]["batchcode"]["options"]
    assert set(options) == {"staging", "default_deferrable"}
    assert options["default_deferrable"]["type"] == "boolean" and options["default_deferrable"]["default"] == "True"
    assert options["staging"]["default"] is None, "unset, so the code's $AIRFLOW_HOME/batchcode default applies"


def test_airflow_config_list_shows_the_batchcode_section(tmp_path: Path) -> None:
    env = {**os.environ, "AIRFLOW_HOME": str(tmp_path), "AIRFLOW__BATCHCODE__STAGING": "s3://bucket/staged"}
    listed = subprocess.run(
        [sys.executable, "-m", "airflow", "config", "list", "--section", "batchcode", "--show-values", "-d"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=True,
    ).stdout
    assert "[batchcode]" in listed
    assert "staging = s3://bucket/staged" in listed
    assert "default_deferrable = True" in listed
    assert "waits in the triggerer" in listed, "the option's description is shown"


def test_declared_defaults_keep_the_codes_fallbacks(monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow.sdk import conf

    monkeypatch.delenv("AIRFLOW__BATCHCODE__STAGING", raising=False)
    monkeypatch.delenv("AIRFLOW__BATCHCODE__DEFAULT_DEFERRABLE", raising=False)
    assert conf.get("batchcode", "staging", fallback="fallback") == "fallback"
    assert conf.getboolean("batchcode", "default_deferrable", fallback=False) is True


@pytest.mark.parametrize("service", ["abs", "superai", "gravity", "refinery"])
@pytest.mark.parametrize("blank", [None, ""])
def test_a_form_field_left_blank_keeps_the_services_default(service: str, blank: str | None) -> None:
    """The connection form saves blank fields as null or ""; the form itself gives no rate default,
    so a connection made in the UI keeps its service's own rate, the one the field's help names."""
    from airflow_batchcode.services.catalogue import spec_for
    from airflow_batchcode.services.registry import ServiceConfig

    spec = spec_for(service)
    (conn,) = get_provider_info()["connection-types"]
    description = conn["conn-fields"]["rate_limit"]["description"]
    assert "default" not in conn["conn-fields"]["rate_limit"]["schema"]
    needed = {"app_uuid": "app", "manifest_location": "s3://bucket/prefix"}
    blanks = dict.fromkeys(("rate_limit", "read_timeout", "quota_window", "allow_insecure_http"), blank)
    default = spec._settings(ServiceConfig(service, "https://service.example", "id", "secret", needed))
    settings = spec._settings(ServiceConfig(service, "https://service.example", "id", "secret", {**needed, **blanks}))
    assert settings.rate_limit == default.rate_limit
    shown = "none" if default.rate_limit == 0 else f"{default.rate_limit:g}"
    assert f"{spec.label.split()[-1]} {shown}" in description
    assert settings.http.read_timeout == 60.0 and settings.http.allow_insecure_http is False
