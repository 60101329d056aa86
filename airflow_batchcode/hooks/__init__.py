"""Hooks of airflow-batchcode."""
