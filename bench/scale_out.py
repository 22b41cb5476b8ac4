"""prodclone_export scaled out on Celery: the same compute-bound export with 1 worker and with 2, side by side
in one run.

A throwaway primary holds the sample shop database (--users, default 70000: about 1M rows, 19 masked columns)
and a streaming replica of it is the source, in replica_paused mode, cut into parts of at most --split-rows rows
(mapped export_part tasks). One CeleryExecutor deployment (its own redis-server, scheduler, dag-processor,
api-server: tests/airflow_stack.py, as the tests use it) exports it with worker1 alone, then with worker2 added;
each worker runs one task at a time (--concurrency 1), so 1 worker vs 2 is 1 task at a time vs 2. --rounds N
alternates the two N times. Reported per run, from the task instances' own start and end times:
  parts   first export_part start to last export_part end: the compute-bound, mapped phase
  run     the whole DAG run (freeze to publish; verify and seed are single tasks and do not scale out)
and the ratios 1-worker / 2-worker. Absolute times are noisy on shared machines; read the ratios.
Usage: python bench/scale_out.py [--users N] [--split-rows N] [--rounds N] [--python]
(--python: the Python masking path, PRODCLONE_KERNEL=0, even more compute-bound). Prints JSON last.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "plugins"), str(ROOT / "tests")]

RUN_TIMEOUT = 3600


def _span(tis: list[dict]) -> float:
    start = min(datetime.fromisoformat(t["start_date"]) for t in tis)
    end = max(datetime.fromisoformat(t["end_date"]) for t in tis)
    return (end - start).total_seconds()


def measure(stack, workers: int, label: str) -> dict:
    from airflow_stack import run_export

    run_id = f"bench-{workers}w-{label}"
    run = run_export(stack, run_id, RUN_TIMEOUT)
    if run["state"] != "success":
        raise SystemExit(f"{run_id} failed: {stack.api.failure('prodclone_export', run_id)}")
    tis = stack.api.task_instances("prodclone_export", run_id)
    parts = [t for t in tis if t["task_id"] == "export_part"]
    row = {"workers": workers, "run": run_id, "parts": len(parts), "parts_seconds": round(_span(parts), 1),
           "run_seconds": round(_span(tis), 1), "part_task_seconds": round(sum(t["duration"] for t in parts), 1)}
    print(json.dumps(row), flush=True)
    return row


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--users", type=int, default=70_000)
    p.add_argument("--split-rows", type=int, default=100_000)
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--python", action="store_true", help="mask on the Python path (PRODCLONE_KERNEL=0)")
    args = p.parse_args(argv)

    from airflow_stack import celery_export, start_worker, worker_ready
    from prodclone import devpg
    from prodclone.db import with_dbname
    from prodclone.sample import create_sample_database
    from support import replayed, streaming_replica

    pg = with_dbname(devpg.server_dsn(), "postgres")
    runs = []
    with streaming_replica() as (primary, standby), tempfile.TemporaryDirectory(prefix="prodclone-scaleout-") as home:
        t0 = time.perf_counter()
        counts = create_sample_database(with_dbname(primary, "shop"), users=args.users, replace=True)
        source = with_dbname(standby, "shop")
        replayed(source, "SELECT count(*) FROM users", counts["users"], timeout=600)
        print(f"sample: {sum(counts.values())} rows in {time.perf_counter() - t0:.1f}s", flush=True)
        env = {"PRODCLONE_KERNEL": "0"} if args.python else {}
        with celery_export(pg, Path(home), source, workers=1, concurrency=1, split_rows=args.split_rows,
                           env=env) as stack:
            worker_ready(stack, "worker1")
            for r in range(1, args.rounds + 1):
                runs.append(measure(stack, 1, f"r{r}"))
                start_worker(stack, "worker2", 1)
                worker_ready(stack, "worker2")
                runs.append(measure(stack, 2, f"r{r}"))
                stack.stop("worker2")
                (Path(home) / "worker2.log").unlink()  # the next start's "ready" is a new line
    one = [r for r in runs if r["workers"] == 1]
    two = [r for r in runs if r["workers"] == 2]
    report = {"rows": sum(counts.values()), "users": args.users, "split_rows": args.split_rows,
              "masking": "python" if args.python else "kernel", "runs": runs,
              "parts_1_over_2": round(statistics.median(a["parts_seconds"] for a in one)
                                      / statistics.median(b["parts_seconds"] for b in two), 2),
              "run_1_over_2": round(statistics.median(a["run_seconds"] for a in one)
                                    / statistics.median(b["run_seconds"] for b in two), 2)}
    print(f"\n{'workers':>8} {'parts':>6} {'parts s':>9} {'run s':>8}")
    for r in runs:
        print(f"{r['workers']:>8} {r['parts']:>6} {r['parts_seconds']:>9} {r['run_seconds']:>8}")
    print(f"\n1 worker / 2 workers: parts phase {report['parts_1_over_2']}x, whole run {report['run_1_over_2']}x")
    print(json.dumps(report))
    return report


if __name__ == "__main__":
    main()
