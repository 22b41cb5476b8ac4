"""Arrays and free text end to end on a real server, as a password-authenticated non-superuser:
scaffold proposes element rules and scrub, rules check passes, the export and the seeded base
hold none of the original emails, phones or cards, every remark keeps its other text, and
arrays of every shape load."""

import re

import psycopg

from prodclone.catalog import load_catalog
from prodclone.export import run_export, verify_and_record
from prodclone.masking.coverage import check
from prodclone.masking.leakcheck import verify_export
from prodclone.masking.rewriter import TableMasker
from prodclone.masking.rules import parse_rules
from prodclone.masking.scaffold import scaffold
from prodclone.masking.transforms.scrub import identifiers
from prodclone.seed import seed
from prodclone.storage import open_storage
from support import rows

KEY = b"r" * 40
AWKWARD = ["a,b", 'q"x', "back\\slash", "{", "}", " lead", "tab\there", "line\nbreak", "NULL", "", "ünï€", "semi;colon"]


def _remark(i: int) -> str:
    """200 rows; 13 mention an email and a phone (under scaffold's old 20% threshold), 3 a card."""
    if i % 15 == 1 and i < 195:
        return f"Customer asked to be reached at user{i}@corp.com or +1 (415) 555-{i:04d}; refund pending."
    if i % 67 == 3:
        return f"Paid with card 5500-0000-0000-0004 (backup 4111 1111 1111 1111) on 2024-01-{i % 28 + 1:02d}, ticket #{i}."
    return f"Delivered on time, ticket #{i}, no issues (v1.2.{i})."


def test_scaffold_check_export_seed_arrays_and_remarks(own_db, new_db, tmp_path):
    with psycopg.connect(own_db, autocommit=True) as conn:
        conn.execute("CREATE TABLE people (id int PRIMARY KEY, emails text[], grid int[][], remarks text, "
                     "codes varchar(40)[] UNIQUE)")
        with conn.cursor() as cur:
            cur.executemany("INSERT INTO people VALUES (%s, %s, %s::int[], %s, %s)", [
                (i, [f"p{i}@corp.com", None, f"w{i}@mail.example.org"] if i % 7 else None,
                 f"[0:1][1:2]={{{{{i},NULL}},{{3,4}}}}" if i % 2 else "{{1,2},{3,4}}", _remark(i),
                 [f"code-{i}", None]) for i in range(200)])
        catalog = load_catalog(conn)
        text = scaffold(conn, catalog)
    lines = {m[1]: m[2] for m in re.finditer(r"^ {6}(\w+): (.*?)  #", text, re.M)}
    assert lines["emails"] == "{transform: elements, rule: email}"
    assert lines["grid"] == "keep"
    assert lines["remarks"] == "scrub"
    assert "free text carrying card, email, phone (16 of 200 sampled rows)" in text
    rules = parse_rules(text.replace("codes: keep", "codes: {transform: elements, rule: {transform: faker, "
                                     "provider: word}, unique: true}"))
    assert check(catalog, rules.bind(KEY)).ok, check(catalog, rules.bind(KEY)).text()

    url = f"file://{tmp_path}/exp"
    manifest = run_export(own_db, rules.bind(KEY), url)
    report = verify_export(open_storage(url), manifest, own_db, rules.bind(KEY))
    assert not report.leaks and report.columns_checked == 3  # emails, remarks, codes
    assert verify_and_record(open_storage(url), own_db, rules.bind(KEY))  # what makes it seedable
    target = new_db("pct_arrbase")
    seed(url, target)

    source = rows(own_db, "SELECT id, emails, grid::text, array_dims(grid), remarks FROM people ORDER BY id")
    seeded = rows(target, "SELECT id, emails, grid::text, array_dims(grid), remarks, codes FROM people ORDER BY id")
    exported = b"".join((tmp_path / "exp" / f["path"]).read_bytes() for t in manifest["tables"] for f in t["files"])
    originals = {e for r in source for e in (r[1] or []) if e} | {
        r[4][s:e] for r in source for _, s, e in identifiers(r[4])}
    assert len(originals) > 300 and any("555-" in o for o in originals) and "5500-0000-0000-0004" in originals
    seeded_text = "\n".join(map(str, seeded))
    assert not [o for o in originals if o.encode() in exported or o in seeded_text]
    for src, out in zip(source, seeded, strict=True):
        assert (out[1] is None) == (src[1] is None)
        if src[1] is not None:  # NULL elements stay NULL, at their place; every email is a masked one
            assert [e is None for e in out[1]] == [e is None for e in src[1]]
            assert all(e.endswith(("@example.com", "@example.net", "@example.org")) for e in out[1] if e)
        assert out[2:4] == src[2:4]  # int[][] kept exactly, bounds and all
        assert [k for k, _, _ in identifiers(out[4])] == [k for k, _, _ in identifiers(src[4])]
        assert _between(out[4]) == _between(src[4])  # every other character of the remark, unchanged
    assert len({r[5][0] for r in seeded}) == 200  # still unique


def _between(text: str) -> list[str]:
    """The text around the identifiers in it."""
    out, pos = [], 0
    for _, s, e in identifiers(text):
        out.append(text[pos:s])
        pos = e
    return [*out, text[pos:]]


def test_awkward_elements_and_delimiters_round_trip_through_copy(own_db):
    """Elements holding every character array text and COPY escape, a box[] (';' separates), and
    non-default bounds: masked through COPY text and loaded back as the same shape."""
    with psycopg.connect(own_db, autocommit=True) as conn:
        conn.execute("CREATE TABLE src (id int, words text[], boxes box[], cube text[])")
        conn.execute("INSERT INTO src VALUES (1, %s, '{(1,1),(0,0);(2,2),(1,1)}', "
                     "'[0:1][-1:0]={{a,\"b c\"},{NULL,\"NULL\"}}'), (2, '{}', '{}', NULL)", (AWKWARD + [None],))
        catalog = load_catalog(conn)
        conn.execute("CREATE TABLE out (LIKE src)")
        table = catalog.table("public.src")
        assert table.column("boxes").delimiter == ";"
        rules = parse_rules("version: 1\ntables:\n  public.src:\n    columns: {id: keep, "
                            "words: {transform: elements, rule: {transform: redact, keep_start: 1, char: '\"'}}, "
                            "boxes: {transform: elements, rule: null, delimiter: ';'}, "
                            "cube: {transform: elements, rule: {transform: hash, length: 8}}}\n")
        assert check(catalog, rules.bind(KEY)).ok, check(catalog, rules.bind(KEY)).text()
        masker = TableMasker(table, rules.bind(KEY))
        with conn.cursor().copy("COPY src TO STDOUT") as copy:
            lines = b"".join(masker.mask_line(bytes(r)[:-1]) + b"\n" for r in copy)
        with conn.cursor().copy("COPY out FROM STDIN") as copy:
            copy.write(lines)
        got = conn.execute("SELECT words, boxes::text, array_dims(cube), cube[0][-1] <> 'a', cube[1][-1], "
                           "cube[1][0] FROM out ORDER BY id").fetchall()
    redacted = [None if w is None else (w[:1] + '"' * (len(w) - 1) if len(w) > 1 else '"' * len(w)) for w in AWKWARD + [None]]
    assert got[0] == (redacted, "{NULL;NULL}", "[0:1][-1:0]", True, None, got[0][5])
    assert re.fullmatch(r"[0-9a-f]{8}", got[0][5])  # the string "NULL" is masked like any string
    assert got[1] == ([], "{}", None, None, None, None)
