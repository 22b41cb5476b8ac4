"""Clone drivers: one interface (base.py), one implementation per platform."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # importing drivers.base must stay light: `prodclone env` runs on bare CI runners
    from prodclone.config import Config
    from prodclone.drivers.base import CloneDriver, SecretStore


def get_driver(cfg: Config, base_dsn: str, secrets: SecretStore, *, kube=None, ec2=None) -> CloneDriver:
    """``kube`` (core/custom/storage API clients) and ``ec2`` are needed by the velero driver only."""
    if cfg.driver == "postgres":
        from prodclone.drivers.postgres import PostgresDriver

        return PostgresDriver(base_dsn, cfg, secrets)
    from prodclone.drivers.velero import VeleroDriver

    return VeleroDriver(cfg, kube, ec2, secrets)
