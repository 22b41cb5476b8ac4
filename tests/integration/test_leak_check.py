"""The leak check after a real export, from a source database a password-authenticated
non-superuser owns: no false positive for values that identify no one, json
columns are compared at their masked paths, and only rows the subset exported
are sampled."""

import psycopg
import pytest

from prodclone.errors import LeakError
from prodclone.export import run_export
from prodclone.masking.leakcheck import verify_export
from prodclone.masking.rules import parse_rules
from prodclone.masking.transforms import REGISTRY, Transform
from prodclone.storage import open_storage

KEY = b"l" * 40


class _Identity(Transform):
    """A deliberately broken transform: claims to mask, copies the value."""

    name = "broken_identity"

    def __call__(self, value):
        return value


def export_and_verify(dsn: str, url: str, columns: str, where: str | None = None):
    subset = f"    where: {where!r}\n" if where else ""
    rules = parse_rules(f"version: 1\ntables:\n  public.cards:\n{subset}    columns: {columns}\n")
    manifest = run_export(dsn, rules.bind(KEY), url)
    return verify_export(open_storage(url), manifest, dsn, rules.bind(KEY))


def test_empty_strings_are_no_leak_and_real_values_still_are(own_db, tmp_path, monkeypatch):
    with psycopg.connect(own_db, autocommit=True) as conn:
        conn.execute("CREATE TABLE cards (id int PRIMARY KEY, card_number text, holder text)")
        conn.execute("INSERT INTO cards SELECT i, CASE WHEN i % 3 = 0 THEN '4111111111' || lpad(i::text, 6, '0') "
                     "ELSE '' END, CASE WHEN i % 2 = 0 THEN '' ELSE 'holder ' || i END FROM generate_series(1, 60) i")
    # Before: redact of '' is '', which the check reported as `card_number (36 values)`.
    report = export_and_verify(own_db, f"file://{tmp_path}/ok",
                               "{id: keep, card_number: {transform: redact, keep_end: 4}, "
                               "holder: {transform: faker, provider: name}}")
    assert report.columns_checked == 2 and not report.leaks and report.samples == 20 + 30
    monkeypatch.setitem(REGISTRY, "broken_identity", _Identity)
    with pytest.raises(LeakError, match=r"public\.cards\.holder \(30 values\)") as err:
        export_and_verify(own_db, f"file://{tmp_path}/leaky",
                          "{id: keep, card_number: {transform: redact, keep_end: 4}, holder: broken_identity}")
    assert "card_number" not in str(err.value) and "holder 1" not in str(err.value)


def test_json_values_at_masked_paths_are_compared(own_db, tmp_path, monkeypatch):
    with psycopg.connect(own_db, autocommit=True) as conn:
        conn.execute("CREATE TABLE cards (id int PRIMARY KEY, doc jsonb)")
        conn.execute("""INSERT INTO cards SELECT i, jsonb_build_object('email', 'user' || i || '@corp.com',
                        'contacts', jsonb_build_array(jsonb_build_object('phone', '555-01' || i)), 'theme', 'dark',
                        'note', '') FROM generate_series(1, 40) i""")
    paths = "email: {}, 'contacts[*].phone': {{transform: faker, provider: phone_number}}, theme: keep, note: redact"
    report = export_and_verify(own_db, f"file://{tmp_path}/ok",
                               f"{{id: keep, doc: {{transform: json, paths: {{{paths.format('email')}}}}}}}")
    assert report.columns_checked == 1 and not report.leaks and report.samples == 80  # emails and phones; '' is no one
    monkeypatch.setitem(REGISTRY, "broken_identity", _Identity)
    with pytest.raises(LeakError) as err:
        export_and_verify(own_db, f"file://{tmp_path}/leaky",
                          f"{{id: keep, doc: {{transform: json, paths: {{{paths.format('broken_identity')}}}}}}}")
    assert str(err.value).startswith("original values found in masked output: public.cards.doc at json path email "
                                     "(40 values).")
    assert "corp.com" not in str(err.value) and "555" not in str(err.value)


def test_only_exported_rows_are_sampled(own_db, tmp_path, monkeypatch):
    """A subset's filtered-out rows have no masked twin in the output. Before, one of their originals that equals
    an exported row's masked value (as a 5-digit postcode can) was reported as a leak."""
    with psycopg.connect(own_db, autocommit=True) as conn:
        conn.execute("CREATE TABLE cards (id int PRIMARY KEY, holder text)")
        conn.execute("INSERT INTO cards SELECT i, 'holder ' || i FROM generate_series(2, 60, 2) i")
    columns = "{id: keep, holder: {transform: hash, length: 12}}"
    manifest = run_export(own_db, parse_rules(f"version: 1\ntables:\n  public.cards:\n    columns: {columns}\n").bind(KEY), f"file://{tmp_path}/first")
    first = b"".join(open_storage(f"file://{tmp_path}/first").read_chunks(manifest["tables"][0]["files"][0]["path"]))
    masked = [line.split(b"\t")[1].decode() for line in first.splitlines()]
    with psycopg.connect(own_db, autocommit=True) as conn:  # rows the subset drops, holding the exported masked values
        conn.cursor().executemany("INSERT INTO cards VALUES (%s, %s)", [(2 * i + 1, v) for i, v in enumerate(masked)])
    report = export_and_verify(own_db, f"file://{tmp_path}/subset", columns, where="id % 2 = 0")
    assert report.columns_checked == 1 and report.samples == 30 and not report.leaks
    monkeypatch.setitem(REGISTRY, "broken_identity", _Identity)
    with pytest.raises(LeakError, match=r"public\.cards\.holder \(30 values\)"):
        export_and_verify(own_db, f"file://{tmp_path}/leaky", "{id: keep, holder: broken_identity}", where="id % 2 = 0")
