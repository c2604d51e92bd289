"""The Cloud Storage connector against fake-gcs-server (a bucket of its own per test: it has no reset)."""

from __future__ import annotations

import gzip
import os
from datetime import datetime
from typing import Any

import pytest
from google.cloud import storage  # type: ignore[attr-defined]
from pydantic import ValidationError

from mineos_integration.contract import Identity
from mineos_integration.sources.base import DataSource, DeletionResult, PreviewProperty, SourceError
from mineos_integration.sources.gcs import CHUNK_BYTES, GcsSourceConfig, human_size
from tests.sources_helpers import CollectingSink, emulator_context, unique_name

pytestmark = pytest.mark.emulators

PERSON = "ada@example.com"


@pytest.fixture
def bucket(emulator_env: dict[str, str]) -> storage.Bucket:
    client = storage.Client(project=os.environ["GOOGLE_CLOUD_PROJECT"])
    return client.create_bucket(unique_name("objects"))


def upload(bucket: storage.Bucket, objects: dict[str, bytes], content_type: str = "text/plain") -> None:
    for name, data in objects.items():
        bucket.blob(name).upload_from_string(data, content_type=content_type)


def names(bucket: storage.Bucket) -> set[str]:
    return {blob.name for blob in bucket.client.list_blobs(bucket.name)}


def make_config(bucket_name: str, **overrides: Any) -> GcsSourceConfig:
    fields: dict[str, Any] = {
        "type": "gcs",
        "name": "uploads",
        "identity": Identity.EMAIL,
        "bucket": bucket_name,
        "prefix": "users/{value}/",
    }
    fields.update(overrides)
    return GcsSourceConfig.model_validate(fields)


def make_source(bucket_name: str, **overrides: Any) -> DataSource:
    return make_config(bucket_name, **overrides).build(emulator_context())


def seed_people(bucket: storage.Bucket) -> None:
    upload(
        bucket,
        {
            f"users/{PERSON}/profile.json": b'{"name": "Ada"}',
            f"users/{PERSON}/photos/1.txt": b"one",
            f"users/{PERSON}x/notes.txt": b"someone whose value starts with the person's",
            "users/grace@example.com/profile.json": b'{"name": "Grace"}',
            f"other/{PERSON}/kept.txt": b"outside the prefix",
        },
    )


def test_gcs_export_writes_exactly_the_persons_objects_with_relative_names(bucket):
    seed_people(bucket)
    bucket.blob(f"users/{PERSON}/photos/").upload_from_string(b"")  # a "folder" placeholder
    sink = CollectingSink()

    make_source(bucket.name).export(PERSON, sink)

    assert sink.files == {"profile.json": b'{"name": "Ada"}', "photos/1.txt": b"one"}
    assert sink.content_types == {"profile.json": "text/plain", "photos/1.txt": "text/plain"}


def test_gcs_export_large_object_streams_in_bounded_chunks(bucket):
    data = os.urandom(3 * CHUNK_BYTES + 12345)
    upload(bucket, {f"users/{PERSON}/video.bin": data}, content_type="application/octet-stream")
    sink = CollectingSink()

    make_source(bucket.name).export(PERSON, sink)

    assert sink.files["video.bin"] == data
    assert 0 < sink.largest_chunk <= CHUNK_BYTES


def test_gcs_export_gzip_encoded_object_is_copied_compressed(bucket):
    compressed = gzip.compress(b"hello " * 1000)
    blob = bucket.blob(f"users/{PERSON}/log.txt")
    blob.content_encoding = "gzip"
    blob.upload_from_string(compressed, content_type="text/plain")
    sink = CollectingSink()

    make_source(bucket.name).export(PERSON, sink)

    assert sink.files == {"log.txt.gz": compressed}
    assert sink.content_types == {"log.txt.gz": "application/gzip"}


def test_gcs_count_is_the_number_of_the_persons_files(bucket):
    seed_people(bucket)
    source = make_source(bucket.name)

    assert source.count(PERSON) == 2
    assert source.count("nobody@example.com") == 0


def test_gcs_delete_removes_exactly_the_persons_objects_and_verifies(bucket):
    seed_people(bucket)
    bucket.blob(f"users/{PERSON}/photos/").upload_from_string(b"")
    source = make_source(bucket.name)

    result = source.delete(PERSON)

    assert result == DeletionResult(found=3, changed=3, remaining=0)
    assert names(bucket) == {
        f"users/{PERSON}x/notes.txt",
        "users/grace@example.com/profile.json",
        f"other/{PERSON}/kept.txt",
    }
    assert source.delete(PERSON) == DeletionResult(found=0, changed=0, remaining=0)


def test_gcs_delete_retain_mode_keeps_everything(bucket):
    seed_people(bucket)

    result = make_source(bucket.name, delete={"mode": "retain", "reason": "tax records"}).delete(PERSON)

    assert result == DeletionResult(found=2, changed=0, remaining=2)
    assert len(names(bucket)) == 5


def test_gcs_preview_shows_files_size_and_last_update(bucket):
    upload(bucket, {f"users/{PERSON}/a.bin": b"x" * 1000, f"users/{PERSON}/b.bin": b"y" * 1000})
    newest = max(blob.updated for blob in bucket.client.list_blobs(bucket.name))

    preview = make_source(bucket.name).preview(PERSON)

    assert preview == [
        PreviewProperty("Files", "2"),
        PreviewProperty("Total size", "2.0 KiB"),
        PreviewProperty("Last updated", newest.isoformat()),
    ]
    assert datetime.fromisoformat(preview[2].value).tzinfo is not None


def test_gcs_preview_unknown_person_is_empty(bucket):
    seed_people(bucket)

    assert make_source(bucket.name).preview("nobody@example.com") == []


@pytest.mark.parametrize("value", ["a/b", "..", "a..b", ".", "", "ada\n", "../users"])
def test_gcs_path_traversal_value_is_refused_and_nothing_deleted(bucket, value):
    seed_people(bucket)
    source = make_source(bucket.name)

    with pytest.raises(SourceError) as raised:
        source.delete(value)

    assert raised.value.transient is False
    assert len(names(bucket)) == 5


def test_gcs_missing_bucket_is_a_permanent_error(emulator_env):
    source = make_source(unique_name("missing"))

    with pytest.raises(SourceError) as raised:
        source.count(PERSON)

    assert raised.value.transient is False
    assert PERSON not in str(raised.value)


def test_gcs_unreachable_store_is_a_transient_error(emulator_env, monkeypatch):
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", "http://127.0.0.1:9")
    source = make_config("any-bucket").build(emulator_context(timeout_seconds=1.0))

    with pytest.raises(SourceError) as raised:
        source.preview(PERSON)

    assert raised.value.transient is True


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"delete": {"mode": "anonymise", "fields": {"name": "null"}}}, "anonymise is not possible"),
        ({"prefix": "users/"}, "exactly once"),
        ({"prefix": "users/{value}"}, "'/' right after"),
        ({"prefix": "users/{value}.json"}, "'/' right after"),
        ({"bucket": "Not_A_Bucket"}, "bucket"),
    ],
)
def test_gcs_config_invalid_is_refused(overrides, message):
    with pytest.raises(ValidationError, match=message):
        make_config("uploads-bucket", **overrides)


@pytest.mark.parametrize(
    ("size_bytes", "text"),
    [(0, "0 B"), (1023, "1023 B"), (1536, "1.5 KiB"), (20 * 1024**2, "20.0 MiB"), (3 * 1024**4, "3.0 TiB")],
)
def test_gcs_human_size_uses_binary_units(size_bytes, text):
    assert human_size(size_bytes) == text
