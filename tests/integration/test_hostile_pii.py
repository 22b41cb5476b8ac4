"""Trust II end to end: a "hostile PII" production schema goes through the whole workflow a data engineer and
the DAGs run (scaffold --output, rules check, export, verify, seed, snapshot, clone with the postgres driver),
all as the password-authenticated, non-superuser base role. PII sits in every channel: arrays of emails and
phones, free text carrying emails, phones, cards, IBANs and tokens, JSON keys that first appear past the rows
scaffold samples as text, a template over masked columns, and schema text (a comment, a default, a CHECK, an
enum label, a function body holding a live key). The export stops on the schema text first, naming objects
and never text; the author fixes production and allows one harmless object with a reason, as a real user
would. Then no original value is in any export file, the rules file or a full pg_dump of the clone, and
everything that is not personal arrives unchanged."""

import dataclasses
import datetime as dt
import hashlib
import json
import re
import subprocess

import psycopg
import pytest
import yaml
from psycopg import sql

from prodclone import cli
from prodclone.config import load_config
from prodclone.db import dbname_of, with_dbname
from prodclone.drivers.base import MemorySecrets
from prodclone.drivers.postgres import PostgresDriver
from prodclone.errors import UncoveredValue
from prodclone.export import run_export, verify_and_record
from prodclone.masking.copytext import decode
from prodclone.masking.rules import parse_rules
from prodclone.pgtools import pg_dump_for
from prodclone.storage import open_storage
from support import clone_env, clone_url, restore, rows

KEY = b"h" * 40
N = 300
LATE = 200  # JSON keys only from this row on: past the 200 rows scaffold samples of a text column

SCHEMA = """
CREATE TYPE public.tier AS ENUM ('regular', 'gold', 'ceo.jane.doe@corp.io');
CREATE TABLE public.customers (
    id int PRIMARY KEY,
    first_name text NOT NULL,
    last_name text NOT NULL,
    login_email text NOT NULL UNIQUE DEFAULT 'ceo.jane.doe@corp.io',
    contact text,
    emails text[],
    phones text[],
    remarks text,
    profile jsonb,
    tier public.tier NOT NULL DEFAULT 'regular',
    CONSTRAINT not_the_ceo CHECK (login_email <> 'jane.roe.private@gmail.com'),
    CONSTRAINT no_placeholder CHECK (login_email <> 'nobody@example.com')
);
COMMENT ON TABLE public.customers IS 'customer master data';
COMMENT ON COLUMN public.customers.remarks IS 'contains ssn 123-45-6789 of Jane Roe';
CREATE FUNCTION public.charge(amount int) RETURNS text LANGUAGE sql
    AS $$ SELECT 'sk_live_4eC39HqLyjWDarjtT1zdp7dc:' || amount $$;
"""
SCHEMA_ORIGINALS = ["ceo.jane.doe@corp.io", "jane.roe.private@gmail.com", "123-45-6789", "Jane Roe",
                    "sk_live_4eC39HqLyjWDarjtT1zdp7dc", "4eC39HqLyjWDarjtT1zdp7dc"]
# What the export must name, and how: the object (as PostgreSQL names it), where in it, what kind.
FINDINGS = [
    "'default value for public.customers.login_email' (default): email address",
    "'function public.charge(integer)' (definition): API key or token",
    "'table column public.customers.remarks' (comment): social security number",
    "'table constraint no_placeholder on public.customers' (constraint): email address",
    "'table constraint not_the_ceo on public.customers' (constraint): email address",
    "'type public.tier' (enum label): email address",
]
# What the DBA changes in production once the export named it: the key moves to a setting, the CEO's address
# leaves the default, the CHECK and the enum.
FIX_PRODUCTION = """
ALTER TABLE public.customers ALTER COLUMN login_email DROP DEFAULT;
ALTER TABLE public.customers DROP CONSTRAINT not_the_ceo;
ALTER TYPE public.tier RENAME VALUE 'ceo.jane.doe@corp.io' TO 'executive';
CREATE OR REPLACE FUNCTION public.charge(amount int) RETURNS text LANGUAGE sql
    AS $$ SELECT coalesce(current_setting('app.stripe_key', true), '') || ':' || amount $$;
"""
# The author's edits to scaffold's draft: the contact line is built from masked columns, table comments are
# kept for documentation (first the remarks column's too, which the export then refuses), and the placeholder
# CHECK is allowed: it names an RFC 2606 address.
TEMPLATE = "reach {first_name} at {login_email}"
KEEP_COMMENTS = ["table public.customers", "table column public.customers.remarks"]
ALLOW = {"object": "table constraint no_placeholder on public.customers", "finds": ["email address"],
         "reason": "RFC 2606 example address; identifies no one"}


def _letters(i: int) -> str:
    return chr(97 + i // 26 % 26) + chr(97 + i % 26)


def _luhn_complete(body: str) -> str:
    """``body`` and the check digit that makes it a valid card number."""
    for d in "0123456789":
        total = sum(n - 9 if n > 9 else n for n in (int(c) * (2 if k % 2 else 1) for k, c in enumerate(reversed(body + d))))
        if total % 10 == 0:
            return body + d
    raise AssertionError("unreachable")


def _iban(i: int) -> str:
    """A valid GB IBAN, written in groups of four."""
    bban = f"WEST12345{i:05d}"
    moved = "".join(str(int(c, 36)) for c in bban + "GB00")
    compact = f"GB{98 - int(moved) % 97:02d}{bban}"
    return " ".join(compact[k:k + 4] for k in range(0, len(compact), 4))


@dataclasses.dataclass
class Person:
    """One production row and every original value it holds, wherever it sits."""

    i: int

    def __post_init__(self):
        i = self.i
        self.first, self.last = f"Ysolde{_letters(i)}", f"Quennell{_letters(i)}"
        self.login = f"{self.first.lower()}.{self.last.lower()}@corp.io"
        self.contact = TEMPLATE.format(first_name=self.first, login_email=self.login)
        self.emails = None if i % 5 == 0 else [] if i % 7 == 0 else \
            [f"{self.first.lower()}@home-mail.net", None, f"{self.last.lower()}.w@work.org"]
        self.phones = [f"+1 415-555-{i:04d}", f"(212) 555-{i:04d}"] if i % 4 else None
        card = _luhn_complete(f"4{(i * 7919 + 12345678901) % 10 ** 14:014d}")
        self.embedded = {"email": f"{self.first.lower()}.private@gmail.com", "phone": f"+44 20 7946 {i:04d}",
                         "card": " ".join(card[k:k + 4] for k in range(0, 16, 4)), "iban": _iban(i),
                         "token": "sk_live_" + hashlib.sha256(str(i).encode()).hexdigest()[:24]} if i % 3 == 0 else {}
        self.remarks = REMARK.format(i=i, **self.embedded) if self.embedded else PLAIN.format(i=i)
        self.late = {"contactEmail": f"{self.first.lower()}.c@corp.io", "ssn": f"{100 + i % 800:03d}-{10 + i % 89:02d}-{1000 + i:04d}",
                     "dob": (dt.date(1900, 1, 1) + dt.timedelta(days=400 * (i - LATE))).isoformat(),
                     "nested.deep.email": f"{self.last.lower()}.deep@corp.io"} if i >= LATE and i % 10 != 9 else {}
        self.profile = None if i % 10 == 9 else {"plan": "pro" if i % 2 else "free", "newsletter": i % 3 == 0,
                                                  "tags": ["early", f"t{i % 4}"]}
        if self.late:
            self.profile |= {k: v for k, v in self.late.items() if "." not in k} | {
                "nested": {"deep": {"email": self.late["nested.deep.email"]}}}

    def row(self) -> tuple:
        return (self.i, self.first, self.last, self.login, self.contact, self.emails, self.phones, self.remarks,
                None if self.profile is None else json.dumps(self.profile), "gold" if self.i % 11 == 0 else "regular")

    def values(self) -> set[str]:
        """Every original value of this row, as production holds it."""
        return {self.first, self.last, self.login, *(e for e in self.emails or () if e), *(self.phones or ()),
                *self.embedded.values(), *self.late.values()}

    def partials(self) -> set[str]:
        """The forms a partial leak of an embedded identifier would take: digits only, no spaces, no prefix."""
        e = self.embedded
        return {re.sub(r"\D", "", e["card"]), re.sub(r"\D", "", e["phone"]), e["iban"].replace(" ", ""),
                e["token"].removeprefix("sk_live_")} if e else set()


REMARK = ("Customer {i} asked us to write to {email} or call {phone}; paid by card {card}, refund to IBAN {iban}. "
          "Their API key {token} was pasted here, rotate it. Ticket #{i} (v1.2.{i}).")
PLAIN = "Delivered on time, ticket #{i}, no issues (v1.2.{i})."
PEOPLE = [Person(i) for i in range(N)]
ORIGINALS = SCHEMA_ORIGINALS + sorted({v for p in PEOPLE for v in p.values() | p.partials()})
RFC2606 = ("@example.com", "@example.net", "@example.org")  # where every masked email lives


def _database(base_role, new_db, ddl: str, insert: str = "", values: list[tuple] = ()) -> str:
    """A database the base role made and owns, holding ``ddl`` and ``values`` (through ``insert``): its DSN."""
    name = dbname_of(new_db("pct_hostile"))
    with psycopg.connect(base_role(), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    with psycopg.connect(base_role(name), autocommit=True) as conn:
        conn.execute(ddl)
        with conn.cursor() as cur:
            cur.executemany(insert, values)
    return base_role(name)


@pytest.fixture
def source(base_role, new_db):
    """The hostile production database: its DSN."""
    return _database(base_role, new_db, SCHEMA, "INSERT INTO public.customers VALUES (%s, %s, %s, %s, %s, %s, %s, %s, "
                     "%s, %s)", [p.row() for p in PEOPLE])


@pytest.fixture
def driver(pg, base_role, new_db):
    """``driver(base)``: a postgres clone driver as the base role, with a registry of its own; afterwards its
    environments and the snapshots it made are removed."""
    made: list[PostgresDriver] = []

    def make(base: str) -> PostgresDriver:
        cfg = dataclasses.replace(load_config(), registry_database=dbname_of(new_db("pct_hreg")))
        made.append(PostgresDriver(base, cfg, MemorySecrets(), busy_wait=5))
        return made[-1]

    yield make
    for d in made:
        for env in d.environments():
            d.teardown(env.name)
        with psycopg.connect(pg, autocommit=True) as conn:
            for snap in d.snapshots():
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(snap.id)))


def _run(capsys, *argv: str) -> tuple[int, str]:
    """``prodclone argv``, as the data engineer runs it: exit code and everything it printed."""
    code = cli.main(list(argv))
    out = capsys.readouterr()
    return code, out.out + out.err


def _edit_draft(text: str, keep_comments: list[str], allow: list[dict]) -> str:
    """The author's edits to scaffold's draft, made as a person makes them: one line replaced, a section added."""
    contact = re.compile(r"^( {6}contact: ).*$", re.M)
    assert contact.search(text)
    text = contact.sub(lambda m: m[1] + json.dumps({"transform": "template", "template": TEMPLATE}), text)
    return text + yaml.safe_dump({"schema": {"keep_comments": keep_comments, "allow": allow}}, sort_keys=False)


def test_hostile_pii_through_scaffold_check_export_seed_and_clone(source, base_role, new_db, driver, pg, tmp_path,
                                                                   capsys):
    rules = tmp_path / "rules.yaml"
    url = f"file://{tmp_path}/exp"
    in_production = _pg_dump(with_dbname(pg, dbname_of(source)))
    assert not [v for v in SCHEMA_ORIGINALS + [v for p in PEOPLE for v in p.values()] if v not in in_production]
    code, said = _run(capsys, "rules", "scaffold", "--source", source, "--output", str(rules))
    assert code == 0, said
    draft = rules.read_text()
    chosen = {m[1]: yaml.safe_load(m[2]) for m in re.finditer(r"^ {6}(\w+): (.*?)  #", draft, re.M)}
    assert chosen["emails"] == {"transform": "elements", "rule": "email"}  # by sampled elements
    assert chosen["phones"]["transform"] == "elements" and chosen["phones"]["rule"]["provider"] == "phone_number"
    assert chosen["remarks"] == "scrub" and chosen["contact"] == "scrub"  # free text with identifiers
    assert chosen["profile"]["paths"] == {  # keys first seen in row 201 on are listed, personal ones masked
        "contactEmail": {"transform": "email"}, "dob": {"transform": "date_shift", "days": 180},
        "nested.deep.email": {"transform": "email"}, "newsletter": {"transform": "keep"},
        "plan": {"transform": "keep"}, "ssn": {"transform": "hash", "length": 24}, "tags[*]": {"transform": "keep"}}
    # first name, last name and email in one table: the email is built from the masked names, so rows stay coherent
    assert chosen["login_email"] == {"transform": "template", "template": "{first_name}.{last_name}@example.com",
                                     "lower": True, "unique": True}
    assert (chosen["tier"], chosen["id"]) == ("keep", "keep")
    rules.write_text(_edit_draft(draft, KEEP_COMMENTS, []))
    assert _run(capsys, "rules", "check", "--source", source, "--rules", str(rules))[0] == 0

    # The export stops on the schema text before any data moves, naming each object and never its text.
    code, said = _run(capsys, "export", "--source", source, "--rules", str(rules), "--to", url)
    assert code == 1 and not (tmp_path / "exp").exists()
    named = [line.strip() for line in said.splitlines() if line.startswith("  '")]
    assert named == FINDINGS, said
    assert not _found(said, ORIGINALS)

    # The author fixes production, stops keeping the comment that held an SSN, allows the harmless CHECK.
    with psycopg.connect(source, autocommit=True) as conn:
        conn.execute(FIX_PRODUCTION)
    rules.write_text(_edit_draft(draft, KEEP_COMMENTS[:1], [ALLOW]))
    assert _run(capsys, "rules", "check", "--source", source, "--rules", str(rules))[0] == 0
    code, said = _run(capsys, "export", "--source", source, "--rules", str(rules), "--to", url)
    assert code == 0 and "leak check on 8 columns" in said and "no leaks" in said, said
    base = base_role(dbname_of(new_db("pct_hbase")))
    code, said = _run(capsys, "seed", "--from", url, "--target", base)
    assert code == 0 and f"{N} rows" in said, said

    clones = driver(base)
    clones.snapshot("hostile-1")
    env = clone_env()
    assert restore(clones, env, hooks=()).status == "ready"
    clone = clone_url(clones, env)
    dump = _pg_dump(with_dbname(pg, env))

    # No original value anywhere: export files (data, schema, manifest), the rules file, the clone.
    assert len(ORIGINALS) > 2500
    exported = {f.relative_to(tmp_path): f.read_text() for f in (tmp_path / "exp").rglob("*") if f.is_file()}
    assert {str(f).split("/")[1] for f in exported} == {"data", "schema", "manifest.json"}
    for where, text in {**exported, "rules file": rules.read_text(), "pg_dump of the clone": dump}.items():
        assert not _found(text, ORIGINALS), where
    _assert_everything_else_arrived(clone, dump)


def test_free_text_identifiers_scrub_missed_are_now_masked(base_role, new_db, tmp_path):
    """Found by this suite, each reaching the export through a scrub column (and past the leak check, which uses
    the same detectors): the password in 'postgres://app:pw@10.0.0.5/db' (only the IP was masked), and phone
    numbers with a group of more than five digits ('+44 7700 900123', '07700 900123', '+49 30 1234567'; of
    '0044 7700 900123' only the first two groups were masked). Now each is replaced in its own shape; the rest
    of the text, and text without credentials, stays as it was."""
    texts = ["prod is postgres://app:Hunter2pass@10.0.0.5:5432/app, use it", "clone from https://deploy:tok3nV4lue@gitlab:8443/x",
             "no credentials: https://example.com/a:b@c and ftp://anon@host/x",
             "mobile +44 7700 900123 or 07700 900124, Berlin office +49 30 1234567, from abroad 0044 7700 900125."]
    src = _database(base_role, new_db, "CREATE TABLE notes (id int PRIMARY KEY, body text)",
                    "INSERT INTO notes VALUES (%s, %s)", list(enumerate(texts)))
    rules = parse_rules("version: 1\ntables:\n  public.notes:\n    columns: {id: keep, body: scrub}\n")
    url = f"file://{tmp_path}/exp"
    run_export(src, rules.bind(KEY), url)
    assert verify_and_record(open_storage(url), src, rules.bind(KEY))["columns_checked"] == 1
    out = [decode(line.split(b"\t")[1]) for line in next((tmp_path / "exp" / "data").iterdir()).read_bytes().splitlines()]
    assert not _found("\n".join(out), ["Hunter2pass", "tok3nV4lue", "10.0.0.5", "900123", "900124", "1234567", "900125"])
    assert re.fullmatch(r"prod is postgres://app:[A-Z][a-z]{5}\d[a-z]{4}@[\d.]+:5432/app, use it", out[0])
    assert re.fullmatch(r"clone from https://deploy:[a-z]{3}\d[a-z][A-Z]\d[a-z]{3}@gitlab:8443/x", out[1])
    assert out[2] == texts[2]
    assert re.fullmatch(r"mobile \+\d\d \d{4} \d{6} or 0\d{4} \d{6}, Berlin office \+\d\d \d\d \d{7}, "
                        r"from abroad 0\d{3} \d{4} \d{6}\.", out[3])


def test_a_json_key_holding_personal_data_is_never_printed(base_role, new_db, tmp_path):
    """Found by this suite: a JSON object keyed by people's emails or phones stopped the export (unlisted: fail)
    with the key in the message, so the error and its alert carried row data. Now the message names the path
    with such a key shown by its kinds only."""
    src = _database(base_role, new_db, "CREATE TABLE teams (id int PRIMARY KEY, roles jsonb)",
                    "INSERT INTO teams VALUES (%s, %s)",
                    [(1, '{"team": "a", "by_person": {"jane.doe@corp.io": "admin"}}'),
                     (2, '{"team": "b", "by_phone": {"+1 415 555 0100": "oncall"}}')])
    for key, listed, path in (("jane.doe@corp.io", "by_person.x: keep, by_phone.x: keep", "by_person.<a key holding email>"),
                              ("415 555", "by_person: keep, by_phone.x: keep", "by_phone.<a key holding phone>")):
        rules = parse_rules("version: 1\ntables:\n  public.teams:\n    columns: {id: keep, roles: {transform: json, "
                            f"paths: {{team: keep, {listed}}}}}}}\n")
        with pytest.raises(UncoveredValue) as err:
            run_export(src, rules.bind(KEY), f"file://{tmp_path}/exp")
        assert f"public.teams.roles: json path '{path}' is not listed" in str(err.value)
        assert key not in str(err.value) and not (tmp_path / "exp" / "manifest.json").exists()


def _pg_dump(dsn: str) -> str:
    """The whole database as plain SQL, schema and data (comments included)."""
    version = rows(dsn, "SELECT current_setting('server_version_num')::int")[0][0]
    return subprocess.run([str(pg_dump_for(version)), "--no-password", "--dbname", dsn], capture_output=True,
                          text=True, check=True).stdout


def _found(text: str, originals: list[str]) -> list[str]:
    """The originals ``text`` holds, compared case-insensitively."""
    low = text.lower()
    return [o for o in originals if o.lower() in low]


def _assert_everything_else_arrived(clone: str, dump: str) -> None:
    """As the clone user: every row, the shapes of arrays and JSON, the remarks' other text, the template over
    masked values, and the schema that was fixed or allowed, as it is in production now."""
    got = rows(clone, "SELECT id, first_name, last_name, login_email, contact, emails, phones, remarks, profile, "
                      "tier::text FROM public.customers ORDER BY id")
    assert [r[0] for r in got] == list(range(N))
    for p, (_, first, last, login, contact, emails, phones, remarks, profile, tier) in zip(PEOPLE, got, strict=True):
        assert contact == TEMPLATE.format(first_name=first, login_email=login)  # rendered from masked values
        assert login.endswith(RFC2606) and first != p.first and last != p.last
        assert _shape(emails) == _shape(p.emails) and _shape(phones) == _shape(p.phones)
        assert all(e.endswith(RFC2606) for e in emails or () if e)
        literal = re.escape(REMARK if p.embedded else PLAIN).replace(r"\{i\}", str(p.i))
        pattern = re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>.+?)", literal)
        masked = re.fullmatch(pattern, remarks)  # every character but the identifiers is unchanged
        assert masked, (p.i, remarks)
        assert {k: len(v) for k, v in masked.groupdict().items() if k != "email"} == {
            k: len(v) for k, v in p.embedded.items() if k != "email"}  # the same shapes (an email may grow)
        assert _structure(profile) == _structure(p.profile)
        if p.profile:
            assert {k: profile[k] for k in ("plan", "newsletter", "tags")} == {
                k: p.profile[k] for k in ("plan", "newsletter", "tags")}
        if p.late:
            assert dt.date.fromisoformat(profile["dob"]) != dt.date.fromisoformat(p.late["dob"])
            assert re.fullmatch(r"[0-9a-f]{24}", profile["ssn"])
        assert tier == ("gold" if p.i % 11 == 0 else "regular")
    assert rows(clone, "SELECT enum_range(NULL::public.tier)::text, obj_description('public.customers'::regclass), "
                       "col_description('public.customers'::regclass, 8), public.charge(3)") == [
        ("{regular,gold,executive}", "customer master data", None, ":3")]
    assert "CHECK ((login_email <> 'nobody@example.com'::text))" in dump  # allowed, so it arrived as it was


def _shape(array: list | None) -> list[bool] | None:
    """Where an array's NULL elements are (its length and NULL positions), or None for a NULL array."""
    return None if array is None else [e is None for e in array]


def _structure(doc):
    """A JSON document's keys and value types, recursively, without its values."""
    if isinstance(doc, dict):
        return {k: _structure(v) for k, v in doc.items()}
    if isinstance(doc, list):
        return [_structure(v) for v in doc]
    return type(doc).__name__
