"""Coverage checks on an in-memory catalog: no database needed."""

from prodclone.catalog import Catalog, Column, ForeignKey, Table
from prodclone.masking.coverage import check
from prodclone.masking.rewriter import TableMasker
from prodclone.masking.rules import parse_rules
from prodclone.masking.transforms import pools
from support import KEY


def _catalog():
    users = Table("public.users", "table", [Column("id", "bigint", True, True), Column("email", "text", True, True),
                                            Column("nick", "text", False, True), Column("bio", "text", False)],
                  primary_key=["id"])
    orders = Table("public.orders", "table", [Column("id", "bigint", True, True), Column("user_email", "text", True),
                                              Column("nick", "text", False)],
                   primary_key=["id"], foreign_keys=[ForeignKey(["user_email"], "public.users", ["email"]),
                                                     ForeignKey(["nick"], "public.users", ["nick"])])
    return Catalog(tables={"public.users": users, "public.orders": orders}, sequences=[])


def _rules(users: str, orders: str):
    return parse_rules(f"version: 1\ntables:\n  public.users:\n    columns: {users}\n  public.orders:\n    columns: {orders}\n")


def test_complete_consistent_rules_pass():
    r = _rules("{id: keep, email: email, nick: {transform: faker, provider: user_name, unique: true}, bio: null}",
               "{id: keep, user_email: email, nick: {transform: faker, provider: user_name, unique: true}}")
    report = check(_catalog(), r.bind(KEY.encode()))
    assert report.ok, report.text()
    assert report.masked_columns == 5 and report.kept_columns == 2


def test_uncovered_column_is_named_with_type_and_suggestion():
    r = _rules("{id: keep, email: email, nick: {transform: hash, length: 24}}", "{id: keep, user_email: email, nick: keep}")
    report = check(_catalog(), r.bind(KEY.encode()))
    assert not report.ok
    line = [p for p in report.problems if p.kind == "uncovered"][0].line()
    assert "public.users.bio" in line and "text" in line and "suggested rule" in line


def test_unique_column_needs_a_unique_safe_rule():
    r = _rules("{id: keep, email: {transform: faker, provider: email}, nick: {transform: redact, keep_end: 2}, bio: keep}",
               "{id: keep, user_email: email, nick: keep}")
    msgs = {(p.table, p.column): p.message for p in check(_catalog(), r.bind(KEY.encode())).problems}
    assert "unique: true" in msgs[("public.users", "email")]
    assert "cannot keep values distinct" in msgs[("public.users", "nick")]
    # The shape-keeping rules are no exception: distinct in practice is not a guarantee.
    r = _rules("{id: keep, email: email, nick: card_number, bio: keep}", "{id: keep, user_email: email, nick: keep}")
    msgs = {(p.table, p.column): p.message for p in check(_catalog(), r.bind(KEY.encode())).problems}
    assert "cannot keep values distinct" in msgs[("public.users", "nick")]


def test_fk_masked_differently_from_its_target_is_refused():
    # unique: true changes faker's output (a tag), so these two would no longer join.
    r = _rules("{id: keep, email: email, nick: {transform: faker, provider: user_name, unique: true}, bio: keep}",
               "{id: keep, user_email: {transform: hash, length: 24}, nick: {transform: faker, provider: user_name}}")
    msgs = {(p.table, p.column): p.message for p in check(_catalog(), r.bind(KEY.encode())).problems}
    assert "references public.users.email but masks differently" in msgs[("public.orders", "user_email")]
    assert "references public.users.nick" in msgs[("public.orders", "nick")]


def test_unknown_table_and_missing_table():
    r = parse_rules("version: 1\ntables:\n  public.users:\n    columns: {id: keep, email: email, nick: null, bio: keep}\n"
                    "  public.gone:\n    skip: true\n")
    kinds = {(p.table, p.kind) for p in check(_catalog(), r.bind(KEY.encode())).problems}
    assert ("public.gone", "unknown-table") in kinds and ("public.orders", "missing-table") in kinds


def test_rules_check_refuses_templates_that_would_see_an_original():
    orders = "{id: keep, user_email: email, nick: null}"
    for users, expected in (
        ("{id: keep, email: email, nick: {transform: template, template: '{nick}-x', unique: true}, bio: null}",
         "its own column {nick}"),
        ("{id: keep, email: email, nick: {transform: template, template: '{bio}', unique: true}, "
         "bio: {transform: template, template: '{nick}'}}", "cycle"),
        ("{id: keep, email: email, nick: {transform: template, template: '{login}', unique: true}, bio: null}", "{login}"),
    ):
        report = check(_catalog(), _rules(users, orders).bind(KEY.encode()))
        assert not report.ok and expected in report.text(), report.text()


def test_scaffolded_json_paths_are_independent_rules_not_yaml_aliases():
    """Two personal keys of one kind must not share one rule object: the YAML writer would emit an anchor and
    an alias, and editing one path's rule would silently change the other's."""
    import yaml

    from prodclone.masking.detect import suggest_json

    rule, _why = suggest_json(["owner.email", "billing.email", "note"])
    assert rule["paths"]["owner.email"] == rule["paths"]["billing.email"]
    assert rule["paths"]["owner.email"] is not rule["paths"]["billing.email"]
    assert "&" not in yaml.safe_dump(rule)


def test_coverage_builds_pools_with_the_masking_key_and_masking_reuses_them():
    """No pool built under a stand-in key to be thrown away: the export masks with the ones coverage built."""
    saved = pools.built()
    for store in (pools._POOLS, pools._VARIANTS):
        store.clear()

    def built() -> set:
        return {k for store in pools.built() for k in store}

    try:
        r = _rules("{id: keep, email: email, nick: {transform: faker, provider: user_name, unique: true}, bio: null}",
                   "{id: keep, user_email: email, nick: {transform: faker, provider: user_name, unique: true}}")
        masking = r.bind(KEY.encode())
        assert check(_catalog(), masking).ok
        by_check = built()
        assert by_check
        for table in _catalog().tables.values():
            TableMasker(table, masking)
        assert built() == by_check
        TableMasker(_catalog().tables["public.users"], r.bind(b"another-key-" + b"z" * 30))
        assert built() > by_check  # another key, other pools
    finally:
        pools.install(saved)
