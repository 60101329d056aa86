"""The provider's metadata passes Airflow's own schema and Airflow finds the package."""

from __future__ import annotations

import json
from importlib import resources
from importlib.metadata import entry_points

import jsonschema

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

    manager = ProvidersManager()
    assert "airflow-batchcode" in manager.providers
    hook = manager.hooks["batchcode"]
    assert hook is not None and hook.hook_class_name.endswith("BatchCodeHook")
    assert "extra__batchcode__service" in manager.connection_form_widgets
    assert manager.field_behaviours["batchcode"]["relabeling"]["login"] == "Client ID (ABS)"
