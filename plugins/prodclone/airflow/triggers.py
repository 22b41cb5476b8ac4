"""Deferrable waits for the velero driver: they run in the triggerer (which
does not load the DAG folder, so they live here), poll without holding a
worker slot, and have no side effects, so running twice is harmless. The
loop itself is prodclone.poll's, the one the driver's synchronous waits use."""

from __future__ import annotations

from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from prodclone.drivers.base import WaitSpec
from prodclone.drivers.velero import DONE as TERMINAL
from prodclone.drivers.velero import GROUP, VERSION
from prodclone.poll import Poll, WaitTimeout


def _transient(exc: BaseException) -> bool:
    """A dropped connection, a timeout or a 5xx: poll again. A 4xx (a 404 included) ends the wait."""
    from kubernetes_asyncio.client.exceptions import ApiException

    return not isinstance(exc, ApiException) or (exc.status or 500) >= 500


class VeleroPhaseTrigger(BaseTrigger):
    """Fires when a Velero Backup or Restore reaches a terminal phase, or at the deadline.
    Dropped polls and 5xx answers are retried; a 404 is reported (the object was deleted)."""

    def __init__(self, *, resource: str, namespace: str, name: str, timeout: float,
                 kubernetes_conn_id: str = "kubernetes_default", poll_interval: float = 5.0,
                 deadline: float | None = None):
        super().__init__()
        self.spec = WaitSpec(resource, namespace, name, timeout)
        self.kubernetes_conn_id, self.poll_interval = kubernetes_conn_id, poll_interval
        # Fixed at first defer: a trigger re-run by another triggerer keeps it.
        self.poll = Poll(self.spec.what, timeout=timeout, every=poll_interval, deadline=deadline or 0.0,
                         transient=_transient)

    @classmethod
    def for_spec(cls, spec: WaitSpec, **kwargs) -> VeleroPhaseTrigger:
        return cls(resource=spec.resource, namespace=spec.namespace, name=spec.name, timeout=spec.timeout, **kwargs)

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return ("prodclone.airflow.triggers.VeleroPhaseTrigger", {
            "resource": self.spec.resource, "namespace": self.spec.namespace, "name": self.spec.name,
            "timeout": self.spec.timeout, "kubernetes_conn_id": self.kubernetes_conn_id,
            "poll_interval": self.poll_interval, "deadline": self.poll.deadline})

    async def _terminal_phase(self) -> str | None:
        from airflow.providers.cncf.kubernetes.hooks.kubernetes import AsyncKubernetesHook
        from kubernetes_asyncio import client

        hook = AsyncKubernetesHook(conn_id=self.kubernetes_conn_id)
        async with hook.get_conn() as api:
            obj = await client.CustomObjectsApi(api).get_namespaced_custom_object(
                GROUP, VERSION, self.spec.namespace, self.spec.resource, self.spec.name)
        phase = (obj.get("status") or {}).get("phase")
        return phase if phase in TERMINAL else None

    async def run(self):
        from kubernetes_asyncio.client.exceptions import ApiException

        try:
            phase = await self.poll.run_async(self._terminal_phase)
        except WaitTimeout as exc:
            yield TriggerEvent({"status": "timeout", "message": str(exc)})
        except ApiException as exc:
            message = (f"{self.spec.what} no longer exists" if exc.status == 404
                       else f"reading {self.spec.what}: {exc.status} {exc.reason}")
            yield TriggerEvent({"status": "error", "message": message})
        else:
            yield TriggerEvent({"status": "done", "phase": phase, "name": self.spec.name})
