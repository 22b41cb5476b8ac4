"""zstd-compressed data files: the same COPY text as an uncompressed export, checksums of the stored bytes,
seed and verify reading them, and a damaged file failing clearly."""

import hashlib

import pytest
import zstandard

from prodclone.cli import main
from prodclone.errors import ExportError
from prodclone.export import read_manifest, run_export, verify_and_record
from prodclone.seed import seed
from prodclone.storage import open_storage
from support import RULES, rows


def _export(src, rules, key, tmp_path, name, **kw):
    url = f"file://{tmp_path}/{name}"
    return url, run_export(src, rules.bind(key), url, **kw)


def test_zstd_export_round_trip(sample_source, new_db, tmp_path, rules, masking_key):
    src, counts = sample_source
    _, plain = _export(src, rules, masking_key, tmp_path, "plain")
    url, packed = _export(src, rules, masking_key, tmp_path, "zstd", jobs=2, compression="zstd")
    assert packed["compression"] == "zstd" and plain["compression"] == "none"
    assert packed["totals"]["bytes"] == plain["totals"]["bytes"]
    assert packed["totals"]["stored_bytes"] < packed["totals"]["bytes"] / 2
    text = {}
    for t in packed["tables"]:
        for f in t["files"]:
            stored = (tmp_path / "zstd" / f["path"]).read_bytes()
            assert f["path"].endswith(".copy.zst") and len(stored) == f["stored_bytes"]
            assert hashlib.sha256(stored).hexdigest() == f["sha256"]  # checkable without decompressing
            text[t["name"]] = text.get(t["name"], b"") + zstandard.ZstdDecompressor().decompressobj().decompress(stored)
    for t in plain["tables"]:  # the same masked COPY text, byte for byte
        assert text.get(t["name"], b"") == b"".join((tmp_path / "plain" / f["path"]).read_bytes() for f in t["files"])
    storage = open_storage(url)
    assert verify_and_record(storage, src, rules.bind(masking_key))["rows"] == packed["totals"]["rows"]
    target = new_db("pct_zstd")
    assert seed(url, target).rows == packed["totals"]["rows"]
    assert rows(target, "SELECT count(*) FROM users")[0][0] == counts["users"]


def _biggest(tmp_path, manifest):
    f = max((f for t in manifest["tables"] for f in t["files"]), key=lambda f: f["stored_bytes"])
    return tmp_path / "zstd" / f["path"]


@pytest.mark.parametrize("damage, says", [
    (lambda b: b[:len(b) // 2] + bytes([b[len(b) // 2] ^ 0xFF]) + b[len(b) // 2 + 1:], "corrupt zstd data"),
    (lambda b: b[:-20], "the zstd data ends early"),
])
def test_a_damaged_compressed_file_fails_verify_and_seed_clearly(sample_source, new_db, tmp_path, rules,
                                                                  masking_key, damage, says):
    src, _ = sample_source
    url, manifest = _export(src, rules, masking_key, tmp_path, "zstd", compression="zstd")
    storage = open_storage(url)
    verify_and_record(storage, src, rules.bind(masking_key))
    path = _biggest(tmp_path, manifest)
    path.write_bytes(damage(path.read_bytes()))
    target = new_db("pct_zstd_bad")
    with pytest.raises(ExportError, match=f"{path.name}: {says}"):
        seed(url, target)
    with pytest.raises(ExportError, match=f"{path.name}: {says}"):
        verify_and_record(storage, src, rules.bind(masking_key))
    assert "verified" not in read_manifest(storage)  # a failed verification withdraws the record


def test_an_unknown_compression_is_refused_before_anything_is_written(sample_source, tmp_path, rules, masking_key):
    with pytest.raises(ExportError, match="unknown compression 'gzip'; use one of: none, zstd"):
        run_export(sample_source[0], rules.bind(masking_key), f"file://{tmp_path}/x", compression="gzip")
    assert not (tmp_path / "x").exists()


def test_cli_export_compress_zstd(sample_source, tmp_path, capsys):
    url = f"file://{tmp_path}/cli"
    assert main(["export", "--source", sample_source[0], "--rules", str(RULES), "--to", url, "--compress", "zstd",
                 "--no-verify"]) == 0
    manifest = read_manifest(open_storage(url))
    assert manifest["compression"] == "zstd"
    assert f"{manifest['totals']['bytes']} bytes ({manifest['totals']['stored_bytes']} stored)" in capsys.readouterr().out
    assert all(p.name.endswith(".copy.zst") for p in (tmp_path / "cli" / "data").iterdir())
    with pytest.raises(SystemExit):
        main(["export", "--source", sample_source[0], "--rules", str(RULES), "--to", url, "--compress", "gzip"])
    assert "invalid choice: 'gzip'" in capsys.readouterr().err
