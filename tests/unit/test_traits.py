"""Every registered transform behaves as its traits declare, and everything that treats
transforms differently reads those traits, so a new transform cannot silently slip
past the leak check, the NOT NULL check or foreign-key handling."""

import json

import pytest

from prodclone.catalog import Catalog, Column, ForeignKey, Table
from prodclone.errors import RulesError
from prodclone.masking.copytext import NULL, decode
from prodclone.masking.coverage import check
from prodclone.masking.rules import build_transform, parse_rules
from prodclone.masking.transforms import REGISTRY, Context, Transform, register, trait
from prodclone.masking.transforms.outputs import Output, of_values
from prodclone.subset import Subsetter

KEY = b"t" * 40
DOC = {"email": "ann@corp.com", "contacts": [{"phone": "555-0100"}], "theme": "dark"}
SAMPLES = {  # a few values of each column category, as COPY text, including the awkward ones
    "text": [b"alice@corp.com", b"Alice", b"4111111111111111", b"x", b"", b"caf\xc3\xa9", b"a\\tb", b"*", b"redacted"],
    "other": [b"alice@corp.com", b"0a0b0c0d-0000-4000-8000-000000000000", b"10.0.0.1"],
    "number": [b"42", b"-7", b"1234.56", b"0", b"1"],
    "temporal": [b"1990-05-14", b"2000-01-01 10:11:12", b"2000-01-01 10:11:12+00"],
    "json": [json.dumps(DOC).encode(), b'{"email": "bob@corp.com", "contacts": [], "theme": "light"}'],
    "array": [b"{alice@corp.com,NULL}", b'[0:1]={{"a b","NULL"},{"",x}}', b'{"q\\\\"\\\\\\\\"}', b"{{1,2},{3,4}}"],
}
DISTINCT = {  # many distinct values, for the uniqueness traits
    "text": [f"user{i}@corp.com".encode() for i in range(3000)],
    "other": [f"user{i}@corp.com".encode() for i in range(3000)],
    "number": [str(i).encode() for i in range(3000)],
    "temporal": [f"{1000 + i}-01-01".encode() for i in range(3000)],
    "json": [json.dumps({**DOC, "email": f"user{i}@corp.com"}).encode() for i in range(3000)],
    "array": [f"{{user{i}@corp.com,NULL}}".encode() for i in range(3000)],
}
CASES = [(name, spec) for name, cls in sorted(REGISTRY.items()) for spec in cls.examples]


def make(spec: dict) -> Transform:
    return build_transform(spec, Context(key=KEY), where="t.c")


def run(t: Transform, value: bytes) -> bytes:
    """Mask one value; a row-level transform reads other masked fields of the row, placed before it."""
    if not t.row_level:
        return t(value)
    t.bind({f: i for i, f in enumerate(t.fields)})
    return t.render(value, [b"Masked%d" % i for i in range(len(t.fields))] + [value])


def categories(cls: type[Transform]) -> list[str]:
    return sorted(cls.categories) if cls.categories is not None else ["text"]


def samples(cls: type[Transform]) -> list[bytes]:
    return [v for c in categories(cls) for v in SAMPLES[c]]


def test_every_transform_has_examples_that_rules_files_accept():
    for name, cls in REGISTRY.items():
        assert cls.examples, f"{name}: declare examples, so this file tests it"
        for spec in cls.examples:
            assert spec["transform"] == name
            parse_rules(f"version: 1\ntables:\n  public.t:\n    columns: {{c: {json.dumps(spec)}}}\n")


@pytest.mark.parametrize("name,spec", CASES)
def test_deterministic_under_the_key(name, spec):
    a, b = make(spec), make(spec)
    assert [run(a, v) for v in samples(type(a))] == [run(b, v) for v in samples(type(b))]


@pytest.mark.parametrize("name,spec", CASES)
def test_masks_and_may_equal_inputs(name, spec):
    t = make(spec)
    for v in samples(type(t)):
        out = run(t, v)
        if not t.masks:
            assert out == v
        elif not t.may_equal_inputs:  # what the leak check relies on
            assert out != v or t.could_emit(out), f"{name} gave back its input"


@pytest.mark.parametrize("name,spec", CASES)
def test_null_output(name, spec):
    t = make(spec)
    outs = [run(t, v) for v in samples(type(t))]
    assert t.null_output in ("never", "always")
    assert all((o == NULL) == (t.null_output == "always") for o in outs)


@pytest.mark.parametrize("name,spec", CASES)
def test_unique_output_is_distinct_for_distinct_inputs(name, spec):
    try:
        t = make({**spec, "unique": True})
    except RulesError:  # parameters that cannot stay unique refuse the flag
        t = make(spec)
    if not t.guarantees_unique:
        assert not (t.unique and t.can_be_unique), f"{name}: unique: true must guarantee distinct outputs"
        return
    inputs = sorted({v for c in categories(type(t)) for v in DISTINCT[c]})
    outs = [run(t, v) for v in inputs]
    assert len(set(outs)) == len(outs) or set(outs) == {NULL}


@pytest.mark.parametrize("name,spec", CASES)
def test_unique_changes_output_only_where_declared(name, spec):
    plain = {k: v for k, v in spec.items() if k != "unique"}
    try:
        tagged = make({**plain, "unique": True})
    except RulesError:  # e.g. a short hash: it refuses unique: true rather than change
        return
    untagged = make(plain)
    changed = [run(tagged, v) != run(untagged, v) for v in samples(type(tagged))]
    assert any(changed) == tagged.unique_changes_output
    if tagged.unique_changes_output:
        assert all(changed)


@pytest.mark.parametrize("name,spec", CASES)
def test_output_is_what_it_emits(name, spec):
    """The types and length `rules check` holds columns to: every value emitted is of each declared type
    (by the same reading of values as pools get) and no longer than declared."""
    t = make(spec)
    declared = t.output({f: len(b"Masked0") for f in getattr(t, "fields", ())})
    for v in samples(type(t)):
        out = run(t, v)
        if out == NULL or declared.types is None:  # NULL, or the input's own type
            continue
        text = decode(out)
        assert len(text) <= (declared.max_length if declared.max_length is not None else len(decode(v)))
        assert declared.types <= of_values([text]).types, (name, text)


def test_outputs_read_values_as_postgres_would():
    assert of_values(["10.0.0.1", "::1"]).types == {"text", "inet", "cidr"}
    assert of_values(["10.0.0.1/8"]).types == {"text", "inet"}  # host bits set: not a cidr
    assert of_values(["40000"]).types == {"text", "integer", "bigint", "numeric", "real", "double precision"}
    assert of_values(["1990-02-30", "fe80::1%eth0", "0a0b0c0d00004000800000000000000"]).types == {"text"}
    assert of_values(["Ann", "Bo"], extra_length=21) == Output(frozenset({"text"}), 24)


def test_a_transform_registered_twice_is_an_error():
    before = dict(REGISTRY)
    with pytest.raises(TypeError, match="'email' is registered twice"):
        @register
        class Email(Transform):
            name = "email"
    assert before == REGISTRY


@pytest.fixture
def blank():
    """A new transform, unknown to every module by name: it emits NULL."""
    @register
    class Blank(Transform):
        name = "blank_for_test"
        null_output = "always"
        examples = ({"transform": "blank_for_test"},)

        def __call__(self, value: bytes) -> bytes:
            return NULL
    yield Blank
    del REGISTRY["blank_for_test"]


def test_a_new_transform_is_handled_by_its_traits(blank):
    users = Table("public.users", "table", [Column("id", "bigint", True, True), Column("email", "text", True, True)],
                  primary_key=["id"])
    orders = Table("public.orders", "table", [Column("id", "bigint", True, True), Column("email", "text", False),
                                              Column("note", "text", True)],
                   primary_key=["id"], foreign_keys=[ForeignKey(["email"], "public.users", ["email"])])
    catalog = Catalog({"public.users": users, "public.orders": orders}, [])
    rules = parse_rules("version: 1\ntables:\n  public.users:\n    where: id < 10\n    columns: {id: keep, email: email}\n"
                        "  public.orders:\n    columns: {id: keep, email: blank_for_test, note: blank_for_test}\n")
    problems = {p.column: p.message for p in check(catalog, rules.bind(KEY)).problems}
    # NOT NULL refuses it; the FK column masked to NULL needs no matching rule, and subsetting drops the FK.
    assert problems == {"note": "column is NOT NULL; 'blank_for_test' emits NULL, which would fail the load"}
    assert Subsetter(catalog, rules).filter_sql("public.orders") is None
    t = make({"transform": "blank_for_test"})
    assert not t.leak_checked and trait({"transform": "blank_for_test"}, "null_output") == "always"
