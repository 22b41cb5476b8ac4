"""Profile lifecycle hooks: shell commands run on `on_restored` (after a
restore, e.g. comment on the PR) and `pre_teardown` (before a teardown),
like Heroku's postdeploy and pr-predestroy. They get the environment's
coordinates in PRODCLONE_* variables, never its password."""

from __future__ import annotations

import logging
import os
import subprocess

from prodclone.drivers.base import CloneError

log = logging.getLogger(__name__)
TIMEOUT = 300


def hook_env(info: dict, env: dict) -> dict[str, str]:
    """PRODCLONE_* variables from the env's connection info and registry entry."""
    values = {"ENV": info.get("env") or env.get("name"), "PROFILE": env.get("profile"), "HOST": info.get("host"),
              "PORT": info.get("port"), "DATABASE": info.get("database"), "USER": info.get("user"),
              "PR": env.get("pr"), "REQUESTED_BY": env.get("requested_by"), "SNAPSHOT": env.get("snapshot"),
              "EXPIRES_AT": env.get("expires_at")}
    return {f"PRODCLONE_{k}": str(v) for k, v in values.items() if v is not None}


def run_hooks(event: str, commands: tuple[str, ...], variables: dict[str, str], timeout: int = TIMEOUT) -> int:
    """Run each command with /bin/sh; the first failure raises CloneError naming it. Returns how many ran."""
    env = {**os.environ, **variables}
    for i, command in enumerate(commands, 1):
        log.info("%s hook #%d: %s", event, i, command)
        try:
            proc = subprocess.run(["/bin/sh", "-c", command], env=env, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise CloneError(f"{event} hook #{i} did not finish within {timeout}s: {command}") from None
        for line in (proc.stdout + proc.stderr).splitlines()[-20:]:
            log.info("  %s", line)
        if proc.returncode != 0:
            last = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["(no output)"]
            raise CloneError(f"{event} hook #{i} exited {proc.returncode}: {last[0][:300]} (command: {command})")
    return len(commands)
