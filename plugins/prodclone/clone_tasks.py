"""What the restore, teardown and extend DAGs decide beyond one driver call:
whether this run made the env (its on_restored hooks run once), the report a
restore ends with, which envs a teardown run removes (``missing_ok``), the
pre_teardown hooks, and the teardown summary. Plain Python: the DAG tasks
call these with the config and driver they were given, and print what
``say`` receives into the task log."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Iterable

from prodclone.config import Config
from prodclone.drivers.base import CloneDriver, Environment, Removed, Status
from prodclone.freshness import freshness
from prodclone.lifecycle import hook_env, run_hooks

log = logging.getLogger(__name__)
Say = Callable[[str], None]


def on_restored(cfg: Config, driver: CloneDriver, env: Environment, run_id: str) -> int:
    """The profile's on_restored commands, once per clone: never when this run found the env already there."""
    if not env.made_by(run_id):
        return 0
    info = dataclasses.asdict(driver.connection(env.name))
    return run_hooks("on_restored", cfg.profile(env.profile).on_restored, hook_env(info, env.as_dict()))


def connection_report(cfg: Config, driver: CloneDriver, env: Environment, run_id: str, say: Say = print) -> dict:
    """Where the clone answers and how old its data is (never the password: the secret's location)."""
    info = driver.connection(env.name)
    info.existing = not env.made_by(run_id)
    snap = next((s for s in driver.snapshots() if s.id == info.snapshot), None)
    fresh = freshness(snap.created_at if snap else None, cfg.schedule)
    say(("already existed, unchanged: " if info.existing else "ready: ") + info.text())
    say(("WARNING: " if fresh["stale"] else "") + f"data: {fresh['message']}")
    return {**dataclasses.asdict(info), "snapshot_age_hours": fresh["age_hours"], "snapshot_stale": fresh["stale"],
            "clone_seconds": env.clone_seconds}


def teardown_targets(driver: CloneDriver, env: str | None = None, missing_ok: bool = False,
                     say: Say = print) -> list[dict]:
    """{"env", "reason"} for each env to remove: ``env`` when given (gone and ``missing_ok``: none), else
    every env due for teardown."""
    if not env:
        return [{"env": name, "reason": reason} for name, reason in driver.due_for_teardown()]
    if driver.environment(env) is None:
        if missing_ok:
            say(f"{env} is already gone; nothing to do")
            return []
        driver.require(env, "tear down")
    return [{"env": env, "reason": "requested"}]


def teardown(cfg: Config, driver: CloneDriver, name: str, reason: str, say: Say = print) -> Removed:
    """The profile's pre_teardown commands (best effort: a failing hook must not keep an expired env alive),
    then the driver's teardown."""
    env = driver.environment(name)
    profile = cfg.profiles.get(env.profile) if env else None  # a profile may have left the config since
    if env and env.status == Status.READY and profile and profile.pre_teardown:
        try:
            run_hooks("pre_teardown", profile.pre_teardown,
                      hook_env(dataclasses.asdict(driver.connection(name)), env.as_dict()))
        except Exception as exc:
            say(f"WARNING: {exc}; tearing down anyway")
    removed = driver.teardown(name, reason=reason)
    say(removed.text())
    return removed


def teardown_summary(removed: Iterable[dict | None], pruned: list[str], say: Say = print) -> dict:
    names = [r["env"] for r in removed if r]
    say(f"removed {len(names)} environment(s): {', '.join(names) or 'none'}; pruned {len(pruned)} snapshot(s)")
    return {"environments": names, "snapshots": pruned}
