"""The json transform changes only the values at masked paths: everything else
comes out exactly as it went in (number text, duplicate keys, key order, escapes,
whitespace), at any depth. Values go through COPY text escaping as in an export."""

import json

import pytest

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
    t = make({"phone": PHONE})
    assert mask(t, doc) == doc
    with_phone = doc.replace("{", '{"phone": "555-0100", ', 1)
    out = mask(t, with_phone)
    assert "555-0100" not in out
    assert out.replace(json.dumps(json.loads(out)["phone"], ensure_ascii=False), '"555-0100"', 1) == with_phone


def test_duplicate_keys_are_all_masked_and_all_kept():
    out = mask(make({"phone": PHONE}), '{"phone": "555-0100", "x": 1, "phone": "555-0199", "x": 1.0}')
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
    out = mask(make({"phone": PHONE, "list" + "[*]" * 5000: "null"}), doc)
    assert "555-0100" not in out
    assert out.endswith('"deep": ' + deep + ', "list": ' + "[" * 5000 + "null" + "]" * 5000 + "}")


def test_masked_numbers_stay_numbers_and_masked_strings_stay_strings():
    t = make({"n": {"transform": "noise", "relative": 0.1}, "s": {"transform": "constant", "value": "1"},
              "gone": "null"})
    out = json.loads(mask(t, '{"n": 100.00, "s": "secret", "gone": "secret"}'))
    assert isinstance(out["n"], float) and out["n"] != 100 and out["s"] == "1" and out["gone"] is None
