"""Benchmarks of airflow-batchcode: every figure is a ratio against a baseline measured in the same run.

``make bench`` (or ``python -m bench``) runs them all; ``BENCH_QUICK=1`` runs a small version.
See the "Benchmarks" section of the README for what each figure means.
"""
