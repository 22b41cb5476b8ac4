"""Registers prodclone's Clones page with Airflow: a FastAPI app mounted at
/prodclone and a "Clones" entry in the UI's navigation (an external view)."""

from airflow.plugins_manager import AirflowPlugin

from prodclone.airflow.webui import app


class ProdclonePlugin(AirflowPlugin):
    name = "prodclone"
    fastapi_apps = [{"app": app, "url_prefix": "/prodclone", "name": "prodclone"}]
    external_views = [{"name": "Clones", "href": "/prodclone/clones", "destination": "nav", "category": "browse",
                       "url_route": "clones"}]
