"""Operators of airflow-batchcode."""
