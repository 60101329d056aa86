"""Provider metadata read by Airflow's ProvidersManager (entry point ``apache_airflow_provider``)."""

from __future__ import annotations

from typing import Any

from airflow_batchcode import __version__

_SERVICE_ENUM = ["abs"]


def get_provider_info() -> dict[str, Any]:
    """Describe the package, its hooks and the ``batchcode`` connection type's UI form."""
    return {
        "package-name": "airflow-batchcode",
        "name": "Batch Coding Services",
        "description": (
            "Drive asynchronous batch coding services (ABS Occupation Coding Service, ...) from Airflow: "
            "create an operation, upload a manifest, wait deferred, download and load the coded results."
        ),
        "versions": [__version__],
        "integrations": [
            {
                "integration-name": "ABS Occupation Coding Service",
                "external-doc-url": "https://www.abs.gov.au/",
                "tags": ["service"],
            }
        ],
        "hooks": [
            {
                "integration-name": "ABS Occupation Coding Service",
                "python-modules": ["airflow_batchcode.hooks.batchcode"],
            }
        ],
        "connection-types": [
            {
                "connection-type": "batchcode",
                "hook-class-name": "airflow_batchcode.hooks.batchcode.BatchCodeHook",
                "hook-name": "Batch Coding Service",
                "ui-field-behaviour": {
                    "hidden-fields": ["schema", "port"],
                    "relabeling": {
                        "host": "API origin",
                        "login": "Client ID",
                        "password": "Client secret / API key",
                    },
                    "placeholders": {
                        "host": "https://partner-coder.api.abs.gov.au",
                        "login": "OAuth2 client id",
                        "password": "OAuth2 client secret",
                    },
                },
                "conn-fields": {
                    "service": {
                        "label": "Service",
                        "description": "Which batch coding service this connection talks to.",
                        "schema": {"type": ["string", "null"], "enum": [*_SERVICE_ENUM, None], "default": "abs"},
                    },
                    "topic": {
                        "label": "Default topic",
                        "description": "Classification used when a task names none (anzsco or osca for ABS).",
                        "schema": {"type": ["string", "null"]},
                    },
                    "auth_url": {
                        "label": "Token URL",
                        "description": "OAuth2 token endpoint; derived from the API origin when empty.",
                        "schema": {"type": ["string", "null"]},
                    },
                    "rate_limit": {
                        "label": "Requests per second",
                        "description": "Client-side limit shared by every task and trigger of this connection.",
                        "schema": {"type": ["number", "null"], "default": 1},
                    },
                    "read_timeout": {
                        "label": "Read timeout (s)",
                        "schema": {"type": ["number", "null"], "default": 60},
                    },
                    "allow_insecure_http": {
                        "label": "Allow plain http",
                        "description": "Accept http:// URLs to hosts other than loopback (never in production).",
                        "schema": {"type": ["boolean", "null"], "default": False},
                    },
                },
            }
        ],
    }
