"""Turns a restore's parameters (UI form, REST API, CLI) into a checked
request: env name (derived from the PR when only a PR is given), profile,
TTL within the profile's bounds, snapshot."""

from __future__ import annotations

import re

from prodclone.config import Config
from prodclone.drivers.base import (
    SNAPSHOT_PATTERN,
    CloneError,
    RestoreRequest,
    env_for_pr,
    env_prefix,
    validate_env_name,
)


def resolve_request(params: dict, cfg: Config, triggered_by: str | None = None) -> RestoreRequest:
    profile_name = params.get("profile") or "preview"
    profile = cfg.profile(profile_name)
    pr = params.get("pr")
    if pr is not None and (not isinstance(pr, int) or isinstance(pr, bool) or pr < 1):
        raise CloneError(f"pr must be a positive integer, not {pr!r}")
    env = params.get("env") or (env_for_pr(profile_name, pr) if pr else None)
    if not env:
        raise CloneError(f"give `env` (e.g. {profile_name}-my-feature) or `pr` (the env becomes "
                         f"{env_for_pr(profile_name, 42)} for PR 42)")
    validate_env_name(env)
    if env_prefix(env) != profile_name:
        raise CloneError(f"env {env!r} does not match profile {profile_name!r}: name it "
                         f"{profile_name}-{env.split('-', 1)[1]} or choose profile {env_prefix(env)!r}")
    ttl = params.get("ttl_hours")
    ttl = profile.ttl_hours if ttl is None else ttl
    if not isinstance(ttl, int) or isinstance(ttl, bool) or not 1 <= ttl <= profile.max_ttl_hours:
        raise CloneError(f"ttl_hours={ttl!r} is outside the {profile_name} profile's bounds: "
                         f"1 to {profile.max_ttl_hours} hours")
    snapshot = params.get("snapshot") or "latest"
    if snapshot != "latest" and not re.match(SNAPSHOT_PATTERN, snapshot):
        raise CloneError(f"snapshot {snapshot!r} is neither 'latest' nor a snapshot id (lowercase letters, digits "
                         f"and dashes, at most 63 characters, e.g. snap-20261121-0200-3f2a9c)")
    requested_by = (params.get("requested_by") or triggered_by or "unknown").strip()[:200]
    return RestoreRequest(env=env, profile=profile_name, ttl_hours=ttl, snapshot=snapshot,
                          requested_by=requested_by, pr=pr, replace=bool(params.get("replace")))
