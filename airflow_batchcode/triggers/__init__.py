"""Triggers of airflow-batchcode."""
