"""`make demo`: the whole story through Airflow on a throwaway setup.

1. a Postgres: $PRODCLONE_PG_DSN, or an embedded one under .prodclone/
2. a sample "production" database full of fake PII
3. `airflow dags test prodclone_export`: check rules, export + mask, verify, seed the base, snapshot it
4. `airflow dags test prodclone_restore` for preview-demo, then loadtest-demo
5. checks: the clone has every row and no production PII
6. both envs expire; `airflow dags test prodclone_teardown` removes them
7. a summary: stage timings, clone vs `pg_restore` of the same data (and, because at demo size both
   are fixed costs, the gap measured once at 200k users), what teardown removed
"""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import sys
import time
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parents[1]
STATE = ROOT / ".prodclone"
sys.path.insert(0, str(ROOT / "plugins"))

from prodclone import devpg, thinclone  # noqa: E402
from prodclone.config import load_config  # noqa: E402
from prodclone.db import with_dbname  # noqa: E402
from prodclone.sample import create_sample_database  # noqa: E402

USERS = int(os.environ.get("PRODCLONE_DEMO_USERS", "5000"))
# The clone-vs-pg_restore gap only shows at size: a one-off measurement, the README's Speed table's largest row.
REFERENCE = {"users": "a 4.6 GB base", "size": "thin clone, PostgreSQL 18 on XFS reflink", "clone_s": 0.097,
             "pg_restore_s": 77.25, "source": "bench/clone_vs_restore.py, one run, 2026-11-22"}
SOURCE_DB, BASE_DB, METADATA_DB = "prodclone_demo_prod", "prodclone_demo_base", "prodclone_demo_airflow"


def airflow_env(server: str) -> dict:
    """The environment of every Airflow command the demo and `make airflow` run. One metadata DB (a
    Postgres database on the demo's server) for both, so `make airflow` shows the demo's runs and its
    `base snapshot` Asset events."""
    key_file = STATE / "masking.key"
    if not key_file.exists():
        key_file.write_text(secrets.token_urlsafe(32))
        key_file.chmod(0o600)
    home = STATE / "airflow"
    return {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}",
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": devpg.airflow_metadata_url(server, METADATA_DB),
        "AIRFLOW_CONN_PRODCLONE_SOURCE": devpg.airflow_conn_json(with_dbname(server, SOURCE_DB)),
        "AIRFLOW_CONN_PRODCLONE_BASE": devpg.airflow_conn_json(with_dbname(server, BASE_DB)),
        "PRODCLONE_STORAGE_URL": f"file://{STATE / 'storage'}",
        "PRODCLONE_MASKING_KEY": os.environ.get("PRODCLONE_MASKING_KEY") or key_file.read_text().strip(),
    }


def step(msg: str) -> float:
    print(f"==> {msg}", flush=True)
    return time.perf_counter()


def airflow_dag_test(env: dict, dag_id: str, conf: dict | None = None, name: str = "") -> tuple[float, str]:
    """Run one DAG through `airflow dags test`; returns (seconds, log text). Exits on failure."""
    log = STATE / f"demo-{name or dag_id}.log"
    cmd = ["airflow", "dags", "test", dag_id] + (["-c", json.dumps(conf)] if conf else [])
    started = time.perf_counter()
    with open(log, "w") as fh:
        proc = subprocess.run(cmd, env=env, stdout=fh, stderr=subprocess.STDOUT)
    text = log.read_text()
    if proc.returncode != 0 or "state=success" not in text:
        print(f"{dag_id} failed; see {log}", file=sys.stderr)
        sys.exit(1)
    return time.perf_counter() - started, text


def thin_clones_line(method: str) -> str:
    """Whether the demo's clones shared blocks with the snapshot, and if not, why (and how to get them)."""
    if os.environ.get("PRODCLONE_PG_DSN"):
        return f"{method} (on $PRODCLONE_PG_DSN's server; its filesystem decides whether clone shares blocks)"
    data = Path(os.environ.get("PRODCLONE_PGDATA") or devpg.DEFAULT_DIR)
    fs = thinclone.filesystem_of(data)
    if method == thinclone.CLONE and thinclone.shares_blocks(data):
        return f"yes: PostgreSQL 18 file_copy_method=clone on {fs}, so a clone adds no disk and takes constant time"
    if method == thinclone.CLONE:
        return (f"no: clone works, but {data} is on {fs}, which copies the bytes; set PRODCLONE_PGDATA to a "
                "directory on XFS (reflink), btrfs or ZFS 2.2+ for thin clones")
    return f"no: the server copies files ({method})"


def main() -> int:
    STATE.mkdir(exist_ok=True)
    step("Postgres: " + ("$PRODCLONE_PG_DSN" if os.environ.get("PRODCLONE_PG_DSN") else "embedded server under .prodclone/pgdata"))
    server = devpg.server_dsn()
    source, base = with_dbname(server, SOURCE_DB), with_dbname(server, BASE_DB)
    registry = with_dbname(server, load_config().registry_database)
    t = step(f"sample production database ({USERS} users)")
    counts = create_sample_database(source, users=USERS, replace=True)
    sample_s = time.perf_counter() - t
    env = airflow_env(server)
    step(f"Airflow metadata DB: database {METADATA_DB}, shared with `make airflow` (airflow db migrate)")
    subprocess.run(["airflow", "db", "migrate"], env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    step("prodclone_export: rules check, export + mask, verify, seed the base, snapshot")
    export_s, _ = airflow_dag_test(env, "prodclone_export")
    latest = json.loads((STATE / "storage" / "LATEST").read_text())
    manifest = json.loads((STATE / "storage" / "exports" / latest["run"] / "manifest.json").read_text())

    timings = {}
    for name, conf in (("preview-demo", {"env": "preview-demo", "profile": "preview", "requested_by": "make demo",
                                         "replace": True}),
                       ("loadtest-demo", {"env": "loadtest-demo", "profile": "loadtest", "requested_by": "make demo",
                                          "replace": True})):
        step(f"prodclone_restore {name}")
        timings[name], _ = airflow_dag_test(env, "prodclone_restore", conf, name=name)
    with psycopg.connect(registry) as c:
        clone_s = dict(c.execute("SELECT name, clone_seconds FROM environments").fetchall())
        methods = dict(c.execute("SELECT name, copy_method FROM environments").fetchall())

    step("checks: every row in preview-demo, no production PII")
    clone = with_dbname(server, "preview-demo")
    with psycopg.connect(clone) as c:
        clone_rows = {t: c.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in counts}
        clone_emails = [r[0] for r in c.execute("SELECT email FROM users")]
        sample_email = c.execute("SELECT email FROM users ORDER BY id LIMIT 1").fetchone()[0]
    with psycopg.connect(source) as c:
        orig_email = c.execute("SELECT email FROM users ORDER BY id LIMIT 1").fetchone()[0]
        leaked = c.execute("SELECT count(*) FROM users WHERE email = ANY(%s)", (clone_emails,)).fetchone()[0]

    t = step("pg_restore -j2 of the same data, for comparison")
    pg_restore_s = devpg.time_pg_restore(base, STATE)

    step("expire both environments, then prodclone_teardown")
    with psycopg.connect(registry) as c:
        c.execute("UPDATE environments SET expires_at = now() - interval '1 minute' WHERE name IN "
                  "('preview-demo', 'loadtest-demo')")
    teardown_s, log = airflow_dag_test(env, "prodclone_teardown")
    removed = re.findall(r"(\S+-demo) \(expired\): removed ([^\n]*?)(?:\s+source=|$)", log, re.M)

    tot = manifest["totals"]
    w = 30
    print("\nprodclone demo summary")
    print(f"  {'sample production rows':<{w}} {sum(counts.values()):>9}   ({sample_s:.1f}s to generate)")
    print(f"  {'rows exported (masked)':<{w}} {tot['rows']:>9}   ({tot['bytes'] / 1e6:.1f} MB in {tot['seconds']:.2f}s)")
    print(f"  {'columns masked':<{w}} {tot['masked_columns']:>9}   (rules {manifest['rules_sha256'][:12]})")
    print(f"  {'snapshot':<{w}} {latest['snapshot']}")
    print(f"  {'export DAG (airflow dags test)':<{w}} {export_s:>8.1f}s   sample -> masked base -> snapshot")
    for name in ("preview-demo", "loadtest-demo"):
        print(f"  {'restore DAG ' + name:<{w}} {timings[name]:>8.1f}s   of which the clone: {clone_s[name]:.2f}s "
              f"({methods[name]})")
    print(f"  {'thin clones':<{w}} {thin_clones_line(methods['preview-demo'])}")
    print(f"  {'pg_restore -j2, same data':<{w}} {pg_restore_s:>8.2f}s   at demo size both are mostly fixed costs")
    ref = REFERENCE
    print(f"  {'  at ' + ref['users']:<{w}} {ref['clone_s']:>8.2f}s   clone vs {ref['pg_restore_s']:.1f}s pg_restore -j2: "
          f"{ref['pg_restore_s'] / ref['clone_s']:.0f}x faster ({ref['size']}; {ref['source']})")
    print(f"  {'rows in preview-demo':<{w}} {sum(clone_rows.values()):>9}   (production: {sum(counts.values())})")
    print(f"  {'users.email, row 1':<{w}} {orig_email} -> {sample_email}")
    print(f"  {'production emails in clone':<{w}} {leaked:>9}")
    print(f"  {'teardown DAG':<{w}} {teardown_s:>8.1f}s")
    for env_name, objects in removed:
        print(f"  {'  removed ' + env_name:<{w}} {objects}")
    print(f"\n  logs: {STATE}/demo-*.log\n  next: `make airflow` to use the UI form (prodclone_restore)")
    if clone_rows != counts or leaked or len(removed) != 2:
        print("demo check FAILED: clone differs from production counts, PII leaked, or teardown missed an env",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
