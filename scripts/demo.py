"""`make demo`: the whole story through Airflow on a throwaway setup.

1. a Postgres: $PRODCLONE_PG_DSN, or an embedded one under .prodclone/
2. a sample "production" database full of fake PII
3. `airflow dags test prodclone_export`: check rules, export + mask, verify, seed the base
4. a summary of what happened
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parents[1]
STATE = ROOT / ".prodclone"
sys.path.insert(0, str(ROOT / "plugins"))

from prodclone import devpg  # noqa: E402
from prodclone.db import with_dbname  # noqa: E402
from prodclone.sample import create_sample_database  # noqa: E402

USERS = int(os.environ.get("PRODCLONE_DEMO_USERS", "5000"))


def airflow_env(source: str, base: str) -> dict:
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
        "AIRFLOW_CONN_PRODCLONE_SOURCE": devpg.airflow_conn_json(source),
        "AIRFLOW_CONN_PRODCLONE_BASE": devpg.airflow_conn_json(base),
        "PRODCLONE_STORAGE_URL": f"file://{STATE / 'storage'}",
        "PRODCLONE_MASKING_KEY": os.environ.get("PRODCLONE_MASKING_KEY") or key_file.read_text().strip(),
    }


def step(msg: str) -> float:
    print(f"==> {msg}", flush=True)
    return time.perf_counter()


def main() -> int:
    STATE.mkdir(exist_ok=True)
    t = step("Postgres: " + ("$PRODCLONE_PG_DSN" if os.environ.get("PRODCLONE_PG_DSN") else "embedded server under .prodclone/pgdata"))
    server = devpg.server_dsn()
    source, base = with_dbname(server, "prodclone_demo_prod"), with_dbname(server, "prodclone_demo_base")
    t = step(f"sample production database ({USERS} users)")
    counts = create_sample_database(source, users=USERS, replace=True)
    sample_s = time.perf_counter() - t
    env = airflow_env(source, base)
    step("Airflow metadata DB (airflow db migrate)")
    subprocess.run(["airflow", "db", "migrate"], env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    t = step("airflow dags test prodclone_export")
    log = STATE / "demo-export.log"
    with open(log, "w") as fh:
        proc = subprocess.run(["airflow", "dags", "test", "prodclone_export"], env=env, stdout=fh, stderr=subprocess.STDOUT)
    dag_s = time.perf_counter() - t
    if proc.returncode != 0 or "state=success" not in log.read_text():
        print(f"prodclone_export failed; see {log}", file=sys.stderr)
        return 1
    latest = json.loads((STATE / "storage" / "LATEST").read_text())
    manifest = json.loads((STATE / "storage" / "exports" / latest["run"] / "manifest.json").read_text())
    with psycopg.connect(base) as c:
        base_rows = {t: c.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in counts}
        sample_email = c.execute("SELECT email FROM users ORDER BY id LIMIT 1").fetchone()[0]
    with psycopg.connect(source) as c:
        orig_email = c.execute("SELECT email FROM users ORDER BY id LIMIT 1").fetchone()[0]
        leaked = c.execute("SELECT count(*) FROM users WHERE email = %s", (sample_email,)).fetchone()[0]
    tot = manifest["totals"]
    print("\nprodclone demo summary")
    print(f"  {'sample production rows':<28} {sum(counts.values()):>10}   ({sample_s:.1f}s to generate)")
    print(f"  {'rows exported (masked)':<28} {tot['rows']:>10}   ({tot['bytes'] / 1e6:.1f} MB in {tot['seconds']:.2f}s)")
    print(f"  {'columns masked':<28} {tot['masked_columns']:>10}   (rules {manifest['rules_sha256'][:12]})")
    print(f"  {'rows in the base':<28} {sum(base_rows.values()):>10}   (prodclone_demo_base)")
    print(f"  {'export DAG run, end to end':<28} {dag_s:>9.1f}s")
    print(f"  {'users.email, row 1':<28} {orig_email} -> {sample_email}  (found in production: {leaked})")
    print(f"\n  export: {latest['export']}\n  Airflow log: {log}")
    if base_rows != counts or leaked:
        print("demo check FAILED: base differs from production counts or PII leaked", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
