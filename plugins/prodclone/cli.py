"""The ``prodclone`` command: the same engine calls the DAG tasks make, without Airflow."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
from pathlib import Path

from prodclone import __version__
from prodclone.datafile import COMPRESSIONS
from prodclone.errors import ProdcloneError
from prodclone.masking import kernel

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def _dsn(value: str) -> str:
    """An argparse type: libpq reads an empty DSN as "the default local server", which is never what a
    typo'd or unset ``$DSN`` meant."""
    if not value.strip():
        raise argparse.ArgumentTypeError("is empty (is the shell variable you passed set?); give a DSN such as "
                                         "postgresql://user@host:5432/app")
    return value


def _write_atomically(path: str, text: str) -> None:
    """Replace ``path`` only once ``text`` is wholly written: a failure leaves the old file as it was.
    The new file keeps the old one's permissions (a rules file is reviewed in git, not a secret)."""
    target = Path(path)
    try:
        mode = target.stat().st_mode & 0o777
    except FileNotFoundError:
        mode = 0o666 & ~_umask()
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".partial")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _rules_scaffold(a) -> int:
    from prodclone.catalog import load_catalog
    from prodclone.db import connect_source, redact_dsn
    from prodclone.masking.scaffold import scaffold

    if a.output and not Path(a.output).parent.is_dir():
        raise ProdcloneError(f"--output {a.output}: the directory {Path(a.output).parent} does not exist")
    with connect_source(a.source) as conn:
        catalog = load_catalog(conn)
        if not catalog.tables:
            raise ProdcloneError(f"no tables found in {redact_dsn(a.source)} (system schemas and extension tables "
                                 "are not listed): check that --source names your application's database; "
                                 "nothing was written")
        text = scaffold(conn, catalog, sample=a.sample, json_survey_rows=a.json_survey_rows)
    if a.output:
        _write_atomically(a.output, text)
        print(f"wrote rules for {len(catalog.tables)} table(s) to {a.output}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return EXIT_OK


def _rules_check(a) -> int:
    from prodclone.catalog import load_catalog
    from prodclone.db import connect_source
    from prodclone.masking import keys
    from prodclone.masking.coverage import check
    from prodclone.masking.rules import load_rules

    # Coverage builds each rule's pools and --stats masks with them: with the real key when one is set,
    # else one throwaway key for both (neither the coverage nor the shape depends on which key).
    rules = load_rules(a.rules)
    masking = rules.bind(keys.load_key()) if os.environ.get(keys.KEY_ENV) else rules.throwaway()
    with connect_source(a.source) as conn:
        catalog = load_catalog(conn)
        report = check(catalog, masking)
        print(report.text())
        if not report.ok or not a.stats:
            return EXIT_OK if report.ok else EXIT_FAILED
        return _stats_check(conn, catalog, masking, a.stats_rows)


def _stats_check(conn, catalog, masking, rows: int) -> int:
    """Source and masked statistics per masked column, from one sample; exit 1 if any is out of bounds."""
    from prodclone.masking.stats import check_shapes

    reports = check_shapes(conn, catalog, masking, rows)
    for r in reports:
        print(r.line())
    bad = [r for r in reports if r.problems]
    print(f"statistics: {len(reports) - len(bad)} of {len(reports)} masked columns within bounds (distinct ±10%, "
          f"nulls exact, width ±20%, most common value ±10%; sample of up to {rows} rows per table)")
    return EXIT_FAILED if bad else EXIT_OK


def _rules_preview(a) -> int:
    from psycopg import sql

    from prodclone.catalog import load_catalog, qualified_name, split_qualified
    from prodclone.db import connect_source
    from prodclone.masking import keys
    from prodclone.masking.copytext import NULL, decode
    from prodclone.masking.rules import load_rules

    try:
        name = qualified_name(*split_qualified(a.table))
    except ValueError as exc:
        raise ProdcloneError(f"--table: {exc}") from None
    masking = load_rules(a.rules).bind(keys.load_key())
    with connect_source(a.source) as conn:
        catalog = load_catalog(conn)
        table = catalog.table(name)
        if table is None:
            raise ProdcloneError(f"no table {name!r} in the source; tables: {', '.join(catalog.tables)}")
        if table.reaches_out:
            raise ProdcloneError(f"{name} reads another server (a foreign table or partition); nothing of it is exported")
        masker = masking.table(table)
        query = sql.SQL("COPY (SELECT {} FROM {} LIMIT {}) TO STDOUT").format(
            sql.SQL(", ").join(map(sql.Identifier, masker.columns)), table.scan, sql.Literal(int(a.limit)))
        with conn.cursor().copy(query) as copy:
            lines = [bytes(r)[:-1] for r in copy]
    shown = masker.masked_columns if not a.all_columns else masker.columns

    def value(v: bytes) -> str | None:
        return None if v == NULL else decode(v)

    rows = []
    for line in lines:
        before, after = line.split(b"\t"), masker.mask_line(line).split(b"\t")
        rows.append({c: (value(before[i]), value(after[i])) for i, c in enumerate(masker.columns) if c in shown})
    if a.json:  # NULL is JSON null, never the string "NULL"
        print(json.dumps([{c: {"before": b, "after": x} for c, (b, x) in r.items()} for r in rows], indent=2))
        return EXIT_OK
    width = 32
    for n, r in enumerate(rows, 1):
        print(f"-- row {n} " + "-" * 60)
        for c, (b, x) in r.items():
            print(f"  {c:<20} {_cut(b, width):<{width}} -> {_cut(x, width)}")
    print(f"({len(rows)} rows of {name}; masked columns: {', '.join(masker.masked_columns) or 'none'})")
    return EXIT_OK


def _cut(text: str | None, width: int) -> str:
    """A value for the side-by-side view: NULL as NULL, a long one cut visibly (…)."""
    if text is None:
        return "NULL"
    return text if len(text) <= width else text[:width - 1] + "…"


def _rules_schema(a) -> int:
    from prodclone.masking.rules import json_schema

    print(json.dumps(json_schema(), indent=2))
    return EXIT_OK


def _export_run(a, url: str):
    from prodclone.exportrun import ExportRun
    from prodclone.masking import keys

    return ExportRun(url=url, rules_path=a.rules, source_dsn=lambda: a.source, masking_key=keys.load_key,
                     jobs=getattr(a, "jobs", 1), overwrite=getattr(a, "overwrite", False), stats_rows=a.stats_rows,
                     compression=getattr(a, "compress", "none"))


def _export(a) -> int:
    run = _export_run(a, a.to)
    t = run.export()
    stored = f" ({t['stored_bytes']} stored)" if t["stored_bytes"] != t["bytes"] else ""
    print(f"exported {t['tables']} tables, {t['rows']} rows, {t['bytes']} bytes{stored}, "
          f"{t['masked_columns']} masked columns in {t['seconds']}s to {a.to}")
    if a.no_verify:
        print("not verified (--no-verify): seed refuses it until `prodclone verify --source ...` passes")
        return EXIT_OK
    return _verify_step(run)


def _verify_step(run) -> int:
    """Checksums and the leak check, recorded in the manifest when they pass (what makes the export seedable)."""
    record = run.verify()
    if record is None:
        print(f"checksums match; no leak check without --source, so {run.url} is still not verified for seeding")
        return EXIT_OK
    print(f"verified {record['files']} files / {record['rows']} rows; leak check on {record['columns_checked']} "
          f"columns with {record['samples']} sampled originals: no leaks; recorded in the manifest")
    stats = record.get("statistics")
    if stats:
        for column, problems in stats["outside_bounds"].items():
            print(f"warning: statistics of {column} outside bounds: {'; '.join(problems)}")
        print(f"statistics: {stats['within_bounds']} of {stats['columns_compared']} masked columns within bounds "
              f"(sample of up to {stats['sample_rows']} rows per table; see the manifest's verified.statistics)")
    return EXIT_OK


def _seed(a) -> int:
    from prodclone.seed import seed

    r = seed(a.from_url, a.target, overwrite=a.overwrite, force_unverified=a.force_unverified)
    print(f"seeded {r.database}: {r.tables} tables, {r.rows} rows in {r.seconds}s"
          + (" (replaced the previous base)" if r.replaced_previous else "")
          + ("" if r.verified else "; UNVERIFIED export loaded (--force-unverified)"))
    return EXIT_OK


def _verify(a) -> int:
    return _verify_step(_export_run(a, a.from_url))


def _sample(a) -> int:
    from prodclone.sample import create_sample_database

    counts = create_sample_database(a.target, users=a.users, seed=a.seed, replace=a.replace)
    print(f"sample database ready: {sum(counts.values())} rows " + json.dumps(counts))
    return EXIT_OK


def _config_schema(a) -> int:
    from prodclone.config import schema_text

    print(schema_text(), end="")
    return EXIT_OK


def _config_check(a) -> int:
    from prodclone.config import load_config

    cfg = load_config(a.config)
    print(f"config ok: driver {cfg.driver}, profiles {', '.join(cfg.profiles)}, storage {cfg.storage_url}")
    return EXIT_OK


def _stats_rows_option(p) -> None:
    p.add_argument("--stats-rows", type=int, default=30_000, metavar="N",
                   help="verify also compares each masked column's statistics with the source's on a sample of N "
                        "rows per table, recorded in the manifest (outside bounds: a warning; 0: off)")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="prodclone", description="Masked clones of production, fast.")
    p.add_argument("-v", "--verbose", action="store_true")
    p.add_argument("--version", action="version", version=f"prodclone {__version__}; {kernel.status()}")
    sub = p.add_subparsers(dest="command", required=True)

    rules = sub.add_parser("rules", help="write, check and preview masking rules").add_subparsers(dest="rules_cmd", required=True)
    s = rules.add_parser("scaffold", help="write a complete rules file for a schema (to --output, or stdout)")
    s.add_argument("--source", required=True, type=_dsn, help="source DSN")
    s.add_argument("--output", "-o", metavar="FILE", help="write here, atomically: on any error FILE is left as it "
                   "was (a shell redirect would empty it first)")
    s.add_argument("--sample", type=int, default=200, help="values sampled per text column to detect PII (0: names only)")
    s.add_argument("--json-survey-rows", type=int, default=100_000, metavar="N",
                   help="json columns: list the key paths of up to N documents (a sample of about N beyond; "
                        "0: names only)")
    s.set_defaults(fn=_rules_scaffold)
    s = rules.add_parser("check", help="fail (exit 1) if any column has no rule or a rule names nothing")
    s.add_argument("--source", required=True)
    s.add_argument("--rules", required=True)
    s.add_argument("--stats", action="store_true", help="also mask a sample of each table and fail (exit 1) if a "
                   "masked column's distinct values, nulls, width or most common value move out of bounds")
    s.add_argument("--stats-rows", type=int, default=30_000, metavar="N", help="rows sampled per table (default 30000)")
    s.set_defaults(fn=_rules_check)
    s = rules.add_parser("preview", help="original and masked values side by side for real rows")
    s.add_argument("--source", required=True)
    s.add_argument("--rules", required=True)
    s.add_argument("--table", required=True, help='schema-qualified, e.g. public.users (quote parts with a dot '
                   'or a quote: "my.schema"."my""table")')
    s.add_argument("--limit", type=int, default=10)
    s.add_argument("--all-columns", action="store_true", help="show kept columns too")
    s.add_argument("--json", action="store_true")
    s.set_defaults(fn=_rules_preview)
    s = rules.add_parser("schema", help="print the rules file's JSON Schema")
    s.set_defaults(fn=_rules_schema)

    config = sub.add_parser("config", help="check include/prodclone.yaml, print its JSON Schema").add_subparsers(
        dest="config_cmd", required=True)
    s = config.add_parser("check", help="load the config as the DAGs will; exit 1 naming file:line:col of each problem")
    s.add_argument("--config", help="default: $PRODCLONE_CONFIG, else include/prodclone.yaml")
    s.set_defaults(fn=_config_check)
    s = config.add_parser("schema", help="print the config's JSON Schema (include/prodclone.schema.json)")
    s.set_defaults(fn=_config_schema)

    s = sub.add_parser("export", help="masked export of the source to file:// or s3://")
    s.add_argument("--source", required=True)
    s.add_argument("--rules", required=True)
    s.add_argument("--to", required=True, help="file:///abs/path or s3://bucket/prefix")
    s.add_argument("--jobs", type=int, default=1, help="parallel workers sharing one snapshot")
    s.add_argument("--compress", choices=COMPRESSIONS, default="none", help="compress the data files (zstd: .copy.zst)")
    s.add_argument("--overwrite", action="store_true", help="replace an existing export at --to")
    s.add_argument("--no-verify", action="store_true",
                   help="skip the checksum and leak check after export (seed refuses the export until it is verified)")
    _stats_rows_option(s)
    s.set_defaults(fn=_export)
    s = sub.add_parser("seed", help="load an export into the base database (staging, then swap)")
    s.add_argument("--from", dest="from_url", required=True)
    s.add_argument("--target", required=True, help="DSN naming the base database")
    s.add_argument("--overwrite", action="store_true", help="replace the base if prodclone seeded it under this name")
    s.add_argument("--force-unverified", action="store_true",
                   help="load an export that has not passed verification (logged as a warning, marked on the base)")
    s.set_defaults(fn=_seed)
    s = sub.add_parser("verify", help="check an export against its manifest and run the leak check")
    s.add_argument("--from", dest="from_url", required=True)
    s.add_argument("--source", help="source DSN for the leak check (without it: checksums only, not seedable)")
    s.add_argument("--rules", required=True)
    _stats_rows_option(s)
    s.set_defaults(fn=_verify)
    s = sub.add_parser("sample", help="create the sample 'production' database full of fake PII")
    s.add_argument("--target", required=True, help="DSN naming the database to create")
    s.add_argument("--users", type=int, default=1000, help="scale: users (total rows ~ 12x)")
    s.add_argument("--seed", type=int, default=42)
    s.add_argument("--replace", action="store_true")
    s.set_defaults(fn=_sample)
    from prodclone import envcli

    envcli.add_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    try:
        return args.fn(args)
    except ProdcloneError as exc:
        print(f"prodclone: error: {exc}", file=sys.stderr)
        return getattr(exc, "exit_code", EXIT_FAILED)


if __name__ == "__main__":
    sys.exit(main())
