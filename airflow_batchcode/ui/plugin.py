"""The Airflow plugin the provider brings: its FastAPI app, a "Coding report" on each DAG run, a "Coding review" entry.

Registered in :func:`airflow_batchcode.get_provider_info.get_provider_info` (``plugins``), so
installing the package is enough: the api-server mounts the app under ``/batchcode`` and the
UI shows the external views (in an iframe, with the user's session cookie).
"""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from airflow_batchcode.ui.app import URL_PREFIX, create_app


class BatchCodeUIPlugin(AirflowPlugin):
    """Coding report, coding history and review queue pages."""

    name = "batchcode"
    fastapi_apps = [{"name": "batchcode", "app": create_app(), "url_prefix": URL_PREFIX}]
    external_views = [
        {
            "name": "Coding report",
            "href": f"{URL_PREFIX}/dags/{{DAG_ID}}/runs/{{RUN_ID}}",
            "destination": "dag_run",
            "url_route": "coding-report",
        },
        {
            "name": "Coding history",
            "href": f"{URL_PREFIX}/dags/{{DAG_ID}}",
            "destination": "dag",
            "url_route": "coding-history",
        },
        {
            "name": "Coding review",
            "href": f"{URL_PREFIX}/review",
            "destination": "nav",
            "url_route": "coding-review",
            "category": "browse",
        },
    ]


def _providers_discovered_lazily() -> bool:
    from airflow.configuration import conf

    return conf.getboolean("core", "lazy_discover_providers", fallback=True)


entry_point_plugin: type[BatchCodeUIPlugin] | None = BatchCodeUIPlugin if _providers_discovered_lazily() else None
"""The ``airflow.plugins`` entry point's target.

Airflow loads the plugins a provider info names only with ``[core] lazy_discover_providers =
False``; by default (``True``) it reads just the ``airflow.plugins`` entry points. So the
package names the plugin in both places, and this entry point yields it only when provider
discovery is lazy: ``None`` is not a plugin class and Airflow skips it, so the plugin is never
registered twice."""
