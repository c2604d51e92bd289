"""The Firestore connector: a person's documents in one collection, found by a field or by id.

Reads page through the match in `page_size` batches (`limit` + `start_after`), so an export holds
at most one page in memory whatever the person has. Deletes go out as batched writes (≤ 500, the
Firestore limit), children before parents so that an interrupted delete can be run again and still
find everything it has not yet removed. Every call is bounded by `context.timeout_seconds` and
retried only on transient errors; reads, deletes and our precomputed updates are all idempotent.
"""

import json
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any, Literal, Self

from google.api_core import exceptions as google_exceptions
from google.api_core import retry as google_retry
from google.auth import exceptions as auth_exceptions
from google.cloud import firestore
from google.cloud.firestore_v1 import DocumentReference, DocumentSnapshot, FieldFilter, GeoPoint
from google.cloud.firestore_v1.field_path import FieldPath
from google.cloud.firestore_v1.vector import Vector
from pydantic import Field, model_validator

from mineos_integration.sources.base import (
    Anonymisation,
    DataSource,
    DeleteMode,
    DeletionResult,
    ExportSink,
    PreviewProperty,
    Record,
    SourceConfig,
    SourceContext,
    SourceError,
)
from mineos_integration.sources.google_common import google_retry_policy, source_error_from_google
from mineos_integration.sources.values import (
    anonymised_hash,
    as_datetime,
    check_identity_value,
    is_anonymised_hash,
    json_safe,
)

MAX_BATCH_WRITES = 500  # Firestore's limit of writes in one batch
DEFAULT_PAGE_SIZE = 500
DEFAULT_DATABASE = "(default)"

Snapshot = DocumentSnapshot[DocumentReference]

_RESERVED_ID = re.compile(r"__.*__")


def firestore_value(value: Any) -> Any:
    """Firestore's own types as plain values, the `convert` of `json_safe`: references → path,
    GeoPoint → {lat, lng}, vectors → lists; any other value as it is."""
    if isinstance(value, DocumentReference):
        return value.path
    if isinstance(value, GeoPoint):
        return {"lat": value.latitude, "lng": value.longitude}
    if isinstance(value, Vector):
        return list(value)
    return value


class FirestoreSourceConfig(SourceConfig):
    """A Firestore collection; the person's documents are those whose `match_field` equals the
    identity value, or the one document whose id is `document_id` with the value filled in."""

    type: Literal["firestore"]
    collection: str = Field(min_length=1)  # a collection path, e.g. "users" or "tenants/acme/users"
    match_field: str | None = None  # a field path, e.g. "email" or "contact.email"
    document_id: str | None = None  # a template containing "{value}", e.g. "user-{value}"
    subcollections: bool = False  # export and delete the matched documents' subcollections too
    database: str = Field(default=DEFAULT_DATABASE, pattern=r"^(\(default\)|[a-z][a-z0-9-]{2,62})$")

    @model_validator(mode="after")
    def _check(self) -> Self:
        segments = self.collection.split("/")
        if any(not segment or _RESERVED_ID.fullmatch(segment) for segment in segments):
            raise ValueError(f"collection '{self.collection}' is not a valid collection path")
        if len(segments) % 2 == 0:
            raise ValueError(f"collection '{self.collection}' is a document path, not a collection path")
        if (self.match_field is None) == (self.document_id is None):
            raise ValueError("set exactly one of match_field and document_id")
        if self.match_field is not None and not self.match_field.strip():
            raise ValueError("match_field is empty")
        if self.document_id is not None:
            if "{value}" not in self.document_id:
                raise ValueError("document_id must contain {value}")
            if "/" in self.document_id:
                raise ValueError("document_id must not contain '/'")
        return self

    def build(self, context: SourceContext) -> DataSource:
        return FirestoreSource(self, context)


class FirestoreSource:
    """A `DataSource` over one Firestore collection (see `FirestoreSourceConfig`)."""

    def __init__(
        self, config: FirestoreSourceConfig, context: SourceContext, *, page_size: int = DEFAULT_PAGE_SIZE
    ) -> None:
        if not 1 <= page_size <= MAX_BATCH_WRITES:
            raise ValueError(f"page_size must be between 1 and {MAX_BATCH_WRITES}")
        self.config: SourceConfig = config
        self._config = config
        self._context = context
        self._page_size = page_size
        self._timeout = context.timeout_seconds
        self._retry = google_retry_policy(context.timeout_seconds)
        self._client_instance: Any = None
        self._what = f"firestore source '{config.name}'"

    # -- DataSource -------------------------------------------------------------------------------

    def count(self, identity_value: str) -> int:
        with self._errors("count"):
            if self._config.match_field is not None and not self._config.subcollections:
                return self._aggregate_count(self._match_query(identity_value))
            total = 0
            for page in self._matched_pages(identity_value, names_only=True):
                total += len(page)
                if self._config.subcollections:
                    total += sum(self._descendant_count(snapshot.reference) for snapshot in page)
            return total

    def export(self, identity_value: str, sink: ExportSink) -> None:
        # The generator runs inside the sink; errors are translated where each call is made.
        sink.write_records(self._records(identity_value))

    def delete(self, identity_value: str) -> DeletionResult:
        if self._config.delete.mode is DeleteMode.ANONYMISE:
            return self._anonymise(identity_value)
        if self._config.delete.mode is DeleteMode.RETAIN:
            # The collector reports retained sources without calling delete; be harmless if it does.
            found = self.count(identity_value)
            return DeletionResult(found=found, changed=0, remaining=found)
        return self._delete(identity_value)

    def preview(self, identity_value: str) -> list[PreviewProperty]:
        policy = self._config.preview
        fields = [field for field in (policy.updated_field, policy.show_field) if field]
        records = 0
        last_updated: datetime | None = None
        shown: str | None = None
        with self._errors("preview"):
            for page in self._matched_pages(identity_value, select=fields, names_only=not fields):
                records += len(page)
                for snapshot in page:
                    if policy.updated_field:
                        last_updated = _latest(last_updated, _field(snapshot, policy.updated_field))
                    if policy.show_field and shown is None:
                        value = _field(snapshot, policy.show_field)
                        if value is not None:
                            shown = _display(value)
                if self._config.subcollections:
                    records += sum(self._descendant_count(snapshot.reference) for snapshot in page)
        if records == 0:
            return []
        properties = [PreviewProperty("Records", str(records))]
        if last_updated is not None:
            properties.append(PreviewProperty("Last updated", last_updated.isoformat()))
        if policy.show_field and shown is not None:
            properties.append(PreviewProperty(policy.show_field, shown))
        return properties

    # -- reading ----------------------------------------------------------------------------------

    def _client(self) -> Any:
        if self._client_instance is None:
            client = self._context.firestore_client()
            if getattr(client, "_database", DEFAULT_DATABASE) != self._config.database:
                # The context's client is for one database; this source names another one.
                client = firestore.Client(
                    project=client.project, credentials=client._credentials, database=self._config.database
                )
            self._client_instance = client
        return self._client_instance

    def _collection(self) -> Any:
        return self._client().collection(self._config.collection)

    def _document_id(self, identity_value: str) -> str:
        assert self._config.document_id is not None
        value = check_identity_value(identity_value)
        if "/" in value or value in {".", ".."} or _RESERVED_ID.fullmatch(value):
            raise SourceError(
                f"{self._what}: the identity value is not a usable document id", transient=False
            )
        return self._config.document_id.replace("{value}", value)

    def _match_query(self, identity_value: str) -> Any:
        assert self._config.match_field is not None
        value = check_identity_value(identity_value)
        return (
            self._collection()
            .where(filter=FieldFilter(self._config.match_field, "==", value))
            .order_by(FieldPath.document_id())  # equality + name order: no composite index needed
        )

    def _matched_pages(
        self, identity_value: str, *, select: list[str] | None = None, names_only: bool = False
    ) -> Iterator[list[Snapshot]]:
        """The person's documents, a page at a time."""
        if self._config.document_id is not None:
            reference = self._collection().document(self._document_id(identity_value))
            # One document: fetched whole (or projected), never with a name-only mask.
            snapshot = reference.get(field_paths=select or None, retry=self._retry, timeout=self._timeout)
            if snapshot.exists:
                yield [snapshot]
            return
        query = self._match_query(identity_value)
        if names_only:
            query = query.select([FieldPath.document_id()])
        elif select:
            query = query.select(select)
        yield from self._pages(query)

    def _pages(self, query: Any) -> Iterator[list[Snapshot]]:
        """Run `query` (ordered by document name) in pages of `page_size`, each resuming after the
        last document of the one before."""
        cursor: Snapshot | None = None
        while True:
            page_query = query.limit(self._page_size)
            if cursor is not None:
                page_query = page_query.start_after(cursor)
            page = list(page_query.stream(retry=self._retry, timeout=self._timeout))
            if page:
                yield page
            if len(page) < self._page_size:
                return
            cursor = page[-1]

    def _descendant_pages(
        self, reference: DocumentReference, *, names_only: bool = False
    ) -> Iterator[list[Snapshot]]:
        """Every document below `reference`, at any depth, including below missing parents."""
        for subcollection in reference.collections(retry=self._retry, timeout=self._timeout):
            # recursive() is Firestore's kindless all-descendants query, ordered by document name.
            query = subcollection.recursive()
            if names_only:
                query = query.select([FieldPath.document_id()])
            yield from self._pages(query)

    def _descendant_count(self, reference: DocumentReference) -> int:
        collections = reference.collections(retry=self._retry, timeout=self._timeout)
        return sum(self._aggregate_count(subcollection.recursive()) for subcollection in collections)

    def _aggregate_count(self, query: Any) -> int:
        results = query.count(alias="n").get(retry=self._retry, timeout=self._timeout)
        return sum(int(result.value) for batch in results for result in batch)

    def _records(self, identity_value: str) -> Iterator[Record]:
        with self._errors("export"):
            for page in self._matched_pages(identity_value):
                for snapshot in page:
                    yield self._record(snapshot)
                    if self._config.subcollections:
                        for descendants in self._descendant_pages(snapshot.reference):
                            yield from (self._record(descendant) for descendant in descendants)

    def _record(self, snapshot: Snapshot) -> Record:
        data = json_safe(snapshot.to_dict() or {}, convert=firestore_value)
        return {"path": self._relative_path(snapshot.reference), "data": data}

    def _relative_path(self, reference: DocumentReference) -> str:
        path: str = reference.path
        return path[len(self._config.collection) + 1 :]

    # -- deleting ---------------------------------------------------------------------------------

    def _delete(self, identity_value: str) -> DeletionResult:
        found = 0
        with self._errors("delete"), _Batcher(self._client, self._retry, self._timeout) as batcher:
            for page in self._matched_pages(identity_value, names_only=True):
                for snapshot in page:
                    if self._config.subcollections:
                        # Children first: if we stop half-way, the parent still matches next time.
                        for descendants in self._descendant_pages(snapshot.reference, names_only=True):
                            for descendant in descendants:
                                batcher.delete(descendant.reference)
                                found += 1
                    batcher.delete(snapshot.reference)
                    found += 1
        changed = batcher.writes
        remaining = self.count(identity_value)
        return DeletionResult(found=found, changed=changed, remaining=remaining)

    def _anonymise(self, identity_value: str) -> DeletionResult:
        fields = self._config.delete.fields
        if (
            any(rule == Anonymisation.HASH for rule in fields.values())
            and not self._context.anonymisation_key
        ):
            raise SourceError(f"{self._what}: hash anonymisation needs ANONYMISATION_KEY", transient=False)
        found = 0
        with self._errors("anonymise"), _Batcher(self._client, self._retry, self._timeout) as batcher:
            for page in self._matched_pages(identity_value, select=list(fields)):
                for snapshot in page:
                    found += 1
                    if updates := self._anonymised_values(snapshot):
                        batcher.update(snapshot.reference, updates)
        with self._errors("verify anonymise"):
            remaining = sum(
                1
                for page in self._matched_pages(identity_value, select=list(fields))
                for snapshot in page
                if self._anonymised_values(snapshot)
            )
        return DeletionResult(found=found, changed=batcher.writes, remaining=remaining)

    def _anonymised_values(self, snapshot: Snapshot) -> dict[str, Any]:
        """The updates that anonymise `snapshot`: only fields present and not yet anonymised."""
        updates: dict[str, Any] = {}
        for field_path, rule in self._config.delete.fields.items():
            try:
                current = snapshot.get(field_path)
            except KeyError:
                continue  # absent: nothing to anonymise
            if rule == Anonymisation.NULL:
                target = None
            elif rule == Anonymisation.HASH:
                if current is None or is_anonymised_hash(current):
                    continue
                target = anonymised_hash(self._context.anonymisation_key, current, convert=firestore_value)
            else:
                assert isinstance(rule, dict)
                target = rule["value"]
            if current != target:
                updates[field_path] = target
        return updates

    @contextmanager
    def _errors(self, operation: str) -> Iterator[None]:
        try:
            yield
        except SourceError:
            raise
        except (google_exceptions.GoogleAPIError, auth_exceptions.TransportError, OSError) as error:
            # From None: a Google error's text (and so a traceback) can hold the person's value.
            raise source_error_from_google(error, f"{self._what}: {operation} failed") from None


class _Batcher:
    """Accumulates deletes and updates into write batches of at most MAX_BATCH_WRITES."""

    def __init__(self, client: Callable[[], Any], retry: google_retry.Retry, timeout: float) -> None:
        self._client = client
        self._retry = retry
        self._timeout = timeout
        self._batch: Any = None
        self._pending = 0
        self.writes = 0

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: object, *_: object) -> None:
        if exc_type is None:
            self.flush()

    def delete(self, reference: DocumentReference) -> None:
        self._next().delete(reference)

    def update(self, reference: DocumentReference, values: dict[str, Any]) -> None:
        self._next().update(reference, values)

    def _next(self) -> Any:
        if self._pending == MAX_BATCH_WRITES:
            self.flush()
        if self._batch is None:
            self._batch = self._client().batch()
        self._pending += 1
        return self._batch

    def flush(self) -> None:
        if self._batch is not None and self._pending:
            # Retrying a batch is safe: deletes are idempotent and updates carry precomputed values.
            self._batch.commit(retry=self._retry, timeout=self._timeout)
            self.writes += self._pending
        self._batch = None
        self._pending = 0


def _field(snapshot: Snapshot, field_path: str) -> Any:
    try:
        return snapshot.get(field_path)
    except KeyError:
        return None


def _latest(current: datetime | None, value: Any) -> datetime | None:
    moment = as_datetime(value)
    if moment is None:
        return current
    return moment if current is None or moment > current else current


def _display(value: Any) -> str:
    safe = json_safe(value, convert=firestore_value)
    return safe if isinstance(safe, str) else json.dumps(safe, sort_keys=True)
