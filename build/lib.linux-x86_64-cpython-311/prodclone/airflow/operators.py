"""Thin operators the DAGs use. WaitForClone defers on the driver's wait
spec (a Velero Backup/Restore); with the postgres driver there is nothing to
wait for and it returns at once."""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import BaseOperator


class WaitForClone(BaseOperator):
    """Waits, in the triggerer, until the driver's snapshot or restore named ``name`` is done."""

    template_fields = ("name",)

    def __init__(self, *, what: str, name: str, poll_interval: float = 5.0, **kwargs):
        super().__init__(**kwargs)
        self.what, self.name, self.poll_interval = what, name, poll_interval

    def execute(self, context):
        from prodclone.airflow import support as af
        from prodclone.airflow.triggers import VeleroPhaseTrigger
        from prodclone.config import load_config

        cfg = load_config()
        spec = af.clone_driver(cfg).wait_spec(self.what, self.name)
        if spec is None:
            return None
        self.defer(trigger=VeleroPhaseTrigger(**spec, kubernetes_conn_id=cfg.velero.kubernetes_conn_id,
                                              poll_interval=self.poll_interval),
                   method_name="execute_complete", timeout=timedelta(seconds=spec["timeout"] + 60))

    def execute_complete(self, context, event: dict):
        from airflow.sdk.exceptions import AirflowException, AirflowFailException

        if event["status"] == "timeout":
            raise AirflowFailException(event["message"] + "; Velero runs restores one at a time: check its queue")
        if event["status"] != "done":
            raise AirflowException(event["message"])
        return event["phase"]  # the next task checks it and reports failureReason / validationErrors
