"""Stopping `make airflow`: nothing it started may outlive Ctrl-C, SIGTERM or `make stop`.

`airflow standalone` is too heavy to start here, so a small process tree stands in for it, shaped
like Airflow's: a group leader, a child in its group, and a grandchild that moved into a process
group of its own and ignores SIGTERM (as a task runner may)."""

import json
import signal
import subprocess
import sys
import time

import psutil
import pytest

from prodclone import devpg
from support import ROOT

TREE = """
import subprocess, sys, time
runner = (
    "import os, signal, sys, time; os.setpgid(0, 0); signal.signal(signal.SIGTERM, signal.SIG_IGN); "
    "open(sys.argv[1], 'w').write(str(os.getpid())); time.sleep(600)"
)
child = (
    "import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', sys.argv[1], sys.argv[2] + '.runner']); "
    "time.sleep(600)"
)
proc = subprocess.Popen([sys.executable, "-c", child, runner, sys.argv[1]])
open(sys.argv[1], "w").write(str(proc.pid))
time.sleep(600)
"""


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _wait_for(path, timeout=20) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_text():
            return int(path.read_text())
        time.sleep(0.05)
    raise AssertionError(f"{path} was not written")


def _tree_pids(tmp_path) -> list[int]:
    return [_wait_for(tmp_path / "pids"), _wait_for(tmp_path / "pids.runner")]


@pytest.fixture
def airflow_local(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "scripts"))
    import airflow_local

    monkeypatch.setattr(airflow_local, "PIDFILE", tmp_path / "standalone.pid")
    monkeypatch.setattr(airflow_local, "STOP_TIMEOUT", 2)  # the runner ignores SIGTERM: SIGKILL sooner
    return airflow_local


@pytest.fixture
def tree(tmp_path):
    """The stand-in tree, started as `make airflow` starts standalone; whatever survives is killed after."""
    leader = subprocess.Popen([sys.executable, "-c", TREE, str(tmp_path / "pids")], start_new_session=True)
    pids = [leader.pid, *_tree_pids(tmp_path)]
    yield leader, pids
    for pid in pids:
        if _alive(pid):
            psutil.Process(pid).kill()
    leader.wait()


def test_stop_process_tree_reaches_the_runner_in_its_own_group_and_kills_what_ignores_sigterm(tree):
    leader, pids = tree
    assert devpg._pgid(pids[2]) != leader.pid  # the runner left the group: killpg alone would miss it
    started = time.monotonic()
    stopped = devpg.stop_process_tree(leader.pid, psutil.Process(leader.pid).create_time(), timeout=2)
    leader.wait(5)
    assert set(stopped) == set(pids)
    assert not any(_alive(p) for p in pids)
    assert time.monotonic() - started < 10  # SIGTERM ignored: SIGKILL after the timeout, not a hang


def test_a_reused_pid_is_left_alone(tree):
    leader, pids = tree
    assert devpg.stop_process_tree(leader.pid, created=12345.0, timeout=1) == []
    assert all(_alive(p) for p in pids)


def test_make_stop_stops_the_recorded_group_and_forgets_it(airflow_local, tree, capsys):
    leader, pids = tree
    airflow_local.PIDFILE.write_text(json.dumps({"pid": leader.pid, "created": psutil.Process(leader.pid).create_time()}))
    assert airflow_local.stop() == 0
    leader.wait(5)
    assert not any(_alive(p) for p in pids)
    assert not airflow_local.PIDFILE.exists()
    assert "Stopped Airflow" in capsys.readouterr().out
    assert airflow_local.stop() == 0  # again: nothing to do, and it says so
    assert "not running" in capsys.readouterr().out


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signalling_the_wrapper_stops_everything_it_started(airflow_local, tmp_path, sig):
    """`make airflow &` then `kill -TERM`/`-INT` its python: the wrapper stops the whole tree and forgets the pid."""
    code = (f"import sys; sys.path.insert(0, {str(ROOT / 'scripts')!r}); import airflow_local as a, pathlib; "
            f"a.PIDFILE = pathlib.Path({str(airflow_local.PIDFILE)!r}); a.STOP_TIMEOUT = 2; "
            f"sys.exit(a.supervise([sys.executable, '-c', {TREE!r}, {str(tmp_path / 'pids')!r}], None))")
    wrapper = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env={"PYTHONPATH": str(ROOT / "plugins")})
    pids = _tree_pids(tmp_path)
    leader = json.loads(airflow_local.PIDFILE.read_text())["pid"]
    try:
        wrapper.send_signal(sig)
        assert wrapper.wait(30) == 128 + sig
        assert not any(_alive(p) for p in [leader, *pids])
        assert not airflow_local.PIDFILE.exists()
    finally:
        for pid in [leader, *pids]:
            if _alive(pid):
                psutil.Process(pid).kill()
