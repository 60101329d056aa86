"""Provider metadata read by Airflow's ProvidersManager (entry point ``apache_airflow_provider``)."""

from __future__ import annotations

from typing import Any

from airflow_batchcode import __version__

_SERVICE_ENUM = ["abs", "refinery", "superai", "gravity"]
_INTEGRATIONS = (
    ("ABS Occupation Coding Service", "https://www.abs.gov.au/"),
    ("ASG Refinery", "https://asgrefinery.io/"),
    ("super.ai", "https://super.ai/"),
    ("Gravity-AI", "https://www.gravity-ai.com/"),
)


def get_provider_info() -> dict[str, Any]:
    """Describe the package, its hooks and the ``batchcode`` connection type's UI form."""
    return {
        "package-name": "airflow-batchcode",
        "name": "Batch Coding Services",
        "description": (
            "Drive asynchronous batch coding services (ABS Occupation Coding Service, ASG Refinery, super.ai, "
            "Gravity-AI) from Airflow: create an operation, upload a manifest, wait deferred, download and load "
            "the coded results."
        ),
        "versions": [__version__],
        "integrations": [
            {"integration-name": name, "external-doc-url": url, "tags": ["service"]} for name, url in _INTEGRATIONS
        ],
        "hooks": [
            {
                "integration-name": name,
                "python-modules": ["airflow_batchcode.hooks.batchcode"],
            }
            for name, _ in _INTEGRATIONS
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
                        "login": "Client ID (ABS)",
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
                    "app_uuid": {
                        "label": "super.ai app UUID",
                        "description": "The super.ai data program jobs are created in (super.ai only).",
                        "schema": {"type": ["string", "null"]},
                    },
                    "manifest_location": {
                        "label": "Manifest location",
                        "description": "s3://bucket/prefix where manifests are staged for Refinery to read.",
                        "schema": {"type": ["string", "null"]},
                    },
                    "storage_conn_id": {
                        "label": "Storage connection",
                        "description": "Airflow aws connection whose credentials stage manifests (Refinery).",
                        "schema": {"type": ["string", "null"]},
                    },
                    "delivery_bucket": {
                        "label": "Delivery bucket",
                        "description": "S3 bucket Refinery delivers results to instead of the export call (optional).",
                        "schema": {"type": ["string", "null"]},
                    },
                    "version": {
                        "label": "Model version",
                        "description": "Gravity-AI project version; the latest active one when empty.",
                        "schema": {"type": ["string", "null"]},
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
