"""The service catalogue is the one list of services: every consumer reads it, and each spec is complete."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from airflow_batchcode import demo
from airflow_batchcode.cli import build_parser
from airflow_batchcode.emulator.abs_app import code_file
from airflow_batchcode.emulator.coding_model import load_models
from airflow_batchcode.emulator.server import EMULATED_SERVICES
from airflow_batchcode.exceptions import ConfigurationError
from airflow_batchcode.get_provider_info import get_provider_info
from airflow_batchcode.normalise import normaliser_for, reader_for
from airflow_batchcode.results import service_chunk_rows
from airflow_batchcode.rows import Stamp
from airflow_batchcode.sample_data import survey_responses
from airflow_batchcode.services.base import AsyncBatchCodeClient, BatchCodeClient
from airflow_batchcode.services.catalogue import DEFAULT_SERVICE, SERVICES, ServiceSpec, all_specs, spec_for
from airflow_batchcode.services.registry import ServiceConfig, build_async_client, build_client


def _emulator_config(spec: ServiceSpec) -> ServiceConfig:
    """A connection to the spec's emulator, as the demo writes it, read back as the hook reads it."""
    connections = demo._service_connections(spec, "http://127.0.0.1:9", None)
    conn = json.loads(connections["AIRFLOW_CONN_BATCHCODE_DEFAULT"])
    return ServiceConfig(
        service=conn["extra"]["service"],
        base_url=conn["host"],
        login=conn["login"],
        password=conn["password"],
        extra=conn["extra"],
    )


@pytest.mark.parametrize("name", SERVICES)
def test_each_spec_is_found_by_its_name_and_builds_its_clients(name: str) -> None:
    spec = spec_for(name)
    assert spec.name == name and spec.label and spec.title and spec.doc_url.startswith("https://")
    config = _emulator_config(spec)
    assert config.service == name
    sync, async_ = build_client(config), build_async_client(config)
    try:
        assert isinstance(sync, BatchCodeClient) and sync.service == name
        assert isinstance(async_, AsyncBatchCodeClient) and async_.service == name
    finally:
        sync.close()


@pytest.mark.parametrize("name", SERVICES)
def test_each_spec_names_a_normaliser_and_an_emulator_that_exist(name: str) -> None:
    spec = spec_for(name)
    normaliser = normaliser_for(name)
    assert callable(normaliser.coded) and callable(normaliser.usage) and callable(normaliser.model_id)
    assert reader_for(name) == (normaliser.coded, normaliser.usage)
    assert spec.normaliser == f"airflow_batchcode.normalise.{name}"
    assert callable(spec.emulator_factory())


@pytest.mark.parametrize("name", SERVICES)
def test_what_a_spec_promises_its_clients_have(name: str) -> None:
    """``cancel`` means both clients have ``cancel_batch``; ``limits()`` are vectorised limits of its rules."""
    from airflow_batchcode.columnar.rules import InputLimits

    spec = spec_for(name)
    config = _emulator_config(spec)
    sync, async_ = build_client(config), build_async_client(config)
    try:
        assert callable(getattr(sync, "cancel_batch", None)) is spec.cancel
        assert callable(getattr(async_, "cancel_batch", None)) is spec.cancel
    finally:
        sync.close()
    limits = spec.limits()
    assert isinstance(limits, InputLimits), "every service's rules have vectorised limits (the columnar extract)"
    if not spec.input_rules:  # the default UTF-8 rules: the limits check the same byte size
        assert (limits.max_bytes, limits.max_chars, limits.ascii_only) == (spec.max_input_bytes, None, False)
        assert spec.rules().name == f"UTF-8 text up to {spec.max_input_bytes} bytes"


def test_the_catalogue_lists_every_service_once_and_the_default_is_in_it() -> None:
    assert [spec.name for spec in all_specs()] == list(SERVICES)
    assert len(set(SERVICES)) == len(SERVICES) and DEFAULT_SERVICE in SERVICES


def test_an_unknown_service_is_a_configuration_error_naming_the_supported_ones() -> None:
    with pytest.raises(ConfigurationError, match="supported: abs, refinery, superai, gravity"):
        spec_for("nope")
    with pytest.raises(ConfigurationError, match="Unknown batch coding service 'nope'"):
        build_client(ServiceConfig(service="nope", base_url="https://x.example"))


def test_a_spec_checks_itself() -> None:
    spec = spec_for("gravity")
    with pytest.raises(ValueError, match="lower-case identifier"):
        ServiceSpec(**{**spec.__dict__, "name": "Gravity AI"})
    with pytest.raises(ValueError, match="emulator must be 'module:name'"):
        ServiceSpec(**{**spec.__dict__, "emulator": "airflow_batchcode.emulator.gravity_app"})
    with pytest.raises(ConfigurationError, match="no emulator"):
        ServiceSpec(**{**spec.__dict__, "emulator": None}).emulator_factory()


def test_provider_info_emulators_cli_and_demo_read_the_catalogue() -> None:
    specs = all_specs()
    info = get_provider_info()
    assert [i["integration-name"] for i in info["integrations"]] == [spec.title for spec in specs]
    (conn,) = info["connection-types"]
    fields = conn["conn-fields"]
    assert fields["service"]["schema"]["enum"] == [*SERVICES, None]
    assert fields["service"]["schema"]["default"] == DEFAULT_SERVICE
    for spec in specs:
        assert set(spec.connection_fields) <= set(fields)
    assert EMULATED_SERVICES == SERVICES
    emulator = build_parser().parse_args(["emulator"])
    assert emulator.service == DEFAULT_SERVICE
    demo_parser = argparse.ArgumentParser()
    demo.add_arguments(demo_parser)
    (service,) = [action for action in demo_parser._actions if action.dest == "service"]
    assert list(service.choices or ()) == list(SERVICES) and service.default == DEFAULT_SERVICE


def test_only_a_service_reading_object_storage_gets_a_storage_connection_in_the_demo() -> None:
    for spec in all_specs():
        connections = demo._service_connections(spec, "http://127.0.0.1:9", "http://127.0.0.1:10")
        extra = json.loads(connections["AIRFLOW_CONN_BATCHCODE_DEFAULT"])["extra"]
        assert ("storage_conn_id" in extra) is (spec.name == "refinery")
        assert spec.object_storage is (spec.name == "refinery")


def test_the_abs_fast_path_gives_the_rows_of_the_generic_join(tmp_path: Path) -> None:
    """ABS's ``chunk_rows`` (its order-checking fast path) equals joining its ``coded`` items to the manifest."""
    records = list(survey_responses(300))
    manifest, positions, output = tmp_path / "m.jsonl", tmp_path / "p.tsv", tmp_path / "output.jsonl"
    with manifest.open("w") as m, positions.open("w") as p:
        for position, record in enumerate(records):
            line = {"recordId": record.respondent_id, "occp_text": record.occp_text, "tasks_text": record.tasks_text}
            m.write(json.dumps(line) + "\n")
            p.write(f"{position * 2}\tsanitized\n" if position % 7 == 0 else f"{position * 2}\n")
    code_file(manifest, output, load_models()["anzsco"][-1], threading.Event())
    normaliser = normaliser_for("abs")
    assert normaliser.chunk_rows is not None
    where = {"stamp": Stamp(chunk=3, operation_id="op-1", topic="anzsco", model_id="m-1")}
    fast = list(normaliser.chunk_rows(str(output), str(positions), manifest=str(manifest), **where))
    joined = list(
        service_chunk_rows("abs", str(output), {}, str(manifest), str(positions), lines=len(records), **where)
    )
    assert len(fast) == len(records) and fast == joined
    assert {row[2] for row in fast} >= {"successful", "unsuccessful"}
    assert normaliser.usage({}) == {}
    assert normaliser.model_id({"model": {"modelId": "anzsco-2"}}) == "anzsco-2" and normaliser.model_id({}) is None


def test_reading_the_catalogue_imports_no_client_and_no_emulator() -> None:
    """Airflow reads the provider info in every process: it must not pull in the HTTP stack or FastAPI."""
    probe = (
        "import sys\n"
        "from airflow_batchcode.get_provider_info import get_provider_info\n"
        "get_provider_info()\n"
        "heavy = [m for m in sys.modules if m.endswith(('.transport', '.client')) or m in ('httpx', 'fastapi')]\n"
        "print(','.join(heavy))\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60)
    assert result.stdout.strip() == ""


def test_service_packages_export_their_names_on_first_use() -> None:
    from airflow_batchcode.services import refinery
    from airflow_batchcode.services.refinery.wire import translate_error

    assert refinery.translate_error is translate_error and refinery._translated is translate_error
    assert "RefineryClient" in refinery.__all__ and refinery.RefineryClient.__name__ == "RefineryClient"
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        refinery.nope  # noqa: B018
