"""Services of airflow-batchcode."""
