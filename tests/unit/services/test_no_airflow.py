"""``services/`` speaks to the services only: it must import nothing from Airflow."""

from __future__ import annotations

import subprocess
import sys

PROBE = """
import importlib, pkgutil, sys
import airflow_batchcode.services as services
for module in pkgutil.walk_packages(services.__path__, "airflow_batchcode.services."):
    importlib.import_module(module.name)
print(sorted(name for name in sys.modules if name == "airflow" or name.startswith("airflow.")))
"""


def test_importing_every_services_module_loads_no_airflow_module() -> None:
    result = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True, timeout=120)
    assert result.stdout.strip() == "[]"
