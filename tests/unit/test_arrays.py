"""Arrays masked element by element: the array text inside a COPY field is read and written
exactly as PostgreSQL does (two levels of escaping), structure and NULL elements stay, and
`rules check` holds the element rule to the element type."""

import pytest

from prodclone.catalog import Catalog, Column, Table
from prodclone.errors import RulesError, UncoveredValue
from prodclone.masking.copytext import array_item, array_items, decode, encode
from prodclone.masking.coverage import check
from prodclone.masking.detect import element_column, suggest
from prodclone.masking.rules import build_transform, parse_rules
from prodclone.masking.transforms import Context

KEY = b"a" * 40


def make(spec):
    return build_transform(spec, Context(key=KEY), where="t.c")


def values(text: str, delimiter: str = ",") -> list:
    return [v for _, _, v in array_items(text, delimiter)]


def test_array_text_is_read_as_postgres_writes_it():
    assert values("{}") == []
    assert values('{"a,b","q\\"x","back\\\\slash","{}"," sp ","NULL",NULL,"",ü,"null"}') == \
        ["a,b", 'q"x', "back\\slash", "{}", " sp ", "NULL", None, "", "ü", "null"]
    assert values("[0:1]={a,b}") == ["a", "b"]
    assert values("[-2:-1][1:2]={{1,2},{3,NULL}}") == ["1", "2", "3", None]
    assert values("{(1,1),(0,0);(2,2),(1,1)}", ";") == ["(1,1),(0,0)", "(2,2),(1,1)"]  # box: ';' separates


@pytest.mark.parametrize("bad", ["", "a", "{a,}", "{,a}", "{a}}", "{a", "{a}x", "{a b}", "{{a}b}", '{"a}', "}"])
def test_text_array_out_never_writes_is_refused(bad):
    with pytest.raises(ValueError):
        array_items(bad)


def test_elements_are_written_as_array_out_would_and_read_back():
    awkward = [None, "", "NULL", "null", "a,b", 'q"x', "back\\slash", "{", "}", " lead", "tab\there", "ü€",
               "plain", "semi;colon"]
    for delimiter in ",;":
        text = "{" + delimiter.join(array_item(v, delimiter) for v in awkward) + "}"
        assert values(text, delimiter) == awkward
    assert array_item("plain") == "plain" and array_item("a;b") == "a;b" and array_item("a;b", ";") == '"a;b"'


def test_elements_masks_each_element_keeping_nulls_dimensions_and_bounds():
    t = make({"transform": "elements", "rule": "email"})
    email = make({"transform": "email"})
    out = decode(t(encode("[0:1][1:2]={{ann@corp.com,NULL},{\"NULL\",bob@corp.com}}")))
    assert out == ("[0:1][1:2]={{" + decode(email(b"ann@corp.com")) + ",NULL},{"
                   + decode(email(b"NULL")) + "," + decode(email(b"bob@corp.com")) + "}}")
    assert t(b"{}") == b"{}" and t(b"{NULL,NULL}") == b"{NULL,NULL}"


def test_both_levels_of_escaping_round_trip_through_the_element_rule():
    # A COPY field holding {"a\tb","x\\y"}: a tab (COPY-escaped) and a backslash (array- and COPY-escaped).
    field = b'{"a\\tb","x\\\\\\\\y"}'
    assert values(decode(field)) == ["a\tb", "x\\y"]
    t = make({"transform": "elements", "rule": {"transform": "redact", "keep_start": 1, "char": '"'}})
    out = t(field)
    assert values(decode(out)) == ['a""', 'x""']
    assert b"\t" not in out


def test_an_unreadable_array_stops_the_export_without_the_value():
    t = make({"transform": "elements", "rule": "email"})
    with pytest.raises(UncoveredValue, match="cannot read the array") as exc:
        t(b"{(1,1),(0,0);(2,2),(1,1)}" + b"{secret@corp.com")
    assert "secret" not in str(exc.value)


def test_rules_that_cannot_work_element_by_element_are_refused():
    for rule, why in (("keep", "cannot mask elements"), ({"transform": "template", "template": "{a}"}, "cannot mask"),
                      ({"transform": "redact"}, None)):
        spec = {"transform": "elements", "rule": rule}
        if why:
            with pytest.raises(RulesError, match=why):
                make(spec)
        else:
            with pytest.raises(RulesError, match="unique: true needs an element rule that keeps elements distinct"):
                make({**spec, "unique": True})


def test_uniqueness_carries_to_the_element_rule():
    assert make({"transform": "elements", "rule": "email"}).guarantees_unique
    assert not make({"transform": "elements", "rule": {"transform": "faker", "provider": "word"}}).guarantees_unique
    tagged = make({"transform": "elements", "rule": {"transform": "faker", "provider": "word"}, "unique": True})
    assert tagged.guarantees_unique and tagged.unique_changes_output
    outs = {tagged(f"{{w{i},w{i + 1}}}".encode()) for i in range(2000)}
    assert len(outs) == 2000
    assert not make({"transform": "elements", "rule": "null"}).guarantees_unique  # all-NULL arrays collide


def _catalog(*columns: Column) -> Catalog:
    return Catalog({"public.t": Table("public.t", "table", [Column("id", "bigint", True, True), *columns],
                                      primary_key=["id"])}, [])


def _problems(catalog: Catalog, columns: str) -> dict:
    rules = parse_rules(f"version: 1\ntables:\n  public.t:\n    columns: {{id: keep, {columns}}}\n")
    return {p.column: p.message for p in check(catalog, rules.bind(KEY)).problems}


def test_rules_check_holds_the_element_rule_to_the_element_type():
    catalog = _catalog(Column("emails", "text[]", False, base_type="text[]"),
                       Column("codes", "character varying(8)[]", False, base_type="character varying[]", typmod=12),
                       Column("grid", "integer[]", False, base_type="integer[]"),
                       Column("boxes", "box[]", False, base_type="box[]", delimiter=";"))
    assert _problems(catalog, "emails: {transform: elements, rule: email}, codes: {transform: elements, rule: "
                              "{transform: hash, length: 8}}, grid: {transform: elements, rule: {transform: noise, "
                              "relative: 0.1}}, boxes: keep") == {}
    problems = _problems(catalog, "emails: email, codes: {transform: elements, rule: email}, grid: {transform: "
                                  "elements, rule: {transform: hash}}, boxes: {transform: elements, rule: null}")
    assert problems["emails"].startswith("transform 'email' does not fit type text[]; to mask each element, use "
                                         "{transform: elements")
    assert problems["codes"].startswith("element rule: 'email' emits values up to")
    assert "but character varying holds 8" in problems["codes"]
    assert problems["grid"].startswith("element rule: 'hash' emits text only, which a integer column cannot load")
    assert problems["boxes"] == ("elements of box[] are separated by ';', not ',': add delimiter: \";\" to the rule")
    assert _problems(catalog, "emails: keep, codes: keep, grid: keep, "
                              "boxes: {transform: elements, rule: null, delimiter: ';'}") == {}


def test_faker_on_an_array_column_is_refused_with_the_element_wise_form():
    catalog = _catalog(Column("tags", "text[]", False, base_type="text[]"))
    problem = _problems(catalog, "tags: {transform: faker, provider: word}")["tags"]
    assert "which a text[] column cannot load" in problem and "transform: elements" in problem


def test_a_unique_array_needs_an_element_rule_that_keeps_elements_distinct():
    catalog = _catalog(Column("aliases", "text[]", False, True, base_type="text[]"))
    assert _problems(catalog, "aliases: {transform: elements, rule: {transform: faker, provider: word}}") == \
        {"aliases": "column is UNIQUE: add `unique: true` so masked values never collide"}
    assert _problems(catalog, "aliases: {transform: elements, rule: {transform: faker, provider: word}, unique: true}") == {}
    assert _problems(catalog, "aliases: {transform: elements, rule: email}") == {}


def test_element_column_is_the_element_type_with_the_arrays_typmod():
    col = Column("codes", "character varying(8)[]", True, True, base_type="character varying[]", typmod=12)
    elem = element_column(col)
    assert (elem.type, elem.category, elem.typmod, elem.not_null, elem.unique) == \
        ("character varying", "text", 12, False, False)


def test_scaffold_suggests_element_rules_from_sampled_elements():
    emails = Column("contacts", "text[]", False, base_type="text[]")
    assert suggest(emails, ["ann@corp.com", "bob@corp.com"]) == \
        ({"transform": "elements", "rule": "email"}, "each element: values look like email addresses (2 of 2 sampled)")
    assert suggest(emails, ["red", "green"]) == ({"transform": "keep"}, "array, not personal by name or sampled elements")
    assert suggest(Column("grid", "integer[]", False, base_type="integer[]"), None)[0] == {"transform": "keep"}
    unique_words = Column("phones", "text[]", False, True, base_type="text[]")
    rule, _ = suggest(unique_words, None)
    assert rule == {"transform": "elements", "rule": {"transform": "faker", "provider": "phone_number", "unique": True}}
    notes = suggest(emails, ["call ann@corp.com", "fine", "ok"])[0]
    assert notes == {"transform": "elements", "rule": "scrub"}
