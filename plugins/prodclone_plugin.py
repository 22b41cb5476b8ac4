"""Airflow's plugin loader scans this folder's top-level files (plugins/.airflowignore hides the engine):
this one hands it prodclone's plugin, the Clones page."""

from prodclone.airflow.plugin import ProdclonePlugin

__all__ = ["ProdclonePlugin"]
