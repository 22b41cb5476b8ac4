"""Crash points for crash tests.

``fault_point("restore.created_database")`` kills the process with SIGKILL
when ``$PRODCLONE_FAULT`` names that point: no cleanup handler, no ``finally``,
exactly like an OOM kill or a lost node. Tests run a step in a subprocess with
the variable set, then prove the next run, teardown or prune repairs what was
left. Unset (always, outside tests), a point costs one dictionary lookup.
"""

from __future__ import annotations

import os
import signal


def fault_point(name: str) -> None:
    if os.environ.get("PRODCLONE_FAULT") == name:
        os.kill(os.getpid(), signal.SIGKILL)
