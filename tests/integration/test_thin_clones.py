"""Thin clones on PostgreSQL 18: the probe that chooses ``file_copy_method``, and, where this machine can make a
loop-mounted XFS with reflink (root, loop devices, xfsprogs: as on CI), clones that take constant time and no
disk. Elsewhere the XFS tests skip and say why; the copy path is tested everywhere by the driver tests."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import psycopg
import pytest
from psycopg import sql

from prodclone import devpg, thinclone
from prodclone.db import dbname_of, with_dbname
from support import clone_env, clone_url, restore, rows


def _databases(dsn: str, prefix: str) -> list[str]:
    return [r[0] for r in rows(dsn, "SELECT datname FROM pg_database WHERE starts_with(datname, %s) ORDER BY 1",
                               (prefix,))]


def test_probe_as_the_base_role_picks_a_method_and_leaves_nothing(pg, base_role):
    before = _databases(pg, thinclone.PROBE_PREFIX)
    with psycopg.connect(base_role("postgres"), autocommit=True) as admin:
        found = thinclone.probe(admin)
        setting = admin.execute("SHOW file_copy_method").fetchone()[0] if admin.info.server_version >= 180000 else None
        version = admin.info.server_version
    if version >= 180000:  # copy_file_range works on every local Linux filesystem: ext4 copies, XFS shares
        assert found.method == thinclone.CLONE and setting == "clone"
    else:
        assert found.method == thinclone.COPY and "PostgreSQL 18" in found.reason
    assert _databases(pg, thinclone.PROBE_PREFIX) == before


def test_a_server_before_18_copies(pg):
    """The machine's own PostgreSQL (CI has one on 127.0.0.1:5432) is older than 18 here; skip where it is not."""
    try:
        admin = psycopg.connect("host=127.0.0.1 port=5432 dbname=postgres user=postgres connect_timeout=3",
                                autocommit=True)
    except psycopg.OperationalError as exc:
        pytest.skip(f"no second PostgreSQL on 127.0.0.1:5432 ({exc.__class__.__name__})")
    with admin:
        if admin.info.server_version >= 180000:
            pytest.skip("the server on 127.0.0.1:5432 is PostgreSQL 18+")
        found = thinclone.probe(admin)
    assert found.method == thinclone.COPY and "thin clones need PostgreSQL 18+" in found.reason


def test_a_killed_probe_is_cleaned_up_by_the_next_and_foreign_look_alikes_stay(pg, base_role, new_db):
    if rows(pg, "SELECT current_setting('server_version_num')::int")[0][0] < 180000:
        pytest.skip("the probe only creates a database on PostgreSQL 18+")
    foreign = dbname_of(new_db(thinclone.PROBE_PREFIX + "not_ours"))  # dropped after the test
    with psycopg.connect(pg, autocommit=True) as conn:  # same prefix, closed, but not ours: never dropped
        conn.execute(sql.SQL("CREATE DATABASE {} ALLOW_CONNECTIONS false").format(sql.Identifier(foreign)))
    before = set(_databases(pg, thinclone.PROBE_PREFIX))
    code = ("import psycopg, sys; from prodclone import thinclone; "
            "thinclone.probe(psycopg.connect(sys.argv[1], autocommit=True))")
    env = {**os.environ, "PRODCLONE_FAULT": "copy-probe-created"}
    died = subprocess.run([sys.executable, "-c", code, base_role("postgres")], env=env, capture_output=True)
    assert died.returncode == -9
    leftovers = set(_databases(pg, thinclone.PROBE_PREFIX)) - before
    assert len(leftovers) == 1
    with psycopg.connect(base_role("postgres"), autocommit=True) as admin:
        thinclone.probe(admin)
    assert foreign in _databases(pg, thinclone.PROBE_PREFIX) and not leftovers & set(
        _databases(pg, thinclone.PROBE_PREFIX))


def test_the_driver_records_and_shows_how_it_copied(clones, pg):
    expected = thinclone.CLONE if rows(pg, "SELECT current_setting('server_version_num')::int")[0][0] >= 180000 \
        else thinclone.COPY
    snap = clones.snapshot("run-thin")
    env = clone_env()
    restore(clones, env)
    info = clones.connection(env)
    assert snap.copy_method == expected and clones.environment(env).copy_method == expected
    assert info.copy_method == expected and f"{snap.id}, {expected}," in info.text()
    assert {s.id: s.copy_method for s in clones.snapshots()}[snap.id] == expected
    assert rows(clone_url(clones, env), "SELECT count(*) FROM users")[0][0] > 0


# --- on a copy-on-write filesystem -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def reflink_server(tmp_path_factory):
    """A PostgreSQL 18 server whose data directory is on a loop-mounted XFS with reflink; its DSN and mount."""
    why = devpg.reflink_unavailable()
    if why:
        pytest.skip(f"thin clones need a copy-on-write filesystem here: {why}")
    work = tmp_path_factory.mktemp("reflink")
    with devpg.reflink_scratch(work, size="6G") as mount, devpg.embedded_server(mount / "pgdata") as dsn:
        yield dsn, mount


def _make_base(dsn: str, name: str, megabytes: int) -> None:
    with psycopg.connect(dsn, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    with psycopg.connect(with_dbname(dsn, name), autocommit=True) as conn:  # ~1 kB rows, no compression
        conn.execute("CREATE TABLE filler AS SELECT g, repeat(md5(g::text), 30) AS pad"
                     " FROM generate_series(1, %s) g", (megabytes * 900,))
        conn.execute("CHECKPOINT")


def _data_bytes(mount) -> int:
    """Disk in use on ``mount`` less the WAL (which any write grows and recycles on its own schedule)."""
    st = os.statvfs(mount)
    wal = sum(f.stat().st_blocks * 512 for f in (mount / "pgdata" / "pg_wal").iterdir() if f.is_file())
    return (st.f_blocks - st.f_bfree) * st.f_frsize - wal


def _clone_seconds(admin, template: str, target: str) -> float:
    started = time.perf_counter()
    admin.execute(sql.SQL("CREATE DATABASE {} TEMPLATE {} STRATEGY FILE_COPY").format(
        sql.Identifier(target), sql.Identifier(template)))
    return time.perf_counter() - started


def test_clones_are_thin_on_xfs_reflink(reflink_server):
    dsn, mount = reflink_server
    assert thinclone.shares_blocks(mount)
    assert thinclone.filesystem_of(mount) == "xfs"
    _make_base(dsn, "small", 100)
    _make_base(dsn, "large", 1000)
    with psycopg.connect(dsn, autocommit=True) as admin:
        assert thinclone.probe(admin).method == thinclone.CLONE
        admin.execute("CHECKPOINT")
        # time flat in size: median of three clones each, a 100 MB base against a 1 GB base
        times = {}
        for base in ("small", "large"):
            runs = []
            for i in range(3):
                runs.append(_clone_seconds(admin, base, f"{base}_c{i}"))
            times[base] = sorted(runs)[1]
        # disk: a fresh clone of the 1 GB base adds less than 1% of it
        size = admin.execute("SELECT pg_database_size('large')").fetchone()[0]
        used_before = _data_bytes(mount)
        _clone_seconds(admin, "large", "large_disk")
        admin.execute("CHECKPOINT")
        used = _data_bytes(mount) - used_before
    print(f"clone: 100 MB base {times['small']:.3f}s, 1 GB base {times['large']:.3f}s; "
          f"disk for a clone of {size / 1e6:.0f} MB: {used / 1e6:.1f} MB")
    assert size > 900e6
    assert times["large"] <= 2 * times["small"], times
    assert used < 0.01 * size, (used, size)


def test_a_write_in_a_clone_stays_in_it_and_teardown_gives_the_space_back(reflink_server):
    dsn, mount = reflink_server
    _make_base(dsn, "iso_base", 200)
    with psycopg.connect(dsn, autocommit=True) as admin:
        thinclone.probe(admin)
        for name in ("iso_snap",):
            _clone_seconds(admin, "iso_base", name)
        for name in ("iso_a", "iso_b"):
            _clone_seconds(admin, "iso_snap", name)
        admin.execute("CHECKPOINT")
        used_thin = _data_bytes(mount)
        with psycopg.connect(with_dbname(dsn, "iso_a"), autocommit=True) as clone:
            clone.execute("UPDATE filler SET pad = 'changed in a' WHERE g <= 1000")
            clone.execute("CREATE TABLE own AS SELECT g, repeat(md5(g::text), 30) AS pad FROM generate_series(1, 150000) g")
            own = clone.execute("SELECT pg_relation_size('own')").fetchone()[0]
            clone.execute("CHECKPOINT")
        used_written = _data_bytes(mount)
        for name in ("iso_base", "iso_snap", "iso_b"):
            assert rows(with_dbname(dsn, name), "SELECT count(*) FROM filler WHERE pad = 'changed in a'") == [(0,)]
            assert rows(with_dbname(dsn, name), "SELECT to_regclass('own') IS NULL") == [(True,)]
        assert rows(with_dbname(dsn, "iso_a"), "SELECT count(*) FROM filler WHERE pad = 'changed in a'") == [(1000,)]
        admin.execute("DROP DATABASE iso_a")
        admin.execute("CHECKPOINT")
    used_dropped = _data_bytes(mount)
    grown, returned = used_written - used_thin, used_written - used_dropped
    # The writes were the clone's own blocks: its new table, plus every page of the shared table the full scan of
    # the UPDATE set hint bits on (copy-on-write copies a page at its first write, hint bits included).
    print(f"writes in one clone took {grown / 1e6:.0f} MB besides WAL (its own table: {own / 1e6:.0f} MB); "
          f"its teardown gave back {returned / 1e6:.0f} MB at once")
    assert own > 100e6 and grown >= 0.9 * own
