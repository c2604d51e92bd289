"""Copy exports in Cloud Storage: streamed files, a manifest, and V4 signed URLs for MineOS.

Every file is streamed through a resumable upload (a few MiB in memory whatever the size) and
created with `if_generation_match=0`, so a retried or taken-over export never overwrites a file: a
file that already exists was finished by an earlier attempt (an unfinished resumable upload creates
nothing) and is reused after reading back its size and SHA-256.
"""

import hashlib
import json
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import google.auth
import google.auth.transport.requests
from google.api_core import exceptions as google_exceptions
from google.cloud import storage  # type: ignore[attr-defined]
from google.oauth2 import service_account

from mineos_integration.sources.base import Record

UPLOAD_CHUNK_BYTES = 8 * 1024 * 1024  # the resumable upload's chunk: the bound on memory per file
READ_CHUNK_BYTES = 1024 * 1024
STORAGE_TIMEOUT_SECONDS = 60.0
JSONL = "application/x-ndjson"


@dataclass(frozen=True)
class ExportedFile:
    """One file of an export, as the manifest and the ledger describe it (no personal data)."""

    object_name: str
    file_name: str  # the name MineOS shows, relative to the export
    source: str
    content_type: str
    bytes: int
    sha256: str
    records: int | None  # None for copied objects


def export_prefix(operation_id: str) -> str:
    return f"exports/{operation_id}/"


class _HashingWriter:
    def __init__(self) -> None:
        self.sha256 = hashlib.sha256()
        self.bytes = 0

    def feed(self, chunk: bytes) -> bytes:
        self.sha256.update(chunk)
        self.bytes += len(chunk)
        return chunk


def _json_lines(records: Iterable[Record], counter: list[int]) -> Iterator[bytes]:
    for record in records:
        counter[0] += 1
        yield json.dumps(record, ensure_ascii=False, separators=(",", ":"), default=str).encode() + b"\n"


class SourceExport:
    """The `ExportSink` one source writes to: its files go under `<prefix><source>`."""

    def __init__(self, bucket: storage.Bucket, prefix: str, source: str) -> None:
        self._bucket = bucket
        self._prefix = prefix
        self._source = source
        self.files: list[ExportedFile] = []

    def write_records(self, records: Iterable[Record]) -> None:
        counter = [0]
        self._upload(f"{self._source}.jsonl", _json_lines(records, counter), JSONL, counter)

    def write_file(self, relative_name: str, chunks: Iterable[bytes], content_type: str) -> None:
        self._upload(f"{self._source}/{relative_name.lstrip('/')}", chunks, content_type, None)

    def _upload(
        self, file_name: str, chunks: Iterable[bytes], content_type: str, record_counter: list[int] | None
    ) -> None:
        blob = self._bucket.blob(self._prefix + file_name, chunk_size=UPLOAD_CHUNK_BYTES)
        hashing = _HashingWriter()
        try:
            with blob.open(
                "wb", content_type=content_type, if_generation_match=0, timeout=STORAGE_TIMEOUT_SECONDS
            ) as stream:
                for chunk in chunks:
                    stream.write(hashing.feed(chunk))
            records = record_counter[0] if record_counter is not None else None
            self.files.append(
                ExportedFile(
                    blob.name,
                    file_name,
                    self._source,
                    content_type,
                    hashing.bytes,
                    hashing.sha256.hexdigest(),
                    records,
                )
            )
        except google_exceptions.PreconditionFailed:
            self.files.append(describe_existing(blob, file_name, self._source, content_type, record_counter))


def describe_existing(
    blob: storage.Blob, file_name: str, source: str, content_type: str, record_counter: list[int] | None
) -> ExportedFile:
    """Size, SHA-256 and line count of a file an earlier attempt finished, read back in chunks."""
    hashing = _HashingWriter()
    lines = 0
    with blob.open("rb", chunk_size=READ_CHUNK_BYTES, timeout=STORAGE_TIMEOUT_SECONDS) as stream:
        while chunk := stream.read(READ_CHUNK_BYTES):
            hashing.feed(chunk)
            lines += chunk.count(b"\n")
    return ExportedFile(
        blob.name,
        file_name,
        source,
        content_type,
        hashing.bytes,
        hashing.sha256.hexdigest(),
        lines if record_counter is not None else None,
    )


def write_manifest(
    bucket: storage.Bucket, prefix: str, operation: dict[str, str], files: list[ExportedFile]
) -> ExportedFile:
    """`manifest.json`: what the export holds, with each file's record count, bytes and SHA-256."""
    manifest = {
        "operation": operation,
        "created_at": datetime.now(UTC).isoformat(),
        "files": [
            {
                "fileName": file.file_name,
                "source": file.source,
                "contentType": file.content_type,
                "records": file.records,
                "bytes": file.bytes,
                "sha256": file.sha256,
            }
            for file in files
        ],
    }
    body = json.dumps(manifest, indent=2).encode()
    blob = bucket.blob(prefix + "manifest.json")
    try:
        blob.upload_from_string(
            body, content_type="application/json", if_generation_match=0, timeout=STORAGE_TIMEOUT_SECONDS
        )
    except google_exceptions.PreconditionFailed:
        body = blob.download_as_bytes(timeout=STORAGE_TIMEOUT_SECONDS)  # an earlier attempt's manifest
    return ExportedFile(
        blob.name, "manifest.json", "", "application/json", len(body), hashlib.sha256(body).hexdigest(), None
    )


def file_to_dict(file: ExportedFile) -> dict[str, Any]:
    return asdict(file)


class UrlSigner:
    """V4 signed GET URLs: with a local key file against the emulator, keyless (IAM signBlob as the
    service's own account) on Cloud Run."""

    def __init__(self, client: storage.Client, ttl_seconds: int, key_file: str = "") -> None:
        self._client = client
        self._ttl = timedelta(seconds=ttl_seconds)
        self._key_credentials = (
            service_account.Credentials.from_service_account_file(key_file)  # type: ignore[no-untyped-call]
            if key_file
            else None
        )
        self._keyless_credentials: Any = None

    def _signing_arguments(self) -> dict[str, Any]:
        if self._key_credentials is not None:
            return {"credentials": self._key_credentials}
        if self._keyless_credentials is None:
            self._keyless_credentials, _ = google.auth.default()
        credentials = self._keyless_credentials
        if not credentials.valid:
            credentials.refresh(google.auth.transport.requests.Request())
        # With an access token and the account's email the library signs through IAM signBlob.
        return {"service_account_email": credentials.service_account_email, "access_token": credentials.token}

    def signed_url(self, bucket_name: str, object_name: str) -> str:
        blob = self._client.bucket(bucket_name).blob(object_name)
        url: str = blob.generate_signed_url(
            version="v4",
            method="GET",
            expiration=self._ttl,
            api_access_endpoint=self._client.api_endpoint,
            **self._signing_arguments(),
        )
        return url
