"""An export is seedable only once its verification passed: the verify step records it in the manifest,
and seed, as the password-authenticated non-superuser base role, refuses anything else unless forced."""

import json
import logging

import pytest

from prodclone.cli import main
from prodclone.db import dbname_of
from prodclone.errors import ExportError, LeakError, SeedError
from prodclone.export import MANIFEST, run_export, verify_and_record
from prodclone.marker import parse_marker
from prodclone.masking.rules import load_rules
from prodclone.masking.transforms import REGISTRY, Transform
from prodclone.seed import seed
from prodclone.storage import open_storage
from support import RULES, rows


class _Identity(Transform):
    """A broken transform: claims to mask, copies the value (the leak check must catch it)."""

    name = "broken_identity"

    def __call__(self, value):
        return value


@pytest.fixture
def leaky_export(sample_source, tmp_path, rules, masking_key, monkeypatch):
    """An export whose users.phone rule leaks every original: its URL and the manifest file."""
    monkeypatch.setitem(REGISTRY, "broken_identity", _Identity)
    rules.tables["public.users"].columns["phone"] = {"transform": "broken_identity"}
    url = f"file://{tmp_path}/leaky"
    run_export(sample_source[0], rules.bind(masking_key), url)
    return url, tmp_path / "leaky" / MANIFEST


def _base(base_role, new_db):
    return base_role(dbname_of(new_db("pct_gate")))


def _databases(pg):
    return {r[0] for r in rows(pg, "SELECT datname FROM pg_database")}


def test_a_failed_leak_check_records_nothing_and_seed_refuses_it(leaky_export, sample_source, rules, masking_key,
                                                                  base_role, new_db, pg, capsys):
    url, manifest_file = leaky_export
    with pytest.raises(LeakError, match=r"public\.users\.phone"):
        verify_and_record(open_storage(url), sample_source[0], rules.bind(masking_key))
    manifest = json.loads(manifest_file.read_text())
    assert manifest["complete"] and "verified" not in manifest  # complete, but never verified
    target = _base(base_role, new_db)
    before = _databases(pg)
    with pytest.raises(SeedError, match="has not passed verification.*prodclone verify.*--force-unverified"):
        seed(url, target)
    assert main(["seed", "--from", url, "--target", target]) == 1
    assert "has not passed verification" in capsys.readouterr().err
    assert _databases(pg) == before  # nothing created: no base, no staging


def test_forced_seed_loads_it_and_says_so(leaky_export, base_role, new_db, caplog, capsys):
    url, _ = leaky_export
    target = _base(base_role, new_db)
    with caplog.at_level(logging.WARNING, logger="prodclone.seed"):
        assert main(["seed", "--from", url, "--target", target, "--force-unverified"]) == 0
    assert "UNVERIFIED export loaded (--force-unverified)" in capsys.readouterr().out
    assert any("SEEDING AN UNVERIFIED EXPORT" in r.getMessage() for r in caplog.records)
    mark = rows(target, "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = current_database()")
    assert parse_marker(mark[0][0])["unverified"] == "forced"  # the base itself says it was forced
    assert rows(target, "SELECT count(*) > 0 FROM users")[0][0]


def test_a_passing_verification_is_recorded_and_seeds(sample_source, tmp_path, rules, masking_key, base_role, new_db):
    url = f"file://{tmp_path}/ok"
    assert main(["export", "--source", sample_source[0], "--rules", str(RULES), "--to", url, "--no-verify"]) == 0
    assert "verified" not in json.loads((tmp_path / "ok" / MANIFEST).read_text())
    with pytest.raises(SeedError, match="has not passed verification"):  # --no-verify: not seedable yet
        seed(url, _base(base_role, new_db))
    # Checksums alone (no source for the leak check) prove nothing about masking: still not recorded.
    assert main(["verify", "--from", url, "--rules", str(RULES)]) == 0
    assert "verified" not in json.loads((tmp_path / "ok" / MANIFEST).read_text())
    assert main(["verify", "--from", url, "--rules", str(RULES), "--source", sample_source[0]]) == 0
    record = json.loads((tmp_path / "ok" / MANIFEST).read_text())["verified"]
    assert record["leak_check"] == "passed" and record["columns_checked"] > 0 and record["at"]
    target = _base(base_role, new_db)
    result = seed(url, target)
    assert result.verified and result.rows > 0
    mark = rows(target, "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = current_database()")
    assert "unverified" not in parse_marker(mark[0][0])


def test_a_manifest_changed_after_verification_or_reverified_as_failing_is_refused(
        sample_source, tmp_path, rules, masking_key, base_role, new_db):
    url = f"file://{tmp_path}/ok"
    run_export(sample_source[0], rules.bind(masking_key), url)
    verify_and_record(open_storage(url), sample_source[0], rules.bind(masking_key))
    path = tmp_path / "ok" / MANIFEST
    good = path.read_text()
    edited = json.loads(good)
    edited["tables"][0]["masked_columns"] = []  # the verified record no longer vouches for this manifest
    path.write_text(json.dumps(edited))
    with pytest.raises(SeedError, match="does not match its manifest"):
        seed(url, _base(base_role, new_db))
    path.write_text(good)
    # Verifying with other rules than the export's proves nothing about it: refused, record untouched.
    other = load_rules(RULES)
    other.digest = "0" * 64
    with pytest.raises(ExportError, match="other masking rules"):
        verify_and_record(open_storage(url), sample_source[0], other.bind(masking_key))
    assert "verified" in json.loads(path.read_text())
    # A later verification that fails withdraws the earlier pass (here: a data file no longer matches).
    victim = next((tmp_path / "ok" / "data").glob("public.orders.*.copy"))
    data = bytearray(victim.read_bytes())
    data[10] ^= 1
    victim.write_bytes(bytes(data))
    with pytest.raises(ExportError, match="does not match the manifest"):
        verify_and_record(open_storage(url), sample_source[0], rules.bind(masking_key))
    assert "verified" not in json.loads(path.read_text())
    with pytest.raises(SeedError, match="has not passed verification"):
        seed(url, _base(base_role, new_db))
