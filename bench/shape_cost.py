"""What keeping production's shape costs the export, side by side in one run (issue 16).

Builds the sample database, then exports it with three versions of the shipped rules, alternately, each
run in a fresh subprocess (so every run builds its own pools, as a nightly export does), jobs=2, kernel on:
  shape      include/masking/rules.yaml as shipped: Faker variants (the column keeps its distinct values),
             card_number, faker fit_length for ticket bodies, hashes as long as the source's
  pool_only  the same rules with every faker rule (JSON paths too) `pool_only: true`: at most pool_size
             distinct values per column, the behaviour before variants
  before     pool_only, and the rules shipped before this bench's branch: redact keeping 4 digits for
             cards, Faker paragraphs for ticket bodies, 40-character hashes
Reports the best of the rounds per version: the seconds to build the rules' pools (a fixed cost per export,
timed apart), the export's seconds and rows/s, and the ratio to `shape`; then masking alone (every table's
COPY text masked in one process, no database, no workers), the per-row cost the export's noise can hide. Usage:
  python bench/shape_cost.py [users] [--rounds N]      (default 100000 users, 3 rounds)
Absolute times are noisy on shared machines; read the ratios.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "plugins"))
KEY = b"bench-key-" + b"x" * 32
RULES = ROOT / "include/masking/rules.yaml"


def _pool_only(spec):
    """``spec`` with every faker rule in it (JSON paths, array elements) pool_only."""
    if isinstance(spec, dict):
        out = {k: _pool_only(v) for k, v in spec.items()}
        if out.get("transform") == "faker":
            out["pool_only"] = True
        return out
    return spec


def rules_for(version: str) -> dict:
    doc = yaml.safe_load(RULES.read_text())
    if version == "shape":
        return doc
    doc = _pool_only(doc)
    if version == "before":
        cols = doc["tables"]
        cols["public.payments"]["columns"]["card_number"] = {"transform": "redact", "keep_end": 4}
        cols["public.support_tickets"]["columns"]["body"] = {"transform": "faker", "provider": "paragraph",
                                                             "pool_only": True}
        cols["public.users"]["columns"]["password_hash"] = {"transform": "hash", "length": 40}
    return doc


def _specs(spec):
    """Every transform spec in a column's rule, nested ones (JSON paths, array elements) too."""
    if isinstance(spec, str):
        spec = {"transform": spec}
    if isinstance(spec, dict):
        if "transform" in spec:
            yield spec
        for v in spec.values():
            if isinstance(v, dict):
                yield from (s for path in v.values() for s in _specs(path)) if "transform" not in v else _specs(v)


def one(dsn: str, rules_path: str) -> dict:
    """One export in this process: the pools built first (timed apart: a fixed cost per export, which the
    export's coordinator pays before any row moves), then the export, which reuses them."""
    from prodclone.export import run_export
    from prodclone.masking.rules import build_transform, load_rules

    masking = load_rules(Path(rules_path)).bind(KEY)
    t0 = time.perf_counter()
    for name, table in masking.rules.tables.items():
        for column, spec in table.columns.items():
            for s in _specs(spec):
                build_transform(s, masking.context(), where=f"{name}.{column}")
    build = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as out:
        t0 = time.perf_counter()
        totals = run_export(dsn, masking, f"file://{out}/export", jobs=2)["totals"]
        return {"build_s": build, "seconds": time.perf_counter() - t0, "rows": totals["rows"]}


def masking_alone(dsn: str, paths: dict[str, Path], rounds: int) -> dict[str, float]:
    """Seconds to mask every table's COPY text once, per version, in this process on one core (the kernel, and
    Python for the transforms it calls back): the per-row cost without the database or the workers. Best of
    ``rounds``, alternating; fresh maskers each round, so no cache carries over."""
    import psycopg
    from psycopg import sql

    from prodclone.catalog import load_catalog
    from prodclone.masking.rewriter import TableMasker
    from prodclone.masking.rules import load_rules

    rules = {v: load_rules(p) for v, p in paths.items()}
    with psycopg.connect(dsn) as conn:
        catalog = load_catalog(conn)
        blocks = {}
        for name in rules["shape"].tables:
            table = catalog.tables[name]
            query = sql.SQL("COPY (SELECT {} FROM {}) TO STDOUT").format(
                sql.SQL(", ").join(sql.Identifier(c.name) for c in table.columns), table.scan)
            with conn.cursor().copy(query) as copy:
                blocks[name] = b"".join(bytes(b) for b in copy)
    best: dict[str, float] = {}
    for _ in range(rounds):
        for v, r in rules.items():
            maskers = {name: TableMasker(catalog.tables[name], r.bind(KEY)) for name in blocks}
            t0 = time.perf_counter()
            for name, block in blocks.items():
                if not maskers[name].passthrough:
                    maskers[name].mask_block(block)
            best[v] = min(best.get(v, float("inf")), time.perf_counter() - t0)
    return best


def main(users: int, rounds: int) -> None:
    import psycopg

    from prodclone import devpg
    from prodclone.db import with_dbname
    from prodclone.sample import create_sample_database

    server = devpg.server_dsn()
    name = f"prodclone_bench_shape_{users}"
    dsn = with_dbname(server, name)
    create_sample_database(dsn, users=users, replace=True)
    versions = ("shape", "pool_only", "before")
    best: dict[str, float] = {}
    build: dict[str, float] = {}
    rows = 0
    try:
        with tempfile.TemporaryDirectory() as tmp:
            paths = {}
            for v in versions:
                paths[v] = Path(tmp) / f"{v}.yaml"
                paths[v].write_text(yaml.safe_dump(rules_for(v), sort_keys=False))
            for r in range(rounds):  # alternate, so each version sees the same machine load
                for v in versions:
                    run = subprocess.run([sys.executable, __file__, "--one", dsn, str(paths[v])], check=True,
                                         capture_output=True, text=True)
                    got = json.loads(run.stdout.strip().splitlines()[-1])
                    rows = got["rows"]
                    best[v] = min(best.get(v, float("inf")), got["seconds"])
                    build[v] = min(build.get(v, float("inf")), got["build_s"])
                    print(json.dumps({"round": r, "version": v, **got}), flush=True)
            alone = masking_alone(dsn, paths, rounds)
    finally:
        with psycopg.connect(with_dbname(server, "postgres"), autocommit=True) as c:
            c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    report = {"users": users, "rows": rows, "rounds": rounds,
              **{v: {"build_s": round(build[v], 2), "seconds": round(best[v], 2), "rows_per_s": round(rows / best[v]),
                     "ratio_to_shape": round(best[v] / best["shape"], 3), "masking_alone_s": round(alone[v], 2),
                     "masking_alone_ratio": round(alone[v] / alone["shape"], 3)} for v in versions}}
    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    (out / f"shape_cost_{int(time.time())}.json").write_text(json.dumps(report, indent=2))
    print(f"\n{users} users, {rows} rows, best of {rounds}, jobs=2, kernel on; pools built apart (a fixed cost per "
          "export); ratio: export time / shape's")
    print(f"{'rules':<10} {'pools s':>8} {'export s':>9} {'rows/s':>9} {'ratio':>6} {'masking alone s':>16} {'ratio':>6}")
    for v in versions:
        r = report[v]
        print(f"{v:<10} {r['build_s']:>8} {r['seconds']:>9} {r['rows_per_s']:>9} {r['ratio_to_shape']:>6} "
              f"{r['masking_alone_s']:>16} {r['masking_alone_ratio']:>6}")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--one"]:
        print(json.dumps(one(sys.argv[2], sys.argv[3])))
    else:
        parser = argparse.ArgumentParser()
        parser.add_argument("users", type=int, nargs="?", default=100_000)
        parser.add_argument("--rounds", type=int, default=3)
        opts = parser.parse_args()
        main(opts.users, opts.rounds)
