"""Object storage for exports: ``file://`` and ``s3://`` behind one small API.

Writers stream: memory stays bounded whatever the file's size. A file only
becomes visible under its final name when its writer closes cleanly, so a
crash mid-write never leaves a truncated file that looks whole.
"""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

from prodclone.errors import ExportError

CHUNK = 8 * 1024 * 1024  # S3 multipart parts must be >= 5 MiB


class Storage:
    url: str

    def writer(self, name: str) -> io.RawIOBase: ...
    def read_chunks(self, name: str, size: int = 1 << 20) -> Iterator[bytes]: ...
    def exists(self, name: str) -> bool: ...
    def list(self, prefix: str = "") -> list[str]: ...
    def delete(self, names: list[str]) -> None: ...

    def write_bytes(self, name: str, data: bytes) -> None:
        with self.writer(name) as w:
            w.write(data)

    def read_bytes(self, name: str) -> bytes:
        return b"".join(self.read_chunks(name))


def make_private_dirs(path: Path) -> None:
    """``mkdir -p`` where every directory it creates is 0700 (``Path.mkdir`` gives missing parents the
    umask's default). Existing directories are left as they are: they may not be prodclone's."""
    if path.is_dir():
        return
    make_private_dirs(path.parent)
    with contextlib.suppress(FileExistsError):  # a parallel worker made it first
        path.mkdir(mode=0o700)


class _FileWriter(io.RawIOBase):
    """Exports hold masked production data: files are 0600, directories 0700, never through a symlink."""

    def __init__(self, final: Path):
        self.final = final
        self.tmp = final.with_name(final.name + ".partial")
        make_private_dirs(final.parent)
        self.tmp.unlink(missing_ok=True)  # a crashed writer's leftover: never reuse its inode or permissions
        fd = os.open(self.tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        self.fh = os.fdopen(fd, "wb")

    def writable(self) -> bool:
        return True

    def write(self, b) -> int:
        try:
            return self.fh.write(b)
        except OSError as exc:
            self.abort()
            raise ExportError(f"writing {self.final} failed: {exc.strerror or exc}") from exc

    def abort(self) -> None:
        if not self.fh.closed:
            self.fh.close()
        self.tmp.unlink(missing_ok=True)
        super().close()

    def __exit__(self, exc_type, *rest):
        if exc_type is not None:
            self.abort()
        else:
            self.close()

    def close(self) -> None:
        if self.closed:
            return
        try:
            self.fh.flush()
            os.fsync(self.fh.fileno())
            self.fh.close()
        except OSError as exc:
            self.abort()
            raise ExportError(f"writing {self.final} failed: {exc.strerror or exc}") from exc
        os.replace(self.tmp, self.final)
        super().close()


class FileStorage(Storage):
    def __init__(self, url: str):
        self.url = url.rstrip("/")
        self.root = Path(urlparse(url).path)

    def writer(self, name: str) -> io.RawIOBase:
        return _FileWriter(self.root / name)

    def read_chunks(self, name: str, size: int = 1 << 20) -> Iterator[bytes]:
        path = self.root / name
        if not path.exists():
            raise ExportError(f"{self.url}/{name} does not exist")
        with open(path, "rb") as fh:
            while chunk := fh.read(size):
                yield chunk

    def exists(self, name: str) -> bool:
        return (self.root / name).exists()

    def list(self, prefix: str = "") -> list[str]:
        if not self.root.exists():
            return []
        return sorted(
            str(p.relative_to(self.root)) for p in self.root.rglob("*") if p.is_file() and str(p.relative_to(self.root)).startswith(prefix)
        )

    def delete(self, names: list[str]) -> None:
        for name in names:
            (self.root / name).unlink(missing_ok=True)


class _S3Writer(io.RawIOBase):
    """Multipart upload with a bounded buffer; aborted (nothing visible) on error."""

    def __init__(self, client, bucket: str, key: str):
        self.client, self.bucket, self.key = client, bucket, key
        self.buf = bytearray()
        self.parts: list[dict] = []
        self.upload_id: str | None = None

    def writable(self) -> bool:
        return True

    def write(self, b) -> int:
        self.buf += b
        if len(self.buf) >= CHUNK:
            self._flush_part()
        return len(b)

    def _flush_part(self) -> None:
        try:
            if self.upload_id is None:
                self.upload_id = self.client.create_multipart_upload(Bucket=self.bucket, Key=self.key)["UploadId"]
            n = len(self.parts) + 1
            resp = self.client.upload_part(
                Bucket=self.bucket, Key=self.key, UploadId=self.upload_id, PartNumber=n, Body=bytes(self.buf)
            )
        except Exception as exc:
            self.abort()
            raise ExportError(f"uploading s3://{self.bucket}/{self.key} failed: {exc}") from exc
        self.parts.append({"PartNumber": n, "ETag": resp["ETag"]})
        self.buf.clear()

    def abort(self) -> None:
        if self.upload_id is not None:
            with contextlib.suppress(Exception):  # best effort; the original error matters more
                self.client.abort_multipart_upload(Bucket=self.bucket, Key=self.key, UploadId=self.upload_id)
            self.upload_id = None
        super().close()

    def __exit__(self, exc_type, *rest):
        if exc_type is not None:
            self.abort()
        else:
            self.close()

    def close(self) -> None:
        if self.closed:
            return
        try:
            if self.upload_id is None:
                self.client.put_object(Bucket=self.bucket, Key=self.key, Body=bytes(self.buf))
            else:
                if self.buf:
                    self._flush_part()
                self.client.complete_multipart_upload(
                    Bucket=self.bucket, Key=self.key, UploadId=self.upload_id, MultipartUpload={"Parts": self.parts}
                )
        except ExportError:
            raise
        except Exception as exc:
            self.abort()
            raise ExportError(f"uploading s3://{self.bucket}/{self.key} failed: {exc}") from exc
        super().close()


class S3Storage(Storage):
    def __init__(self, url: str, s3_options: dict | None = None):
        import boto3

        parsed = urlparse(url)
        self.url = url.rstrip("/")
        self.bucket = parsed.netloc
        self.prefix = parsed.path.strip("/")
        self.client = boto3.client("s3", **(s3_options or {}))

    def _key(self, name: str) -> str:
        return f"{self.prefix}/{name}" if self.prefix else name

    def writer(self, name: str) -> io.RawIOBase:
        return _S3Writer(self.client, self.bucket, self._key(name))

    def read_chunks(self, name: str, size: int = 1 << 20) -> Iterator[bytes]:
        try:
            body = self.client.get_object(Bucket=self.bucket, Key=self._key(name))["Body"]
        except self.client.exceptions.NoSuchKey:
            raise ExportError(f"{self.url}/{name} does not exist") from None
        yield from body.iter_chunks(size)

    def exists(self, name: str) -> bool:
        try:
            self.client.head_object(Bucket=self.bucket, Key=self._key(name))
            return True
        except self.client.exceptions.ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise

    def list(self, prefix: str = "") -> list[str]:
        out = []
        base = self._key("")
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=self._key(prefix)):
            out += [o["Key"][len(base):] for o in page.get("Contents", [])]
        return sorted(out)

    def delete(self, names: list[str]) -> None:
        for i in range(0, len(names), 1000):
            batch = [{"Key": self._key(n)} for n in names[i : i + 1000]]
            if batch:
                self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": batch})


@dataclass(frozen=True)
class StorageTarget:
    """Where an export lives: ``file:///abs/path`` or ``s3://bucket/prefix``, and the boto3 client kwargs
    that reach it (Airflow passes them from its AWS connection; without them boto3's defaults, env vars and
    ``AWS_ENDPOINT_URL``, apply). Picklable for worker processes; the options hold credentials: never shown."""

    url: str
    options: dict | None = field(default=None, repr=False)

    def at(self, url: str) -> StorageTarget:
        """Another place reached with the same credentials (the root above a run's export)."""
        return StorageTarget(url, self.options)

    def open(self) -> Storage:
        scheme = urlparse(self.url).scheme
        if scheme == "file":
            return FileStorage(self.url)
        if scheme == "s3":
            return S3Storage(self.url, self.options)
        raise ExportError(f"unsupported storage URL {self.url!r}: use file:///absolute/path or s3://bucket/prefix")


def open_storage(where: str | StorageTarget) -> Storage:
    """A URL (with boto3's default credentials) or a StorageTarget, opened."""
    return (where if isinstance(where, StorageTarget) else StorageTarget(where)).open()
