"""Each transform: deterministic under the key, the key matters, NULLs and
uniqueness behave, and bad parameters get a clear error."""

import datetime as dt
import json
import random
import re

import pytest

from prodclone.errors import RulesError, UncoveredValue
from prodclone.masking.copytext import decode, encode
from prodclone.masking.rules import build_transform
from prodclone.masking.transforms import REGISTRY, Context
from prodclone.masking.transforms.template import render_order

KEY_A = b"a" * 40
KEY_B = b"b" * 40


def make(spec, key=KEY_A, **ctx):
    return build_transform(spec, Context(key=key, **ctx), where="t.c")


def test_registry_has_the_documented_transforms():
    assert {"keep", "null", "constant", "hash", "redact", "faker", "email", "date_shift", "noise",
            "template", "json"} <= set(REGISTRY)


@pytest.mark.parametrize("spec,values", [
    ({"transform": "faker", "provider": "first_name"}, [f"Alice{i}".encode() for i in range(8)]),
    ({"transform": "email"}, [f"alice{i}@corp.com".encode() for i in range(8)]),
    ({"transform": "hash"}, [f"secret{i}".encode() for i in range(8)]),
    ({"transform": "date_shift", "days": 30}, [f"1990-05-1{i}".encode() for i in range(8)]),
    ({"transform": "noise", "relative": 0.2}, [f"1234.5{i}".encode() for i in range(8)]),
])
def test_deterministic_and_keyed(spec, values):
    a, again, b = make(spec), make(spec), make(spec, key=KEY_B)
    outs = [a(v) for v in values]
    assert outs == [again(v) for v in values], "same key and input must give the same output"
    assert all(o != v for o, v in zip(outs, values, strict=True)), "masked output must differ from the input"
    assert outs != [b(v) for v in values], "a different key must give different output"


def test_same_rule_gives_same_output_across_columns():
    # Two columns (e.g. users.email and orders.customer_email) with the same rule join after masking.
    assert make({"transform": "email"})(b"x@y.com") == make({"transform": "email"})(b"x@y.com")


def test_email_is_realistic_safe_and_unique():
    t = make({"transform": "email"})
    outs = {t(f"user{i}@gmail.com".encode()) for i in range(20000)}
    assert len(outs) == 20000
    for o in list(outs)[:50]:
        assert re.fullmatch(rb"[a-z]+\.[a-z]+\.[0-9a-f]{20}@example\.(com|net|org)", o)


def test_faker_unique_appends_a_tag_and_never_collides():
    t = make({"transform": "faker", "provider": "first_name", "unique": True})
    outs = [t(f"n{i}".encode()) for i in range(20000)]
    assert len(set(outs)) == len(outs)
    plain = make({"transform": "faker", "provider": "first_name"})
    assert len({plain(f"n{i}".encode()) for i in range(20000)}) < 20000  # chance collisions: why unique exists


def test_faker_fit_length_writes_text_as_long_as_the_original():
    t = make({"transform": "faker", "provider": "paragraph", "fit_length": True})
    bodies = [f"Hi, this is Jennifer{i}. Call me at 555-01{i:02d}.\\nThanks!".encode() for i in range(100)] + [
        b"x", b"Short.", b"Ol\xc3\xa1 Z\xc3\xbc" + b" long text" * 200]
    outs = [t(b) for b in bodies]
    assert [len(decode(o)) for o in outs] == [len(decode(b)) for b in bodies]  # characters, as varchar counts
    assert len(set(outs)) == len(bodies)
    assert not any(w in o for o in outs for w in (b"Jennifer", b"555", b"Thanks", b"\\n"))
    assert all(re.fullmatch(rb"(?:[A-Z][a-z]*(?: [a-z]+)*\.? ?)+", o) for o in outs)  # sentences of its words
    assert t(b"") == b"" and t.could_emit(b"")
    with pytest.raises(RulesError, match="uniqueness tag cannot"):
        make({"transform": "faker", "provider": "paragraph", "fit_length": True, "unique": True})
    with pytest.raises(RulesError, match="fit_length needs a provider that writes words; 'ipv4'"):
        make({"transform": "faker", "provider": "ipv4", "fit_length": True})


def test_unknown_faker_provider_is_a_clear_error():
    with pytest.raises(RulesError, match="unknown Faker provider 'no_such_thing'"):
        make({"transform": "faker", "provider": "no_such_thing"})


def test_hash_formats_and_unique_length_rule():
    assert re.fullmatch(rb"cus_[0-9a-f]{12}", make({"transform": "hash", "length": 12, "prefix": "cus_"})(b"v"))
    assert re.fullmatch(rb"[0-9a-f-]{36}", make({"transform": "hash", "format": "uuid"})(b"v"))
    with pytest.raises(RulesError, match="length >= 20"):
        make({"transform": "hash", "length": 12, "unique": True})


def test_redact_keeps_the_last_digits():
    assert make({"transform": "redact", "keep_end": 4})(b"4111111111111111") == b"************1111"
    assert make({"transform": "redact", "keep_end": 4})(b"123") == b"***"


def test_card_number_keeps_length_grouping_network_and_distinct_numbers():
    t = make({"transform": "card_number"})
    rnd = random.Random(7)
    cards = {f"4{rnd.randrange(10**14, 10**15)}".encode() for _ in range(50_000)}  # random: most fail Luhn
    outs = {t(c) for c in cards}
    assert len(outs) == len(cards)  # redact keep_end 4 left ~10,000 shapes of these
    assert all(re.fullmatch(rb"4[0-9]{15}", o) and _luhn(o) for o in outs) and not outs & cards
    grouped = t(b"4111 1111 1111 1111")
    assert grouped == t(b"4111-1111-1111-1111").replace(b"-", b" ") and grouped.replace(b" ", b"") == t(b"4111111111111111")
    # scrub masks a card in text as a card_number column masks it, so the two still match
    assert make({"transform": "scrub"})(b"paid with 4111 1111 1111 1111, thanks") == b"paid with " + grouped + b", thanks"
    # anything else: every digit and letter replaced by another of its kind, punctuation kept
    odd = t(b"N/A x-12")
    assert re.fullmatch(rb"[A-Z]/[A-Z] [a-z]-[0-9]{2}", odd) and all(a != b for a, b in zip(odd, b"NAx12", strict=False)
                                                                     if chr(a).isalnum())
    assert t(b"") == b"" and t(b"--") == b"--"


def _luhn(number: bytes) -> bool:
    digits = [int(c) for c in number.decode()[::-1]]
    return sum(d if i % 2 == 0 else (2 * d - 9 if d > 4 else 2 * d) for i, d in enumerate(digits)) % 10 == 0


def test_date_shift_never_returns_the_input_and_keeps_time():
    t = make({"transform": "date_shift", "days": 3})
    for d in range(1, 28):
        v = f"2000-01-{d:02d} 10:11:12+00".encode()
        out = t(v)
        assert out != v and out.endswith(b" 10:11:12+00")
    assert t(b"infinity") == b"infinity"


def test_date_shift_keeps_distinct_dates_distinct_within_its_bound():
    """A keyed permutation of days: 20,000 consecutive days stay 20,000 (a keyed offset per value merged about a
    third of them), each moved by 1..days either way, and a day's timestamps move with it."""
    t = make({"transform": "date_shift", "days": 180})
    days = [dt.date(1950, 1, 1) + dt.timedelta(days=i) for i in range(20000)]
    shifted = [dt.date.fromisoformat(t(d.isoformat().encode()).decode()) for d in days]
    assert len(set(shifted)) == len(days)
    assert all(1 <= abs((s - d).days) <= 180 for d, s in zip(days, shifted, strict=True))
    assert t(b"1990-05-14 08:00:00") == t(b"1990-05-14") + b" 08:00:00"
    assert t(b"1990-05-14 23:59:59+00") == t(b"1990-05-14") + b" 23:59:59+00"


# Each end of PostgreSQL's range, of Python's (9999), and across the era (0001 AD / 1 BC).
EDGES = [b"9999-12-31", b"9999-12-31 23:59:59.999999", b"9999-12-31 23:59:59+00", b"0001-01-01",
         b"0001-01-01 00:00:00", b"0001-01-01 00:00:00+00", b"5874897-12-31", b"294276-12-31 23:59:59.999999",
         b"294276-12-31 23:59:59.999999+00", b"4714-11-24 BC", b"4714-11-24 00:00:00 BC", b"4714-11-24 00:00:00+00 BC",
         b"0001-12-31 BC", b"10000-01-01"]


@pytest.mark.parametrize("value", EDGES)
def test_date_shift_never_returns_the_input_at_either_end(value):
    shifted = {make({"transform": "date_shift", "days": days})(value) for days in (1, 2, 3, 30, 180, 36500)}
    assert value not in shifted

    def time_of(v):
        return v.removesuffix(b" BC").split(b" ", 1)[1:]

    assert all(time_of(o) == time_of(value) for o in shifted)


def test_date_shift_crosses_the_era_and_keeps_infinity():
    t = make({"transform": "date_shift", "days": 1})
    assert t(b"0001-01-01") in (b"0001-01-02", b"0001-12-31 BC")
    assert t(b"0001-12-31 BC") in (b"0001-01-01", b"0001-12-30 BC")
    for sentinel in (b"infinity", b"-infinity"):  # shared by many rows: identifies nobody
        assert t(sentinel) == sentinel


def test_date_shift_refuses_what_it_cannot_read():
    # A non-ISO DateStyle (12/31/1999) or garbage would otherwise pass through unmasked.
    for value in (b"12/31/1999", b"1999-02-30", b"Sat 31 Dec 1999", b"1999-12-31x"):
        with pytest.raises(UncoveredValue, match="DateStyle ISO") as exc:
            make({"transform": "date_shift"})(value)
        assert value.decode() not in str(exc.value)


def test_noise_stays_in_bounds_and_keeps_scale():
    t = make({"transform": "noise", "relative": 0.1})
    out = t(b"100.00")
    assert 90 <= float(out) <= 110 and len(out.split(b".")[1]) == 2
    assert b"." not in t(b"42")


def test_noise_near_a_bounded_types_limit_never_overflows_it():
    from decimal import Decimal

    t = make({"transform": "noise", "relative": 0.5})
    grew = 0
    for top in ("999.99", "-999.99", "32767", "2147483647", "-2147483648", "9223372036854775807", "99"):
        for i in range(300):  # many keyed factors: half of them would push the value past the limit
            v = Decimal(top) - i
            out = Decimal(t(str(v).encode()).decode())
            assert out.copy_abs().adjusted() <= v.copy_abs().adjusted(), (v, out)
            assert not any(abs(v) <= lim < abs(out) for lim in (2**15 - 1, 2**31 - 1, 2**63 - 1)), (v, out)
            grew += abs(out) > abs(v)
    assert grew > 0  # values away from a limit are still noised both ways


def test_constant_null_keep():
    assert make({"transform": "constant", "value": "x"})(b"anything") == b"x"
    assert make({"transform": "null"})(b"anything") == b"\\N"
    assert make({"transform": "keep"})(b"anything") == b"anything"


def test_template_uses_masked_row_values():
    t = make({"transform": "template", "template": "{first}.{last}@example.com", "lower": True})
    t.bind({"first": 0, "last": 1, "email": 2})
    assert t.render(b"orig@x.com", [b"Ann", b"Lee", b"orig@x.com"]) == b"ann.lee@example.com"
    with pytest.raises(RulesError, match="references {nope}, which t does not have"):
        render_order("t", {"c": {"transform": "template", "template": "{nope}"}}, {"a": 0, "c": 1})


def test_json_paths_mask_only_listed_keys():
    t = make({"transform": "json", "paths": {"phone": {"transform": "faker", "provider": "phone_number"},
                                             "contacts[*].email": "email", "address.city": "null"},
              "unlisted": "keep"})
    doc = {"phone": "555-0100", "theme": "dark", "contacts": [{"email": "a@b.com"}, {"email": "c@d.com"}],
           "address": {"city": "Paris", "zip": "75001"}}
    out = json.loads(decode(t(encode(json.dumps(doc)))))
    assert out["theme"] == "dark" and out["address"]["zip"] == "75001"
    assert out["phone"] != "555-0100"
    assert all(c["email"].endswith(("example.com", "example.net", "example.org")) for c in out["contacts"])
    assert out["address"]["city"] is None


def test_json_leak_values_are_the_masked_leaves_at_their_paths():
    t = make({"transform": "json", "paths": {"email": "email", "tags[*]": "keep", "n": "noise", "x": "null"}})
    doc = encode(json.dumps({"email": "a@b.com", "tags": ["vip"], "n": 3, "x": "secret"}))
    assert t.leak_checked and [(w, v) for w, _, v in t.leak_values(doc)] == [("json path email", b"a@b.com")]
    assert not make({"transform": "json", "paths": {"a": "keep", "n": "noise"}}).leak_checked
