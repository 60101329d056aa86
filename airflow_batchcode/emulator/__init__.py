"""Local emulators of the batch coding services (``pip install 'airflow-batchcode[emulator]'``).

Importing any part of this package without that extra raises
:class:`~airflow_batchcode.exceptions.MissingExtraError` naming it.
"""

from __future__ import annotations

from airflow_batchcode.extras import require

require("emulator", "The batch coding service emulator")
