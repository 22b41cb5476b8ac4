"""The masking key and the keyed hashing every deterministic transform uses.

The key never leaves this process: it is not written to exports, manifests,
logs or XCom. Only a short fingerprint (a keyed hash of a constant) is
recorded, so two exports can be compared for "same key?" without revealing it.
"""

from __future__ import annotations

import hashlib
import os

from prodclone.errors import RulesError

KEY_ENV = "PRODCLONE_MASKING_KEY"
MIN_KEY_CHARS = 32


def load_key(value: str | None = None) -> bytes:
    """The masking key from ``value`` or ``$PRODCLONE_MASKING_KEY``."""
    if value is None:
        value = os.environ.get(KEY_ENV)
    if not value:
        raise RulesError(
            f"no masking key: set {KEY_ENV} (at least {MIN_KEY_CHARS} characters; "
            "e.g. `python -c 'import secrets; print(secrets.token_urlsafe(32))'`), "
            "or in Airflow the Variable `prodclone_masking_key`"
        )
    if len(value) < MIN_KEY_CHARS:
        raise RulesError(f"the masking key is too short ({len(value)} characters); use at least {MIN_KEY_CHARS}")
    return value.encode()


def _root(key: bytes) -> bytes:
    """The whole key, of any length, condensed to a 64-byte BLAKE2b key (BLAKE2b takes at most 64 bytes:
    slicing the key there made keys differing only after byte 64 mask alike). Domain-separated by ``person``
    so this digest is never the output of any other hash prodclone computes."""
    return hashlib.blake2b(key, digest_size=64, person=b"prodclone-root").digest()


def derive(key: bytes, scope: str, size: int = 32) -> bytes:
    """Every sub-key, from the whole key: one per ``scope`` (a transform's configuration, so equal configs
    give equal outputs and joins survive across tables; different scopes are independent)."""
    return hashlib.blake2b(scope.encode(), key=_root(key), digest_size=size).digest()


def fingerprint(key: bytes) -> str:
    return derive(key, "prodclone-key-fingerprint", size=6).hex()


def h64(subkey: bytes, value: bytes) -> int:
    return int.from_bytes(hashlib.blake2b(value, key=subkey, digest_size=8).digest(), "big")


def tag(subkey: bytes, value: bytes) -> str:
    """A keyed hex tag of ``value``: 20 chars = 80 bits. The chance of any
    collision among a billion distinct values is about 4e-7, and a collision
    that did happen fails the seed's UNIQUE index loudly (never silently)."""
    return hashlib.blake2b(value, key=subkey, digest_size=10, person=b"prodclone-uniq").hexdigest()
