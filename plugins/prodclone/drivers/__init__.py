"""Clone drivers: one interface (base.py), one implementation per platform."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # importing drivers.base must stay light: `prodclone env` runs on bare CI runners
    from prodclone.config import Config
    from prodclone.drivers.base import CloneDriver, SecretStore


def get_driver(cfg: Config, base_dsn: str, secrets: SecretStore) -> CloneDriver:
    if cfg.driver == "postgres":
        from prodclone.drivers.postgres import PostgresDriver

        return PostgresDriver(base_dsn, cfg, secrets)
    raise NotImplementedError(f"the {cfg.driver!r} clone driver is not available yet; use driver: postgres")
