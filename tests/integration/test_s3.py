"""Export to and seed from a real S3 API (moto's server, over HTTP)."""

import boto3
import pytest

from prodclone.errors import ExportError
from prodclone.export import MANIFEST, run_export, verify_and_record
from prodclone.seed import seed
from prodclone.storage import StorageTarget, open_storage
from support import rows


def test_export_to_s3_and_seed_from_it(sample_source, new_db, s3, rules, masking_key):
    opts, bucket = s3
    url = f"s3://{bucket}/nightly/run1"
    target = StorageTarget(url, opts)
    assert opts["aws_secret_access_key"] not in repr(target)  # credentials travel with it, never shown
    manifest = run_export(sample_source[0], rules.bind(masking_key), target, jobs=2)
    keys = {o["Key"] for o in boto3.client("s3", **opts).list_objects_v2(Bucket=bucket)["Contents"]}
    assert f"nightly/run1/{MANIFEST}" in keys and "nightly/run1/schema/pre-data.sql" in keys
    verify_and_record(open_storage(target), sample_source[0], rules.bind(masking_key))
    base = new_db("pct_s3")
    result = seed(target, base)
    assert result.rows == manifest["totals"]["rows"]
    assert rows(base, "SELECT count(*) FROM users")[0][0] == sample_source[1]["users"]


def test_bucket_failure_mid_export_aborts_uploads_and_writes_no_manifest(sample_source, s3, rules, masking_key, monkeypatch):
    opts, bucket = s3
    from prodclone import storage

    calls = {"n": 0}
    real = storage._S3Writer.close

    def failing_close(self):
        calls["n"] += 1
        if calls["n"] == 3:  # the bucket "fills" on the third object
            self.client = _Refusing(self.client)
        return real(self)

    monkeypatch.setattr(storage._S3Writer, "close", failing_close)
    with pytest.raises(ExportError, match="uploading s3://"):
        run_export(sample_source[0], rules.bind(masking_key), StorageTarget(f"s3://{bucket}/x", opts))
    st = open_storage(StorageTarget(f"s3://{bucket}/x", opts))
    assert not st.exists(MANIFEST)
    assert boto3.client("s3", **opts).list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


class _Refusing:
    """Wraps a real client; put/complete fail like a bucket over quota."""

    def __init__(self, client):
        self._c = client

    def __getattr__(self, name):
        if name in ("put_object", "complete_multipart_upload", "upload_part"):
            def refuse(**kw):
                raise RuntimeError("QuotaExceeded: bucket is full")
            return refuse
        return getattr(self._c, name)
