"""Deferrable waits for the velero driver: they run in the triggerer (which
does not load the DAG folder, so they live here), poll without holding a
worker slot, and have no side effects, so running twice is harmless."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from prodclone.drivers.velero import DONE as TERMINAL


class VeleroPhaseTrigger(BaseTrigger):
    """Fires when a Velero Backup or Restore reaches a terminal phase, or at the deadline.
    Dropped polls and 5xx answers are retried; a 404 is reported (the object was deleted)."""

    def __init__(self, *, group: str, version: str, namespace: str, plural: str, name: str, timeout: float,
                 kubernetes_conn_id: str = "kubernetes_default", poll_interval: float = 5.0,
                 deadline: float | None = None):
        super().__init__()
        self.group, self.version, self.namespace, self.plural, self.name = group, version, namespace, plural, name
        self.timeout, self.kubernetes_conn_id, self.poll_interval = timeout, kubernetes_conn_id, poll_interval
        self.deadline = deadline or time.time() + timeout  # fixed at first defer: a re-run trigger keeps it

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return ("prodclone.airflow.triggers.VeleroPhaseTrigger", {
            "group": self.group, "version": self.version, "namespace": self.namespace, "plural": self.plural,
            "name": self.name, "timeout": self.timeout, "kubernetes_conn_id": self.kubernetes_conn_id,
            "poll_interval": self.poll_interval, "deadline": self.deadline})

    async def _phase(self) -> str | None:
        from airflow.providers.cncf.kubernetes.hooks.kubernetes import AsyncKubernetesHook
        from kubernetes_asyncio import client

        hook = AsyncKubernetesHook(conn_id=self.kubernetes_conn_id)
        async with hook.get_conn() as api:
            obj = await client.CustomObjectsApi(api).get_namespaced_custom_object(
                self.group, self.version, self.namespace, self.plural, self.name)
        return (obj.get("status") or {}).get("phase")

    async def run(self):
        from kubernetes_asyncio.client.exceptions import ApiException

        what = f"{self.plural[:-1]} {self.namespace}/{self.name}"
        while True:
            try:
                phase = await self._phase()
                if phase in TERMINAL:
                    yield TriggerEvent({"status": "done", "phase": phase, "name": self.name})
                    return
            except ApiException as exc:
                if exc.status == 404:
                    yield TriggerEvent({"status": "error", "message": f"Velero {what} no longer exists"})
                    return
                if (exc.status or 500) < 500:
                    yield TriggerEvent({"status": "error", "message": f"reading Velero {what}: {exc.status} {exc.reason}"})
                    return
                self.log.warning("polling %s: %s %s; retrying", what, exc.status, exc.reason)
            except Exception as exc:  # a dropped connection or a timeout: poll again
                self.log.warning("polling %s failed: %s; retrying", what, exc)
            if time.time() > self.deadline:
                yield TriggerEvent({"status": "timeout", "message": f"Velero {what} is not done after "
                                                                    f"{self.timeout / 60:.0f} minutes"})
                return
            await asyncio.sleep(self.poll_interval)
