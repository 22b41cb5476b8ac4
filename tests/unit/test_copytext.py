from prodclone.masking.copytext import decode, encode


def test_roundtrip_special_characters():
    for s in ["plain", "tab\there", "new\nline", "back\\slash", "cr\rlf", "ünïcødé", "\b\f\v"]:
        assert decode(encode(s)) == s
        assert b"\t" not in encode(s) and b"\n" not in encode(s)


def test_decode_octal_and_hex_escapes():
    assert decode(b"a\\101\\x42") == "aAB"
