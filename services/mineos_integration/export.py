"""Copy exports in Cloud Storage: streamed files, a manifest, and V4 signed URLs for MineOS.

Every file goes up in one request whose body is sent while it is produced (a JSON API multipart upload
with chunked transfer encoding), so memory holds one write of `STREAM_WRITE_BYTES` whatever the file's
size, and producing the file overlaps with Cloud Storage receiving it. Resumable uploads were the
other choice; they wait for a round trip per chunk, and an interrupted export is redone from its
source on redelivery anyway (Cloud Storage's own guidance puts single-request uploads from a service
in the same region at up to about 2 GB). The object exists only once the whole body has arrived.

Files are created with `ifGenerationMatch=0`, so a retried or taken-over export never overwrites a
file: a file that already exists was finished by an earlier attempt and is reused after reading back
its size and SHA-256.
"""

import hashlib
import itertools
import json
import secrets
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import google.auth
import google.auth.transport.requests
import requests
from google.api_core import exceptions as google_exceptions
from google.cloud import storage  # type: ignore[attr-defined]
from google.oauth2 import service_account

from mineos_integration.sources.base import Record

STREAM_WRITE_BYTES = 1024 * 1024  # what an upload gathers before each write to its connection
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
        blob = self._bucket.blob(self._prefix + file_name)
        created = None
        # An earlier attempt that finished this file is reused without reading the source again.
        if not blob.exists(timeout=STORAGE_TIMEOUT_SECONDS):
            created = self._create(blob, file_name, chunks, content_type, record_counter)
        self.files.append(
            created or describe_existing(blob, file_name, self._source, content_type, record_counter)
        )

    def _create(
        self,
        blob: storage.Blob,
        file_name: str,
        chunks: Iterable[bytes],
        content_type: str,
        record_counter: list[int] | None,
    ) -> ExportedFile | None:
        """Upload the file and describe it; None if another worker created it meanwhile."""
        hashing = _HashingWriter()
        try:
            upload_streamed(blob, (hashing.feed(chunk) for chunk in _gathered(chunks)), content_type)
        except google_exceptions.PreconditionFailed:
            return None
        return ExportedFile(
            blob.name,
            file_name,
            self._source,
            content_type,
            hashing.bytes,
            hashing.sha256.hexdigest(),
            record_counter[0] if record_counter is not None else None,
        )


def _gathered(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """The chunks joined into writes of at least STREAM_WRITE_BYTES (the last may be shorter): one
    write per ~1 KB record would cost a system call and a chunk header each."""
    pending: list[bytes] = []
    pending_bytes = 0
    for chunk in chunks:
        pending.append(chunk)
        pending_bytes += len(chunk)
        if pending_bytes >= STREAM_WRITE_BYTES:
            yield b"".join(pending)
            pending.clear()
            pending_bytes = 0
    if pending:
        yield b"".join(pending)


def upload_streamed(blob: storage.Blob, chunks: Iterable[bytes], content_type: str) -> None:
    """Create `blob` from `chunks` in one request, its body sent as the chunks come.

    Create-only (`ifGenerationMatch=0`). If `chunks` raises, the request is cut off and nothing is
    created. A cut-off body cannot be sent again, so nothing here retries: the caller redoes the file.

    Raises:
        google.api_core.exceptions.PreconditionFailed: the object exists already.
        google.api_core.exceptions.GoogleAPICallError: Cloud Storage refused or failed the upload
            (ServiceUnavailable when the connection broke).
    """
    client = blob.bucket.client
    boundary = secrets.token_hex(16)  # 128 random bits: not found in the data by chance
    metadata = json.dumps({"name": blob.name, "contentType": content_type})
    head = (
        f"--{boundary}\r\nContent-Type: application/json; charset=UTF-8\r\n\r\n{metadata}\r\n"
        f"--{boundary}\r\nContent-Type: {content_type}\r\n\r\n"
    ).encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    url = f"{client.api_endpoint}/upload/storage/v1/b/{quote(blob.bucket.name, safe='')}/o"
    try:
        # client._http is the client's authorised session: the credentials every other call uses.
        response = client._http.request(
            "POST",
            url,
            params={"uploadType": "multipart", "ifGenerationMatch": "0"},
            data=itertools.chain([head], chunks, [tail]),  # an iterator: sent with chunked encoding
            headers={"Content-Type": f'multipart/related; boundary="{boundary}"'},
            timeout=STORAGE_TIMEOUT_SECONDS,
        )
    except (requests.ConnectionError, requests.Timeout) as error:
        cut_off = f"upload cut off: {type(error).__name__}"
        raise google_exceptions.ServiceUnavailable(cut_off) from None  # type: ignore[no-untyped-call]
    if response.status_code >= 300:
        raise google_exceptions.from_http_response(response)  # type: ignore[no-untyped-call]


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
