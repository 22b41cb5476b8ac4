"""The rds_snapshot freeze without holding a worker slot: the operator starts (or finds) the run's temporary
instance and defers; the trigger waits in the triggerer until it is available. Both sides call the engine's
check (prodclone.source.rds_instance_ready) through the same Poll, so the DAG and the CLI wait alike.

The trigger calls boto3 in a thread (asyncio.to_thread): the amazon provider's own RdsDbAvailableTrigger
needs aiobotocore, whose botocore pins conflict with the ones this project needs (see docs/export.md)."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta
from typing import Any

from airflow.sdk import BaseOperator
from airflow.triggers.base import BaseTrigger, TriggerEvent

from prodclone.source import RDS_WAIT_SECONDS, rds_instance_ready, rds_wait


class RdsInstanceReadyTrigger(BaseTrigger):
    """Fires with the frozen source (an endpoint, no secret) when the instance is available, or with an error
    at the deadline or when the instance reaches a state it does not come back from. Side-effect free."""

    def __init__(self, *, name: str, aws_conn_id: str, timeout: float = RDS_WAIT_SECONDS,
                 poll_interval: float = 15.0, deadline: float | None = None):
        super().__init__()
        self.name, self.aws_conn_id, self.timeout, self.poll_interval = name, aws_conn_id, timeout, poll_interval
        self.deadline = deadline or time.time() + timeout  # fixed at first defer: a re-run trigger keeps it

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return ("prodclone.airflow.rds.RdsInstanceReadyTrigger", {
            "name": self.name, "aws_conn_id": self.aws_conn_id, "timeout": self.timeout,
            "poll_interval": self.poll_interval, "deadline": self.deadline})

    async def run(self):
        from airflow.providers.amazon.aws.hooks.rds import RdsHook

        from prodclone.poll import WaitTimeout

        rds = await asyncio.to_thread(lambda: RdsHook(aws_conn_id=self.aws_conn_id).conn)
        poll = rds_wait(self.name, self.timeout, self.poll_interval, self.deadline)
        try:
            frozen = await poll.run_async(lambda: asyncio.to_thread(rds_instance_ready, rds, self.name))
        except WaitTimeout as exc:
            yield TriggerEvent({"status": "timeout", "message": str(exc)})
        except Exception as exc:  # not transient: an AWS refusal, a dead-end state
            yield TriggerEvent({"status": "error", "message": f"waiting for RDS instance {self.name}: {exc}"})
        else:
            yield TriggerEvent({"status": "done", "frozen": frozen.as_dict()})


class FreezeRdsSource(BaseOperator):
    """Restores the source's newest snapshot to the run's temporary instance (or finds it on a retry), then
    waits for it in the triggerer. Returns the frozen source (endpoint, instance name) for the export tasks."""

    def __init__(self, *, poll_interval: float = 15.0, timeout: float = RDS_WAIT_SECONDS, **kwargs):
        super().__init__(**kwargs)
        self.poll_interval, self.timeout = poll_interval, timeout

    def execute(self, context):
        from prodclone.airflow import support as af
        from prodclone.config import load_config

        run = af.export_run()
        with af.fail_fast():
            name = run.start_rds_restore()
        self.defer(trigger=RdsInstanceReadyTrigger(name=name, aws_conn_id=af.rds_conn_id(load_config()),
                                                   timeout=self.timeout, poll_interval=self.poll_interval),
                   method_name="execute_complete", timeout=timedelta(seconds=self.timeout + 60))

    def execute_complete(self, context, event: dict) -> dict:
        from airflow.sdk.exceptions import AirflowException, AirflowFailException

        if event["status"] == "done":
            return event["frozen"]
        self._remove_instance()
        if event["status"] == "timeout":  # a retry restores again
            raise AirflowException(event["message"])
        raise AirflowFailException(event["message"])

    def _remove_instance(self) -> None:
        """thaw_source, a teardown, runs only after a freeze that succeeded: a failed one removes its own
        instance (tagged; deletion refuses any other), so no temporary copy of production outlives the run."""
        from prodclone.airflow import support as af

        try:
            af.export_run().thaw()
        except Exception as exc:  # the wait's error is the one to report
            self.log.warning("could not delete the temporary RDS instance: %s; delete it by hand", exc)
