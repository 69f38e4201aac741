"""Storage on any S3 endpoint (AWS, MinIO) through boto3; downloads are presigned GETs, or
URLs the API signs and serves when the S3 service is not reachable by users (`api_urls`)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, BinaryIO, cast

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from shared.storage.base import ObjectMissing, Storage, StorageError, StoredObject
from shared.storage.signed_urls import SignedUrls

if TYPE_CHECKING:  # the stubs are a dev dependency (types-boto3[s3]); never imported at run time
    from types_boto3_s3.client import S3Client
    from types_boto3_s3.type_defs import ObjectIdentifierTypeDef


class _CountingReader:
    """Counts bytes as boto3 streams them, so the size is known without buffering."""

    def __init__(self, stream: BinaryIO) -> None:
        self.stream = stream
        self.size = 0

    def read(self, amount: int = -1) -> bytes:
        chunk = self.stream.read(amount)
        self.size += len(chunk)
        return chunk


class S3Storage(Storage):
    def __init__(
        self,
        bucket: str,
        endpoint_url: str | None,
        region: str,
        create_bucket: bool,
        client: Any | None = None,
        public_endpoint_url: str | None = None,
        api_urls: SignedUrls | None = None,
    ) -> None:
        self.bucket = bucket
        self.api_urls = api_urls
        self.create_bucket = create_bucket
        config = Config(
            retries={"max_attempts": 3, "mode": "standard"},
            signature_version="s3v4",
            connect_timeout=5,
            read_timeout=60,
        )
        self.client: S3Client = client or boto3.client(
            "s3", endpoint_url=endpoint_url, region_name=region, config=config
        )
        # Presigned URLs name the host users reach (the signature covers it), which inside
        # a compose network or a cluster is not the one the services use.
        self.signer: S3Client = (
            boto3.client("s3", endpoint_url=public_endpoint_url, region_name=region, config=config)
            if public_endpoint_url
            else self.client
        )

    def ensure_ready(self) -> None:
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except ClientError as error:
            if not self.create_bucket:
                raise StorageError(f"bucket {self.bucket} is not reachable: {error}") from error
            self.client.create_bucket(Bucket=self.bucket)

    def put(self, key: str, stream: BinaryIO, content_type: str) -> StoredObject:
        reader = _CountingReader(stream)
        try:
            self.client.upload_fileobj(
                # boto3 only calls read() on it; the stubs ask for a whole IO.
                cast(BinaryIO, reader),
                self.bucket,
                key,
                ExtraArgs={"ContentType": content_type},
            )
        except (BotoCoreError, ClientError) as error:
            raise StorageError(f"cannot store {key}: {error}") from error
        return StoredObject(key, reader.size, content_type)

    def open(self, key: str) -> Iterator[bytes]:
        try:
            body = self.client.get_object(Bucket=self.bucket, Key=key)["Body"]
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                raise ObjectMissing(f"no object {key}") from error
            raise StorageError(f"cannot read {key}: {error}") from error
        except BotoCoreError as error:
            raise StorageError(f"cannot read {key}: {error}") from error
        yield from body.iter_chunks(1024 * 1024)

    def delete(self, key: str) -> None:
        try:
            self.client.delete_object(Bucket=self.bucket, Key=key)
        except (BotoCoreError, ClientError) as error:
            raise StorageError(f"cannot delete {key}: {error}") from error

    def delete_prefix(self, prefix: str) -> int:
        deleted = 0
        try:
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=prefix
            )
            for page in pages:
                keys: list[ObjectIdentifierTypeDef] = [
                    {"Key": item["Key"]} for item in page.get("Contents", [])
                ]
                if keys:
                    self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": keys})
                    deleted += len(keys)
        except (BotoCoreError, ClientError) as error:
            raise StorageError(f"cannot delete {prefix}: {error}") from error
        return deleted

    def download_url(self, key: str, filename: str, expires_in: int) -> str:
        if self.api_urls is not None:
            return self.api_urls.url(key, filename, expires_in)
        return self.signer.generate_presigned_url(
            "get_object",
            Params={
                "Bucket": self.bucket,
                "Key": key,
                "ResponseContentDisposition": f'attachment; filename="{filename}"',
            },
            ExpiresIn=expires_in,
        )
