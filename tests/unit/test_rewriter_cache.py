"""The per-table result cache is capped by bytes, not entries: large values cannot
make it grow past its budget, and peak memory stays flat however large they are."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from prodclone.masking import rewriter

MB = 1024 * 1024


def test_the_cap_counts_keys_values_and_overhead_and_starts_over_when_full():
    calls = []

    def double(v):
        calls.append(v)
        return v + v

    run = rewriter._cached(double, limit=1000)
    assert run(b"a" * 100) == b"a" * 200 and run(b"a" * 100) == b"a" * 200 and len(calls) == 1  # a hit
    assert 100 + 200 + rewriter.ENTRY_OVERHEAD == 500  # what one entry costs
    run(b"b" * 100)  # 2 * 500 = 1000: fits exactly
    assert len(run.cache) == 2
    run(b"c" * 100)  # over the cap: starts over with just this one
    assert list(run.cache) == [b"c" * 100]
    run(b"d" * 1000)  # bigger than the whole cap: computed, never stored
    assert list(run.cache) == [] and run(b"d" * 1000) == b"d" * 2000 and calls[-2:] == [b"d" * 1000] * 2


def test_the_budget_is_shared_by_the_tables_cached_columns(monkeypatch):
    from prodclone.catalog import Column, Table
    from prodclone.masking.rules import parse_rules

    monkeypatch.setattr(rewriter, "CACHE_BYTES", 3000)
    rules = parse_rules("version: 1\ntables:\n  public.t:\n    columns: {a: hash, b: redact, c: keep, "
                        "d: {transform: faker, provider: first_name, unique: true}}\n")
    m = rewriter.TableMasker(Table("public.t", "table", [Column(c, "text", False) for c in "abcd"]), rules.bind(b"k" * 40))
    m.mask_line(b"x" * 700 + b"\t" + b"y" * 700 + b"\tz\tw")
    caches = [fn.cache for _, fn, _ in m.simple if hasattr(fn, "cache")]
    assert len(caches) == 2  # keep is not masked, unique tags every value: neither is cached
    assert [len(c) for c in caches] == [1, 0]  # share 1500: a (700 + a short hash + 200) fits, b (700 + 700 + 200) does not


def test_peak_memory_stays_flat_with_800_values_of_512_kb():
    script = textwrap.dedent("""
        from prodclone.catalog import Column, Table
        from prodclone.masking.rewriter import TableMasker
        from prodclone.masking.rules import parse_rules

        rules = parse_rules("version: 1\\ntables:\\n  public.t:\\n    columns: {id: keep, body: redact}\\n")
        m = TableMasker(Table("public.t", "table", [Column("id", "int", True), Column("body", "text", False)]),
                        rules.bind(b"k" * 40))
        for i in range(800):
            m.mask_line(b"%d\\t" % i + (b"%06d" % i) * (512 * 1024 // 6))
        # VmHWM, not ru_maxrss: Linux carries ru_maxrss across exec, so a child forked from a big pytest
        # process would report the parent's peak.
        print(next(line.split()[1] for line in open("/proc/self/status") if line.startswith("VmHWM:")))
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": str(Path(rewriter.__file__).parents[2])})
    peak_mb = int(out.stdout) / 1024  # VmHWM is in kB
    assert peak_mb < 400, f"peak RSS {peak_mb:.0f} MB"
