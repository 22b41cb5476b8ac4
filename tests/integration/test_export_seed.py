"""The CLI and engine end to end against a real Postgres: export, verify, seed."""

import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psycopg
import pytest

from prodclone.cli import main
from prodclone.db import dbname_of
from prodclone.errors import CoverageError, ExportError, LeakError, SeedError
from prodclone.export import MANIFEST, run_export, verify_and_record
from prodclone.masking.leakcheck import verify_export
from prodclone.masking.transforms import REGISTRY, Transform
from prodclone.seed import seed
from prodclone.storage import open_storage
from support import RULES, rows

TABLES = ["users", "addresses", "products", "orders", "order_items", "payments", "support_tickets", "events"]


def _originals(dsn):
    with psycopg.connect(dsn) as c:
        emails = {r[0] for r in c.execute("SELECT email FROM users")}
        phones = {r[0] for r in c.execute("SELECT phone FROM users WHERE phone IS NOT NULL")}
        names = {r[0] for r in c.execute("SELECT first_name || ' ' || last_name FROM users")}
    return emails, phones, names


def test_cli_round_trip_keeps_every_row_and_fk_and_no_pii(sample_source, new_db, tmp_path, capsys):
    src, counts = sample_source
    target = new_db("pct_base")
    url = f"file://{tmp_path}/exp"
    assert main(["export", "--source", src, "--rules", str(RULES), "--to", url, "--jobs", "2"]) == 0
    out = capsys.readouterr().out
    assert "no leaks" in out
    manifest = json.loads((tmp_path / "exp" / MANIFEST).read_text())
    assert manifest["complete"] and manifest["rules_sha256"] and manifest["source"]["snapshot"]
    assert {t["name"].split(".")[1]: t["rows"] for t in manifest["tables"]} == counts
    assert "test-key" not in json.dumps(manifest)  # the key is never written
    assert main(["seed", "--from", url, "--target", target]) == 0
    for t in TABLES:  # every row survives, and post-data re-validated every FK and UNIQUE
        assert rows(target, f"SELECT count(*) FROM {t}")[0][0] == counts[t]
    fks = rows(target, "SELECT count(*) FROM pg_constraint WHERE contype = 'f' AND convalidated")[0][0]
    assert fks == rows(src, "SELECT count(*) FROM pg_constraint WHERE contype = 'f'")[0][0]
    emails, phones, names = _originals(src)
    masked = rows(target, "SELECT email, phone, first_name || ' ' || last_name, profile::text FROM users")
    assert not emails & {r[0] for r in masked}
    assert not phones & {r[1] for r in masked}
    assert sum(r[2] in names for r in masked) < len(masked) * 0.05  # only pool coincidences
    # Joins on masked columns survive: orders.customer_email still equals its user's email.
    assert rows(target, "SELECT count(*) FROM orders o JOIN users u ON u.id = o.user_id WHERE o.customer_email <> u.email")[0][0] == 0
    # Free text and JSON carry no original emails.
    blob = " ".join(r[0] for r in rows(target, "SELECT body FROM support_tickets")) + " ".join(r[3] for r in masked)
    assert not any(e in blob for e in list(emails)[:200])
    # Sequences continue past the data; the partitioned table, enum and view came across.
    assert rows(target, "SELECT last_value FROM users_id_seq")[0][0] == counts["users"]
    assert rows(target, "SELECT count(*) FROM events_2025")[0][0] > 0
    assert rows(target, "SELECT count(*) FROM customer_order_totals")[0][0] == counts["users"]


def test_deterministic_across_runs_and_key_matters(sample_source, tmp_path, rules, masking_key):
    src, _ = sample_source
    run_export(src, rules.bind(masking_key), f"file://{tmp_path}/a")
    run_export(src, rules.bind(masking_key), f"file://{tmp_path}/b")
    run_export(src, rules.bind(b"another-key-" + b"z" * 30), f"file://{tmp_path}/c")
    users = "data/public.users.0000.copy"
    a, b, c = ((tmp_path / d / users).read_bytes() for d in "abc")
    assert a == b
    assert a != c


def test_uncovered_column_stops_export_before_any_data(source_copy, tmp_path, rules, masking_key, capsys):
    with psycopg.connect(source_copy, autocommit=True) as c:
        c.execute("ALTER TABLE users ADD COLUMN secondary_email text")
    with pytest.raises(CoverageError, match="public.users.secondary_email"):
        run_export(source_copy, rules.bind(masking_key), f"file://{tmp_path}/x")
    assert not (tmp_path / "x").exists() or not any((tmp_path / "x").rglob("*.copy"))
    assert main(["rules", "check", "--source", source_copy, "--rules", str(RULES)]) == 1
    report = capsys.readouterr().out
    assert "public.users.secondary_email" in report and "text" in report and '"transform": "email"' in report


def test_rule_for_a_dropped_column_fails_check(source_copy, capsys):
    with psycopg.connect(source_copy, autocommit=True) as c:
        c.execute("ALTER TABLE users DROP COLUMN phone CASCADE")
    assert main(["rules", "check", "--source", source_copy, "--rules", str(RULES)]) == 1
    assert "[unknown-column] public.users.phone" in capsys.readouterr().out


def test_scaffold_writes_a_complete_valid_file(sample_source, tmp_path, capsys):
    src, _ = sample_source
    assert main(["rules", "scaffold", "--source", src]) == 0
    text = capsys.readouterr().out
    (tmp_path / "r.yaml").write_text(text)
    assert main(["rules", "check", "--source", src, "--rules", str(tmp_path / "r.yaml")]) == 0
    assert re.search(r"email: email\s+#", text) and "first_name" in text and "keep  #" in text


def test_preview_shows_before_and_after(sample_source, capsys):
    src, _ = sample_source
    assert main(["rules", "preview", "--source", src, "--rules", str(RULES), "--table", "public.users", "--limit", "3", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert len(data) == 3
    assert all(r["email"]["before"] != r["email"]["after"] for r in data)
    assert all(r["search"]["after"] is None for r in data)  # the null rule: JSON null, not the string "NULL"
    assert main(["rules", "preview", "--source", src, "--rules", str(RULES), "--table", "public.users", "--limit", "3"]) == 0
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.strip().startswith("email ")]
    after = [ln.split(" -> ", 1)[1] for ln in lines]
    assert len(after) == 3 and all(a.endswith("…") and len(a) == 32 for a in after)  # a cut value says so
    assert all(a[:-1] in r["email"]["after"] for a, r in zip(after, data, strict=True))


def test_existing_export_and_existing_base_are_not_overwritten_silently(pg, sample_source, new_db, tmp_path, rules, masking_key):
    src, _ = sample_source
    url = f"file://{tmp_path}/e"
    run_export(src, rules.bind(masking_key), url)
    with pytest.raises(ExportError, match="already holds an export"):
        run_export(src, rules.bind(masking_key), url)
    run_export(src, rules.bind(masking_key), url, overwrite=True)
    verify_and_record(open_storage(url), src, rules.bind(masking_key))
    target = new_db("pct_base")
    seed(url, target)
    with pytest.raises(SeedError, match="already exists"):
        seed(url, target)
    # A database prodclone did not create is never replaced, even with overwrite.
    foreign = new_db("pct_foreign")
    with psycopg.connect(pg, autocommit=True) as c:
        c.execute(f'CREATE DATABASE "{dbname_of(foreign)}"')
    with psycopg.connect(foreign, autocommit=True) as c:
        c.execute("CREATE TABLE precious (id int)")
    with pytest.raises(SeedError, match="did not create"):
        seed(url, foreign, overwrite=True)
    assert rows(foreign, "SELECT count(*) FROM precious")[0][0] == 0  # untouched


def test_disk_full_mid_export_leaves_no_manifest_and_no_partial_files(sample_source, tmp_path, rules, masking_key, monkeypatch):
    from prodclone import storage

    written = {"n": 0}
    real_write = storage._FileWriter.write

    def filling_disk(self, b):
        written["n"] += len(b)
        if written["n"] > 300_000:
            self.fh.close()
            raise OSError(28, "No space left on device")
        return real_write(self, b)

    monkeypatch.setattr(storage._FileWriter, "write", filling_disk)
    with pytest.raises((ExportError, OSError)):
        run_export(sample_source[0], rules.bind(masking_key), f"file://{tmp_path}/full")
    assert not (tmp_path / "full" / MANIFEST).exists()
    assert not list((tmp_path / "full").rglob("*.partial"))
    with pytest.raises(ExportError, match="did not finish"):
        seed(f"file://{tmp_path}/full", "dbname=never_created")


def test_failed_seed_keeps_previous_base(sample_source, new_db, tmp_path, rules, masking_key):
    src, counts = sample_source
    url = f"file://{tmp_path}/ok"
    run_export(src, rules.bind(masking_key), url)
    verify_and_record(open_storage(url), src, rules.bind(masking_key))
    target = new_db("pct_base")
    seed(url, target)
    # Corrupt one data file: the checksum check must stop the seed mid-load.
    victim = next((tmp_path / "ok" / "data").glob("public.orders.*.copy"))
    data = bytearray(victim.read_bytes())
    data[10] ^= 1
    victim.write_bytes(bytes(data))
    with pytest.raises(SeedError, match="checksum mismatch"):
        seed(url, target, overwrite=True)
    assert rows(target, "SELECT count(*) FROM orders")[0][0] == counts["orders"]
    dbs = {r[0] for r in rows(target, "SELECT datname FROM pg_database")}
    assert not any(d.endswith("__staging") for d in dbs)


def test_unreachable_source_and_bad_credentials_are_clear(tmp_path, rules, masking_key):
    from prodclone.errors import ConnectionFailed

    with pytest.raises(ConnectionFailed, match="cannot connect to the source database") as err:
        run_export("postgresql://nobody:secretpw@127.0.0.1:1/x", rules.bind(masking_key), f"file://{tmp_path}/u")
    assert "secretpw" not in str(err.value)  # the password never appears in the error
    assert not (tmp_path / "u").exists()


class _Identity(Transform):
    """A deliberately broken transform: claims to mask, copies the value."""

    name = "broken_identity"

    def __call__(self, value):
        return value


def test_leak_check_catches_a_broken_rule(sample_source, tmp_path, rules, masking_key, monkeypatch):
    monkeypatch.setitem(REGISTRY, "broken_identity", _Identity)
    rules.tables["public.users"].columns["phone"] = {"transform": "broken_identity"}
    url = f"file://{tmp_path}/leaky"
    manifest = run_export(sample_source[0], rules.bind(masking_key), url)
    with pytest.raises(LeakError, match=r"public\.users\.phone \(\d+ values\)") as err:
        verify_export(open_storage(url), manifest, sample_source[0], rules.bind(masking_key))
    assert "@" not in str(err.value)  # names the column, never a value


def test_subsetting_follows_foreign_keys(source_copy, new_db, tmp_path, rules, masking_key):
    rules.tables["public.users"].where = "id % 2 = 0"
    rules.tables["public.users"].columns["referred_by"] = {"transform": "null"}  # break the self-FK cycle
    rules.tables["public.support_tickets"].skip = True
    url = f"file://{tmp_path}/sub"
    manifest = run_export(source_copy, rules.bind(masking_key), url)
    by = {t["name"]: t for t in manifest["tables"]}
    assert by["public.support_tickets"]["rows"] == 0 and by["public.support_tickets"]["skipped"]
    kept_users = rows(source_copy, "SELECT count(*) FROM users WHERE id % 2 = 0")[0][0]
    assert by["public.users"]["rows"] == kept_users
    expected_orders = rows(source_copy, "SELECT count(*) FROM orders WHERE user_id % 2 = 0 AND (shipping_address_id IS NULL OR "
                                        "shipping_address_id IN (SELECT id FROM addresses WHERE user_id % 2 = 0))")[0][0]
    assert by["public.orders"]["rows"] == expected_orders
    verify_and_record(open_storage(url), source_copy, rules.bind(masking_key))
    target = new_db("pct_sub")
    seed(url, target)  # post-data re-adds every FK: any dangling reference would fail here
    assert rows(target, "SELECT count(*) FROM order_items oi LEFT JOIN orders o ON o.id = oi.order_id WHERE o.id IS NULL")[0][0] == 0


def test_subsetting_refuses_an_fk_cycle_through_a_filter(source_copy, tmp_path, rules, masking_key):
    from prodclone.errors import RulesError

    rules.tables["public.users"].where = "id % 2 = 0"
    with pytest.raises(RulesError, match="cycle"):
        run_export(source_copy, rules.bind(masking_key), f"file://{tmp_path}/cyc")


def _children(pid: int) -> list[int]:
    """Spawned multiprocessing workers of ``pid`` (Linux /proc)."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (stat.parent / "cmdline").read_bytes()
        except (OSError, IndexError, ValueError):
            continue
        if ppid == pid and b"spawn_main" in cmdline:
            out.append(int(stat.parent.name))
    return out


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs /proc to find the workers")
def test_export_workers_die_with_their_parent(source_copy, tmp_path):
    """SIGKILL of `prodclone export --jobs 2` mid-export: its workers used to go on reading and writing."""
    with psycopg.connect(source_copy, autocommit=True) as c:  # enough faker work to keep both workers busy
        c.execute("INSERT INTO products (id, sku, name, description, price) SELECT 1000000 + g, 'bulk-' || g, 'n', 'd', 1 "
                  "FROM generate_series(1, 120000) g")
        c.execute("ANALYZE products")
    out = tmp_path / "exp"
    env = dict(os.environ, PYTHONPATH=f"{Path(__file__).resolve().parents[2] / 'plugins'}{os.pathsep}"
                                      f"{os.environ.get('PYTHONPATH', '')}")
    proc = subprocess.Popen([sys.executable, "-m", "prodclone.cli", "export", "--source", source_copy, "--rules",
                             str(RULES), "--to", f"file://{out}", "--jobs", "2", "--no-verify"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    workers: list[int] = []
    while time.monotonic() < deadline and proc.poll() is None:
        workers = _children(proc.pid)
        if len(workers) == 2 and any(out.glob("data/*.partial")):  # both spawned, and one is writing
            break
        time.sleep(0.1)
    assert proc.poll() is None and len(workers) == 2, proc.stderr.read() if proc.poll() is not None else workers
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    gone_by = time.monotonic() + 5
    while any(_alive(w) for w in workers) and time.monotonic() < gone_by:
        time.sleep(0.1)
    assert not [w for w in workers if _alive(w)], "export workers outlived their parent"
    assert not (out / MANIFEST).exists()


@pytest.fixture
def driver_for(pg):
    """``driver_for(base_dsn)``: a postgres clone driver on that base with a registry of its own; afterwards
    its environments, snapshots and registry are removed."""
    import dataclasses

    from psycopg import sql

    from prodclone.config import load_config
    from prodclone.drivers.base import MemorySecrets
    from prodclone.drivers.postgres import PostgresDriver

    made = []

    def make(base_dsn):
        cfg = dataclasses.replace(load_config(), registry_database=f"pct_reg_{uuid.uuid4().hex[:8]}")
        made.append(PostgresDriver(base_dsn, cfg, MemorySecrets(), busy_wait=5))
        return made[-1]

    yield make
    for driver in made:
        for env in driver.environments() if driver._registry_ready else []:
            driver.teardown(env.name)
        with psycopg.connect(pg, autocommit=True) as c:
            for s in driver.snapshots() if driver._registry_ready else []:
                c.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(s.id)))
            c.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(driver.cfg.registry_database)))


def test_materialized_views_are_populated_in_the_base_and_its_clones(source_copy, base_role, new_db, driver_for, tmp_path,
                                                                   rules, masking_key):
    """pg_dump --schema-only leaves materialized views unpopulated; seed refreshes each after those it reads
    (here a_top reads z_counts through a view: name order would refresh it first and fail)."""
    from prodclone.drivers.base import RestoreRequest

    with psycopg.connect(source_copy, autocommit=True) as c:
        c.execute("CREATE MATERIALIZED VIEW z_counts AS SELECT user_id, count(*) AS n FROM orders GROUP BY user_id")
        c.execute("CREATE VIEW b_busy AS SELECT user_id, n FROM z_counts WHERE n > 1")
        c.execute("CREATE MATERIALIZED VIEW a_top AS SELECT user_id FROM b_busy ORDER BY n DESC, user_id LIMIT 10")
        c.execute("CREATE UNIQUE INDEX ON z_counts (user_id)")
    expected = rows(source_copy, "SELECT count(*) FROM z_counts")[0][0]
    url = f"file://{tmp_path}/mv"
    run_export(source_copy, rules.bind(masking_key), url)
    verify_and_record(open_storage(url), source_copy, rules.bind(masking_key))
    base = base_role(dbname_of(new_db("pct_mvbase")))
    seed(url, base)
    assert rows(base, "SELECT (SELECT count(*) FROM z_counts), (SELECT count(*) FROM a_top)") == [(expected, 10)]
    driver = driver_for(base)
    driver.snapshot("mv-run", export=url)
    env = f"preview-mv{uuid.uuid4().hex[:6]}"
    driver.begin_restore(RestoreRequest(env=env, profile="preview", ttl_hours=1, snapshot="latest",
                                        requested_by="pytest"), "run-1")
    driver.finish_restore(env, "run-1", ())
    with psycopg.connect(psycopg.conninfo.make_conninfo(driver.secrets.values[env])) as c:  # as the clone's role
        assert c.execute("SELECT count(*) FROM a_top").fetchone()[0] == 10
        assert c.execute("SELECT count(*) FROM z_counts").fetchone()[0] == expected
        c.execute("REFRESH MATERIALIZED VIEW CONCURRENTLY z_counts")  # it owns them, like its tables


JSON_LATE_KEYS = """
CREATE TABLE public.accounts (id int PRIMARY KEY, doc jsonb NOT NULL, raw json);
INSERT INTO public.accounts SELECT i, jsonb_build_object('plan', 'basic', 'seats', i), '{"theme": "dark"}'
  FROM generate_series(1, 400) i;
INSERT INTO public.accounts VALUES
  (401, '{"plan": "pro", "contactEmail": "ann@corp.test", "ssn": "123-45-6789", "dob": "1980-02-03"}', NULL),
  (402, '{"nested": {"deep": {"email": "bo@corp.test"}}, "birthDate": "1990-04-05", "tags": []}', NULL),
  (403, '{"people": [{"date_of_birth": "1970-01-02", "phoneNumber": "+1 415 555 0100"}]}',
        '{"theme": "light", "owner": {"DOB": "1985-06-07"}}');
"""


def test_scaffold_surveys_every_json_key_path_and_masks_late_and_birth_date_keys(base_role, new_db, tmp_path, capsys):
    """Keys first seen after row 200 (the old sample) are listed and masked, birth-date keys are shifted, and the
    scaffolded rules export the table: every surveyed path is listed (unlisted: fail passes)."""
    from prodclone.masking.rules import parse_rules

    name = dbname_of(new_db("pct_survey"))
    with psycopg.connect(base_role(), autocommit=True) as c:
        c.execute(f'CREATE DATABASE "{name}"')
    src = base_role(name)
    with psycopg.connect(src, autocommit=True) as c:
        c.execute(JSON_LATE_KEYS)
        c.execute("ANALYZE public.accounts")
    assert main(["rules", "scaffold", "--source", src]) == 0
    text = capsys.readouterr().out
    rule = parse_rules(text).tables["public.accounts"].columns
    doc, raw = rule["doc"]["paths"], rule["raw"]["paths"]
    assert set(doc) == {"plan", "seats", "contactEmail", "ssn", "dob", "nested.deep.email", "birthDate", "tags",
                        "people[*].date_of_birth", "people[*].phoneNumber"}
    assert doc["contactEmail"] == doc["nested.deep.email"] == {"transform": "email"}
    assert doc["ssn"]["transform"] == "hash" and doc["people[*].phoneNumber"]["provider"] == "phone_number"
    assert doc["dob"] == doc["birthDate"] == doc["people[*].date_of_birth"] == raw["owner.DOB"] == \
        {"transform": "date_shift", "days": 180}
    assert doc["plan"] == doc["seats"] == doc["tags"] == raw["theme"] == {"transform": "keep"}
    assert "key paths of all 403 documents" in text
    url = f"file://{tmp_path}/survey"
    manifest = run_export(src, parse_rules(text).bind(b"k" * 40), url)
    assert {t["name"]: t["rows"] for t in manifest["tables"]} == {"public.accounts": 403}
    exported = b"".join(p.read_bytes() for p in (tmp_path / "survey" / "data").iterdir())
    assert not any(v in exported for v in (b"ann@corp.test", b"bo@corp.test", b"123-45-6789", b"1980-02-03",
                                           b"1985-06-07", b"555 0100"))
    # Bounded: past N documents a sample of about N is surveyed, and the file says so.
    assert main(["rules", "scaffold", "--source", src, "--json-survey-rows", "50"]) == 0
    assert re.search(r"key paths of a sample of \d+ of ~403 documents \(--json-survey-rows 50\)", capsys.readouterr().out)
