"""Loads and validates include/prodclone.yaml."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from prodclone.errors import ProdcloneError

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_PATH = REPO_ROOT / "include" / "prodclone.yaml"
MODES = ("live", "replica_paused", "rds_snapshot")
DRIVERS = ("postgres", "velero")


@dataclass
class Config:
    driver: str = "postgres"
    source_conn_id: str = "prodclone_source"
    source_mode: str = "live"
    jobs: int = 2
    split_rows: int = 5_000_000
    rds: dict = field(default_factory=dict)
    base_conn_id: str = "prodclone_base"
    storage_url: str = "file:///tmp/prodclone/exports"
    aws_conn_id: str = "aws_default"
    rules_path: Path = REPO_ROOT / "include" / "masking" / "rules.yaml"
    key_variable: str = "prodclone_masking_key"
    leak_sample: int = 500
    schedule: str | None = "0 2 * * *"


def load_config(path: str | Path | None = None) -> Config:
    """``$PRODCLONE_CONFIG`` or include/prodclone.yaml; ``$PRODCLONE_STORAGE_URL`` overrides the storage URL."""
    p = Path(path or os.environ.get("PRODCLONE_CONFIG") or DEFAULT_PATH)
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except FileNotFoundError:
        raise ProdcloneError(f"config file {p} does not exist") from None
    except yaml.YAMLError as exc:
        raise ProdcloneError(f"{p}: malformed YAML: {exc}") from None
    src, base, st, m, ex = (data.get(k) or {} for k in ("source", "base", "storage", "masking", "export"))
    rules = Path(m.get("rules", "include/masking/rules.yaml"))
    cfg = Config(
        driver=data.get("driver", "postgres"),
        source_conn_id=src.get("conn_id", "prodclone_source"),
        source_mode=src.get("mode", "live"),
        jobs=int(src.get("jobs", 2)),
        split_rows=int(src.get("split_rows", 5_000_000)),
        rds=src.get("rds") or {},
        base_conn_id=base.get("conn_id", "prodclone_base"),
        storage_url=os.environ.get("PRODCLONE_STORAGE_URL") or st.get("url", "file:///tmp/prodclone/exports"),
        aws_conn_id=st.get("aws_conn_id", "aws_default"),
        rules_path=rules if rules.is_absolute() else REPO_ROOT / rules,
        key_variable=m.get("key_variable", "prodclone_masking_key"),
        leak_sample=int(m.get("leak_sample", 500)),
        schedule=ex.get("schedule", "0 2 * * *"),
    )
    if cfg.source_mode not in MODES:
        raise ProdcloneError(f"{p}: source.mode must be one of {', '.join(MODES)}, not {cfg.source_mode!r}")
    if cfg.driver not in DRIVERS:
        raise ProdcloneError(f"{p}: driver must be one of {', '.join(DRIVERS)}, not {cfg.driver!r}")
    if cfg.jobs < 1:
        raise ProdcloneError(f"{p}: source.jobs must be >= 1")
    if not cfg.storage_url.startswith(("file:///", "s3://")):
        raise ProdcloneError(f"{p}: storage.url must start with file:/// or s3://")
    return cfg
