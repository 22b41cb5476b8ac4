"""The verify step compares each masked column's statistics with the source's (issue 16): figures only, in the
verification record and the log; a column outside the bounds is a warning, never a failure."""

import json
import logging

import psycopg

from prodclone.export import read_manifest, run_export, verify_and_record
from prodclone.masking.rules import load_rules
from prodclone.seed import seed
from prodclone.storage import open_storage
from support import RULES


def _originals(dsn: str) -> list[str]:
    """Distinctive source values of masked columns: none may appear in a record or a log line."""
    with psycopg.connect(dsn) as c:
        return [v for row in c.execute("SELECT email, phone, first_name || ' ' || last_name FROM users") for v in row
                if v]


def test_verify_records_figures_per_masked_column(sample_source, tmp_path, rules, masking_key, caplog):
    src, _ = sample_source
    url = f"file://{tmp_path}/export"
    manifest = run_export(src, rules.bind(masking_key), url)
    with caplog.at_level(logging.INFO, logger="prodclone.masking.stats"):
        record = verify_and_record(open_storage(url), src, rules.bind(masking_key), stats_rows=30_000)
    stats = record["statistics"]
    masked = {f"{t['name']}.{c}" for t in manifest["tables"] for c in t["masked_columns"]}
    # Every masked column is compared, but the one a rule empties on purpose (null).
    assert set(stats["columns"]) == masked - {"public.users.search"}
    assert stats["columns_compared"] == len(stats["columns"]) and stats["sample_rows"] == 30_000
    assert stats["within_bounds"] == len(stats["columns"]) - len(stats["outside_bounds"])
    # Faker names, a hash as long as the source's and card numbers keep their shape; a tagged email is outside by
    # design (test_shape).
    for column in ("public.users.first_name", "public.users.last_name", "public.users.password_hash",
                   "public.payments.card_number"):
        assert column not in stats["outside_bounds"]
        figures = stats["columns"][column]
        assert figures["null_frac"][0] == figures["null_frac"][1]
        assert abs(figures["distinct"][1] - figures["distinct"][0]) <= 0.1 * figures["distinct"][0]
    assert stats["columns"]["public.users.password_hash"]["avg_width"] == [60.0, 60.0]
    assert any("average width" in p for p in stats["outside_bounds"]["public.users.email"])  # the uniqueness tag
    # Recorded in the manifest, and the export is still verified and seedable.
    assert record["leak_check"] == "passed"
    assert read_manifest(open_storage(url))["verified"]["statistics"] == stats
    # Figures, never values: not in the record, not in the log.
    text = json.dumps(stats) + caplog.text
    assert "WARN public.users.email: distinct" in caplog.text
    assert not [v for v in _originals(src) if v in text]


def test_a_column_outside_bounds_warns_and_the_export_still_seeds(sample_source, tmp_path, masking_key, new_db,
                                                                  caplog):
    src, counts = sample_source
    text = RULES.read_text().replace("first_name: {transform: faker, provider: first_name}",
                                     'first_name: {transform: constant, value: "Xy"}', 1)
    assert 'value: "Xy"' in text
    (tmp_path / "rules.yaml").write_text(text)
    rules = load_rules(tmp_path / "rules.yaml")
    url = f"file://{tmp_path}/export"
    run_export(src, rules.bind(masking_key), url)
    with caplog.at_level(logging.WARNING, logger="prodclone.masking.stats"):
        record = verify_and_record(open_storage(url), src, rules.bind(masking_key), stats_rows=30_000)
    problems = record["statistics"]["outside_bounds"]["public.users.first_name"]
    assert any(p.startswith("distinct values -") for p in problems)
    assert record["statistics"]["columns"]["public.users.first_name"]["distinct"][1] == 1
    assert "WARN public.users.first_name" in caplog.text and "Xy" not in caplog.text + json.dumps(record)
    target = new_db("pct_stats")
    assert seed(url, target).rows == sum(counts.values())


def test_statistics_are_bounded_and_optional(sample_source, tmp_path, rules, masking_key):
    src, _ = sample_source
    url = f"file://{tmp_path}/export"
    run_export(src, rules.bind(masking_key), url)
    record = verify_and_record(open_storage(url), src, rules.bind(masking_key), stats_rows=50)
    figures = record["statistics"]["columns"]["public.users.first_name"]
    assert record["statistics"]["sample_rows"] == 50 and 0 < figures["non_null_in_sample"] <= 50
    assert "statistics" not in verify_and_record(open_storage(url), src, rules.bind(masking_key), stats_rows=0)
