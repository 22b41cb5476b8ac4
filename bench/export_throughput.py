"""Masked export vs raw COPY of the same tables, side by side in one run.

For each scale: build the sample database, then in fresh subprocesses (so
peak memory is per run) time
  raw     COPY (SELECT cols FROM t) TO STDOUT for every table, to files: the ceiling
  masked  the whole `run_export` (schema, pools, data, manifest) with the shipped rules, jobs 1 and 2,
          with the compiled kernel and on the Python path (PRODCLONE_KERNEL=0); verification timed apart;
          once more with zstd-compressed data files (jobs 2): its cost in time against its saving in bytes
  users   the PII-heavy table alone, jobs 1 and 2: how masking scales with workers
and report rows/s, MB/s, ratios to raw COPY and peak RSS. Usage:
  python bench/export_throughput.py [users ...] [--reuse]
Default 70000 and 280000 users: about 1M and 4M rows. --reuse keeps the sample databases between runs.
Absolute times are noisy on shared machines; read the ratios, measured side by side in one run.
"""

from __future__ import annotations

import json
import multiprocessing
import os
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


def _masked(dsn: str, out: str, jobs: int, only: str | None = None, verify: bool = False,
            compression: str = "none") -> dict:
    from prodclone.export import run_export, verify_and_record
    from prodclone.masking.rules import load_rules
    from prodclone.storage import open_storage

    rules = load_rules(ROOT / "include/masking/rules.yaml")
    if only:  # one table: every other table skipped (schema only)
        for name, t in rules.tables.items():
            t.skip = name != only
    masking = rules.bind(b"bench-key-" + b"x" * 32)
    t0 = time.perf_counter()
    m = run_export(dsn, masking, f"file://{out}", jobs=jobs, compression=compression)
    r = {"seconds": time.perf_counter() - t0, "rows": m["totals"]["rows"], "bytes": m["totals"]["bytes"],
         "stored_bytes": m["totals"]["stored_bytes"], "cpu_at_end": (_cpu(resource.RUSAGE_SELF), _cpu(resource.RUSAGE_CHILDREN))}
    if verify:  # reported apart: the figure is the export itself
        t1 = time.perf_counter()
        verify_and_record(open_storage(f"file://{out}"), dsn, masking)
        r["verify_seconds"] = time.perf_counter() - t1
    return r


def _mask_only(dsn: str, jobs: int) -> dict:
    """Masking alone, no database in the loop: the users table's COPY text, read once into memory, masked in
    1 MiB blocks by ``jobs`` processes (each its own half). How the kernel's work scales with cores."""
    import psycopg

    from prodclone.catalog import load_catalog

    with psycopg.connect(dsn) as conn:
        table = load_catalog(conn).tables["public.users"]
        with conn.cursor().copy("COPY (SELECT * FROM public.users) TO STDOUT") as copy:
            data = b"".join(bytes(d) for d in copy)
    blocks, pos = [], 0
    while pos < len(data):
        end = data.find(b"\n", pos + (1 << 20))
        end = len(data) if end < 0 else end + 1
        blocks.append(data[pos:end])
        pos = end
    share = [blocks[i::jobs] for i in range(jobs)]
    ctx = multiprocessing.get_context("fork")  # the children inherit the data: only masking is timed
    with ctx.Pool(jobs, initializer=_masker_for, initargs=(table,)) as pool:
        pool.map(_warm, range(jobs))
        t0 = time.perf_counter()
        rows = sum(pool.map(_mask_share, share))
        seconds = time.perf_counter() - t0
    return {"seconds": seconds, "rows": rows, "bytes": len(data)}


_MASKER = None


def _masker_for(table) -> None:
    from prodclone.masking.rewriter import TableMasker
    from prodclone.masking.rules import load_rules

    global _MASKER
    _MASKER = TableMasker(table, load_rules(ROOT / "include/masking/rules.yaml").bind(b"bench-key-" + b"x" * 32))


def _warm(_) -> None:
    time.sleep(0.2)  # every worker up and its masker built before the clock starts


def _mask_share(blocks: list[bytes]) -> int:
    for b in blocks:
        _MASKER.mask_block(b)
    return sum(b.count(b"\n") for b in blocks)


def _cpu(who: int) -> float:
    r = resource.getrusage(who)
    return r.ru_utime + r.ru_stime


def child(kind: str, dsn: str, jobs: int, only: str | None, verify: bool) -> None:
    own, kids = _cpu(resource.RUSAGE_SELF), _cpu(resource.RUSAGE_CHILDREN)
    with tempfile.TemporaryDirectory() as out:
        r = _raw(dsn, out) if kind == "raw" else _mask_only(dsn, jobs) if kind == "mask_only" else \
            _masked(dsn, out, jobs, only, verify, "zstd" if kind == "zstd" else "none")
    self_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    kids_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    r["peak_rss_mb"] = round(max(self_kb, kids_kb) / 1024, 1)
    # CPU seconds: all of this run's processes (not Postgres's), and the busiest path through them (the
    # coordinator, then its workers' share each): what the run would take with a free core per process.
    # On a machine busy with other work, wall clock cannot show how the work divides; this can.
    own_end, kids_end = r.pop("cpu_at_end", None) or (_cpu(resource.RUSAGE_SELF), _cpu(resource.RUSAGE_CHILDREN))
    own, kids = own_end - own, kids_end - kids  # (the export's, without the verification after it)
    r["cpu_s"], r["cpu_path_s"] = own + kids, own + kids / max(1, jobs if kind != "raw" else 1)
    print(json.dumps(r))


def run(kind: str, dsn: str, jobs: int = 1, only: str | None = None, kernel: bool = True, verify: bool = False) -> dict:
    env = {**os.environ, "PRODCLONE_KERNEL": "1" if kernel else "0"}
    out = subprocess.run([sys.executable, __file__, "--child", kind, dsn, str(jobs), only or "", str(int(verify))],
                         capture_output=True, text=True, check=True, env=env).stdout
    return json.loads(out.strip().splitlines()[-1])


def main(scales: list[int], reuse: bool) -> None:
    import psycopg

    from prodclone import devpg
    from prodclone.db import with_dbname
    from prodclone.masking import kernel
    from prodclone.sample import create_sample_database

    print(kernel.status(), flush=True)
    server = devpg.server_dsn()
    report = []
    for users in scales:
        dsn = with_dbname(server, f"prodclone_bench_{users}")
        with psycopg.connect(with_dbname(server, "postgres"), autocommit=True) as c:
            exists = c.execute("SELECT 1 FROM pg_database WHERE datname = %s", (f"prodclone_bench_{users}",)).fetchone()
        if not (reuse and exists):
            create_sample_database(dsn, users=users, replace=True)
        runs = {"raw": run("raw", dsn),
                "kernel_j1": run("masked", dsn, 1), "kernel_j2": run("masked", dsn, 2, verify=True),
                "zstd_j2": run("zstd", dsn, 2),
                # The Python path is compute-bound: how the whole export scales with workers.
                "python_j1": run("masked", dsn, 1, kernel=False), "python_j2": run("masked", dsn, 2, kernel=False)}
        # The PII-heavy table alone, one worker against two.
        runs["users_j1"] = run("masked", dsn, 1, "public.users")
        runs["users_j2"] = run("masked", dsn, 2, "public.users")
        # The kernel's own work, with no database sharing the cores: users' COPY text masked in memory.
        runs["mask_j1"] = run("mask_only", dsn, 1)
        runs["mask_j2"] = run("mask_only", dsn, 2)
        raw = runs["raw"]
        row = {"users": users, "rows": raw["rows"], "copy_mb": round(raw["bytes"] / 1e6, 1),
               "verify_seconds": round(runs["kernel_j2"]["verify_seconds"], 2), "runs": {}}
        for name, r in runs.items():
            row["runs"][name] = {"seconds": round(r["seconds"], 2), "rows_per_s": int(r["rows"] / r["seconds"]),
                                 "mb_per_s": round(r["bytes"] / 1e6 / r["seconds"], 1),
                                 "x_raw": round(raw["seconds"] / r["seconds"], 2), "peak_rss_mb": r["peak_rss_mb"],
                                 "cpu_s": round(r["cpu_s"], 2), "cpu_path_s": round(r["cpu_path_s"], 2)}
        row["kernel_vs_python_j1"] = round(runs["python_j1"]["seconds"] / runs["kernel_j1"]["seconds"], 1)
        row["python_j2_vs_j1"] = round(runs["python_j1"]["seconds"] / runs["python_j2"]["seconds"], 2)
        row["python_j2_vs_j1_cpu_path"] = round(runs["python_j1"]["cpu_path_s"] / runs["python_j2"]["cpu_path_s"], 2)
        row["kernel_j2_vs_j1_cpu_path"] = round(runs["kernel_j1"]["cpu_path_s"] / runs["kernel_j2"]["cpu_path_s"], 2)
        row["zstd_time_x"] = round(runs["zstd_j2"]["seconds"] / runs["kernel_j2"]["seconds"], 2)
        row["zstd_bytes_x"] = round(runs["zstd_j2"]["stored_bytes"] / runs["zstd_j2"]["bytes"], 3)
        row["users_j2_vs_j1"] = round(runs["users_j1"]["seconds"] / runs["users_j2"]["seconds"], 2)
        row["masking_j2_vs_j1"] = round(runs["mask_j1"]["seconds"] / runs["mask_j2"]["seconds"], 2)
        report.append(row)
        print(json.dumps(row), flush=True)
        if not reuse:
            with psycopg.connect(with_dbname(server, "postgres"), autocommit=True) as c:
                c.execute(f'DROP DATABASE IF EXISTS "prodclone_bench_{users}" WITH (FORCE)')
    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    (out / f"export_throughput_{int(time.time())}.json").write_text(json.dumps(report, indent=2))
    print("\nx raw = raw COPY seconds / this run's seconds (the whole export: schema, pools, data, manifest).")
    for r in report:
        print(f"\n{r['rows']:,} rows ({r['users']:,} users), {r['copy_mb']} MB of COPY text; "
              f"kernel vs Python (1 job): {r['kernel_vs_python_j1']}x; Python path, 2 jobs vs 1: {r['python_j2_vs_j1']}x "
              f"(busiest CPU path: {r['python_j2_vs_j1_cpu_path']}x); kernel, 2 jobs vs 1, busiest CPU path: "
              f"{r['kernel_j2_vs_j1_cpu_path']}x; "
              f"users table, 2 jobs vs 1: {r['users_j2_vs_j1']}x; "
              f"masking alone (users, in memory), 2 processes vs 1: {r['masking_j2_vs_j1']}x; "
              f"verify (2 jobs' export): {r['verify_seconds']} s; zstd (2 jobs): {r['zstd_time_x']}x the time, "
              f"{r['zstd_bytes_x']}x the bytes")
        print(f"| {'run':<10} | {'seconds':>8} | {'rows/s':>9} | {'MB/s':>6} | {'x raw':>5} | {'peak RSS MB':>11} | "
              f"{'CPU s':>6} | {'busiest CPU path s':>18} |")
        print(f"|{'-' * 12}|{'-' * 9}:|{'-' * 10}:|{'-' * 7}:|{'-' * 6}:|{'-' * 12}:|{'-' * 7}:|{'-' * 19}:|")
        for name, x in r["runs"].items():
            print(f"| {name:<10} | {x['seconds']:>8} | {x['rows_per_s']:>9,} | {x['mb_per_s']:>6} | {x['x_raw']:>5} | "
                  f"{x['peak_rss_mb']:>11} | {x['cpu_s']:>6} | {x['cpu_path_s']:>18} |")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5] or None, sys.argv[6] == "1")
    else:
        args = [a for a in sys.argv[1:] if not a.startswith("--")]
        main([int(a) for a in args] or [70_000, 280_000], reuse="--reuse" in sys.argv)
