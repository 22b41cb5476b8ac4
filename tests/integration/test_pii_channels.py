"""No PII channel fails open, end to end through COPY text on a real server: values
go out with COPY TO as the export reads them, through the table's masker, and back
in with COPY FROM as the seed loads them, as a password-authenticated non-superuser."""

import re

import psycopg
import pytest
from psycopg import sql

from prodclone.catalog import load_catalog
from prodclone.db import dbname_of
from prodclone.errors import CoverageError, UncoveredValue
from prodclone.export import run_export
from prodclone.masking.rewriter import TableMasker
from prodclone.masking.rules import parse_rules

KEY = b"k" * 40


def round_trip(dsn: str, ddl: str, values: list[tuple], rules_columns: str) -> tuple[list[tuple], list[tuple]]:
    """Create public.src from ``ddl`` (its first column orders rows) holding ``values``; mask it with
    ``rules_columns`` (a YAML flow mapping) into an identical table; return (source rows, masked rows),
    every field as PostgreSQL's text of it."""
    rules = parse_rules(f"version: 1\ntables:\n  public.src:\n    columns: {rules_columns}\n")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql.SQL(ddl))
        conn.execute("CREATE TABLE public.out (LIKE public.src)")
        insert = sql.SQL("INSERT INTO public.src VALUES ({})").format(sql.SQL(", ").join(sql.Placeholder() * len(values[0])))
        with conn.cursor() as cur:
            cur.executemany(insert, values)
        masker = TableMasker(load_catalog(conn).table("public.src"), rules.bind(KEY))
        with conn.cursor().copy("COPY public.src TO STDOUT") as copy:
            lines = [masker.mask_line(bytes(r)[:-1]) + b"\n" for r in copy]
        with conn.cursor().copy("COPY public.out FROM STDIN") as copy:
            copy.write(b"".join(lines))
        fields = sql.SQL(", ").join(sql.SQL("{}::text").format(sql.Identifier(c)) for c in masker.columns)
        return tuple(conn.execute(sql.SQL("SELECT {} FROM {} ORDER BY 1").format(fields, sql.Identifier("public", t))).fetchall()
                     for t in ("src", "out"))


def test_date_shift_at_both_ends_of_the_range_loads_and_never_keeps_the_value(own_db):
    values = [("9999-12-31", "9999-12-31 23:59:59.999999", "9999-12-31 23:59:59+00"),
              ("5874897-12-31", "294276-12-31 23:59:59.999999", "294276-12-31 23:59:59.999999+00"),
              ("4714-11-24 BC", "4714-11-24 00:00:00 BC", "4714-11-24 00:00:00+00 BC"),
              ("0001-01-01", "0001-01-01 00:00:00", "0001-01-01 00:00:00+00"),
              ("infinity", "-infinity", "infinity")]
    for days in (1, 2, 30, 36500):  # offsets of both signs at every end
        rule = f"{{transform: date_shift, days: {days}}}"
        src, out = round_trip(own_db, "CREATE TABLE src (id int, d date, ts timestamp, tz timestamptz)",
                              [(i, *v) for i, v in enumerate(values)], f"{{id: keep, d: {rule}, ts: {rule}, tz: {rule}}}")
        with psycopg.connect(own_db, autocommit=True) as conn:
            conn.execute("DROP TABLE src, out")
        for before, after in zip(src[:-1], out[:-1], strict=True):
            assert all(a != b for a, b in zip(before[1:], after[1:], strict=True)), (days, before, after)
        assert out[-1] == src[-1]  # infinity is a sentinel shared by many rows: kept


def test_a_date_in_a_style_date_shift_cannot_read_stops_the_export_naming_the_column(own_db):
    # A source whose DateStyle is not ISO would otherwise pass 31/12/1999 through unmasked.
    with psycopg.connect(own_db, autocommit=True) as conn:
        conn.execute(sql.SQL("ALTER DATABASE {} SET datestyle = 'SQL, DMY'").format(sql.Identifier(dbname_of(own_db))))
    with pytest.raises(UncoveredValue) as exc:
        round_trip(own_db, "CREATE TABLE src (id int, born date)", [(1, "1999-12-31")],
                   "{id: keep, born: date_shift}")
    assert "public.src.born: date_shift cannot read" in str(exc.value)
    assert "1999" not in str(exc.value)


DEEP = "[" * 5000 + "1" + "]" * 5000
JSON_DOCS = ['{"phone": "555-0100", "n": 0.1000000000000000055511151231257827, "big": 1e400}',
             '{"phone": "555-0100", "a": 1, "a": "dup", "phone": "555-0199", "note": "tab\\there\\\\ \\u00e9"}',
             '{"deep": ' + DEEP + ', "phone": "555-0100"}']


@pytest.mark.parametrize("doc_type", ["json", "jsonb"])
def test_json_outside_masked_paths_loads_back_exactly(own_db, doc_type):
    src, out = round_trip(own_db, f"CREATE TABLE src (id int, doc {doc_type})", list(enumerate(JSON_DOCS)),
                          "{id: keep, doc: {transform: json, unlisted: keep, paths: {phone: {transform: faker, provider: phone_number}}}}")
    for (_, before), (_, after) in zip(src, out, strict=True):
        assert "555-01" in before and "555-01" not in after
        phones = re.compile(r'"phone": "[^"]*"')  # every phone masked; the rest exactly as it was
        assert len(phones.findall(after)) == len(phones.findall(before))
        assert phones.sub("P", after) == phones.sub("P", before)


def test_a_json_key_no_rule_lists_stops_the_export_like_a_new_column(own_db, tmp_path):
    rules = parse_rules("version: 1\ntables:\n  public.events:\n    columns: {id: keep, payload: {transform: json, "
                        "paths: {ip: {transform: faker, provider: ipv4}, path: keep}}}\n")
    with psycopg.connect(own_db, autocommit=True) as conn:
        conn.execute("CREATE TABLE events (id int PRIMARY KEY, payload jsonb)")
        conn.execute("""INSERT INTO events VALUES (1, '{"ip": "10.1.2.3", "path": "/a"}'), (2, NULL)""")
    manifest = run_export(own_db, rules.bind(KEY), f"file://{tmp_path}/ok")  # listed keys only: exports
    assert manifest["totals"]["rows"] == 2
    with psycopg.connect(own_db, autocommit=True) as conn:
        conn.execute("""INSERT INTO events VALUES (3, '{"ip": "10.1.2.4", "path": "/b", "ssn": "078-05-1120"}')""")
    with pytest.raises(CoverageError) as exc:
        run_export(own_db, rules.bind(KEY), f"file://{tmp_path}/bad")
    assert isinstance(exc.value, UncoveredValue)
    assert "public.events.payload: json path 'ssn' is not listed" in str(exc.value)
    assert "078-05-1120" not in str(exc.value) and "10.1.2" not in str(exc.value)
    assert not (tmp_path / "bad" / "manifest.json").exists()


def test_export_pins_output_formats_whatever_the_source_database_defaults(base_role, new_db, tmp_path):
    """A LATIN1 source with DMY dates, a non-UTC zone and escape bytea exports, masks and keeps its text exact."""
    name = dbname_of(new_db("pct_latin1"))
    with psycopg.connect(base_role(), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template0 ENCODING 'LATIN1' LC_COLLATE 'C' LC_CTYPE 'C'").format(
            sql.Identifier(name)))
        for setting, value in (("datestyle", "SQL, DMY"), ("timezone", "Asia/Kathmandu"), ("bytea_output", "escape"),
                               ("extra_float_digits", "-15")):
            conn.execute(sql.SQL("ALTER DATABASE {} SET {} = {}").format(sql.Identifier(name), sql.Identifier(setting),
                                                                           sql.Literal(value)))
    dsn = base_role(name)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE src (id int PRIMARY KEY, town text, born date, seen timestamptz, raw bytea, f float8)")
        conn.execute("INSERT INTO src VALUES (1, 'Zürich Café', '1999-12-31', '2024-02-29 23:30:00+00', '\\x00ff', 0.1)")
    rules = parse_rules("version: 1\ntables:\n  public.src:\n    columns: {id: keep, town: keep, born: date_shift, "
                        "seen: keep, raw: keep, f: keep}\n")
    run_export(dsn, rules.bind(KEY), f"file://{tmp_path}/exp")
    line = next((tmp_path / "exp" / "data").iterdir()).read_bytes().decode()
    fields = line.rstrip("\n").split("\t")
    assert fields[1] == "Zürich Café"  # converted from LATIN1, not mangled
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", fields[2]) and fields[2] != "1999-12-31"  # ISO, and shifted
    assert fields[3] == "2024-02-29 23:30:00+00" and fields[4] == "\\\\x00ff" and fields[5] == "0.1"
