"""Without the compiled kernel (an Airflow image without a compiler), prodclone masks in Python and says so
once: in the log, and in `prodclone --version`."""

import logging
import subprocess
import sys

from prodclone.catalog import Column, Table
from prodclone.masking import kernel, rewriter
from prodclone.masking.rules import parse_rules

RULES = "version: 1\ntables:\n  public.t:\n    columns: {id: keep, email: email, name: {transform: faker, provider: first_name}}\n"


def _missing(monkeypatch):
    monkeypatch.setattr(kernel, "_kernel", None)
    monkeypatch.setattr(kernel, "_missing", "not built (No module named 'prodclone.masking._kernel')")
    kernel.announce.cache_clear()


def test_without_the_kernel_the_python_path_masks_and_says_so_once(monkeypatch, caplog):
    _missing(monkeypatch)
    assert not kernel.enabled() and "masking runs in Python" in kernel.status()
    table = Table("public.t", "table", [Column(c, "text", False) for c in ("id", "email", "name")])
    m = rewriter.TableMasker(table, parse_rules(RULES).bind(b"k" * 40))
    assert m.kernel is None
    out = m.mask_block(b"1\ta@b.c\tAnn\n2\t\\N\tBob\n")
    assert out.count(b"\n") == 2 and b"a@b.c" not in out and b"\tAnn" not in out and b"\t\\N\t" in out
    with caplog.at_level(logging.INFO, logger="prodclone.masking.kernel"):
        kernel.announce()
        kernel.announce()
    said = [r for r in caplog.records if r.name == "prodclone.masking.kernel"]
    assert len(said) == 1 and said[0].levelno == logging.WARNING and "not built" in said[0].getMessage()
    kernel.announce.cache_clear()


def test_prodclone_version_names_the_masking_path():
    out = subprocess.run([sys.executable, "-m", "prodclone.cli", "--version"], capture_output=True, text=True, check=True,
                         env={"PYTHONPATH": ":".join(sys.path), "PATH": "/usr/bin:/bin"}).stdout
    assert out.startswith("prodclone ") and "masking kernel:" in out
    assert ("compiled (C)" in out) == kernel.enabled()
