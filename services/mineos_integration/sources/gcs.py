"""The Cloud Storage connector: a person's objects are those under one prefix, e.g. `users/{value}/`.

Exports stream every object in 1 MiB ranged reads (constant memory whatever the size), pinned to
the generation that was listed. Deletes remove every generation under the prefix (a versioned bucket
would otherwise keep the person's data as noncurrent versions), then list again to verify. Note that
a bucket's soft-delete policy still keeps deleted objects restorable for its retention period.

Counts: `count`, export and preview see the live files; "folder" placeholders (`…/`) are skipped.
A delete's `found`/`changed`/`remaining` count every object generation, placeholders included.
"""

import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any, Literal, Self

from google.api_core import exceptions as google_exceptions
from pydantic import Field, model_validator

from mineos_integration.sources.base import (
    DataSource,
    DeleteMode,
    DeletionResult,
    ExportSink,
    PreviewProperty,
    SourceConfig,
    SourceContext,
    SourceError,
)
from mineos_integration.sources.google_common import google_retry_policy, source_error_from_google
from mineos_integration.sources.values import check_identity_value

CHUNK_BYTES = 1024 * 1024
_CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f]")
_END = object()
_SUMMARY_FIELDS = "items(name,size,updated,generation),nextPageToken"


class GcsSourceConfig(SourceConfig):
    """Objects in one bucket under a per-person prefix, e.g. `bucket: avatars`, `prefix: users/{value}/`."""

    type: Literal["gcs"]
    bucket: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]$")
    prefix: str = Field(min_length=1)

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.prefix.count("{value}") != 1:
            raise ValueError("prefix must contain {value} exactly once")
        # Without a "/" right after the value, "users/ab" would also match the objects of "abc".
        if "{value}/" not in self.prefix:
            raise ValueError("prefix must have '/' right after {value}, e.g. users/{value}/")
        if self.delete.mode is DeleteMode.ANONYMISE:
            raise ValueError(
                "delete mode anonymise is not possible for Cloud Storage objects: use delete or retain"
            )
        return self

    def build(self, context: SourceContext) -> DataSource:
        return GcsSource(self, context)


class GcsSource:
    """A `DataSource` over the objects under one prefix (see `GcsSourceConfig`)."""

    def __init__(self, config: GcsSourceConfig, context: SourceContext) -> None:
        self.config: SourceConfig = config
        self._config = config
        self._context = context
        self._timeout = context.timeout_seconds
        self._retry = google_retry_policy(context.timeout_seconds)
        self._client_instance: Any = None
        self._what = f"gcs source '{config.name}'"

    def count(self, identity_value: str) -> int:
        with self._errors("count"):
            return sum(1 for _ in self._files(identity_value, fields=_SUMMARY_FIELDS))

    def export(self, identity_value: str, sink: ExportSink) -> None:
        prefix = self._prefix(identity_value)
        # The sink is called outside our error translation: its failures are its own to report.
        for blob in self._translated(self._files(identity_value), "export"):
            relative_name = blob.name[len(prefix) :]
            content_type = blob.content_type or "application/octet-stream"
            gzipped = blob.content_encoding == "gzip"
            if gzipped:
                # Stored compressed: copy the stored bytes (Cloud Storage ignores ranges when it
                # decompresses), and say what they are.
                content_type = "application/gzip"
                relative_name = relative_name if relative_name.endswith(".gz") else f"{relative_name}.gz"
            sink.write_file(relative_name, self._chunks(blob, raw=gzipped), content_type)

    def delete(self, identity_value: str) -> DeletionResult:
        if self._config.delete.mode is DeleteMode.RETAIN:
            found = self.count(identity_value)
            return DeletionResult(found=found, changed=0, remaining=found)
        with self._errors("delete"):
            # Names only, listed before deleting: paging through a listing while deleting from it
            # can skip objects.
            versions = [(blob.name, blob.generation) for blob in self._versions(identity_value)]
            bucket = self._client().bucket(self._config.bucket)
            changed = 0
            for name, generation in versions:
                try:
                    # A given generation: idempotent, so safe to retry.
                    bucket.delete_blob(name, generation=generation, retry=self._retry, timeout=self._timeout)
                except google_exceptions.NotFound:
                    continue  # already gone
                changed += 1
        with self._errors("verify delete"):
            remaining = sum(1 for _ in self._versions(identity_value))
        return DeletionResult(found=len(versions), changed=changed, remaining=remaining)

    def preview(self, identity_value: str) -> list[PreviewProperty]:
        files = 0
        total_bytes = 0
        last_updated: datetime | None = None
        with self._errors("preview"):
            for blob in self._files(identity_value, fields=_SUMMARY_FIELDS):
                files += 1
                total_bytes += blob.size or 0
                if blob.updated is not None and (last_updated is None or blob.updated > last_updated):
                    last_updated = blob.updated
        if files == 0:
            return []
        properties = [
            PreviewProperty("Files", str(files)),
            PreviewProperty("Total size", human_size(total_bytes)),
        ]
        if last_updated is not None:
            properties.append(PreviewProperty("Last updated", last_updated.isoformat()))
        return properties

    # -- helpers ----------------------------------------------------------------------------------

    def _client(self) -> Any:
        if self._client_instance is None:
            self._client_instance = self._context.storage_client()
        return self._client_instance

    def _prefix(self, identity_value: str) -> str:
        value = check_identity_value(identity_value)
        if "/" in value or ".." in value or value == "." or _CONTROL_CHARACTERS.search(value):
            raise SourceError(
                f"{self._what}: the identity value is not usable in an object prefix", transient=False
            )
        return self._config.prefix.replace("{value}", value)

    def _files(self, identity_value: str, *, fields: str | None = None) -> Iterator[Any]:
        """The live objects under the person's prefix, without "folder" placeholders (`name/`)."""
        prefix = self._prefix(identity_value)
        blobs = self._client().list_blobs(
            self._config.bucket, prefix=prefix, fields=fields, retry=self._retry, timeout=self._timeout
        )
        return (blob for blob in blobs if not blob.name.endswith("/"))

    def _versions(self, identity_value: str) -> Iterator[Any]:
        """Every object generation under the person's prefix, placeholders included."""
        return iter(
            self._client().list_blobs(
                self._config.bucket,
                prefix=self._prefix(identity_value),
                versions=True,
                fields="items(name,generation),nextPageToken",
                retry=self._retry,
                timeout=self._timeout,
            )
        )

    def _chunks(self, blob: Any, *, raw: bool) -> Iterator[bytes]:
        """The object's bytes in CHUNK_BYTES pieces, all from the generation that was listed."""
        with (
            self._errors("export read"),
            blob.open(
                "rb",
                chunk_size=CHUNK_BYTES,
                if_generation_match=blob.generation,
                raw_download=raw,
                retry=self._retry,
                timeout=self._timeout,
            ) as reader,
        ):
            while chunk := reader.read(CHUNK_BYTES):
                yield chunk

    def _translated(self, items: Iterator[Any], operation: str) -> Iterator[Any]:
        """`items`, with the errors of producing them translated, but not those of their consumer."""
        while True:
            with self._errors(operation):
                item = next(items, _END)
            if item is _END:
                return
            yield item

    @contextmanager
    def _errors(self, operation: str) -> Iterator[None]:
        try:
            yield
        except SourceError:
            raise
        except (google_exceptions.NotFound, google_exceptions.PreconditionFailed) as error:
            if operation == "export read":
                # Replaced or deleted since it was listed: a new attempt lists it afresh.
                raise SourceError(
                    f"{self._what}: an object changed during the export", transient=True
                ) from None
            raise source_error_from_google(error, f"{self._what}: {operation} failed") from None
        except (google_exceptions.GoogleAPIError, OSError) as error:
            # From None: a Google error's text (and so a traceback) can hold the object prefix.
            raise source_error_from_google(error, f"{self._what}: {operation} failed") from None


def human_size(size_bytes: int) -> str:
    """A size in binary units, e.g. "512 B", "1.5 KiB", "20.0 MiB"."""
    if size_bytes < 1024:
        return f"{size_bytes} B"
    size = float(size_bytes)
    for unit in ("KiB", "MiB", "GiB"):
        size /= 1024
        if size < 1024:
            return f"{size:.1f} {unit}"
    return f"{size / 1024:.1f} TiB"
