"""A restore's parameters become a checked request, and an extension stays within its profile's cap:
the rules the DAGs, the Clones page and `prodclone env` share, without a database or Airflow."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from prodclone.config import load_config
from prodclone.drivers.base import CloneError, Environment, env_for_pr, extended_expiry, max_extend_hours
from prodclone.errors import ProdcloneError
from prodclone.restore_request import resolve_request
from support import ROOT

CFG = load_config(ROOT / "include" / "prodclone.yaml")
NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)


def test_a_pr_names_its_env_after_the_profile():
    req = resolve_request({"pr": 42, "profile": "loadtest"}, CFG, "alice")
    assert (req.env, req.profile, req.ttl_hours, req.snapshot, req.requested_by, req.pr) == \
        (env_for_pr("loadtest", 42), "loadtest", 24, "latest", "alice", 42)
    assert env_for_pr("preview", 7) == "preview-pr-7"


def test_explicit_values_win_and_requested_by_is_trimmed():
    req = resolve_request({"env": "preview-my-feature", "ttl_hours": 72, "snapshot": "snap-20261121-0200-3f2a9c",
                           "requested_by": "  ci  ", "replace": True}, CFG, "alice")
    assert (req.env, req.ttl_hours, req.snapshot, req.requested_by, req.replace) == \
        ("preview-my-feature", 72, "snap-20261121-0200-3f2a9c", "ci", True)


@pytest.mark.parametrize(("params", "says"), [
    ({}, "give `env` (e.g. preview-my-feature) or `pr` (the env becomes preview-pr-42 for PR 42)"),
    ({"pr": 0}, "pr must be a positive integer, not 0"),
    ({"pr": True}, "pr must be a positive integer, not True"),
    ({"env": "loadtest-x"}, "env 'loadtest-x' does not match profile 'preview': name it preview-x or choose profile "
                            "'loadtest'"),
    ({"env": "staging-x"}, "environment name 'staging-x' is invalid"),
    ({"pr": 1, "ttl_hours": 73}, "ttl_hours=73 is outside the preview profile's bounds: 1 to 72 hours"),
    ({"pr": 1, "ttl_hours": 0}, "ttl_hours=0 is outside"),
    ({"pr": 1, "snapshot": "Snap_1"}, "snapshot 'Snap_1' is neither 'latest' nor a snapshot id"),
    ({"pr": 1, "profile": "staging"}, "unknown profile 'staging'; configured profiles: preview, loadtest"),
])
def test_bad_requests_are_refused_before_anything_runs(params, says):
    with pytest.raises(ProdcloneError) as exc:
        resolve_request(params, CFG)
    assert says in str(exc.value)


def _env(expires_at: datetime) -> Environment:
    return Environment(name="preview-pr-1", profile="preview", snapshot="s", status="ready", requested_by="a", pr=1,
                       created_at=NOW - timedelta(hours=1), expires_at=expires_at)


def test_an_extension_counts_from_the_expiry_or_from_now_when_past():
    assert extended_expiry(_env(NOW + timedelta(hours=10)), 24, 72, NOW) == NOW + timedelta(hours=34)
    assert extended_expiry(_env(NOW - timedelta(hours=5)), 24, 72, NOW) == NOW + timedelta(hours=24)


def test_the_cap_is_the_profiles_maximum_from_now():
    env = _env(NOW + timedelta(hours=42, minutes=30))
    assert max_extend_hours(env.expires_at, 72, NOW) == 29  # whole hours only: 29.5 rounds down
    assert extended_expiry(env, 29, 72, NOW) == NOW + timedelta(hours=71, minutes=30)
    with pytest.raises(CloneError, match=r"beyond the preview profile's maximum of 72h from now; extend by at most 29h"):
        extended_expiry(env, 30, 72, NOW)
    with pytest.raises(CloneError, match="extend by at least 1 hour"):
        extended_expiry(env, 0, 72, NOW)
    assert max_extend_hours(NOW + timedelta(hours=80), 72, NOW) == 0  # already beyond a lowered maximum
