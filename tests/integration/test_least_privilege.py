"""prodclone runs with the least privilege the README's security model names:
the export reads production as a read-only role (pg_read_all_data) and the
seed writes as a role with CREATEDB alone, both logging in with passwords.
Neither changes anything on the source."""

import psycopg
from psycopg import sql

from prodclone.db import dbname_of
from prodclone.export import run_export, verify_and_record
from prodclone.seed import seed
from prodclone.storage import open_storage
from support import KEY, drop_role, dsn_as, make_role, rows

# What an export must leave exactly as it was: every relation, column, function, role and setting.
FINGERPRINT = """
SELECT md5(string_agg(x, '|' ORDER BY x)) FROM (
  SELECT format('%s.%s %s %s', n.nspname, c.relname, c.relkind, c.relacl) AS x
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname NOT LIKE 'pg\\_%%'
  UNION ALL SELECT format('%s %s %s', attrelid::regclass, attname, atttypid::regtype) FROM pg_attribute
   WHERE attnum > 0 AND attrelid >= 16384
  UNION ALL SELECT format('%s %s', p.oid::regprocedure, md5(p.prosrc)) FROM pg_proc p WHERE p.oid >= 16384
  UNION ALL SELECT format('%s %s %s %s', rolname, rolsuper, rolcreaterole, rolcreatedb) FROM pg_roles
  UNION ALL SELECT format('%s %s', datname, datacl) FROM pg_database
) f
"""


def _fingerprint(dsn):
    return rows(dsn, FINGERPRINT)[0][0]


def test_export_as_read_only_role_and_seed_without_superuser(pg, sample_source, base_role, new_db, rules, tmp_path):
    src = sample_source[0]
    reader, password = make_role(pg, "pct_reader", "LOGIN")
    try:
        with psycopg.connect(pg, autocommit=True) as conn:
            conn.execute(sql.SQL("GRANT pg_read_all_data TO {}").format(sql.Identifier(reader)))
            conn.execute(sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(
                sql.Identifier(dbname_of(src)), sql.Identifier(reader)))
        as_reader = dsn_as(src, reader, password)
        before = _fingerprint(src)
        url = f"file://{tmp_path}/exp"
        manifest = run_export(as_reader, rules.bind(KEY.encode()), url, jobs=2)
        verified = verify_and_record(open_storage(url), as_reader, rules.bind(KEY.encode()))
        assert verified["columns_checked"] and verified["leak_check"] == "passed"
        assert _fingerprint(src) == before  # the export changed nothing on the source
        # The reader cannot write even if it tried: its role is read-only.
        with psycopg.connect(as_reader) as conn:
            assert conn.execute("SELECT has_table_privilege('users', 'UPDATE')").fetchone()[0] is False

        target = base_role(dbname_of(new_db("pct_lp")))
        result = seed(url, target)
        assert result.rows == manifest["totals"]["rows"]
        with psycopg.connect(target) as conn:
            assert conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").fetchone()[0] is False
            assert conn.execute("SELECT count(*) FROM users").fetchone()[0] == sample_source[1]["users"]
    finally:
        drop_role(pg, reader)
