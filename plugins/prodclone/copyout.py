"""A ``COPY ... TO STDOUT`` read in masked blocks of about a megabyte.

psycopg hands out one CopyData message, one row, per call: a Python call per row. With the kernel
built, the kernel reads the rows itself from the libpq psycopg uses (PQgetCopyData, the GIL
released while it waits) and masks them as they come, so Python sees one call per block. Without it,
rows come through psycopg and are masked in blocks by whichever path TableMasker has.
"""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
from psycopg import pq

from prodclone.masking import kernel
from prodclone.masking.rewriter import TableMasker

BLOCK_BYTES = 1 << 20
_MORE, _ENDED, _FAILED = 0, 1, 2  # the kernel's pump status


def masked_blocks(conn: psycopg.Connection, copy: psycopg.Copy, masker: TableMasker,
                  size: int = BLOCK_BYTES) -> Iterator[tuple[bytes, int]]:
    """(masked block, rows in it) until the COPY ends; ``copy`` is the open ``cursor.copy()`` of the query."""
    pump = _pump(masker)
    fns = kernel.libpq_functions() if pump is not None else None
    if fns is None:
        yield from _through_psycopg(copy, masker, size)
        return
    pgconn = conn.pgconn
    while True:
        block, rows, status = pump(pgconn.pgconn_ptr, *fns, size)
        if block:
            yield block, rows
        if status == _ENDED:
            _end(conn)
            return
        if status == _FAILED:
            raise psycopg.OperationalError(f"reading COPY data failed: {pgconn.get_error_message()}")


def _pump(masker: TableMasker):
    if masker.kernel is not None:
        return masker.kernel.pump
    if masker.passthrough and kernel.enabled():
        return kernel.passthrough().pump
    return None


def _end(conn: psycopg.Connection) -> None:
    """The COPY's closing result, as psycopg would read it: an error the server sent at the end is raised."""
    last = None
    while (res := conn.pgconn.get_result()) is not None:
        last = res
    if last is None:
        raise psycopg.OperationalError("the COPY ended without a result")
    if last.status != pq.ExecStatus.COMMAND_OK:
        raise psycopg.errors.error_from_result(last, encoding=conn.info.encoding)


def _through_psycopg(copy: psycopg.Copy, masker: TableMasker, size: int) -> Iterator[tuple[bytes, int]]:
    buf: list[bytes] = []
    buffered = 0
    for data in copy:
        buf.append(bytes(data))
        buffered += len(data)
        if buffered >= size:
            yield masker.mask_block(b"".join(buf)), len(buf)
            buf.clear()
            buffered = 0
    if buf:
        yield masker.mask_block(b"".join(buf)), len(buf)
