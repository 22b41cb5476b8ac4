"""What the verify step's statistics comparison adds, side by side in one run.

For each scale: build the sample database, export it once (jobs=2), then time, alternately and best of 3,
`verify_and_record` without statistics (checksums + leak check) and with them (`stats_rows` 30 000, the
default), and the export itself for scale. Usage:
  python bench/verify_statistics.py [users ...]      (default: 10000 100000)
Absolute times are noisy on shared machines; read the ratios.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "plugins"))
KEY = b"bench-key-" + b"x" * 32


def _best(fn, n: int = 3) -> float:
    best = float("inf")
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def measure(dsn: str, users: int) -> dict:
    from prodclone.export import run_export, verify_and_record
    from prodclone.masking.rules import load_rules
    from prodclone.storage import open_storage

    masking = load_rules(ROOT / "include/masking/rules.yaml").bind(KEY)
    with tempfile.TemporaryDirectory() as out:
        url = f"file://{out}/export"
        t0 = time.perf_counter()
        totals = run_export(dsn, masking, url, jobs=2)["totals"]
        export_s = time.perf_counter() - t0
        plain, stats = [], []
        for _ in range(3):  # alternate, so both see the same machine load
            plain.append(_best(lambda: verify_and_record(open_storage(url), dsn, masking), 1))
            stats.append(_best(lambda: verify_and_record(open_storage(url), dsn, masking, stats_rows=30_000), 1))
        record = verify_and_record(open_storage(url), dsn, masking, stats_rows=30_000)["statistics"]
    return {"users": users, "rows": totals["rows"], "export_s": round(export_s, 2),
            "verify_s": round(min(plain), 2), "verify_with_stats_s": round(min(stats), 2),
            "stats_s": round(min(stats) - min(plain), 2), "ratio": round(min(stats) / min(plain), 2),
            "stats_share_of_export": round((min(stats) - min(plain)) / export_s, 3),
            "columns_compared": record["columns_compared"], "outside_bounds": len(record["outside_bounds"])}


def main(scales: list[int]) -> None:
    import psycopg

    from prodclone import devpg
    from prodclone.db import with_dbname
    from prodclone.sample import create_sample_database

    server = devpg.server_dsn()
    report = []
    for users in scales:
        dsn = with_dbname(server, f"prodclone_bench_stats_{users}")
        create_sample_database(dsn, users=users, replace=True)
        try:
            row = measure(dsn, users)
        finally:
            with psycopg.connect(with_dbname(server, "postgres"), autocommit=True) as c:
                c.execute(f'DROP DATABASE IF EXISTS "prodclone_bench_stats_{users}" WITH (FORCE)')
        report.append(row)
        print(json.dumps(row), flush=True)
    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    (out / f"verify_statistics_{int(time.time())}.json").write_text(json.dumps(report, indent=2))
    print("\nratio = verify with statistics / verify without (same export, same run)")
    print(f"{'users':>8} {'rows':>9} {'export s':>9} {'verify s':>9} {'+stats s':>9} {'ratio':>6} {'of export':>9}")
    for r in report:
        print(f"{r['users']:>8} {r['rows']:>9} {r['export_s']:>9} {r['verify_s']:>9} {r['verify_with_stats_s']:>9} "
              f"{r['ratio']:>6} {r['stats_share_of_export']:>9.1%}")


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]] or [10000, 100000])
