"""One export run: every step of ``prodclone_export`` (and of ``prodclone export``) is a method here.

The object is built once per process from the config (or the CLI's flags). What it needs from outside
(the source DSN, the masking key, storage credentials, an RDS client, the clone driver) it is given as
callables, read when first needed and kept: a task that only publishes never reads the key, and nothing
is read twice. Its methods return what the DAG passes between tasks: small, with no secret and no row value.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from prodclone import source as sources
from prodclone.catalog import load_catalog
from prodclone.db import connect
from prodclone.errors import ProdcloneError
from prodclone.export import (
    SPLIT_ROWS,
    export_frozen_unit,
    finalize_frozen_export,
    plan_frozen_export,
    read_manifest,
    run_export,
    verify_and_record,
)
from prodclone.masking.coverage import ensure_covered
from prodclone.masking.rules import Masking, Rules, load_rules
from prodclone.masking.stats import SAMPLE_ROWS
from prodclone.source import Frozen
from prodclone.storage import StorageTarget, open_storage

LATEST = "LATEST"


def run_key(run_id: str) -> str:
    """A storage-safe name derived from the run, so retries reuse their own prefix."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", run_id).strip("_")


def _none() -> None:
    return None


@dataclass
class ExportRun:
    """One export: where it reads and writes, how it masks, and each step of it as a method."""

    url: str  # this export: <storage.url>/exports/<run> in the DAG, --to in the CLI
    rules_path: Path
    source_dsn: Callable[[], str | None] = field(repr=False)  # the configured source, before any freeze
    masking_key: Callable[[], bytes] = field(repr=False)
    storage_options: Callable[[], dict | None] = field(default=_none, repr=False)
    base_dsn: Callable[[], str] | None = field(default=None, repr=False)
    driver: Callable[[], Any] | None = field(default=None, repr=False)
    rds_client: Callable[[], Any] | None = field(default=None, repr=False)
    run_id: str = ""
    root: str | None = None  # holds LATEST; None: the CLI, which writes none
    mode: str = "live"
    frozen: Frozen | None = None
    jobs: int = 1
    split_rows: int = SPLIT_ROWS
    compression: str = "none"
    leak_sample: int = 500
    stats_rows: int = SAMPLE_ROWS
    overwrite: bool = True  # the DAG's retries replace their own half-written try
    rds: dict = field(default_factory=dict)

    @classmethod
    def from_config(cls, cfg, run_id: str, frozen: dict | None = None, **needs) -> ExportRun:
        """This run's export as ``cfg`` says; ``needs`` are the callables above, ``frozen`` what freeze returned."""
        return cls(url=f"{cfg.storage_url}/exports/{run_key(run_id)}", root=cfg.storage_url, run_id=run_id,
                   rules_path=cfg.rules_path, mode=cfg.source_mode, frozen=Frozen(**frozen) if frozen else None,
                   jobs=cfg.jobs, split_rows=cfg.split_rows, compression=cfg.compression, leak_sample=cfg.leak_sample,
                   stats_rows=cfg.stats_rows, rds=cfg.rds, **needs)

    @property
    def run(self) -> str:
        return run_key(self.run_id)

    @cached_property
    def rules(self) -> Rules:
        return load_rules(self.rules_path)

    @cached_property
    def masking(self) -> Masking:
        """The rules bound to the key: read here, once, by the steps that mask, check or verify."""
        return self.rules.bind(self.masking_key())

    @cached_property
    def target(self) -> StorageTarget:
        """This export's place and the credentials that reach it."""
        return StorageTarget(self.url, self.storage_options())

    @cached_property
    def configured_source(self) -> str | None:
        return self.source_dsn()

    @cached_property
    def source(self) -> str | None:
        """The DSN the export reads: the configured source, or the frozen copy of it (a restored instance)."""
        configured = self.configured_source
        return self.frozen.dsn(configured) if self.frozen and configured else configured

    @cached_property
    def _rds(self):
        if self.rds_client is None:
            raise ProdcloneError("source.mode is rds_snapshot but no RDS client was given")
        return self.rds_client()

    def storage(self, url: str | None = None):
        return open_storage(self.target.at(url) if url else self.target)

    # --- holding one point in time (frozen modes)

    def freeze(self) -> Frozen:
        """Pause the replica, or restore the RDS snapshot and wait here (the DAG waits in the triggerer)."""
        if self.mode == "replica_paused":
            return sources.pause_replica(self.configured_source)
        if self.mode == "rds_snapshot":
            return sources.restore_rds_snapshot(self._rds, self.rds, self.run)
        return Frozen(mode="live")

    def start_rds_restore(self) -> str:
        return sources.start_rds_restore(self._rds, self.rds, self.run)

    def thaw(self) -> None:
        """Resume replay or delete the temporary instance (only one prodclone tagged); safe to repeat."""
        if self.mode == "replica_paused":
            sources.resume_replica(self.configured_source)
        elif self.mode == "rds_snapshot":
            sources.delete_rds_instance(self._rds, self.frozen.instance if self.frozen
                                        else sources.temp_instance_name(self.run))

    # --- the export

    def check_rules(self) -> dict:
        """Fail closed: a column no rule covers stops the run before any data moves."""
        with connect(self.source, role="source") as conn:
            report = ensure_covered(load_catalog(conn), self.rules.throwaway())  # no key: nothing is masked here
        return {"masked_columns": report.masked_columns, "kept_columns": report.kept_columns}

    def export(self) -> dict:
        """Live mode: the whole export in this task, its workers sharing one exported snapshot."""
        return run_export(self.source, self.masking, self.target, jobs=self.jobs, overwrite=self.overwrite,
                          compression=self.compression)["totals"]  # (split_rows is the frozen modes' key)

    def plan(self) -> list[dict]:
        """Frozen modes: schema and sequences written, the units to map over returned."""
        return plan_frozen_export(self.source, self.rules, self.target, mode=self.mode, overwrite=self.overwrite,
                                  split_rows=self.split_rows, compression=self.compression)

    def export_part(self, unit: dict) -> dict:
        return export_frozen_unit(self.source, self.masking, self.target, unit)

    def finalize(self, results: list[dict]) -> dict:
        return finalize_frozen_export(self.source, self.masking, self.target, list(results))["totals"]

    def verify(self, summary: bool = False) -> dict | None:
        """Checksums, the leak check and the statistics comparison; the record that makes the export seedable
        (``summary``: its counts and the names of columns whose statistics are out of bounds, for XCom)."""
        record = verify_and_record(self.storage(), self.source, self.masking, sample_size=self.leak_sample,
                                   stats_rows=self.stats_rows)
        if not summary or record is None:
            return record
        return {k: record[k] for k in ("files", "rows", "columns_checked", "samples")} | {
            "statistics_warnings": sorted(record.get("statistics", {}).get("outside_bounds", {}))}

    # --- the base and its snapshot

    def seed(self, labels: str | None = None) -> dict:
        from prodclone.seed import seed

        r = seed(self.target, self.base_dsn(), overwrite=self.overwrite,
                 labels=f"run={self.run}" if labels is None else labels)
        return {"database": r.database, "tables": r.tables, "rows": r.rows, "seconds": r.seconds}

    def begin_snapshot(self, rows: int) -> str:
        """Start the snapshot of the freshly seeded base (a Velero Backup returns before it is done)."""
        rules_sha = read_manifest(self.storage())["rules_sha256"]
        return self.driver().begin_snapshot(self.run_id, export=self.url, rows=rows, rules_sha256=rules_sha)

    def snapshot(self) -> dict:
        """The finished snapshot, found by run id (its metadata was recorded when it started)."""
        return self.driver().finish_snapshot(self.run_id).as_dict()

    def publish(self, totals: dict, seeded: dict, snap: dict) -> tuple[dict, dict]:
        """Point ``LATEST`` at this export; returns it and the extra of the "base snapshot" Asset event."""
        latest = {"export": self.url, "run": self.run, "rows": totals["rows"], "seeded": seeded["database"],
                  "snapshot": snap["id"], "rules_sha256": snap["rules_sha256"]}
        self.storage(self.root).write_bytes(LATEST, json.dumps(latest).encode())
        extra = {"snapshot": snap["id"], "rows": totals["rows"], "tables": seeded["tables"],
                 "rules_sha256": snap["rules_sha256"], "export": self.url,
                 "masked_columns": totals.get("masked_columns"), "export_seconds": totals.get("seconds"),
                 "seed_seconds": seeded["seconds"]}
        return latest, extra
