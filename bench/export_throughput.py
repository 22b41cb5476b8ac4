"""Masked export vs raw COPY of the same tables, side by side in one run.

For each scale: build the sample database, then in fresh subprocesses (so
peak memory is per run) time
  raw     COPY (SELECT cols FROM t) TO STDOUT for every table, to files: the ceiling
  masked  `run_export` with the shipped rules, jobs=1 and jobs=2
and report throughput ratios and peak RSS. Usage:
  python bench/export_throughput.py [users ...]      (default: 10000 100000)
Absolute times are noisy on shared machines; read the ratios.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "plugins"))


def _raw(dsn: str, out: str) -> dict:
    import psycopg
    from psycopg import sql

    from prodclone.catalog import load_catalog
    from prodclone.export import Unit

    t0 = time.perf_counter()
    rows = size = 0
    with psycopg.connect(dsn) as conn:
        conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        for name, table in load_catalog(conn).tables.items():
            cols = sql.SQL(", ").join(sql.Identifier(c.name) for c in table.columns)
            with open(Path(out) / Path(Unit(name).path).name, "wb") as fh, conn.cursor().copy(
                sql.SQL("COPY (SELECT {} FROM {}) TO STDOUT").format(cols, table.ident)
            ) as copy:
                for data in copy:
                    fh.write(data)
                    rows += 1
                    size += len(data)
    return {"seconds": time.perf_counter() - t0, "rows": rows, "bytes": size}


def _masked(dsn: str, out: str, jobs: int, only: str | None = None) -> dict:
    from prodclone.export import run_export
    from prodclone.masking.rules import load_rules

    rules = load_rules(ROOT / "include/masking/rules.yaml")
    if only:  # one table: every other table skipped (schema only)
        for name, t in rules.tables.items():
            t.skip = name != only
    t0 = time.perf_counter()
    m = run_export(dsn, rules, b"bench-key-" + b"x" * 32, f"file://{out}", jobs=jobs)
    return {"seconds": time.perf_counter() - t0, "rows": m["totals"]["rows"], "bytes": m["totals"]["bytes"]}


def child(kind: str, dsn: str, jobs: int, only: str | None) -> None:
    with tempfile.TemporaryDirectory() as out:
        r = _raw(dsn, out) if kind == "raw" else _masked(dsn, out, jobs, only)
    self_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    kids_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    r["peak_rss_mb"] = round(max(self_kb, kids_kb) / 1024, 1)
    print(json.dumps(r))


def run(kind: str, dsn: str, jobs: int = 1, only: str | None = None) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", kind, dsn, str(jobs), only or ""],
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main(scales: list[int]) -> None:
    from prodclone import devpg
    from prodclone.db import with_dbname
    from prodclone.sample import create_sample_database

    server = devpg.server_dsn()
    report = []
    for users in scales:
        dsn = with_dbname(server, f"prodclone_bench_{users}")
        counts = create_sample_database(dsn, users=users, replace=True)
        total = sum(counts.values())
        raw = run("raw", dsn)
        m1 = run("masked", dsn, 1)
        m2 = run("masked", dsn, 2)
        u1 = run("masked", dsn, 1, "public.users")  # the PII-heavy table alone
        raw_users = run_raw_users(dsn)
        row = {
            "users": users, "rows": total, "copy_mb": round(raw["bytes"] / 1e6, 1),
            "raw_rows_per_s": int(raw["rows"] / raw["seconds"]),
            "masked_j1_rows_per_s": int(m1["rows"] / m1["seconds"]),
            "masked_j2_rows_per_s": int(m2["rows"] / m2["seconds"]),
            "ratio_j1": round(raw["seconds"] / m1["seconds"], 2),
            "ratio_j2": round(raw["seconds"] / m2["seconds"], 2),
            "users_only_ratio_j1": round(raw_users / u1["seconds"], 2),
            "peak_rss_mb": {"raw": raw["peak_rss_mb"], "j1": m1["peak_rss_mb"], "j2": m2["peak_rss_mb"]},
        }
        report.append(row)
        print(json.dumps(row), flush=True)
        import psycopg

        with psycopg.connect(with_dbname(server, "postgres"), autocommit=True) as c:
            c.execute(f'DROP DATABASE IF EXISTS "prodclone_bench_{users}" WITH (FORCE)')
    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    (out / f"export_throughput_{int(time.time())}.json").write_text(json.dumps(report, indent=2))
    print("\nratio = masked export throughput / raw COPY throughput (>= 0.5 is the target)")
    print(f"{'users':>8} {'rows':>9} {'MB':>7} {'raw r/s':>9} {'j1 r/s':>9} {'j2 r/s':>9} {'j1':>5} {'j2':>5} {'users j1':>8}  peak RSS MB (raw/j1/j2)")
    for r in report:
        p = r["peak_rss_mb"]
        print(f"{r['users']:>8} {r['rows']:>9} {r['copy_mb']:>7} {r['raw_rows_per_s']:>9} {r['masked_j1_rows_per_s']:>9} "
              f"{r['masked_j2_rows_per_s']:>9} {r['ratio_j1']:>5} {r['ratio_j2']:>5} {r['users_only_ratio_j1']:>8}  "
              f"{p['raw']}/{p['j1']}/{p['j2']}")


def run_raw_users(dsn: str) -> float:
    import psycopg

    t0 = time.perf_counter()
    with psycopg.connect(dsn) as conn, tempfile.TemporaryFile() as fh, \
            conn.cursor().copy("COPY (SELECT * FROM public.users) TO STDOUT") as copy:
        for data in copy:
            fh.write(data)
    return time.perf_counter() - t0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5] or None)
    else:
        main([int(a) for a in sys.argv[1:]] or [10000, 100000])
