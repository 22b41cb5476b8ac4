"""Streaming, masked export of a source database at one point in time.

Layout under the export URL::

    schema/pre-data.sql   schema/post-data.sql
    data/<schema>.<table>.<part>.copy       COPY text, masked (name percent-encoded, see Unit.path);
                                            .copy.zst when compressed (see datafile.py)
    manifest.json                           written LAST: no manifest = not complete;
                                            its ``verified`` record (added by the verify step, only
                                            after it passed) is what makes the export seedable

Parallel workers share the coordinator's exported snapshot (as ``pg_dump -j``
does), so every table is read at the same point in time and FKs hold.
"""

from __future__ import annotations

import ctypes
import datetime as dt
import hashlib
import json
import logging
import math
import multiprocessing
import os
import re
import signal
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import asdict, dataclass

from psycopg import sql

from prodclone import __version__, datafile
from prodclone.catalog import Catalog, Table, load_catalog, split_qualified
from prodclone.copyout import masked_blocks
from prodclone.db import connect_source, pin_search_path
from prodclone.errors import ExportError, LeakError
from prodclone.masking import kernel
from prodclone.masking.coverage import ensure_covered
from prodclone.masking.leakcheck import VerifyReport, verify_export
from prodclone.masking.rules import Masking, Rules
from prodclone.masking.schema_text import check_schema_text
from prodclone.masking.stats import export_statistics
from prodclone.masking.transforms import pools, trait
from prodclone.pgtools import dump_schema, stand_ins
from prodclone.storage import StorageTarget, open_storage
from prodclone.subset import Subsetter

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
FORMAT = 2  # 2: schema files carry a SHA-256 (format-1 exports ran unchecked SQL at seed)
FORMATS = {"none": FORMAT, "zstd": 3}  # 3: compressed data files, which a reader of format 2 would load as text
SPLIT_ROWS = 5_000_000  # tables larger than this are split into key ranges
MIN_UNIT_ROWS = 20_000  # with several workers, smaller units cost more in queries and files than they balance
UNITS_PER_WORKER = 8  # with several workers: units per worker, so the last ones to finish are short
_PATH_SAFE = re.compile(r"[a-z0-9._-]")  # kept as is in data file names; anything else is %XX-encoded
_PATH_MAX = 120  # longer encoded names are cut and made unique with a digest
SCHEMA_SECTIONS = ("pre-data", "post-data")
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


@dataclass
class Unit:
    """One piece of export work: a table, or one range of a big table: of its integer key (``by="key"``), or of
    its pages (``by="ctid"``, for tables without one; PostgreSQL 14+ scans just those pages). A ctid range
    without ``lo`` starts at the first page, without ``hi`` runs to the last, however the table grew."""

    table: str
    part: int = 0
    lo: int | None = None
    hi: int | None = None  # exclusive
    by: str = "key"
    compression: str = "none"

    @property
    def path(self) -> str:
        """Readable for ordinary names, and for any name safe (no ``/``, never ``..``), within file name limits,
        and distinct for distinct tables even on case-insensitive storage (capitals are encoded too)."""
        name = "".join(c if _PATH_SAFE.fullmatch(c) else "".join(f"%{b:02X}" for b in c.encode()) for c in self.table)
        if len(name) > _PATH_MAX:  # '+' never appears in an encoded name, so cut names cannot meet uncut ones
            name = f"{name[:_PATH_MAX - 33]}+{hashlib.sha256(self.table.encode()).hexdigest()[:32]}"
        return f"data/{name}.{self.part:04d}.copy{datafile.suffix(self.compression)}"


@dataclass
class SourcePoint:
    """The point in time an export reads; recorded in the manifest."""

    snapshot: str | None
    taken_at: str
    txid: str
    lsn: str | None
    server_version_num: int
    mode: str = "live"


def _copy_query(table: Table, where: sql.Composable | None, unit: Unit) -> sql.Composed:
    cols = sql.SQL(", ").join(sql.Identifier("t0", c.name) for c in table.columns)
    conds = [] if where is None else [where]
    if unit.by == "ctid":
        ctid = sql.Identifier("t0", "ctid")
        if unit.lo is not None:
            conds.append(sql.SQL("{} >= {}::tid").format(ctid, sql.Literal(f"({int(unit.lo)},0)")))
        if unit.hi is not None:
            conds.append(sql.SQL("{} < {}::tid").format(ctid, sql.Literal(f"({int(unit.hi)},0)")))
    elif unit.lo is not None:
        pk = sql.Identifier("t0", table.primary_key[0])
        conds.append(sql.SQL("{} >= {} AND {} < {}").format(pk, sql.Literal(int(unit.lo)), pk, sql.Literal(int(unit.hi))))
    q = sql.SQL("SELECT {} FROM {} t0").format(cols, table.scan)
    if conds:
        q += sql.SQL(" WHERE ") + sql.SQL(" AND ").join(conds)
    return sql.SQL("COPY ({}) TO STDOUT").format(q)


def point_in_time(conn, mode: str = "live", export_snapshot: bool = True) -> SourcePoint:
    # A standby cannot assign a transaction id (replica_paused): its snapshot's xmin names the point there.
    row = conn.execute(
        "SELECT now(), CASE WHEN pg_is_in_recovery() THEN pg_snapshot_xmin(pg_current_snapshot())::text"
        " ELSE pg_current_xact_id()::text END, current_setting('server_version_num')::int,"
        " CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn()::text ELSE pg_current_wal_lsn()::text END"
    ).fetchone()
    snap = None
    if export_snapshot:
        snap = conn.execute("SELECT pg_export_snapshot()").fetchone()[0]
    return SourcePoint(snapshot=snap, taken_at=row[0].isoformat(), txid=row[1], lsn=row[3],
                       server_version_num=row[2], mode=mode)


def open_snapshot_tx(conn) -> None:
    conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")


def plan_units(conn, catalog: Catalog, rules: Rules, split_rows: int = SPLIT_ROWS, workers: int = 1,
               compression: str = "none") -> list[Unit]:
    """Units for every exported table. Big plain tables are split into page ranges on PostgreSQL 14+, which scans
    just those pages as a sequential scan would (a key range reads through the index); others whose (first)
    key column is an integer (partitioned tables, older servers) into key ranges.

    With ``workers`` > 1, tables are also cut so no unit holds more than 1/UNITS_PER_WORKER of one worker's
    share of the masking work (rows times masked columns: one heavily masked table is most of an export's
    time), and the heaviest units go first, so every worker stays busy to the end."""
    weight = {n: _mask_weight(rules.tables[n]) for n in catalog.tables if not rules.tables[n].skip}
    per_unit = None
    if workers > 1:
        per_unit = max(1, sum(catalog.tables[n].est_rows * w for n, w in weight.items()) // (workers * UNITS_PER_WORKER))
    units, cost = [], {}
    tid_ranges = conn.info.server_version >= 140000
    for name, w in weight.items():
        table = catalog.tables[name]
        limit = split_rows if per_unit is None else min(split_rows, max(MIN_UNIT_ROWS, per_unit // w))
        parts = math.ceil(table.est_rows / limit)
        cost[name] = table.est_rows * w / max(1, parts)
        pk = table.primary_key
        integer_key = bool(pk) and table.column(pk[0]).category == "number"  # ranges of a key's first column
        pages = _page_ranges(conn, name, parts) if parts > 1 and table.kind == "table" and tid_ranges else []
        if len(pages) > 1 and (len(pages) == parts or not integer_key):  # fewer pages than parts: cut by key
            units += pages
            continue
        if parts > 1 and integer_key:
            key = sql.Identifier(pk[0])
            lo, hi = conn.execute(
                sql.SQL("SELECT min({})::bigint, max({})::bigint FROM {}").format(key, key, table.scan)
            ).fetchone()
            if lo is not None:
                step = max(1, math.ceil((hi + 1 - lo) / parts))
                units += [Unit(name, i, lo + i * step, min(lo + (i + 1) * step, hi + 1)) for i in range(parts)
                          if lo + i * step <= hi]
                continue
        units.append(Unit(name))
    for u in units:
        u.compression = compression
    return sorted(units, key=lambda u: -cost[u.table])


def _mask_weight(rule) -> int:
    """A table's masking work per row, roughly: one for reading it, one per masked column, one more per
    masked path of a JSON column (each document is parsed, then each path masked)."""
    w = 1
    for spec in rule.columns.values():
        if trait(spec, "masks"):
            paths = spec.get("paths") or {}
            w += 1 + sum(trait(p, "masks") if isinstance(p, dict) else p != "keep" for p in paths.values())
    return w


def _page_ranges(conn, name: str, parts: int) -> list[Unit]:
    """``parts`` ranges of the table's pages as they are now (fewer if it has fewer pages); the first is open
    below and the last above, so rows on pages added since are read too."""
    schema, rel = split_qualified(name)
    size, block = conn.execute(
        "SELECT pg_relation_size(c.oid), current_setting('block_size')::int FROM pg_class c"
        " JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relname = %s", (schema, rel)).fetchone()
    pages = size // block
    bounds = sorted({pages * i // parts for i in range(1, parts)} - {0})
    edges = [None, *bounds, None]
    return [Unit(name, i, edges[i], edges[i + 1], by="ctid") for i in range(len(edges) - 1)]


def export_unit(source_dsn: str, point: SourcePoint, catalog: Catalog, masking: Masking,
                target: str | StorageTarget, unit: Unit, conn=None) -> dict:
    """Export one unit. Reads the snapshot ``point.snapshot`` if given (live
    mode), else the (frozen) source as it is. Returns stats, never row values."""
    kernel.announce()
    table = catalog.tables[unit.table]
    masker = masking.table(table)
    where = Subsetter(catalog, masking.rules).filter_sql(unit.table)
    storage = open_storage(target)
    own_conn = conn is None
    if own_conn:
        conn = connect_source(source_dsn)
        open_snapshot_tx(conn)
        if point.snapshot:
            conn.execute(sql.SQL("SET TRANSACTION SNAPSHOT {}").format(sql.Literal(point.snapshot)))
    pin_search_path(conn)
    started = time.perf_counter()
    digest = hashlib.sha256()
    rows = size = stored = 0

    def counted(copy):
        nonlocal rows, size
        for block, n in masked_blocks(conn, copy, masker):
            size += len(block)
            rows += n
            yield block

    try:
        with storage.writer(unit.path) as out, conn.cursor().copy(_copy_query(table, where, unit)) as copy:
            for block in datafile.stored(counted(copy), unit.compression):
                digest.update(block)
                out.write(block)
                stored += len(block)
    finally:
        if own_conn:
            conn.close()
    return {"table": unit.table, "part": unit.part, "path": unit.path, "rows": rows, "bytes": size,
            "stored_bytes": stored, "sha256": digest.hexdigest(), "seconds": round(time.perf_counter() - started, 3)}


def _ensure_writable(storage, overwrite: bool) -> None:
    if storage.exists(MANIFEST):
        if not overwrite:
            raise ExportError(f"{storage.url} already holds an export; pass overwrite to replace it")
        storage.delete([MANIFEST])  # first, so a half-replaced export never looks complete
    stale = [n for n in storage.list() if n.startswith(("data/", "schema/")) or n == "plan.json"]
    if stale:
        storage.delete(stale)


def _schema_entry(storage, section: str) -> dict:
    """Path and SHA-256 of a schema file, so seed can refuse an edited one before running it."""
    path = f"schema/{section}.sql"
    return {"path": path, "sha256": hashlib.sha256(storage.read_bytes(path)).hexdigest()}


def write_manifest(storage, catalog: Catalog, masking: Masking, point: SourcePoint,
                   sequences: list[dict], results: list[dict], started: float, outside: dict,
                   compression: str = "none") -> dict:
    rules = masking.rules
    by_table: dict[str, list[dict]] = {}
    for r in sorted(results, key=lambda r: (r["table"], r["part"])):
        by_table.setdefault(r["table"], []).append(r)
    tables = []
    for name, table in catalog.tables.items():
        rule = rules.tables[name]
        # bytes: of COPY text; stored_bytes: as stored (compressed or not), which sha256 is of
        files = [{k: f[k] for k in ("path", "rows", "bytes", "stored_bytes", "sha256")} for f in by_table.get(name, [])]
        if not rule.skip and not files:
            raise ExportError(f"no data written for {name}: the export is incomplete")
        masked = [c for c, spec in rule.columns.items() if trait(spec, "masks")]
        tables.append({
            "name": name, "columns": [c.name for c in table.columns], "masked_columns": sorted(masked),
            "skipped": rule.skip, "where": rule.where, "rows": sum(f["rows"] for f in files),
            "bytes": sum(f["bytes"] for f in files), "stored_bytes": sum(f["stored_bytes"] for f in files),
            "files": files,
            "seconds": round(sum(f["seconds"] for f in by_table.get(name, [])), 3),
        })
    manifest = {
        "format": FORMATS[compression],
        "complete": True,
        "tool": "prodclone",
        "tool_version": __version__,
        "created_at": dt.datetime.now(dt.UTC).isoformat(),
        "source": asdict(point),
        "rules_sha256": rules.digest,
        "key_fingerprint": masking.fingerprint,
        "schema": {section.replace("-", "_"): _schema_entry(storage, section) for section in SCHEMA_SECTIONS},
        "left_behind": outside,
        "compression": compression,
        "sequences": sequences,
        "tables": tables,
        "totals": {
            "tables": len(tables),
            "rows": sum(t["rows"] for t in tables),
            "bytes": sum(t["bytes"] for t in tables),
            "stored_bytes": sum(t["stored_bytes"] for t in tables),
            "masked_columns": sum(len(t["masked_columns"]) for t in tables),
            "seconds": round(time.perf_counter() - started, 3),
        },
    }
    _store_manifest(storage, manifest)
    return manifest


def _store_manifest(storage, manifest: dict) -> None:
    storage.write_bytes(MANIFEST, json.dumps(manifest, indent=2).encode())


def manifest_digest(manifest: dict) -> str:
    """SHA-256 of the manifest as the export wrote it (without its verification record): the record
    carries it, so it vouches for exactly the manifest that was verified, and seed checks it."""
    body = {k: v for k, v in manifest.items() if k != "verified"}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def verify_and_record(storage, source_dsn: str | None, masking: Masking, sample_size: int = 500,
                      stats_rows: int = 0) -> dict | None:
    """The verify step: checksums and, with ``source_dsn``, the leak check; only when both passed, the
    manifest's ``verified`` record that makes the export seedable (returned; None without a source: a
    checksum check alone proves nothing about masking). A failed verification withdraws an earlier record.
    ``masking`` (rules and key) must be the export's own: a leak check with other rules proves nothing about it.
    With ``stats_rows``, the record also holds masked columns' statistics against the source's (warnings only)."""
    manifest = read_manifest(storage)
    if masking.rules.digest != manifest["rules_sha256"] or masking.fingerprint != manifest["key_fingerprint"]:
        raise ExportError(f"{storage.url} was exported with other masking rules or another key than the ones "
                          "given; verify with the rules file and key it was exported with")
    try:
        report = verify_export(storage, manifest, source_dsn, masking, sample_size)
    except (LeakError, ExportError):
        if manifest.pop("verified", None) is not None:
            _store_manifest(storage, manifest)
        raise
    if not source_dsn:
        return None
    manifest["verified"] = _verification_record(manifest, report)
    if stats_rows:
        manifest["verified"]["statistics"] = export_statistics(source_dsn, manifest, masking, stats_rows)
    _store_manifest(storage, manifest)
    return manifest["verified"]


def _verification_record(manifest: dict, report: VerifyReport) -> dict:
    return {"at": dt.datetime.now(dt.UTC).isoformat(), "leak_check": "passed", "checksums": "passed",
            "files": report.files, "rows": report.rows, "columns_checked": report.columns_checked,
            "samples": report.samples, "manifest_sha256": manifest_digest(manifest)}


def read_sequences(conn, catalog: Catalog) -> list[dict]:
    """Sequence values for the manifest; ``name`` is regclass input (quote_ident form), which seed casts."""
    out = []
    for seq in catalog.sequences:
        schema, rel = split_qualified(seq)
        last, called, name = conn.execute(  # no parameters: a '%' in a composed name would read as one
            sql.SQL("SELECT last_value, is_called, quote_ident({}) || '.' || quote_ident({}) FROM {}").format(
                sql.Literal(schema), sql.Literal(rel), sql.Identifier(schema, rel))).fetchone()
        out.append({"name": name, "last_value": last, "is_called": called})
    return out


def prepare(conn, source_dsn: str, masking: Masking, storage, point: SourcePoint,
            overwrite: bool) -> tuple[Catalog, dict]:
    """Inside the snapshot: catalog, coverage and schema text (fail closed), schema. No row data moves before
    this passes. Also returns what of the schema was left behind because it reaches another server (see _outside)."""
    catalog = load_catalog(conn)
    pin_search_path(conn)  # from here on (sequences, key ranges): no overload the schema defined can match
    local_tables = stand_ins(conn)
    # pg_dump runs (in processes of its own) while this one checks coverage and builds the Faker pools; its
    # output is held here and written only once every check has passed.
    with ThreadPoolExecutor(len(SCHEMA_SECTIONS), thread_name_prefix="prodclone-schema") as dumper:
        dumps = {section: dumper.submit(dump_schema, source_dsn, section, point.snapshot, point.server_version_num,
                                        local_tables) for section in SCHEMA_SECTIONS}
        ensure_covered(catalog, masking)
        subsetter = Subsetter(catalog, masking.rules)
        for name in catalog.tables:  # a cycle through a filtered table fails here, before any data moves
            subsetter.filter_sql(name)
        kept_comments = check_schema_text(conn, masking.rules.schema)
        _ensure_writable(storage, overwrite)
        removed = Counter()
        for section, dump in dumps.items():
            dump = dump.result()
            text = dump.sql + (kept_comments if section == "post-data" else "")  # (comments last: on anything)
            storage.write_bytes(f"schema/{section}.sql", text.encode())
            removed.update(dump.removed)
    return catalog, _outside(catalog, removed)


def _outside(catalog: Catalog, removed: Counter) -> dict:
    """The manifest's account of what stayed behind: foreign tables (clones get them as empty local
    tables) and how many servers, user mappings, foreign-data wrappers, subscriptions and event
    triggers were left out. Names only, never options or credentials."""
    report = {"foreign_tables_made_local": sorted(n for n, t in catalog.tables.items() if t.kind == "foreign")
              + sorted(p for t in catalog.tables.values() for p in t.foreign_partitions),
              **{what: removed[what] for what in ("servers", "user_mappings", "foreign_data_wrappers", "subscriptions",
                                                  "event_triggers")}}
    if any(report.values()):
        log.info("left behind: foreign tables %s became empty local tables; dropped %d server(s), %d user "
                 "mapping(s), %d foreign-data wrapper(s), %d subscription(s), %d event trigger(s)",
                 ", ".join(report["foreign_tables_made_local"]) or "none", report["servers"],
                 report["user_mappings"], report["foreign_data_wrappers"], report["subscriptions"],
                 report["event_triggers"])
    return report


def _die_with_parent(parent: int) -> None:
    """Pool initializer: a worker must not outlive its export. A SIGKILLed parent (OOM, a killed task) runs
    no cleanup, and its workers would go on reading production and writing files nobody will use. On Linux
    the kernel kills the worker when its parent goes (PR_SET_PDEATHSIG; workers are spawned by the thread
    running the export, which waits for them, so that thread's exit is the parent's); everywhere, a thread
    polls the parent pid as a backstop (its first look catches a parent gone before prctl took effect)."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    threading.Thread(target=_watch_parent, args=(parent,), name="prodclone-parent-watch", daemon=True).start()


def _start_worker(parent: int, handover) -> None:
    """Pool initializer: die with the export, and take the Faker pools its coordinator built (None: it failed
    before building them, and this worker will get no work)."""
    _die_with_parent(parent)
    built = handover.get()
    if built is not None:
        pools.install(built)


def _watch_parent(parent: int, every: float = 0.5) -> None:
    while os.getppid() == parent:
        time.sleep(every)
    os.kill(os.getpid(), signal.SIGKILL)


def run_export(source_dsn: str, masking: Masking, target: str | StorageTarget, *, jobs: int = 1,
               overwrite: bool = False, split_rows: int = SPLIT_ROWS,
               compression: str = "none") -> dict:
    """The whole export in one process tree: what `prodclone export` and the DAG's live mode run."""
    datafile.check(compression)
    started = time.perf_counter()
    storage = open_storage(target)
    coord = connect_source(source_dsn)
    try:
        if jobs <= 1:
            return _export_in(None, 1, coord, source_dsn, masking, target, storage, split_rows, overwrite,
                              started, compression)
        # spawn, not fork: safe inside Airflow workers and with open connections. The workers start (and import)
        # while the coordinator checks coverage, then take the pools it built there (_start_worker).
        ctx = multiprocessing.get_context("spawn")
        handover = ctx.Queue()
        with ProcessPoolExecutor(max_workers=jobs, mp_context=ctx, initializer=_start_worker,
                                 initargs=(os.getpid(), handover)) as pool:
            started_workers = [pool.submit(_started) for _ in range(jobs)]
            ready = False
            try:
                result = _export_in(pool, jobs, coord, source_dsn, masking, target, storage, split_rows,
                                    overwrite, started, compression, handover=handover)
                ready = True
                return result
            finally:
                if not ready:  # no pools coming: let the waiting workers go
                    for _ in started_workers:
                        handover.put(None)
    finally:
        coord.close()


def _export_in(pool, jobs, coord, source_dsn, masking, target, storage, split_rows, overwrite, started, compression,
               handover=None) -> dict:
    """run_export's work, on ``pool`` (``jobs`` workers waiting on ``handover`` for the pools) or in this process."""
    open_snapshot_tx(coord)
    point = point_in_time(coord)
    catalog, outside = prepare(coord, source_dsn, masking, storage, point, overwrite)
    if handover is not None:
        built = pools.built()
        for _ in range(jobs):
            handover.put(built)
    sequences = read_sequences(coord, catalog)
    units = plan_units(coord, catalog, masking.rules, split_rows, workers=jobs, compression=compression)
    log.info("exporting %d tables in %d units with %d job(s) at %s", len(catalog.tables), len(units), jobs, point.taken_at)
    if pool is None:
        results = [export_unit(source_dsn, point, catalog, masking, target, u, conn=coord)
                   for u in units]
    else:
        futures = [pool.submit(export_unit, source_dsn, point, catalog, masking, target, u)
                   for u in units]
        results = [f.result() for f in futures]
    return write_manifest(storage, catalog, masking, point, sequences, results, started, outside, compression)


def _started() -> None:
    """A first task per worker: makes the pool start its workers now."""


def read_manifest(storage) -> dict:
    if not storage.exists(MANIFEST):
        raise ExportError(
            f"{storage.url} has no {MANIFEST}: the export is missing or did not finish. Re-run the export."
        )
    manifest = json.loads(storage.read_bytes(MANIFEST))
    if not manifest.get("complete") or manifest.get("format") != FORMATS.get(manifest.get("compression", "none")):
        raise ExportError(f"{storage.url}/{MANIFEST} is not a complete export this prodclone reads "
                          f"(format {manifest.get('format')!r}); re-run the export with this prodclone")
    return manifest


# --- Frozen sources: the export split into plan / units / finalize, so Airflow
# can spread units over mapped tasks on many workers. The source is frozen
# (paused replica, restored RDS snapshot), so every unit reads the same point.

PLAN = "plan.json"


def plan_frozen_export(source_dsn: str, rules: Rules, target: str | StorageTarget, *, mode: str, overwrite: bool,
                       split_rows: int = SPLIT_ROWS, compression: str = "none") -> list[dict]:
    """Schema, sequences and the point in time go to ``plan.json`` beside the
    data (finalize reads it back); the units are returned for mapping. It masks nothing, so needs no key."""
    datafile.check(compression)
    storage = open_storage(target)
    with connect_source(source_dsn) as conn:
        open_snapshot_tx(conn)
        point = point_in_time(conn, mode=mode, export_snapshot=False)
        catalog, outside = prepare(conn, source_dsn, rules.throwaway(), storage, point, overwrite)
        sequences = read_sequences(conn, catalog)
        units = [asdict(u) for u in plan_units(conn, catalog, rules, split_rows, compression=compression)]
    plan = {"point": asdict(point), "sequences": sequences, "units": units, "started": time.time(),
            "left_behind": outside, "compression": compression}
    storage.write_bytes(PLAN, json.dumps(plan).encode())
    return units


def export_frozen_unit(source_dsn: str, masking: Masking, target: str | StorageTarget, unit: dict) -> dict:
    with connect_source(source_dsn) as conn:
        catalog = load_catalog(conn)
        conn.rollback()
    point = SourcePoint(snapshot=None, taken_at="", txid="", lsn=None, server_version_num=0, mode="frozen")
    return export_unit(source_dsn, point, catalog, masking, target, Unit(**unit))


def finalize_frozen_export(source_dsn: str, masking: Masking, target: str | StorageTarget,
                           results: list[dict]) -> dict:
    with connect_source(source_dsn) as conn:
        catalog = load_catalog(conn)
    storage = open_storage(target)
    plan = json.loads(storage.read_bytes(PLAN))
    done = {(r["table"], r["part"]) for r in results}
    missing = [u for u in plan["units"] if (u["table"], u["part"]) not in done]
    if missing:
        raise ExportError(f"{len(missing)} export unit(s) produced no result, e.g. {missing[0]['table']}; re-run them")
    started = time.perf_counter() - (time.time() - plan["started"])
    return write_manifest(storage, catalog, masking, SourcePoint(**plan["point"]), plan["sequences"], results, started,
                          plan["left_behind"], plan["compression"])
