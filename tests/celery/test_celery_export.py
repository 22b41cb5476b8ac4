"""prodclone_export scaled out for real: Airflow's CeleryExecutor with two `airflow celery worker`s (a
redis-server of the test's own as broker, a Postgres metadata DB), reading a real streaming replica in
replica_paused mode while a writer keeps inserting and updating the primary, rows referencing each other.

The success run: the parts are spread over both workers; the seeded base holds every foreign key, and each
table has exactly the rows the replica had at the LSN the manifest records, though the primary moved on
meanwhile; replay resumed. The failure run: a worker is SIGKILLed (its process tree: a machine lost) while it
runs a part; the run fails and thaw_source, a teardown, resumes replay on the surviving worker.

The deployment runs with no task retries (a cluster policy in its airflow_local_settings.py): with the DAG's
retries the killed part would be retried on the other worker and the run would succeed."""

from __future__ import annotations

import json
import secrets
import shutil
import threading
import time
import uuid
from types import SimpleNamespace

import psycopg
import pytest
from psycopg import sql

from airflow_stack import celery_export, run_export, running_in, start_worker
from prodclone.catalog import load_catalog, split_qualified
from prodclone.db import with_dbname
from prodclone.exportrun import run_key
from prodclone.sample import create_sample_database
from support import replay_state, replayed, streaming_replica

pytestmark = pytest.mark.celery

SAMPLE_USERS = 1500  # ~18k rows: about a minute of export on a loaded 2-core machine
SPLIT_ROWS = 1500  # the big tables in several parts: more than 10 mapped export_part tasks
WORKERS, CONCURRENCY = 2, 2
RUN_TIMEOUT = 600
NO_RETRIES = "def task_policy(task):\n    task.retries = 0\n"


@pytest.fixture(scope="module")
def deployment(pg, tmp_path_factory):
    if shutil.which("redis-server") is None:  # .ci/run installs it
        pytest.skip("needs redis-server on PATH (Debian: apt-get install redis-server)")
    # Delay 0: as after a nightly pause of hours, replay that resumes cancels conflicting standby queries at once.
    with streaming_replica("max_standby_streaming_delay = 0") as (primary, standby):
        counts = create_sample_database(with_dbname(primary, "shop"), users=SAMPLE_USERS, replace=True)
        source = with_dbname(standby, "shop")
        replayed(source, "SELECT count(*) FROM users", counts["users"])
        with celery_export(pg, tmp_path_factory.mktemp("airflow-celery"), source, workers=WORKERS,
                           concurrency=CONCURRENCY, split_rows=SPLIT_ROWS, local_settings=NO_RETRIES, env={
                               # A killed worker's task is failed within a minute, not Airflow's default five.
                               "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "30",
                               "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "2",
                               # What a killed worker had prefetched waits for the broker's visibility timeout.
                               "AIRFLOW__SCHEDULER__TASK_QUEUED_TIMEOUT": "180"}) as stack:
            yield SimpleNamespace(stack=stack, api=stack.api, primary=with_dbname(primary, "shop"), source=source,
                                  base=stack.base, store=stack.store)


class Writer:
    """Production traffic on the primary: each transaction inserts a user referred by another new user, an
    address, an order with an item, a payment and an event, and points an older order at the new address
    and an older user at the new user. A torn read of any of it would break a foreign key."""

    def __init__(self, dsn: str):
        self.dsn, self.commits, self.error = dsn, 0, None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(30)

    def _run(self) -> None:
        try:
            with psycopg.connect(self.dsn, autocommit=True) as c:
                c.execute("SELECT setval('addresses_id_seq', (SELECT max(id) FROM addresses))")
                users, orders, products = c.execute(
                    "SELECT (SELECT max(id) FROM users), (SELECT max(id) FROM orders), (SELECT max(id) FROM products)"
                ).fetchone()
                while not self._stop.is_set():
                    self._write(c, self.commits + 1, users, orders, products)
                    self.commits += 1
                    time.sleep(0.1)
        except Exception as exc:  # the test fails on it: a writer that stopped early proves nothing
            self.error = exc

    @staticmethod
    def _write(c, n: int, users: int, orders: int, products: int) -> None:
        def word() -> str:  # never a value the masking could produce: the leak check stays meaningful
            return "wr" + secrets.token_hex(6)

        with c.transaction():
            person = "INSERT INTO users (email, first_name, last_name, password_hash, referred_by) " \
                     "VALUES (%s, %s, %s, %s, %s) RETURNING id"
            referrer = c.execute(person, (f"{word()}@example.org", word(), word(), word(), None)).fetchone()[0]
            email = f"{word()}@example.org"
            user = c.execute(person, (email, word(), word(), word(), referrer)).fetchone()[0]
            address = c.execute("INSERT INTO addresses (user_id, street, city, postcode, country) "
                                "VALUES (%s, %s, %s, %s, 'US') RETURNING id", (user, word(), word(), word())).fetchone()[0]
            order = c.execute("INSERT INTO orders (user_id, shipping_address_id, customer_email, status, total, placed_at) "
                              "VALUES (%s, %s, %s, 'paid', 12.50, '2026-06-01') RETURNING id",
                              (user, address, email)).fetchone()[0]
            c.execute("INSERT INTO order_items (order_id, product_id, quantity, unit_price) VALUES (%s, %s, 1, 12.50)",
                      (order, n % products + 1))
            c.execute("INSERT INTO payments (order_id, provider_ref, amount, paid_at) VALUES (%s, %s, 12.50, '2026-06-01')",
                      (order, word()))
            c.execute("INSERT INTO events (user_id, kind, occurred_at) VALUES (%s, 'login', '2026-06-01')", (user,))
            c.execute("UPDATE orders SET shipping_address_id = %s, status = 'shipped' WHERE id = %s",
                      (address, n * 7 % orders + 1))
            c.execute("UPDATE users SET referred_by = %s WHERE id = %s", (user, n * 13 % users + 1))


def _counts(dsn: str, tables) -> dict[str, int]:
    with psycopg.connect(dsn) as c:
        return {t: c.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(*split_qualified(t)))).fetchone()[0]
                for t in tables}


def _frozen_point(source: str) -> dict | None:
    """While replay is paused: the replica's replay LSN and its row count per table (the same LSN before and
    after counting, so the counts are of that point). None when not paused, or when resumed replay cancelled
    the counting."""
    lsn = "SELECT pg_get_wal_replay_pause_state(), pg_last_wal_replay_lsn()::text"
    try:
        with psycopg.connect(source, autocommit=True) as c:
            state, before = c.execute(lsn).fetchone()
            if state != "paused":
                return None
            counts = _counts(source, load_catalog(c).tables)
            state, after = c.execute(lsn).fetchone()
    except psycopg.OperationalError:  # "conflict with recovery", at connect time too
        return None
    return {"lsn": before, "counts": counts} if state == "paused" and after == before else None


def _foreign_key_violations(c: psycopg.Connection) -> dict[str, int]:
    """Rows whose foreign key finds no parent, per constraint (every FK of the database, checked by query)."""
    fks = c.execute("""
        SELECT con.conname, cn.nspname, cr.relname, pn.nspname, pr.relname,
               array_agg(a.attname ORDER BY k.i), array_agg(fa.attname ORDER BY k.i)
          FROM pg_constraint con
          JOIN pg_class cr ON cr.oid = con.conrelid JOIN pg_namespace cn ON cn.oid = cr.relnamespace
          JOIN pg_class pr ON pr.oid = con.confrelid JOIN pg_namespace pn ON pn.oid = pr.relnamespace
          CROSS JOIN LATERAL unnest(con.conkey, con.confkey) WITH ORDINALITY AS k(col, fcol, i)
          JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.col
          JOIN pg_attribute fa ON fa.attrelid = con.confrelid AND fa.attnum = k.fcol
         WHERE con.contype = 'f' AND con.conparentid = 0
         GROUP BY con.oid, con.conname, cn.nspname, cr.relname, pn.nspname, pr.relname""").fetchall()
    out = {}
    for name, cschema, child, pschema, parent, cols, pcols in fks:
        match = sql.SQL(" AND ").join(sql.SQL("p.{} = c.{}").format(sql.Identifier(p), sql.Identifier(k))
                                      for k, p in zip(cols, pcols, strict=True))
        present = sql.SQL(" AND ").join(sql.SQL("c.{} IS NOT NULL").format(sql.Identifier(k)) for k in cols)
        out[name] = c.execute(sql.SQL("SELECT count(*) FROM {} c WHERE {} AND NOT EXISTS (SELECT 1 FROM {} p WHERE {})")
                              .format(sql.Identifier(cschema, child), present, sql.Identifier(pschema, parent), match)
                              ).fetchone()[0]
    return out


def test_frozen_replica_exports_consistently_on_two_celery_workers(deployment):
    d = deployment
    run_id = f"celery-ok-{uuid.uuid4().hex[:6]}"
    frozen, commits_while_frozen = None, []
    with Writer(d.primary) as writer:
        while writer.commits < 5:  # traffic flows before the freeze
            time.sleep(0.2)

        def watch():
            nonlocal frozen
            point = _frozen_point(d.source)
            if point:
                frozen = frozen or point
                commits_while_frozen.append(writer.commits)

        run = run_export(d.stack, run_id, RUN_TIMEOUT, watch)
    assert writer.error is None, writer.error
    assert run["state"] == "success", d.api.failure("prodclone_export", run_id)

    tis = d.api.task_instances("prodclone_export", run_id)
    parts = [ti for ti in tis if ti["task_id"] == "export_part"]
    assert len(parts) >= 4 and {ti["state"] for ti in parts} == {"success"}
    for n in range(1, WORKERS + 1):  # the parts were spread over both workers
        log = (d.stack.home / f"worker{n}.log").read_text()
        assert f"run_id={run_id}/task_id=export_part/" in log, f"worker{n} ran no part of {run_id}"

    manifest = json.loads((d.store / "exports" / run_key(run_id) / "manifest.json").read_text())
    assert frozen is not None, "the test never saw the replica paused"
    assert manifest["source"]["mode"] == "replica_paused" and manifest["source"]["lsn"] == frozen["lsn"]
    assert max(commits_while_frozen) > min(commits_while_frozen)  # the primary was written while the replica held
    in_manifest = {t["name"]: t["rows"] for t in manifest["tables"]}
    assert in_manifest == frozen["counts"]
    assert _counts(d.base, in_manifest) == frozen["counts"]
    now = _counts(d.primary, ["public.users", "public.orders"])
    assert now["public.users"] > frozen["counts"]["public.users"]  # production moved on past the frozen point
    assert now["public.orders"] > frozen["counts"]["public.orders"]
    assert manifest["verified"]["leak_check"] == "passed"

    with psycopg.connect(d.base) as c:
        violations = _foreign_key_violations(c)
        assert len(violations) == 9 and set(violations.values()) == {0}, violations  # the sample's 9 FKs
        c.execute("SET LOCAL session_replication_role = replica")  # the check itself finds an orphan
        c.execute("INSERT INTO order_items (order_id, product_id, quantity, unit_price) VALUES (-1, 1, 1, 1)")
        assert _foreign_key_violations(c)["order_items_order_id_fkey"] == 1
        c.rollback()
    assert replay_state(d.source) == "not paused"
    replayed(d.source, "SELECT count(*) > %s FROM users", True, (frozen["counts"]["public.users"],))
    latest = json.loads((d.store / "LATEST").read_text())
    assert latest["run"] == run_key(run_id)


def test_a_worker_killed_mid_part_fails_the_run_and_replay_resumes(deployment):
    d = deployment
    for n in range(1, WORKERS + 1):  # the deployment as the other test found it
        if f"worker{n}" not in d.stack.procs:
            start_worker(d.stack, f"worker{n}", CONCURRENCY)
    run_id = f"celery-kill-{uuid.uuid4().hex[:6]}"
    with Writer(d.primary) as writer:
        d.api.trigger("prodclone_export", run_id, {})
        victim = killed = None
        deadline = time.monotonic() + RUN_TIMEOUT
        while victim is None:
            assert time.monotonic() < deadline, "no export_part ever ran"
            tis = d.api.task_instances("prodclone_export", run_id)
            assert not {"finalize", "thaw_source"} & {ti["task_id"] for ti in tis if ti["state"] in ("success", "failed")}, \
                "every part finished before one was seen running: give the test more data"
            running = [ti for ti in tis if ti["task_id"] == "export_part" and ti["state"] == "running"]
            for ti in running:
                victim = next((w for w in d.stack.procs if w.startswith("worker") and running_in(d.stack, w, ti["id"])), None)
                if victim:
                    killed = ti
                    break
            time.sleep(0.2)
        with psycopg.connect(d.source) as c:
            frozen_lsn = c.execute("SELECT pg_last_wal_replay_lsn()::text").fetchone()[0]
        assert replay_state(d.source) == "paused"
        d.stack.stop(victim, kill=True)
        run = d.api.wait("prodclone_export", run_id, timeout=RUN_TIMEOUT)
    assert writer.error is None, writer.error
    assert run["state"] == "failed"

    states = {(ti["task_id"], ti["map_index"]): ti["state"] for ti in d.api.task_instances("prodclone_export", run_id)}
    assert states[("export_part", killed["map_index"])] == "failed"
    assert states[("freeze_source", -1)] == "success"
    assert states[("finalize", -1)] == "upstream_failed" and states[("publish", -1)] == "upstream_failed"
    assert states[("thaw_source", -1)] == "success"  # a teardown: it ran on the surviving worker
    assert replay_state(d.source) == "not paused"
    replayed(d.source, "SELECT pg_last_wal_replay_lsn() > %s::pg_lsn", True, (frozen_lsn,))
    latest = d.store / "LATEST"
    assert not latest.exists() or json.loads(latest.read_text())["run"] != run_key(run_id)  # nothing published
