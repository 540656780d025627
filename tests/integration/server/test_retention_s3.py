"""Retention on the S3 endpoint (LocalStack enforces Object Lock): retain-until dates only grow,
an attempt to shorten one is refused by the store itself, a legal hold keeps an object whose date
has passed, and the expiry job's removal goes through only once S3 lets it."""

from __future__ import annotations

import datetime as dt
import hashlib
import os

import pytest
from botocore.exceptions import ClientError

from server.retention import DAY_MS
from server.services.expiry import ExpiryJob, ExpiryWarrant
from server.storage.base import object_key
from server.storage.s3 import S3Store
from tests.helpers.grants import store_test_grant
from tests.integration.server.test_storage import DEVICE

GRANT = store_test_grant()

pytestmark = pytest.mark.integration


def _warrant(key: str) -> ExpiryWarrant:
    job = ExpiryJob.__new__(ExpiryJob)  # a job without a database: these tests drive the store alone
    return ExpiryWarrant(key, _job=job)


async def test_s3_retention_only_grows(s3_store: S3Store) -> None:
    data = os.urandom(1024)
    sha = hashlib.sha256(data).hexdigest()
    key = object_key(DEVICE, 3, sha)
    assert await s3_store.put(key, data, sha)
    first = (await s3_store.get(key, GRANT))
    assert first is not None and first.retain_until_ms is not None
    later = first.retain_until_ms + 400 * DAY_MS
    assert await s3_store.extend_retention(key, later) == later
    # Asked for less: the store's date stays where it is.
    assert await s3_store.extend_retention(key, first.retain_until_ms) == later
    got = await s3_store.get(key, GRANT)
    assert got is not None and got.retain_until_ms == later
    # Going around this code: S3 itself refuses to shorten a COMPLIANCE retention.
    shorter = dt.datetime.fromtimestamp((later - 100 * DAY_MS) / 1000, tz=dt.UTC)
    with pytest.raises(ClientError, match=r"AccessDenied|InvalidRequest|Forbidden"):
        s3_store.client.put_object_retention(Bucket=s3_store.bucket, Key=key,
                                          Retention={"Mode": "COMPLIANCE", "RetainUntilDate": shorter})
    got = await s3_store.get(key, GRANT)
    assert got is not None and got.retain_until_ms == later
    # While locked the expiry job's removal is refused by the store: nothing leaves.
    assert await s3_store.remove_expired(key, _warrant(key)) is False
    assert await s3_store.get(key, GRANT) is not None


async def test_s3_legal_hold(s3_store: S3Store) -> None:
    data = os.urandom(1024)
    sha = hashlib.sha256(data).hexdigest()
    key = object_key(DEVICE, 4, sha)
    assert await s3_store.put(key, data, sha)
    await s3_store.set_legal_hold(key, True)
    assert await s3_store.legal_hold(key)
    versions = s3_store.client.list_object_versions(Bucket=s3_store.bucket, Prefix=key)["Versions"]
    with pytest.raises(ClientError):
        s3_store.client.delete_object(Bucket=s3_store.bucket, Key=key, VersionId=versions[0]["VersionId"])
    await s3_store.set_legal_hold(key, False)
    assert not await s3_store.legal_hold(key)
