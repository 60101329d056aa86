"""Sensors of airflow-batchcode."""
