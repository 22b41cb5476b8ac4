"""A clone of the base vs today's alternative, side by side in one run, at several base sizes.

For each size a base database is built (a 1 kB-row table with a primary key), then timed, median of 3:
  clone       CREATE DATABASE … STRATEGY FILE_COPY with file_copy_method = clone (PostgreSQL 18)
  copy        the same with file_copy_method = copy (what the postgres driver does elsewhere)
  pg_restore  pg_restore -j2 of a pg_dump -Fc of the base into a fresh database (the dump is not timed)
with the disk each clone adds, measured with statvfs. ``clone`` runs on a loop-mounted XFS with reflink,
which needs root, loop devices and xfsprogs; without them the bench says why and times ``copy`` only, on the
embedded server. Usage:
  python bench/clone_vs_restore.py [megabytes ...]      (default: 100 1000 5000)
Absolute times are noisy on shared machines; read the ratios.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "plugins"))


def _free(path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def _build(admin, dsn: str, name: str, megabytes: int) -> int:
    import psycopg
    from psycopg import sql

    from prodclone.db import with_dbname

    admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
    admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    with psycopg.connect(with_dbname(dsn, name), autocommit=True) as conn:
        conn.execute("CREATE TABLE filler (id bigint PRIMARY KEY, pad text)")
        conn.execute("INSERT INTO filler SELECT g, repeat(md5(g::text), 30) FROM generate_series(1, %s) g",
                     (megabytes * 880,))
        conn.execute("VACUUM ANALYZE filler")
    admin.execute("CHECKPOINT")
    return admin.execute("SELECT pg_database_size(%s)", (name,)).fetchone()[0]


def _clones(admin, base: str, method: str, data_dir: Path) -> tuple[float, int]:
    """Median seconds of three clones of ``base`` with ``method``, and the disk the last one added."""
    from psycopg import sql

    admin.execute(sql.SQL("SET file_copy_method = {}").format(sql.Literal(method)))
    times, used = [], 0
    for i in range(3):
        target = sql.Identifier(f"{base}_{method}_{i}")
        admin.execute("CHECKPOINT")
        before = _free(data_dir)
        started = time.perf_counter()
        admin.execute(sql.SQL("CREATE DATABASE {} TEMPLATE {} STRATEGY FILE_COPY").format(target, sql.Identifier(base)))
        times.append(time.perf_counter() - started)
        admin.execute("CHECKPOINT")
        used = before - _free(data_dir)
    for i in range(3):
        admin.execute(sql.SQL("DROP DATABASE {}").format(sql.Identifier(f"{base}_{method}_{i}")))
    return statistics.median(times), used


def _run(dsn: str, data_dir: Path, sizes: list[int], methods: tuple[str, ...]) -> None:
    import psycopg
    from psycopg import sql

    from prodclone import devpg
    from prodclone.db import with_dbname

    head = f"{'base MB':>8}" + "".join(f" {m + ' s':>9} {m + ' MB':>9}" for m in methods)
    print(head + f" {'pg_restore s':>13}" + "".join(f" {'restore/' + m:>15}" for m in methods), flush=True)
    with psycopg.connect(dsn, autocommit=True) as admin:
        for megabytes in sizes:
            name = f"pcbench_{megabytes}"
            size = _build(admin, dsn, name, megabytes)
            figures = {m: _clones(admin, name, m, data_dir) for m in methods}
            with tempfile.TemporaryDirectory() as tmp:
                restore = devpg.time_pg_restore(with_dbname(dsn, name), Path(tmp))
            admin.execute(sql.SQL("DROP DATABASE {}").format(sql.Identifier(name)))
            print(f"{size / 1e6:>8.0f}" + "".join(f" {figures[m][0]:>9.3f} {figures[m][1] / 1e6:>9.1f}" for m in methods)
                  + f" {restore:>13.2f}" + "".join(f" {restore / figures[m][0]:>14.0f}x" for m in methods), flush=True)


def main(sizes: list[int]) -> None:
    from prodclone import devpg, thinclone

    why = devpg.reflink_unavailable()
    if why:
        print(f"no copy-on-write filesystem here ({why}): timing `copy` on the embedded server only")
        _run(devpg.server_dsn(), devpg.DEFAULT_DIR, sizes, (thinclone.COPY,))
        return
    with tempfile.TemporaryDirectory(dir=ROOT / ".prodclone") as work:
        image = f"{max(8, 4 * max(sizes) // 1000 + 4)}G"  # sparse: the base, a pg_restore copy, slack
        with devpg.reflink_scratch(Path(work), size=image) as mount, devpg.embedded_server(mount / "pgdata") as dsn:
            print(f"PostgreSQL 18 on a loop-mounted XFS with reflink ({image} sparse image)")
            _run(dsn, mount, sizes, (thinclone.CLONE, thinclone.COPY))


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]] or [100, 1000, 5000])
