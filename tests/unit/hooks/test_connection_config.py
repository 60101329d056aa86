"""Reading a ``batchcode`` connection into a service config, from JSON, URI and UI-style extras."""

from __future__ import annotations

import json

import pytest
from airflow.models.connection import Connection

from airflow_batchcode.exceptions import ConfigurationError
from airflow_batchcode.hooks.batchcode import BatchCodeHook, service_config_from_connection
from airflow_batchcode.services.abs import AbsClient


def test_json_connection_with_scheme_in_host() -> None:
    conn = Connection.from_json(
        json.dumps(
            {
                "conn_type": "batchcode",
                "host": "https://partner-coder.api.abs.gov.au",
                "login": "id",
                "password": "secret",
                "extra": {"service": "abs", "topic": "osca", "rate_limit": "0.5"},
            }
        ),
        conn_id="c",
    )
    config = service_config_from_connection(conn)
    assert config.base_url == "https://partner-coder.api.abs.gov.au"
    assert config.service == "abs" and config.number("rate_limit", 1) == 0.5
    assert "secret" not in repr(config)


def test_uri_connection_defaults_to_https_and_http_for_loopback() -> None:
    remote = Connection(conn_id="r", uri="batchcode://id:pw@partner-coder.api.abs.gov.au?service=abs")
    assert service_config_from_connection(remote).base_url == "https://partner-coder.api.abs.gov.au"
    local = Connection(conn_id="l", uri="batchcode://id:pw@127.0.0.1:8123")
    assert service_config_from_connection(local).base_url == "http://127.0.0.1:8123"


def test_ui_prefixed_extras_are_read() -> None:
    conn = Connection(
        conn_id="u",
        conn_type="batchcode",
        host="https://h.example",
        login="i",
        password="p",
        extra=json.dumps({"extra__batchcode__service": "abs", "extra__batchcode__topic": "anzsco"}),
    )
    config = service_config_from_connection(conn)
    assert config.extra["topic"] == "anzsco"


def test_missing_host_and_unknown_service_are_clear_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigurationError, match="no host"):
        service_config_from_connection(Connection(conn_id="x", conn_type="batchcode"))
    monkeypatch.setenv(
        "AIRFLOW_CONN_BAD_SERVICE",
        json.dumps(
            {"conn_type": "batchcode", "host": "https://h", "login": "i", "password": "p", "extra": {"service": "nope"}}
        ),
    )
    with pytest.raises(ConfigurationError, match="Unknown batch coding service 'nope'"):
        _ = BatchCodeHook("bad_service").client


def test_hook_builds_the_abs_client_from_an_env_connection(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "AIRFLOW_CONN_BATCHCODE_DEFAULT",
        json.dumps(
            {
                "conn_type": "batchcode",
                "host": "https://partner-coder.api.abs.gov.au",
                "login": "i",
                "password": "p",
                "extra": {"service": "abs", "topic": "osca"},
            }
        ),
    )
    hook = BatchCodeHook()
    assert isinstance(hook.client, AbsClient)
    assert hook.default_topic == "osca"
    hook.close()
