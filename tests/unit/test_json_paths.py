"""The json transform changes only the values at masked paths: everything else
comes out exactly as it went in (number text, duplicate keys, key order, escapes,
whitespace), at any depth. Values go through COPY text escaping as in an export."""

import json

import pytest

from prodclone.errors import UncoveredValue
from prodclone.masking.copytext import decode, encode
from prodclone.masking.rules import build_transform
from prodclone.masking.transforms import Context

PHONE = {"transform": "faker", "provider": "phone_number"}


def make(paths: dict, **options):
    return build_transform({"transform": "json", "paths": paths, **options}, Context(key=b"k" * 40), where="t.c")


def mask(t, text: str) -> str:
    return decode(t(encode(text)))


@pytest.mark.parametrize("doc", [
    '{"n": 0.1000000000000000055511151231257827, "big": 1e400, "int": 123456789012345678901234567890}',
    '{"a": 1, "a": 2, "b": {"c": [1, 2.50, -0E+0]}}',
    '{ "z" : "\\u00e9\\/\\ttab", "y":[ true,false ,null ] }\n',
    '{"path": "C:\\\\dir\\\\file", "note": "line1\\nline2\\tcol"}',
])
def test_unmasked_parts_come_out_byte_for_byte(doc):
    t = make({"phone": PHONE}, unlisted="keep")
    assert mask(t, doc) == doc
    with_phone = doc.replace("{", '{"phone": "555-0100", ', 1)
    out = mask(t, with_phone)
    assert "555-0100" not in out
    assert out.replace(json.dumps(json.loads(out)["phone"], ensure_ascii=False), '"555-0100"', 1) == with_phone


def test_duplicate_keys_are_all_masked_and_all_kept():
    out = mask(make({"phone": PHONE, "x": "keep"}), '{"phone": "555-0100", "x": 1, "phone": "555-0199", "x": 1.0}')
    assert "555-01" not in out
    assert out.count('"phone": "') == 2 and out.count('"x": 1, ') == 1 and out.endswith('"x": 1.0}')


def test_a_key_written_with_escapes_is_still_the_key():
    # json (not jsonb) keeps "\u0070hone" as written: it is the key phone all the same.
    out = mask(make({"phone": PHONE, "contacts[*].email": "email"}),
               '{"\\u0070hone": "555-0100", "contacts": [{"em\\u0061il": "a@b.com"}]}')
    assert "555-0100" not in out and "a@b.com" not in out


def test_a_document_5000_deep_is_masked_without_recursion():
    deep = "[" * 5000 + '"x"' + "]" * 5000
    doc = '{"phone": "555-0100", "deep": ' + deep + ', "list": ' + deep + "}"
    out = mask(make({"phone": PHONE, "deep": "keep", "list" + "[*]" * 5000: "null"}), doc)
    assert "555-0100" not in out
    assert out.endswith('"deep": ' + deep + ', "list": ' + "[" * 5000 + "null" + "]" * 5000 + "}")


def test_masked_numbers_stay_numbers_and_masked_strings_stay_strings():
    t = make({"n": {"transform": "noise", "relative": 0.1}, "s": {"transform": "constant", "value": "1"},
              "gone": "null"})
    out = json.loads(mask(t, '{"n": 100.00, "s": "secret", "gone": "secret"}'))
    assert isinstance(out["n"], float) and out["n"] != 100 and out["s"] == "1" and out["gone"] is None


@pytest.mark.parametrize("doc,path", [
    ('{"phone": "555-0100", "ssn": "078-05-1120"}', "ssn"),
    ('{"phone": "555-0100", "address": {"street": "1 Main St"}}', "address"),
    ('{"contacts": [{"email": "a@b.com", "home": {"street": "1 Main St"}}]}', "contacts[*].home"),
    ('{"phone": "555-0100", "tags": ["078-05-1120"]}', "tags"),
    ('{"contacts": [{"email": "a@b.com", "name": "Ann Lee"}]}', "contacts[*].name"),
    ('{"contacts": ["ann@b.com"]}', "contacts[*]"),
    ('{"phone": {"home": "555-0100"}}', "phone"),
    ('"078-05-1120"', "(the document itself)"),
])
def test_a_path_not_listed_stops_by_default_naming_the_path_never_the_value(doc, path):
    t = make({"phone": PHONE, "contacts[*].email": "email"})
    with pytest.raises(UncoveredValue) as exc:
        t(encode(doc))
    assert repr(path) in str(exc.value)
    assert not any(v in str(exc.value) for v in ("555-0100", "078-05-1120", "1 Main St", "Ann Lee", "ann@b.com"))


def test_unlisted_keep_null_drop():
    doc = '{"a": "x1", "phone": "555-0100", "b": {"c": ["x2"]}, "keep_me": 1, "c": "x3"}'
    paths = {"phone": PHONE, "keep_me": "keep"}
    assert "x1" in mask(make(paths, unlisted="keep"), doc)
    nulled = json.loads(mask(make(paths, unlisted="null"), doc))
    assert nulled["a"] is None and nulled["b"] is None and nulled["c"] is None and nulled["keep_me"] == 1
    dropped = json.loads(mask(make(paths, unlisted="drop"), doc))
    assert list(dropped) == ["phone", "keep_me"] and dropped["phone"] != "555-0100"
    assert json.loads(mask(make({"k": "keep"}, unlisted="drop"), '{"x": 1, "y": 2, "k": 3, "z": [4]}')) == {"k": 3}
    assert json.loads(mask(make({"k": "keep"}, unlisted="drop"), '{"x": 1, "y": 2}')) == {}
    assert mask(make({"k": "keep"}, unlisted="drop"), '["x1"]') == "[null]"  # not a key: null instead


def test_keep_or_null_on_an_object_covers_it_and_a_masking_rule_on_one_is_refused():
    doc = '{"prefs": {"theme": "dark", "n": [1]}, "secret": {"pin": "1234"}}'
    assert mask(make({"prefs": "keep", "secret": "null"}), doc) == '{"prefs": {"theme": "dark", "n": [1]}, "secret": null}'
    with pytest.raises(UncoveredValue, match="'secret' holds an object or array, which hash cannot mask"):
        make({"prefs": "keep", "secret": "hash"})(encode(doc))
