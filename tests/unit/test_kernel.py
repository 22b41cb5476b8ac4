"""The compiled kernel against the Python rewriter, its reference: random COPY lines (escapes, NULLs, empty
strings, unicode, long values, JSON documents, rows with too few or too many fields) under random rule sets
give byte-identical output, or the same error naming the same column. Bounded here; longer with
PRODCLONE_FUZZ_EXAMPLES=N (and `make fuzz` runs the coverage-guided harness, tests/fuzz/)."""

from __future__ import annotations

import hashlib
import json
import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kernel_cases import RULES, maskers, outcome

from prodclone.masking import kernel
from prodclone.masking.copytext import encode

pytestmark = pytest.mark.skipif(not kernel.enabled(), reason="the kernel is not built here")
EXAMPLES = int(os.environ.get("PRODCLONE_FUZZ_EXAMPLES", "150"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=False)
# --- COPY fields -------------------------------------------------------------------------------------------
_PIECES = ["a", "Z", "0", "7", "é", "日本", "😀", " ", "-", ".", "@", '"', "{", "}", "[", "]", ":", ",",
           "\\\\", "\\t", "\\n", "\\r", "\\b", "\\f", "\\v", "\\x41", "\\101", "\\x7", "\\N", "\\"]
text_fields = st.lists(st.sampled_from(_PIECES), max_size=30).map("".join).map(str.encode)
long_fields = st.integers(200, 5000).map(lambda n: (b"ab\\tc" * n)[:n])
raw_bytes = st.binary(max_size=40).map(lambda b: b.replace(b"\t", b" ").replace(b"\n", b" "))


PLAIN = st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters='"\\')  # nothing JSON escapes


def _json_values():
    scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**12, 10**12), st.floats(allow_nan=False, allow_infinity=False),
                        st.text(max_size=12), st.text(PLAIN, max_size=12), st.text(PLAIN, max_size=12))
    keys = st.sampled_from(["ip", "name", "a", "b", "items", "email", "keep", "gone", "x", "n", "o", "é", "k\"q", "t\tab"])
    return st.recursive(scalars, lambda kids: st.one_of(st.lists(kids, max_size=4),
                                                         st.dictionaries(keys, kids, max_size=5)), max_leaves=12)


@st.composite
def json_fields(draw) -> bytes:
    doc = draw(_json_values())
    spacing = draw(st.sampled_from([(", ", ": "), (",", ":"), (" ,\n", " :\t")]))
    text = json.dumps(doc, separators=spacing, ensure_ascii=draw(st.booleans()))
    if draw(st.booleans()):  # break it a little: truncated, or with something after it
        text = draw(st.sampled_from([text[: len(text) // 2], text + " x", "}" + text, text.replace(":", "", 1)]))
    return encode(text)


# card numbers: 10-21 digits, alone or grouped by spaces or hyphens (the kernel's own path), sometimes broken
card_fields = st.lists(st.lists(st.sampled_from("0123456789"), min_size=1, max_size=8).map("".join), min_size=1,
                       max_size=5).flatmap(lambda groups: st.sampled_from([" ", "-", "", "  ", "- ", "\\t"]).map(
                           lambda sep: sep.join(groups).encode()))
fields = st.one_of(st.just(b"\\N"), st.just(b""), text_fields, json_fields(), long_fields, raw_bytes, card_fields)


@st.composite
def tables(draw):
    rules = tuple(draw(st.lists(st.sampled_from(RULES), min_size=1, max_size=5)))
    rows = []
    for _ in range(draw(st.integers(1, 6))):
        n = len(rules) + draw(st.sampled_from([0, 0, 0, 0, -1, 1]))  # sometimes too few or too many fields
        rows.append(b"\t".join(draw(fields) for _ in range(max(n, 1))))
    return rules, rows


@FUZZ
@given(tables())
def test_the_kernel_writes_what_the_python_rewriter_writes(case):
    rules, rows = case
    fast, slow = maskers(rules)
    block = b"".join(r + b"\n" for r in rows)
    want = outcome(lambda: b"".join(slow.mask_line(r) + b"\n" for r in rows))
    assert outcome(fast.mask_block, block) == want
    for r in rows:  # row by row too: each row's own error
        assert outcome(fast.mask_block, r + b"\n") == outcome(lambda r=r: slow.mask_line(r) + b"\n")


def test_an_uncovered_value_raises_the_same_error_naming_the_column_never_the_value():
    fast, slow = maskers(("keep", "{transform: date_shift, days: 3}"))
    secret = b"1\tnot-a-date-4111111111111111\n"
    with pytest.raises(Exception) as py_err:
        slow.mask_line(secret[:-1])
    with pytest.raises(type(py_err.value)) as k_err:
        fast.mask_block(secret)
    assert str(k_err.value) == str(py_err.value) and str(k_err.value).startswith("public.t.c1: ")
    assert b"4111" not in str(k_err.value).encode()


def test_a_block_must_end_with_a_newline_on_both_paths():
    fast, slow = maskers(("email",))
    assert outcome(fast.mask_block, b"a\nb") == outcome(slow.mask_block, b"a\nb") == \
        ("error", "ValueError", "COPY data does not end with a newline")


@FUZZ
@given(st.binary(max_size=600), st.binary(max_size=64), st.integers(1, 64), st.binary(max_size=16))
def test_the_kernels_blake2b_is_hashlibs(data, key, size, person):
    assert kernel._kernel.blake2b(data, key=key, digest_size=size, person=person) == \
        hashlib.blake2b(data, key=key, digest_size=size, person=person).digest()


def test_blake2b_at_block_boundaries_and_with_every_key_length():
    for n in (0, 1, 127, 128, 129, 255, 256, 257, 1024, 100_000):
        for keylen in (0, 1, 32, 63, 64):
            data, key = bytes(range(256)) * (n // 256) + bytes(n % 256), b"k" * keylen
            assert kernel._kernel.blake2b(data, key=key, digest_size=8) == hashlib.blake2b(data, key=key, digest_size=8).digest()


@FUZZ
@given(_json_values(), st.sampled_from([r for r in RULES if r.startswith("{transform: json")]))
def test_the_kernel_reads_plain_documents_itself(doc, rule):
    """A document without escapes, in a rule's grammar, never goes back to Python, and comes out as Python writes it."""
    text = json.dumps(doc, ensure_ascii=False)
    fast, slow = maskers((rule,))
    want = outcome(slow.mask_line, text.encode())
    spec = fast.transforms["c0"].native()
    fallback = []
    one = kernel._kernel.Masker((("json", False, *spec[1:], fallback.append),))
    got = outcome(one.mask_block, text.encode() + b"\n")
    if "\\" in text or any(ord(c) < 32 for c in text) or fallback:  # escapes, or an error or drop: Python's to write
        return
    assert want[0] == "ok" and got == ("ok", want[1] + b"\n")


@FUZZ
@given(card_fields)
def test_the_kernel_numbers_cards_itself_as_python_does(value):
    """A number of 12-19 digits, grouped or not, never goes back to Python and comes out as Python writes it;
    anything else is handed back."""
    fast, slow = maskers(("card_number",))
    handed_back = []
    one = kernel._kernel.Masker((("card", False, fast.transforms["c0"].native()[1], lambda v: handed_back.append(v) or v),))
    got = one.mask_block(value + b"\n")
    digits = sum(c in b"0123456789" for c in value)
    if handed_back:
        assert handed_back == [value] and not (12 <= digits <= 19 and _grouped(value))
    else:
        assert 12 <= digits <= 19 and got == slow.mask_line(value) + b"\n" != value + b"\n"


def _grouped(value: bytes) -> bool:
    return all(g.isdigit() for g in value.replace(b"-", b" ").split(b" "))


def test_card_numbers_at_every_length_and_grouping_match_python():
    fast, slow = maskers(("card_number", "{transform: card_number, nulls: mask}"))
    rows = [b"%s\t%s" % (v, v) for n in range(0, 23) for v in (b"4" * n, b"1234567890123456789012"[:n],
                                                              b"-".join([b"9876"] * (n // 4)), b" ".join([b"12"] * n))]
    rows += [b"\\N\t\\N", b"4111 1111 1111 1111\t4111-1111-1111-1111", b"4111  1111 1111 1111\t 4111111111111111",
             b"4111\\t1111 1111 1111\t4111111111111111x", b"\xd9\xa3111111111111\t4111111111111111\\n"]
    block = b"".join(r + b"\n" for r in rows)
    assert fast.mask_block(block) == b"".join(slow.mask_line(r) + b"\n" for r in rows)
    handed_back = []
    one = kernel._kernel.Masker((("card", False, fast.transforms["c0"].native()[1], handed_back.append),))
    assert len(one.mask_block(b"4111111111111111\n4111-1111-1111-1111\n")) == 37 and handed_back == []


def test_fitted_text_at_every_length_with_escapes_matches_python_and_stays_in_the_kernel():
    fast, slow = maskers(("{transform: faker, provider: paragraph, fit_length: true}",))
    rows = [("x" * n).encode() for n in range(0, 90)] + [b"a\\nb\\x41\\x4g\\101\\7\\\\\\\xc3\xa9" * k for k in range(1, 60, 7)]
    rows += ["日本 \\é".encode() * 300, b"\\", b"\\x", b"\\N", b"\x01\x7f"]
    block = b"".join(r + b"\n" for r in rows)
    assert fast.mask_block(block) == b"".join(slow.mask_line(r) + b"\n" for r in rows)
    spec = fast.transforms["c0"].native()
    handed_back = []
    one = kernel._kernel.Masker(((spec[0], False, *spec[1:], handed_back.append),))
    assert one.mask_block(block) == fast.mask_block(block) and handed_back == []
    assert outcome(one.mask_block, b"\xff\n")[0] == "error" and handed_back == [b"\xff"]  # Python's to refuse


def test_fit_length_with_words_the_kernel_cannot_capitalize_stays_in_python():
    fast, _ = maskers(("{transform: faker, provider: city, locale: fr_FR, fit_length: true}",))
    words = fast.transforms["c0"].words
    assert any(not w.isascii() for w in words) and fast.transforms["c0"].native() is None


def test_a_table_of_keep_rules_passes_through_the_kernel_untouched():
    block = b"a\t\\N\t\\\\x\n\n\xff\xfe\n"
    assert kernel.passthrough().mask_block(block) == block
