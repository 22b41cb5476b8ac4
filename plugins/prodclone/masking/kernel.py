"""The bridge to the compiled masking kernel (``_kernel.c``): compiles a table's rules for it, and
says whether it is there. Without it (no compiler where prodclone was installed) the Python
rewriter does the same work, byte for byte, only slower; prodclone says so once, in the log and
in ``prodclone --version``. ``PRODCLONE_KERNEL=0`` turns it off (for comparisons and tests)."""

from __future__ import annotations

import ctypes
import functools
import glob
import logging
import os

from prodclone.errors import UncoveredValue

log = logging.getLogger(__name__)

try:
    from prodclone.masking import _kernel
except ImportError as exc:  # not built: pip could not compile it here
    _kernel = None
    _missing = f"not built ({exc})"
else:
    _missing = None

ENV = "PRODCLONE_KERNEL"


def enabled() -> bool:
    return _kernel is not None and os.environ.get(ENV, "1") != "0"


def status() -> str:
    """One line for ``prodclone --version`` and the log."""
    if _kernel is None:
        return (f"masking kernel: {_missing}; masking runs in Python, several times slower "
                "(install with a C compiler present: see README, 'The masking kernel')")
    if not enabled():
        return f"masking kernel: built, turned off by {ENV}=0; masking runs in Python"
    return "masking kernel: compiled (C)"


@functools.cache
def announce() -> None:
    """Says once per process which path masks, as a warning when it is the slow one."""
    (log.info if enabled() else log.warning)("%s", status())


def _named(fn, where: str):
    """``fn`` whose UncoveredValue names the column (never the value), as TableMasker.mask_line does."""
    def run(v: bytes) -> bytes:
        try:
            return fn(v)
        except UncoveredValue as exc:
            raise UncoveredValue(f"{where}: {exc}") from None
    return run


def compile_table(masker) -> _kernel.Masker:
    """A TableMasker's rules for the kernel: each masked column native where its transform can say how
    (``Transform.native``), else a call back into Python (with the column's bounded cache)."""
    from prodclone.catalog import column_name  # here: `prodclone --version` runs on the standard library alone
    from prodclone.masking.transforms.base import HANDS_BACK
    specs: list[tuple] = [("keep",)] * len(masker.columns)
    for i, fn, mask_nulls in masker.simple:
        native = masker.transforms[masker.columns[i]].native()
        where = column_name(masker.table.name, masker.columns[i])
        if native is None:
            specs[i] = ("call", mask_nulls, _named(fn, where))
        elif native[0] in HANDS_BACK:  # the transform itself takes the values the kernel leaves to it
            specs[i] = (native[0], mask_nulls, *native[1:], _named(fn, where))
        else:
            specs[i] = (native[0], mask_nulls, *native[1:])
    return _kernel.Masker(tuple(specs), masker.render_rows if masker.row_level else None)


@functools.cache
def passthrough() -> _kernel.Masker:
    """A masker of no columns: reads a table whose rules all keep in blocks, every field as it is."""
    return _kernel.Masker(())


def value_function(transform):
    """The transform as a function of one COPY field, native if the kernel can run it, else itself:
    for transforms that mask parts of a value (json paths) and call their inner rules per part."""
    from prodclone.masking.transforms.base import HANDS_BACK

    native = transform.native() if enabled() else None
    if native is None:
        return transform
    one = _kernel.Masker(((native[0], False, *native[1:], *((transform,) if native[0] in HANDS_BACK else ())),))

    def run(v: bytes) -> bytes:  # a COPY field holds no raw tab or newline, so it is one row of one field
        return one.mask_block(v + b"\n")[:-1]
    return run


@functools.cache
def libpq_functions() -> tuple[int, int] | None:
    """Addresses of PQgetCopyData and PQfreemem in the libpq psycopg uses, so the kernel reads COPY data
    itself, without a Python call per row; None if that libpq cannot be found for sure (then rows come
    through psycopg, in blocks)."""
    try:
        from psycopg import pq

        if pq.__impl__ == "python":
            lib = pq._pq_ctypes.pq
        elif pq.__impl__ == "binary":
            import psycopg_binary

            found = glob.glob(os.path.join(os.path.dirname(psycopg_binary.__file__), os.pardir,
                                           "psycopg_binary.libs", "libpq*.so*"))
            if len(found) != 1:
                return None
            path = os.path.realpath(found[0])
            if path not in _mapped():  # psycopg_binary links this very file; if it is not loaded, it is not ours
                return None
            lib = ctypes.CDLL(path)  # already loaded: the same copy, never a second one
        else:
            return None
        return (ctypes.cast(lib.PQgetCopyData, ctypes.c_void_p).value, ctypes.cast(lib.PQfreemem, ctypes.c_void_p).value)
    except (ImportError, OSError, AttributeError):
        return None


def _mapped() -> set[str]:
    """Files mapped into this process (Linux); empty elsewhere, where the kernel then reads through psycopg."""
    try:
        with open("/proc/self/maps") as fh:
            return {line.split(maxsplit=5)[-1].strip() for line in fh if "/" in line}
    except OSError:
        return set()
