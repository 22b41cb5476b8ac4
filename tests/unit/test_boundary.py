"""The engine/Airflow boundary is a structure, checked here: only ``prodclone.airflow`` imports Airflow,
every other module imports with Airflow absent, and ``prodclone env`` (what a CI runner gets from
``pip install --no-deps``) runs on the standard library alone.

The imports run in a fresh interpreter whose ``sys.meta_path`` refuses the blocked packages, so a module
that imports one, directly or through another module, fails the way it would where it is not installed."""

from __future__ import annotations

import ast
import json
import socket
import subprocess
import sys
import textwrap

import pytest

from support import ROOT

PLUGINS = ROOT / "plugins"
ENGINE = PLUGINS / "prodclone"
AIRFLOW_SIDE = "prodclone.airflow"

# Installed in the child before anything else: refuses the named top-level packages, or (with
# ALLOW_ONLY) every top-level package that is neither in the standard library nor prodclone.
BLOCKER = textwrap.dedent("""
    import importlib.abc, json, sys

    BLOCKED, ALLOW_ONLY = set(json.loads(sys.argv[1])), json.loads(sys.argv[2])

    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            top = name.partition(".")[0]
            refused = top in BLOCKED or (ALLOW_ONLY and top not in sys.stdlib_module_names and top not in ALLOW_ONLY)
            if refused:
                raise ImportError(f"{name} is blocked (not installed here)", name=name)
            return None

    sys.meta_path.insert(0, Block())
    PRELOADED = set(sys.modules)  # the interpreter's own start-up (site hooks), before any prodclone code
""")


def _module_name(path) -> str:
    parts = path.relative_to(PLUGINS).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> list[str]:
    return sorted(_module_name(p) for p in ENGINE.rglob("*.py"))


def engine_modules() -> list[str]:
    return [m for m in _modules() if m != AIRFLOW_SIDE and not m.startswith(AIRFLOW_SIDE + ".")]


def _run(code: str, *, blocked=(), allow_only=(), env=None) -> subprocess.CompletedProcess:
    """``code`` in a fresh interpreter with only plugins/ on the path and the blocker installed."""
    script = BLOCKER + textwrap.dedent(code)
    return subprocess.run([sys.executable, "-I", "-c", script, json.dumps(list(blocked)), json.dumps(list(allow_only))],
                          cwd=PLUGINS, capture_output=True, text=True, timeout=120, env=env)


IMPORT_EACH = """
    import importlib, traceback
    sys.path.insert(0, ".")
    failed = {}
    for name in json.loads(sys.argv[3]):
        try:
            importlib.import_module(name)
        except Exception:
            failed[name] = traceback.format_exc(limit=-3)
    print(json.dumps({"failed": failed, "airflow_loaded": sorted(m for m in sys.modules if m.split(".")[0] == "airflow")}))
"""


def _import_each(modules: list[str], **blocking) -> dict:
    r = _run(IMPORT_EACH.replace("json.loads(sys.argv[3])", repr(modules)), **blocking)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout.splitlines()[-1])


def test_the_module_list_is_the_whole_engine():
    """Guards the tests below against checking nothing: the walk finds the engine's modules, the CLIs and
    the drivers among them, and the Airflow side is set apart."""
    mods = engine_modules()
    assert {"prodclone.config", "prodclone.envcli", "prodclone.cli", "prodclone.drivers.velero",
            "prodclone.masking.rules"} <= set(mods)
    assert {f"{AIRFLOW_SIDE}.{m}" for m in ("support", "alerts", "operators", "triggers", "webui", "plugin")} \
        <= set(_modules()) - set(mods)


def test_every_engine_module_imports_without_airflow():
    result = _import_each(engine_modules(), blocked=["airflow"])
    assert result["failed"] == {}, "engine modules that need Airflow (move them under prodclone/airflow/):\n" + \
        "\n".join(f"{name}:\n{tb}" for name, tb in result["failed"].items())
    assert result["airflow_loaded"] == []


def test_the_blocker_bites():
    """The same child refuses the Airflow side, so a pass above means the engine never reached Airflow."""
    airflow_side = [f"{AIRFLOW_SIDE}.{m}" for m in ("support", "operators", "triggers", "webui", "plugin")]
    result = _import_each(airflow_side, blocked=["airflow"])
    assert set(result["failed"]) == set(airflow_side)
    assert all("airflow" in tb and "is blocked" in tb for tb in result["failed"].values())


def _airflow_imports(path) -> list[str]:
    """Every ``import airflow...`` / ``from airflow... import`` in the file, function-local ones included."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
            [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else []
        found += [f"{path.relative_to(ROOT)}:{node.lineno}: {n}" for n in names if n.split(".")[0] == "airflow"]
    return found


def test_no_engine_module_imports_airflow_even_lazily():
    """A function-local import escapes the import test above until that function runs on a worker."""
    offenders = [hit for p in sorted(ENGINE.rglob("*.py")) if _module_name(p) in engine_modules()
                 for hit in _airflow_imports(p)]
    assert offenders == [], "Airflow imported outside prodclone/airflow/:\n" + "\n".join(offenders)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("argv, exit_code, says", [
    (["env", "up", "--help"], 0, "--pr"),
    (["env", "list"], 6, "cannot reach Airflow"),
    (["env", "up"], 2, "--pr"),
])
def test_prodclone_env_runs_on_the_standard_library_alone(argv, exit_code, says):
    """As after ``pip install --no-deps``: every package outside the standard library is missing, yet the
    ``prodclone`` entry point parses ``env`` commands, and ``env list`` gets as far as the network (exit 6,
    nothing listening)."""
    code = f"""
        sys.path.insert(0, ".")
        from prodclone.cli import main
        code = 0
        try:
            code = main({argv!r})
        except SystemExit as exc:
            code = exc.code
        print("EXIT", code, sorted(m for m in set(sys.modules) - PRELOADED
                                   if m.split(".")[0] not in sys.stdlib_module_names and m.split(".")[0] != "prodclone"))
    """
    env = {"PATH": "/usr/bin:/bin", "PRODCLONE_AIRFLOW_URL": f"http://127.0.0.1:{_closed_port()}",
           "PRODCLONE_AIRFLOW_TOKEN": "t", "PRODCLONE_TIMEOUT": "5s"}
    r = _run(code, allow_only=["prodclone"], env=env)
    assert r.stdout.splitlines()[-1:] == [f"EXIT {exit_code} []"], r.stdout + r.stderr
    assert says in r.stdout + r.stderr
