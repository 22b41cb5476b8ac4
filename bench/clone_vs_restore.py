"""A clone from the snapshot vs today's alternative, side by side in one run.

For each scale: build the sample database, export + mask it, seed a base and
snapshot it with the postgres driver, then time (best of 3)
  file_copy   CREATE DATABASE env TEMPLATE snap STRATEGY FILE_COPY (prodclone's default)
  wal_log     the same with STRATEGY WAL_LOG (Postgres 15+'s default)
  pg_restore  pg_restore -j2 of a pg_dump -Fc of the base into a fresh database
and report pg_restore / clone ratios. Usage:
  python bench/clone_vs_restore.py [users ...]      (default: 5000 50000)
Absolute times are noisy on shared machines; read the ratios.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "plugins"))


def main(scales: list[int]) -> None:
    import psycopg

    from prodclone import devpg
    from prodclone.db import with_dbname
    from prodclone.export import run_export
    from prodclone.masking import keys
    from prodclone.masking.rules import load_rules
    from prodclone.sample import create_sample_database
    from prodclone.seed import seed

    server = devpg.server_dsn()
    admin = with_dbname(server, "postgres")
    key = keys.load_key("bench-key-" + "b" * 40)
    rules = load_rules(ROOT / "include" / "masking" / "rules.yaml")
    print(f"{'users':>8} {'rows':>9} {'size MB':>8} {'file_copy':>10} {'wal_log':>9} {'pg_restore':>11} {'ratio fc':>9} {'ratio wal':>10}")
    for users in scales:
        src, base = with_dbname(server, "pcbench_src"), with_dbname(server, "pcbench_base")
        counts = create_sample_database(src, users=users, replace=True)
        with tempfile.TemporaryDirectory() as tmp, psycopg.connect(admin, autocommit=True) as c:
            run_export(src, rules, key, f"file://{tmp}/exp")
            c.execute("DROP DATABASE IF EXISTS pcbench_base WITH (FORCE)")
            seed(f"file://{tmp}/exp", base)
            size = c.execute("SELECT pg_database_size('pcbench_base')").fetchone()[0] / 1e6
            times = {}
            for strategy in ("file_copy", "wal_log"):
                best = float("inf")
                for _ in range(3):
                    c.execute("DROP DATABASE IF EXISTS pcbench_clone WITH (FORCE)")
                    t = time.perf_counter()
                    c.execute(f"CREATE DATABASE pcbench_clone TEMPLATE pcbench_base STRATEGY {strategy}")
                    best = min(best, time.perf_counter() - t)
                times[strategy] = best
            c.execute("DROP DATABASE IF EXISTS pcbench_clone WITH (FORCE)")
            times["pg_restore"] = min(devpg.time_pg_restore(base, Path(tmp)) for _ in range(3))
            c.execute("DROP DATABASE pcbench_base WITH (FORCE)")
            c.execute("DROP DATABASE pcbench_src WITH (FORCE)")
        print(f"{users:>8} {sum(counts.values()):>9} {size:>8.0f} {times['file_copy']:>9.2f}s {times['wal_log']:>8.2f}s "
              f"{times['pg_restore']:>10.2f}s {times['pg_restore'] / times['file_copy']:>8.1f}x "
              f"{times['pg_restore'] / times['wal_log']:>9.1f}x", flush=True)


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]] or [5000, 50000])
