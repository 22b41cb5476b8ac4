import json
from pathlib import Path

import pytest

from prodclone.errors import RulesError
from prodclone.masking import keys
from prodclone.masking.rules import json_schema, load_rules, parse_rules

ROOT = Path(__file__).resolve().parents[2]


def test_malformed_yaml_reports_line_and_column():
    with pytest.raises(RulesError, match=r"rules.yaml:3:1: malformed YAML"):
        parse_rules("version: 1\ntables:\n\tpublic.t: {}\n", source="rules.yaml")


def test_schema_error_points_at_the_offending_line():
    text = "version: 1\ntables:\n  public.t:\n    columns:\n      a: keep\n      b: {transform: faker}\n"
    with pytest.raises(RulesError) as err:
        parse_rules(text, source="r.yaml")
    assert "r.yaml:6:" in str(err.value) and "provider" in str(err.value)


def test_unknown_transform_and_unknown_table_key():
    with pytest.raises(RulesError, match="r.yaml:4:"):
        parse_rules("version: 1\ntables:\n  public.t:\n    columns: {a: {transform: scramble}}\n", source="r.yaml")
    with pytest.raises(RulesError, match="colums"):
        parse_rules("version: 1\ntables:\n  public.t:\n    colums: {a: keep}\n")


@pytest.mark.parametrize("text, at", [
    ("version: 1\ntables:\n  public.t:\n    columns:\n      email: email\n      email: keep\n", "r.yaml:6:7: 'email'"),
    ("version: 1\ntables:\n  public.t: {skip: true}\n  public.t: {columns: {a: keep}}\n", "r.yaml:4:3: 'public.t'"),
])
def test_a_repeated_key_is_refused_not_silently_replaced(text, at):
    """YAML loaders keep the last of two equal keys: a second `email: keep` would have turned masking off."""
    with pytest.raises(RulesError, match=f"{at} appears twice"):
        parse_rules(text, source="r.yaml")


def test_yaml_null_means_the_null_rule():
    r = parse_rules("version: 1\ntables:\n  public.t:\n    columns: {a: null, b: keep, c: email}\n")
    assert r.tables["public.t"].columns == {"a": {"transform": "null"}, "b": {"transform": "keep"}, "c": {"transform": "email"}}


def test_rules_hash_changes_with_content():
    a = parse_rules("version: 1\ntables:\n  public.t:\n    columns: {a: keep}\n")
    b = parse_rules("version: 1\ntables:\n  public.t:\n    columns: {a: email}\n")
    assert a.digest != b.digest and len(a.digest) == 64


def test_key_must_be_present_and_long():
    with pytest.raises(RulesError, match="no masking key"):
        keys.load_key("")
    with pytest.raises(RulesError, match="too short"):
        keys.load_key("short")
    assert keys.fingerprint(b"x" * 40) != keys.fingerprint(b"y" * 40)


def test_committed_schema_matches_the_registry():
    """include/masking/rules.schema.json is generated: `prodclone rules schema`."""
    committed = json.loads((ROOT / "include/masking/rules.schema.json").read_text())
    assert committed == json_schema()


def test_shipped_rules_file_is_valid():
    assert load_rules(ROOT / "include/masking/rules.yaml").tables


@pytest.mark.parametrize(("rule", "at", "says"), [
    ("emial", "r.yaml:4:15: tables.public.t.columns.a:", "unknown transform 'emial' (did you mean 'email'?)"),
    ("{transform: emial}", "r.yaml:4:19: tables.public.t.columns.a.transform:",
     "unknown transform 'emial' (did you mean 'email'?)"),
    ("{transform: faker, provider: frist_name}", "r.yaml:4:15: tables.public.t.columns.a:",
     "unknown Faker provider 'frist_name'"),
    ("{transform: template, template: '{first_name'}", "r.yaml:4:15: tables.public.t.columns.a:",
     "bad template '{first_name'"),
])
def test_rule_mistakes_are_named_at_their_line(rule, at, says):
    text = f"version: 1\ntables:\n  public.t:\n    columns: {{a: {rule}}}\n"
    with pytest.raises(RulesError) as err:
        parse_rules(text, source="r.yaml")
    assert f"{at} {says}" in str(err.value)
    assert "is not of type" not in str(err.value)


def test_an_unclosed_brace_is_reported_where_it_opens():
    text = "version: 1\ntables:\n  public.t:\n    columns:\n      a: {transform: keep\n      b: keep\n"
    with pytest.raises(RulesError, match=r"r.yaml:5:10: malformed YAML: this '\{' is not closed"):
        parse_rules(text, source="r.yaml")
