"""The production topology of ``docker-compose.airflow.yml`` as real processes on one machine (``make stack``)."""
