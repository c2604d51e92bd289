"""Streamed export files against fake-gcs-server (a bucket of its own per test: it has no reset)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator

import pytest
from google.api_core import exceptions as google_exceptions
from google.auth.credentials import AnonymousCredentials
from google.cloud import storage  # type: ignore[attr-defined]

from infra.emulators import free_port
from mineos_integration.export import JSONL, STREAM_WRITE_BYTES, SourceExport, _gathered, upload_streamed
from mineos_integration.sources.base import SourceError
from tests.sources_helpers import unique_name

pytestmark = pytest.mark.emulators

PREFIX = "exports/operation-1/"


@pytest.fixture
def bucket(monkeypatch: pytest.MonkeyPatch, gcs_server: str) -> storage.Bucket:
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs_server)
    client = storage.Client(project="test-export")
    return client.create_bucket(unique_name("exports"))


def records(count: int, note_bytes: int = 100) -> list[dict[str, object]]:
    note = "é" + "x" * note_bytes  # not ASCII: the file is UTF-8, not \u escapes
    return [{"id": index, "email": "ada@example.com", "note": note} for index in range(count)]


def json_lines(rows: list[dict[str, object]]) -> bytes:
    return b"".join(
        json.dumps(row, ensure_ascii=False, separators=(",", ":")).encode() + b"\n" for row in rows
    )


def never_read() -> Iterator[dict[str, object]]:
    raise AssertionError("the source was read although its file exists")
    yield {}  # pragma: no cover - makes this a generator


def test_write_records_creates_one_jsonl_file_described_by_size_hash_and_count(bucket):
    rows = records(3)
    sink = SourceExport(bucket, PREFIX, "orders")

    sink.write_records(iter(rows))

    expected = json_lines(rows)
    (exported,) = sink.files
    assert (exported.object_name, exported.file_name, exported.source) == (
        PREFIX + "orders.jsonl",
        "orders.jsonl",
        "orders",
    )
    assert exported.records == 3
    assert exported.bytes == len(expected)
    assert exported.sha256 == hashlib.sha256(expected).hexdigest()
    stored = bucket.get_blob(PREFIX + "orders.jsonl")
    assert stored.content_type == JSONL
    assert stored.download_as_bytes() == expected


def test_write_records_over_several_writes_arrives_whole_and_in_order(bucket):
    rows = records(12_000, note_bytes=300)  # ~3.7 MB: four writes of the upload's body
    sink = SourceExport(bucket, PREFIX, "events")

    sink.write_records(iter(rows))

    expected = json_lines(rows)
    assert len(expected) > 3 * STREAM_WRITE_BYTES
    (exported,) = sink.files
    assert (exported.records, exported.bytes) == (12_000, len(expected))
    assert bucket.blob(PREFIX + "events.jsonl").download_as_bytes() == expected
    assert exported.sha256 == hashlib.sha256(expected).hexdigest()


def test_write_file_stores_binary_bytes_even_when_they_look_like_multipart_framing(bucket):
    data = b"\r\n--boundary\r\nContent-Type: text/plain\r\n\r\n" + bytes(range(256)) * 50 + b"\r\n--"
    sink = SourceExport(bucket, PREFIX, "uploads")

    sink.write_file("/photos/1.bin", iter([data[:100], data[100:]]), "application/octet-stream")

    (exported,) = sink.files
    assert exported.object_name == PREFIX + "uploads/photos/1.bin"
    assert exported.records is None
    stored = bucket.get_blob(exported.object_name)
    assert stored.content_type == "application/octet-stream"
    assert stored.download_as_bytes() == data
    assert exported.sha256 == hashlib.sha256(data).hexdigest()


def test_file_finished_by_an_earlier_attempt_is_reused_without_reading_the_source(bucket):
    earlier = json_lines(records(5))
    bucket.blob(PREFIX + "orders.jsonl").upload_from_string(earlier, content_type=JSONL)
    sink = SourceExport(bucket, PREFIX, "orders")

    sink.write_records(never_read())

    (exported,) = sink.files
    assert (exported.records, exported.bytes) == (5, len(earlier))
    assert exported.sha256 == hashlib.sha256(earlier).hexdigest()


def test_file_created_by_another_worker_during_the_upload_is_kept_and_described(bucket):
    theirs = json_lines(records(2))
    ours = records(4)

    def rows_while_another_worker_finishes_first() -> Iterator[dict[str, object]]:
        bucket.blob(PREFIX + "orders.jsonl").upload_from_string(theirs, content_type=JSONL)
        yield from ours

    sink = SourceExport(bucket, PREFIX, "orders")
    sink.write_records(rows_while_another_worker_finishes_first())

    assert bucket.blob(PREFIX + "orders.jsonl").download_as_bytes() == theirs  # create-only: not replaced
    (exported,) = sink.files
    assert (exported.records, exported.bytes) == (2, len(theirs))
    assert exported.sha256 == hashlib.sha256(theirs).hexdigest()


def test_source_failing_mid_stream_raises_and_creates_no_file(bucket):
    before_failure = records(8_000, note_bytes=300)
    assert len(json_lines(before_failure)) > 2 * STREAM_WRITE_BYTES  # writes went out before it failed

    def rows_then_failure() -> Iterator[dict[str, object]]:
        yield from before_failure
        raise SourceError("connection to the database lost", transient=True)

    sink = SourceExport(bucket, PREFIX, "events")

    with pytest.raises(SourceError, match="connection to the database lost"):
        sink.write_records(rows_then_failure())

    assert bucket.get_blob(PREFIX + "events.jsonl") is None
    assert sink.files == []


def test_upload_streamed_into_a_missing_bucket_raises_not_found(bucket):
    missing = bucket.client.bucket(unique_name("missing"))

    with pytest.raises(google_exceptions.NotFound):
        upload_streamed(missing.blob("file.jsonl"), iter([b"{}\n"]), JSONL)


def test_upload_streamed_to_an_unreachable_server_is_service_unavailable(monkeypatch):
    monkeypatch.delenv("STORAGE_EMULATOR_HOST", raising=False)
    client = storage.Client(
        project="test-export",
        credentials=AnonymousCredentials(),
        client_options={"api_endpoint": f"http://127.0.0.1:{free_port()}"},  # nothing listens there
    )
    blob = client.bucket("exports").blob("file.jsonl")

    with pytest.raises(google_exceptions.ServiceUnavailable, match="upload cut off"):
        upload_streamed(blob, iter([b"{}\n"]), JSONL)


def test_gathered_joins_small_pieces_into_bounded_writes_in_order():
    pieces = [bytes([index % 251]) * 1000 for index in range(3000)]  # ~3 MB of 1 KB pieces

    writes = list(_gathered(pieces))

    assert b"".join(writes) == b"".join(pieces)
    assert all(STREAM_WRITE_BYTES <= len(write) < STREAM_WRITE_BYTES + 1000 for write in writes[:-1])
    assert 0 < len(writes[-1]) < STREAM_WRITE_BYTES + 1000
    assert list(_gathered([])) == []
