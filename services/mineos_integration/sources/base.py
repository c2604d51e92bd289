"""What every data source is: the seam between the data map and the company's stores.

A source finds one person by one identity and can export, delete (or anonymise) and preview that
person's data. Connectors (sql, firestore, gcs, http) and plug-ins implement `DataSource`; the
collector only ever sees this protocol.
"""

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Literal, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

from mineos_integration.contract import Identity

Record = Mapping[str, Any]


class SourceError(Exception):
    """A source failed. `transient` ones (timeouts, 5xx, unavailable) are retried by redelivery;
    permanent ones are reported to MineOS as Failed. Messages never carry personal data."""

    def __init__(self, message: str, *, transient: bool) -> None:
        super().__init__(message)
        self.transient = transient


class DeleteMode(StrEnum):
    DELETE = "delete"  # remove the matching records
    ANONYMISE = "anonymise"  # overwrite the listed fields, keep the records
    RETAIN = "retain"  # legal hold: keep everything, report CannotDeleteData with the reason


class Anonymisation(StrEnum):
    NULL = "null"  # set the field to null
    HASH = "hash"  # HMAC-SHA256 of the old value under ANONYMISATION_KEY: joinable, not reversible


class DeletePolicy(BaseModel):
    """What deleting the person means for one source."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    mode: DeleteMode = DeleteMode.DELETE
    # field -> "null" | "hash" | {"value": <fixed value>}; only for mode: anonymise
    fields: dict[str, Anonymisation | dict[Literal["value"], Any]] = Field(default_factory=dict)
    reason: str | None = None  # required for mode: retain


class PreviewPolicy(BaseModel):
    """What a Preview may show of one source: never the data itself."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    updated_field: str | None = None  # shown as "Last updated"
    show_field: str | None = None  # one non-sensitive field, e.g. a plan or a country


class SourceConfig(BaseModel):
    """The fields every data-map source has; each connector's config model extends it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
    identity: Identity
    description: str = ""
    delete: DeletePolicy = DeletePolicy()
    preview: PreviewPolicy = PreviewPolicy()


class ExportSink(Protocol):
    """Where a source writes its part of a Copy export (the collector streams it to Cloud Storage)."""

    def write_records(self, records: Iterable[Record]) -> None:
        """Stream records into the source's JSON Lines file; never hold them all in memory."""

    def write_file(self, relative_name: str, chunks: Iterable[bytes], content_type: str) -> None:
        """Stream one file (e.g. a copied Cloud Storage object) into the source's folder."""


@dataclass(frozen=True)
class DeletionResult:
    """Counts only: this goes into the deletion receipt, which holds no personal data."""

    found: int
    changed: int  # deleted or anonymised
    remaining: int  # what a fresh read finds afterwards (for anonymise: records still holding the values)


@dataclass(frozen=True)
class PreviewProperty:
    name: str
    value: str


@runtime_checkable
class DataSource(Protocol):
    config: SourceConfig

    def count(self, identity_value: str) -> int:
        """How many records (or objects) the person has here."""

    def export(self, identity_value: str, sink: ExportSink) -> None:
        """Write every record of the person to `sink`."""

    def delete(self, identity_value: str) -> DeletionResult:
        """Apply the source's delete policy (delete or anonymise), then read again to verify."""

    def preview(self, identity_value: str) -> list[PreviewProperty]:
        """At most 3 string properties about the person's data here, or [] when none is found."""


@dataclass(frozen=True)
class SourceContext:
    """What a connector may use, passed in so that tests hand it emulator clients or fakes.

    Clients are factories so that a data map without Firestore sources never opens a Firestore client.
    """

    firestore_client: Callable[[], Any]  # -> google.cloud.firestore.Client
    storage_client: Callable[[], Any]  # -> google.cloud.storage.Client
    anonymisation_key: bytes  # the HMAC key of Anonymisation.HASH
    timeout_seconds: float = 30.0  # every remote call of a connector is bounded by this
