"""prodclone engine: plain Python, importable without Airflow.

The DAGs in ``dags/`` are thin wiring around these modules; the ``prodclone``
command calls the very same functions.
"""

__version__ = "0.1.0"
