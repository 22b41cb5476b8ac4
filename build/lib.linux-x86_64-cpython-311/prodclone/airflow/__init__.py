"""Where prodclone meets Airflow, and the only package that imports it: connections, the masking key
Variable and S3 credentials (support), failure and deadline alerts, the WaitForClone operator and the
trigger it defers to, and the Clones page with its plugin.

Everything else under ``prodclone`` is the engine, importable without Airflow (tests/unit/test_boundary.py
enforces it). Triggers live here, under plugins/, because the triggerer does not load the DAG folder.
"""
