"""Templates only ever see masked values: they render after every other column,
in dependency order, and refuse what would need an original (self-references,
unknown columns, cycles) when the table's masker is built."""

import pytest

from prodclone.catalog import Column, Table
from prodclone.errors import RulesError
from prodclone.masking.rewriter import TableMasker
from prodclone.masking.rules import parse_rules

KEY = b"k" * 40


def _masker(columns: dict[str, str], table: str = "public.people") -> TableMasker:
    """A masker for a text-only table whose rules are ``columns`` (column -> YAML flow rule), in that order."""
    body = ", ".join(f"{c}: {r}" for c, r in columns.items())
    rules = parse_rules(f"version: 1\ntables:\n  {table}:\n    columns: {{{body}}}\n")
    return TableMasker(Table(table, "table", [Column(c, "text", False) for c in columns]), rules.bind(KEY))


def _row(masker: TableMasker, **values: str) -> dict[str, str]:
    line = "\t".join(values[c] for c in masker.columns).encode()
    return dict(zip(masker.columns, masker.mask_line(line).decode().split("\t"), strict=True))


def test_a_template_sees_a_later_template_column_rendered_not_original():
    # contact comes first and names login_email, itself a template: it must see login_email's rendered value.
    m = _masker({"contact": '{transform: template, template: "reach {first_name} at {login_email}"}',
                 "first_name": "{transform: faker, provider: first_name}",
                 "login_email": '{transform: template, template: "{first_name}@example.com", lower: true}'})
    out = _row(m, contact="call me", first_name="Zebulon", login_email="zebulon.real@corp.com")
    assert "Zebulon" not in "".join(out.values()) and "zebulon" not in "".join(out.values())
    assert "corp.com" not in out["contact"]
    assert out["login_email"] == f"{out['first_name'].lower()}@example.com"
    assert out["contact"] == f"reach {out['first_name']} at {out['login_email']}"


def test_templates_see_masked_and_kept_values_and_other_columns_are_unchanged():
    rules = {"id": "keep", "first_name": "{transform: faker, provider: first_name}", "city": "keep",
             "label": '{transform: template, template: "{first_name} of {city} #{id}"}'}
    with_template = _masker(rules)
    without = _masker({**rules, "label": "keep"})
    row = {"id": "7", "first_name": "Zebulon", "city": "Lyon", "label": "Zebulon of Lyon #7"}
    out = _row(with_template, **row)
    assert out["label"] == f"{out['first_name']} of Lyon #7" and out["first_name"] != "Zebulon"
    assert {c: v for c, v in out.items() if c != "label"} == {c: v for c, v in _row(without, **row).items() if c != "label"}


def test_a_template_on_its_own_column_is_refused():
    with pytest.raises(RulesError) as exc:
        _masker({"id": "keep", "username": '{transform: template, template: "{username}-x"}'})
    msg = str(exc.value)
    assert "public.people.username" in msg and "{username}" in msg and "its own column" in msg


def test_a_template_naming_an_unknown_column_is_refused():
    with pytest.raises(RulesError) as exc:
        _masker({"id": "keep", "handle": '{transform: template, template: "{nick}-{id}"}'})
    msg = str(exc.value)
    assert "public.people.handle" in msg and "references {nick}, which public.people does not have" in msg


def test_templates_referencing_each_other_in_a_cycle_are_refused():
    with pytest.raises(RulesError) as exc:
        _masker({"a": '{transform: template, template: "{b}"}', "b": '{transform: template, template: "x{c}"}',
                 "c": '{transform: template, template: "{a}y"}', "d": '{transform: template, template: "{a}"}'})
    msg = str(exc.value)
    assert "public.people" in msg and "cycle" in msg and all(f"{{{c}}}" in msg for c in "abc")


def test_chained_templates_render_in_dependency_order_whatever_the_column_order():
    m = _masker({"c": '{transform: template, template: "{b}+c"}', "b": '{transform: template, template: "{a}+b"}',
                 "a": '{transform: template, template: "{n}+a"}', "n": "{transform: faker, provider: first_name}"})
    out = _row(m, c="C0", b="B0", a="A0", n="Zebulon")
    assert out["c"] == f"{out['n']}+a+b+c" and out["n"] != "Zebulon"
