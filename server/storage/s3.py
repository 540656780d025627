"""The S3 footage store: every object written in COMPLIANCE Object Lock mode, checksummed.

boto3 is synchronous, so every call runs in this store's own thread pool (sized to boto3's
connection pool), never on the event loop. Devices upload with presigned PUT URLs whose signed
headers include ``x-amz-checksum-sha256`` and the Object Lock mode and retain-until date: S3
refuses the PUT unless the device sends exactly those headers with exactly those bytes. That is
what makes this store write-once: a locked object version cannot be deleted or overwritten by
anyone, including the operator, until its retention ends.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import hashlib
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import boto3
from botocore.config import Config as BotoConfig
from botocore.exceptions import BotoCoreError, ClientError

from custody.clock import Clock
from server.config import S3Config
from server.storage.base import (
    ContentMismatch,
    FootageStore,
    ObjectExists,
    StoredObject,
    StoreUnavailable,
    UploadTarget,
    check_warrant,
)
from server.storage.grant import AccessGrant, require_grant

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

CONTENT_TYPE = "video/mp4"
_MISSING = {"NoSuchKey", "404", "NotFound"}


def _b64_sha256(sha256_hex: str) -> str:
    return base64.b64encode(bytes.fromhex(sha256_hex)).decode("ascii")


def _ms(when: dt.datetime) -> int:
    return int(when.timestamp() * 1000)


class S3Store(FootageStore):
    """Footage in an S3 bucket with Object Lock."""

    kind = "s3"
    write_once = True

    def __init__(self, config: S3Config, clock: Clock, *, threads: int = 16) -> None:
        self.config = config
        self.clock = clock
        self.bucket = config.bucket
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="s3")
        self.client: S3Client = boto3.client(
            "s3",
            endpoint_url=config.endpoint_url,
            region_name=config.region,
            aws_access_key_id=config.access_key_id,
            aws_secret_access_key=config.secret_access_key.reveal() if config.secret_access_key else None,
            config=BotoConfig(
                signature_version="s3v4",
                s3={"addressing_style": config.addressing_style},  # type: ignore[arg-type]
                max_pool_connections=threads,
                retries={"max_attempts": 3, "mode": "standard"},
                # Checksums only where we ask for them: the presigned URL must carry ours, not boto's.
                request_checksum_calculation="when_required",
                response_checksum_validation="when_required",
            ),
        )

    async def _call(self, fn: Any, /, **kwargs: Any) -> Any:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._pool, lambda: fn(**kwargs))
        except ClientError:
            raise
        except BotoCoreError as exc:
            raise StoreUnavailable(f"S3 endpoint unavailable: {exc}") from exc

    async def start(self) -> None:
        """Check the bucket exists with Object Lock enabled (or create it so, when configured)."""
        try:
            await self._call(self.client.head_bucket, Bucket=self.bucket)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") not in _MISSING or not self.config.create_bucket:
                raise StoreUnavailable(f"bucket {self.bucket!r} is not usable: {exc}") from exc
            await self._call(self.client.create_bucket, Bucket=self.bucket, ObjectLockEnabledForBucket=True)
        try:
            lock = await self._call(self.client.get_object_lock_configuration, Bucket=self.bucket)
        except ClientError as exc:
            raise StoreUnavailable(f"bucket {self.bucket!r} has no Object Lock configuration: {exc}") from exc
        if lock.get("ObjectLockConfiguration", {}).get("ObjectLockEnabled") != "Enabled":
            raise StoreUnavailable(f"bucket {self.bucket!r} does not have Object Lock enabled")

    async def close(self) -> None:
        """Stop the thread pool."""
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _put_params(self, key: str, sha256: str, now_ms: int) -> dict[str, Any]:
        retain = dt.datetime.fromtimestamp(now_ms / 1000, tz=dt.UTC) + dt.timedelta(days=self.config.retention_days)
        return {
            "Bucket": self.bucket,
            "Key": key,
            "ContentType": CONTENT_TYPE,
            "ChecksumSHA256": _b64_sha256(sha256),
            "ObjectLockMode": "COMPLIANCE",
            # Whole seconds: S3 stores retain-until dates at second precision.
            "ObjectLockRetainUntilDate": retain.replace(microsecond=0),
        }

    def upload_target(self, key: str, sha256: str, size: int, now_ms: int, ttl_s: int) -> UploadTarget:
        """A presigned PUT; the headers returned are exactly the ones signed into the URL."""
        params = self._put_params(key, sha256, now_ms)
        captured: dict[str, str] = {}

        def capture(request: Any, **_: Any) -> None:
            captured.update({k: v for k, v in request.headers.items() if k.lower() != "content-length"})

        # The headers boto3 signs are only visible on the request it builds: catch them there,
        # so what the device is told to send is byte for byte what the signature covers.
        self.client.meta.events.register("before-sign.s3.PutObject", capture)
        try:
            url = self.client.generate_presigned_url("put_object", Params=params, ExpiresIn=ttl_s)
        finally:
            self.client.meta.events.unregister("before-sign.s3.PutObject", capture)
        headers = {k: v.decode() if isinstance(v, bytes) else str(v) for k, v in captured.items()}
        return UploadTarget("PUT", url, headers, now_ms + ttl_s * 1000)

    async def put(self, key: str, data: bytes, sha256: str) -> bool:
        """PUT once with checksum and COMPLIANCE lock; a second PUT of the same bytes is skipped."""
        if hashlib.sha256(data).hexdigest() != sha256:
            raise ContentMismatch("data does not match its sha256")
        existing = await self._head(key)
        if existing is not None:
            if existing.get("ChecksumSHA256") not in (None, _b64_sha256(sha256)):
                raise ObjectExists(f"a different body is already stored under {key}")
            return False
        params = self._put_params(key, sha256, self.clock.now_ms())
        try:
            await self._call(self.client.put_object, Body=data, **params)
        except ClientError as exc:
            raise StoreUnavailable(f"S3 refused the PUT of {key}: {exc}") from exc
        return True

    async def _head(self, key: str) -> dict[str, Any] | None:
        try:
            result: dict[str, Any] = await self._call(
                self.client.head_object, Bucket=self.bucket, Key=key, ChecksumMode="ENABLED"
            )
            return result
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in _MISSING:
                return None
            raise StoreUnavailable(f"S3 refused the HEAD of {key}: {exc}") from exc

    async def get(self, key: str, grant: AccessGrant) -> StoredObject | None:
        """GET the object with its checksum and lock state (only under an access grant that covers ``key``)."""
        require_grant(grant, key)
        try:
            obj = await self._call(self.client.get_object, Bucket=self.bucket, Key=key, ChecksumMode="ENABLED")
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in _MISSING:
                return None
            raise StoreUnavailable(f"S3 refused the GET of {key}: {exc}") from exc
        loop = asyncio.get_running_loop()
        data: bytes = await loop.run_in_executor(self._pool, obj["Body"].read)
        checksum = obj.get("ChecksumSHA256")
        retain = obj.get("ObjectLockRetainUntilDate")
        return StoredObject(
            data,
            lock_mode=obj.get("ObjectLockMode"),
            retain_until_ms=_ms(retain) if retain is not None else None,
            store_sha256=base64.b64decode(checksum).hex() if checksum and "-" not in checksum else None,
        )

    async def extend_retention(self, key: str, until_ms: int) -> int | None:
        """Move the COMPLIANCE retain-until date later (never earlier: S3 itself refuses that)."""
        head = await self._head(key)
        if head is None:
            return None
        current = head.get("ObjectLockRetainUntilDate")
        current_ms = _ms(current) if current is not None else None
        if current_ms is not None and current_ms >= until_ms:
            return current_ms
        # Round up to the next whole second: S3 keeps second precision, and rounding down would shorten.
        until = dt.datetime.fromtimestamp(-(-until_ms // 1000), tz=dt.UTC)
        try:
            await self._call(self.client.put_object_retention, Bucket=self.bucket, Key=key,
                             Retention={"Mode": "COMPLIANCE", "RetainUntilDate": until})
        except ClientError as exc:
            raise StoreUnavailable(f"S3 refused to extend the retention of {key}: {exc}") from exc
        return int(until.timestamp() * 1000)

    async def set_legal_hold(self, key: str, on: bool) -> None:
        """Object Lock legal hold: keeps the object whatever its retain-until date says."""
        try:
            await self._call(self.client.put_object_legal_hold, Bucket=self.bucket, Key=key,
                             LegalHold={"Status": "ON" if on else "OFF"})
        except ClientError as exc:
            raise StoreUnavailable(f"S3 refused the legal hold change on {key}: {exc}") from exc

    async def legal_hold(self, key: str) -> bool:
        """Whether the object's legal hold is on."""
        try:
            got = await self._call(self.client.get_object_legal_hold, Bucket=self.bucket, Key=key)
        except ClientError:
            return False
        return bool(got.get("LegalHold", {}).get("Status") == "ON")

    async def remove_expired(self, key: str, warrant: object) -> bool:
        """Delete every version of ``key``; S3 refuses while its lock or legal hold still applies."""
        check_warrant(key, warrant)
        try:
            listed = await self._call(self.client.list_object_versions, Bucket=self.bucket, Prefix=key)
            versions = [v["VersionId"] for v in listed.get("Versions", []) if v["Key"] == key]
            for version in versions:
                await self._call(self.client.delete_object, Bucket=self.bucket, Key=key, VersionId=version)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("AccessDenied", "InvalidRequest"):
                return False  # still locked by the store: it, not this job, has the last word
            raise StoreUnavailable(f"S3 refused the removal of {key}: {exc}") from exc
        return bool(versions)
