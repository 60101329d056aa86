"""Provider metadata read by Airflow's ProvidersManager (entry point ``apache_airflow_provider``)."""

from __future__ import annotations

from typing import Any

from airflow_batchcode import __version__
from airflow_batchcode.services.catalogue import DEFAULT_SERVICE, SERVICES, all_specs, form_field

_SHARED_FIELDS: dict[str, dict[str, Any]] = {
    "service": {
        "label": "Service",
        "description": "Which batch coding service this connection talks to.",
        "schema": {"type": ["string", "null"], "enum": [*SERVICES, None], "default": DEFAULT_SERVICE},
    },
    "topic": form_field("Default topic", "Classification used when a task names none (anzsco or osca for ABS)."),
}
_NETWORK_FIELDS: dict[str, dict[str, Any]] = {
    "rate_limit": form_field(
        "Requests per second",
        "Client-side limit shared by every task and trigger of this connection; empty: the service's default "
        "(ABS 1, super.ai 10, Gravity-AI 5, Refinery none); 0: none.",
        "number",
    ),
    "daily_quota": form_field(
        "Requests per quota window",
        "The account's quota (ABS: 10,000 a day; 0: none); a spent quota is waited out.",
        "integer",
    ),
    "quota_window": form_field(
        "Quota window (s)", "86400: UTC days; shorter windows start at multiples of their length.", "number", 86400
    ),
    "budget_url": form_field(
        "Shared budget (Redis URL)", "redis://host:port/db: one request budget for every worker and triggerer."
    ),
    "read_timeout": form_field("Read timeout (s)", kind="number", default=60),
    "allow_insecure_http": form_field(
        "Allow plain http", "Accept http:// URLs to hosts other than loopback (never in production).", "boolean", False
    ),
}


def _conn_fields() -> dict[str, Any]:
    """The connection form's extras: the shared ones, then each service's own, in catalogue order."""
    fields: dict[str, Any] = dict(_SHARED_FIELDS)
    for spec in all_specs():
        fields.update(spec.connection_fields)
    fields.update(_NETWORK_FIELDS)
    return fields


def get_provider_info() -> dict[str, Any]:
    """Describe the package, its hooks and the ``batchcode`` connection type's UI form (from the catalogue)."""
    specs = all_specs()
    login_users = ", ".join(spec.label for spec in specs if spec.uses_login)
    return {
        "package-name": "airflow-batchcode",
        "name": "Batch Coding Services",
        "description": (
            f"Drive asynchronous batch coding services ({', '.join(spec.title for spec in specs)}) from Airflow: "
            "create an operation, upload a manifest, wait deferred, download and load the coded results."
        ),
        "versions": [__version__],
        "integrations": [
            {"integration-name": spec.title, "external-doc-url": spec.doc_url, "tags": ["service"]} for spec in specs
        ],
        "hooks": [
            {
                "integration-name": spec.title,
                "python-modules": ["airflow_batchcode.hooks.batchcode"],
            }
            for spec in specs
        ],
        "plugins": [{"name": "batchcode", "plugin-class": "airflow_batchcode.ui.plugin.BatchCodeUIPlugin"}],
        "connection-types": [
            {
                "connection-type": "batchcode",
                "hook-class-name": "airflow_batchcode.hooks.batchcode.BatchCodeHook",
                "hook-name": "Batch Coding Service",
                "ui-field-behaviour": {
                    "hidden-fields": ["schema", "port"],
                    "relabeling": {
                        "host": "API origin",
                        "login": f"Client ID ({login_users})",
                        "password": "Client secret / API key",
                    },
                    "placeholders": {
                        "host": "https://partner-coder.api.abs.gov.au",
                        "login": "OAuth2 client id",
                        "password": "OAuth2 client secret",
                    },
                },
                "conn-fields": _conn_fields(),
            }
        ],
        "config": _CONFIG,
    }


_CONFIG = {  # the [batchcode] section of airflow.cfg, as `airflow config list` shows it
    "batchcode": {
        "description": "Defaults of the batch coding pipeline (``coding_dag``) and of ``OperationStatusSensor``.",
        "options": {
            "staging": {
                "description": (
                    "Folder or URI (``s3://bucket/prefix``) where the pipeline keeps manifests and raw results; "
                    "every worker must reach it. A DAG's ``staging=`` argument wins; unset means "
                    "``$AIRFLOW_HOME/batchcode``."
                ),
                "version_added": "0.1.0",
                "type": "string",
                "example": "s3://my-bucket/batchcode",
                "default": None,
            },
            "default_deferrable": {
                "description": (
                    "Whether ``OperationStatusSensor`` waits in the triggerer (no worker slot held) when a task "
                    "does not say; a task's ``deferrable=`` argument wins."
                ),
                "version_added": "0.1.0",
                "type": "boolean",
                "example": "False",
                "default": "True",
            },
        },
    }
}
