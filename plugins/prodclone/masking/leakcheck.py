"""After an export: prove that sampled original values of masked columns do
not appear in the masked output, and that every file matches the manifest.

Samples come straight from the source, from the rows the export's subset
filter kept, and stay in memory; reports name the
column and a count, never a value. Coincidences a transform can produce
without seeing the input (a Faker pool that happens to hold "John") are not
leaks. Which columns are compared, and which parts of their values, is each
transform's to say (``Transform.leak_checked``, ``leak_values``): not those
whose outputs may equal originals by design (keep, noise, date_shift), nor
those that only emit NULL; json documents are compared at their masked paths,
arrays element by element. Free text masked by a transform that ``embeds``
(scrub) is searched for the identifiers found in the sampled originals, anywhere
inside it, not only as a whole value. Empty strings identify no one and are
never counted.
"""

from __future__ import annotations

import functools
import hashlib
import re
from dataclasses import dataclass, field

from psycopg import sql

from prodclone import datafile
from prodclone.catalog import Table, column_name, load_catalog
from prodclone.db import connect_source, pin_search_path
from prodclone.errors import ExportError, LeakError
from prodclone.masking.copytext import NULL
from prodclone.masking.rewriter import TableMasker
from prodclone.masking.rules import Masking
from prodclone.subset import Subsetter


@dataclass
class VerifyReport:
    files: int = 0
    rows: int = 0
    columns_checked: int = 0
    samples: int = 0
    leaks: dict[str, int] = field(default_factory=dict)

    def summary(self) -> str:
        s = (f"verified {self.files} files / {self.rows} rows; leak check on {self.columns_checked} columns "
             f"with {self.samples} sampled originals")
        return s + (f"; LEAKS: {self.leaks}" if self.leaks else "; no leaks")


def _sample(conn, table: Table, column: str, n: int, where: sql.Composable | None, exported: int) -> set[bytes]:
    """Up to ``n`` originals from the rows the export wrote: ``where`` is the export's subset filter on ``t0``
    (a filtered-out original has no masked twin to prove it was masked), and the sampling rate is set from the
    ``exported`` row count, so a small subset of a big table still yields its share of samples."""
    pct = min(100.0, max(0.01, 100.0 * n * 5 / max(exported, 1)))
    col = sql.Identifier("t0", column)
    conds = [sql.SQL("{} IS NOT NULL").format(col)] + ([] if where is None else [where])
    query = sql.SQL("COPY (SELECT {} FROM {} t0 TABLESAMPLE BERNOULLI ({}) WHERE {} LIMIT {}) TO STDOUT").format(
        col, table.scan, sql.Literal(pct), sql.SQL(" AND ").join(conds), sql.Literal(int(n)))
    with conn.cursor().copy(query) as copy:
        return {bytes(row)[:-1] for row in copy}


def verify_export(storage, manifest: dict, source_dsn: str | None, masking: Masking,
                  sample_size: int = 500) -> VerifyReport:
    """Check files against the manifest; with ``source_dsn``, also the leak check."""
    report = VerifyReport()
    samples: dict[str, dict[int, dict[str, _Whole | _Inside]]] = {}
    maskers: dict[str, TableMasker] = {}
    if source_dsn:
        with connect_source(source_dsn) as conn:
            catalog = load_catalog(conn)
            subsetter = Subsetter(catalog, masking.rules)
            pin_search_path(conn)  # the subset filter resolves names as it did in the export
            for t in manifest["tables"]:
                table = catalog.tables.get(t["name"])
                if table is None or not t["files"]:
                    continue
                masker = maskers[t["name"]] = TableMasker(table, masking)
                where = subsetter.filter_sql(t["name"])
                exported = sum(f["rows"] for f in t["files"])
                cols = {}
                for idx, name in enumerate(t["columns"]):
                    tr = masker.transforms.get(name)
                    if tr is not None and tr.leak_checked:
                        cols[idx] = _originals(tr, _sample(conn, table, name, sample_size, where, exported))
                        report.samples += sum(map(len, cols[idx].values()))
                if cols:
                    samples[t["name"]] = cols
                    report.columns_checked += len(cols)
    for t in manifest["tables"]:
        cols = samples.get(t["name"], {})
        masker = maskers.get(t["name"])
        for f in t["files"]:
            digest = hashlib.sha256()
            rows = 0
            tail = b""
            for chunk in datafile.read(storage, f["path"], manifest.get("compression", "none"), digest):
                lines = (tail + chunk).split(b"\n")
                tail = lines.pop()
                rows += len(lines)
                if cols:
                    _scan(lines, cols, masker, t, report)
            if tail:
                raise ExportError(f"{f['path']}: truncated (last row has no newline)")
            if digest.hexdigest() != f["sha256"] or rows != f["rows"]:
                raise ExportError(f"{f['path']}: does not match the manifest (checksum or row count); re-run the export")
            report.files += 1
            report.rows += rows
    _coincidences(samples, manifest, report)
    if report.leaks:
        raise LeakError(
            "original values found in masked output: "
            + ", ".join(f"{c} ({n} values)" for c, n in sorted(report.leaks.items()))
            + ". Fix the rule for these columns; the export must not be used."
        )
    return report


class _Whole(dict):
    """Originals an output value is compared with as a whole, each with its own masked value. A masked
    value that equals an original is a coincidence, not a leak, when that original's own masked value
    is in the output too (its rows were masked) and differs from it: a 5-digit postcode or a spliced
    name masks to another real-looking one, and another row's may be this one."""

    def __init__(self):
        super().__init__()
        self.seen: set[bytes] = set()  # masked values of sampled originals found in the output
        self.pending: dict[bytes, int] = {}  # hits, until the whole output has been read

    def add(self, original: bytes, rule) -> None:
        # A row-level rule (template) has no masked value of its own input: every hit of it counts.
        self[original] = None if rule.row_level else rule(original)
        self.rule = rule

    def hits(self, value: bytes) -> list[bytes]:
        """None now: a hit is pending until ``leaks()`` knows whether the original's own rows were masked."""
        if value in self.masked_values:
            self.seen.add(value)
        if value in self:
            self.pending[value] = self.pending.get(value, 0) + 1
        return []

    @functools.cached_property
    def masked_values(self) -> frozenset[bytes]:
        return frozenset(v for v in self.values() if v is not None)

    def leaks(self) -> int:
        return sum(n for o, n in self.pending.items()
                   if not self.rule.could_emit(o) and (self[o] == o or self[o] not in self.seen))


class _Inside(set):
    """Originals found anywhere inside an output (identifiers in free text): one regex for them all."""

    def add(self, original: bytes, rule) -> None:
        set.add(self, original)

    @functools.cached_property
    def _pattern(self) -> re.Pattern:
        return re.compile(b"|".join(map(re.escape, sorted(self, key=len, reverse=True))))

    def hits(self, value: bytes) -> list[bytes]:
        return self._pattern.findall(value)

    def leaks(self) -> int:
        return 0  # counted as they are found


def _originals(tr, fields: set[bytes]) -> dict[str, _Whole | _Inside]:
    """Sampled fields of one column as the values the leak check compares, by where they sit in the field.
    An empty string identifies no one: seeing it again in the output is no leak."""
    out: dict[str, _Whole | _Inside] = {}
    for f in fields:
        for where, rule, v in tr.leak_values(f):
            for part in filter(None, rule.embedded(v)):
                out.setdefault(where, _Inside() if rule.embeds else _Whole()).add(part, rule)
    return out


_NOTHING = _Whole()


def _scan(lines: list[bytes], cols: dict[int, dict[str, _Whole | _Inside]], masker: TableMasker, t: dict,
          report: VerifyReport) -> None:
    for line in lines:
        fields = line.split(b"\t")
        for idx, originals in cols.items():
            if fields[idx] == NULL:
                continue
            name = t["columns"][idx]
            for where, rule, v in masker.transforms[name].leak_values(fields[idx]):
                for _ in filter(lambda hit: not rule.could_emit(hit), originals.get(where, _NOTHING).hits(v)):
                    key = column_name(t["name"], name) + (f" at {where}" if where else "")
                    report.leaks[key] = report.leaks.get(key, 0) + 1


def _coincidences(samples, manifest: dict, report: VerifyReport) -> None:
    """Whole-value hits, once all the output is read: leaks unless they were coincidences."""
    for t in manifest["tables"]:
        for idx, by_where in samples.get(t["name"], {}).items():
            for where, originals in by_where.items():
                n = originals.leaks()
                if n:
                    key = column_name(t["name"], t["columns"][idx]) + (f" at {where}" if where else "")
                    report.leaks[key] = report.leaks.get(key, 0) + n
