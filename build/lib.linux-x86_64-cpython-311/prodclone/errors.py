"""Errors a user can act on. Each message says what happened and what to do."""


class ProdcloneError(Exception):
    """Base class: anything prodclone reports to a person as a clear refusal."""


class RulesError(ProdcloneError):
    """The masking rules file is malformed or invalid."""


class CoverageError(ProdcloneError):
    """Columns exist that no rule covers (fail closed on PII)."""

    def __init__(self, message: str, report: str = ""):
        super().__init__(message + ("\n" + report if report else ""))
        self.report = report


class UncoveredValue(CoverageError):
    """A value no rule can mask as written (a JSON key outside the declared paths, a date
    in a style date_shift cannot read): the export stops, as for a new column."""


class LeakError(ProdcloneError):
    """Original values were found in masked output."""


class ExportError(ProdcloneError):
    """The export could not be written or is incomplete."""


class SeedError(ProdcloneError):
    """The base could not be seeded; the previous base is untouched."""


class ConnectionFailed(ProdcloneError):
    """A database could not be reached."""
