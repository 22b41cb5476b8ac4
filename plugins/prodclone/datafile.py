"""Export data files as stored: COPY text, or COPY text compressed with zstd.

A file's SHA-256 in the manifest is of the bytes as stored, so a copy can be checked (``sha256sum``, an S3
checksum) without decompressing it; readers check it while they stream and decompress.
"""

from __future__ import annotations

from collections.abc import Iterator

from prodclone.errors import ExportError

COMPRESSIONS = ("none", "zstd")
ZSTD_LEVEL = 3  # zstd's default: most of the saving for little time (see bench/export_throughput.py)


def suffix(compression: str) -> str:
    return ".zst" if compression == "zstd" else ""


def check(compression: str) -> str:
    if compression not in COMPRESSIONS:
        raise ExportError(f"unknown compression {compression!r}; use one of: {', '.join(COMPRESSIONS)}")
    return compression


def stored(blocks: Iterator[bytes], compression: str) -> Iterator[bytes]:
    """``blocks`` of COPY text as the bytes to store, block by block (the mirror of ``read``)."""
    if check(compression) == "none":
        yield from blocks
        return
    import zstandard

    z = zstandard.ZstdCompressor(level=ZSTD_LEVEL, write_checksum=True).compressobj()
    for block in blocks:
        yield z.compress(block)
    yield z.flush()


def read(storage, path: str, compression: str, digest) -> Iterator[bytes]:
    """The file's COPY text, in chunks; ``digest`` is fed the bytes as stored. A compressed file that is
    corrupt or cut short raises ExportError naming the file."""
    chunks = storage.read_chunks(path)
    if check(compression) == "none":
        for chunk in chunks:
            digest.update(chunk)
            yield chunk
        return
    import zstandard

    z = zstandard.ZstdDecompressor().decompressobj()
    for chunk in chunks:
        digest.update(chunk)
        try:
            out = z.decompress(chunk)
        except zstandard.ZstdError as exc:
            raise ExportError(f"{path}: corrupt zstd data ({exc}); the export is damaged, re-run it") from None
        if out:
            yield out
    if not z.eof:
        raise ExportError(f"{path}: the zstd data ends early (truncated); the export is damaged, re-run it")
