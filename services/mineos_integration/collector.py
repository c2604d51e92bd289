"""The collector: turn one published MineOS operation into its outcome and exactly one status call.

Plain functions over a `Collector` (the ledger, the data sources, MineOS, the exports bucket): the
Pub/Sub push transport lives in main.py. The ledger decides what a delivery must do (ledger.Step);
everything done under a lease is recorded before the next step, so a redelivery or a takeover picks
up where the last worker stopped and never reports twice.
"""

import contextlib
import json
import logging
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from google.cloud import storage  # type: ignore[attr-defined]

from mineos_integration.contract import Action, FileReference, PrivacyRequest, Status, StatusUpdate
from mineos_integration.export import (
    JSONL,
    ExportedFile,
    SourceExport,
    UrlSigner,
    export_prefix,
    file_to_dict,
    write_manifest,
)
from mineos_integration.ledger import LeaseLost, Ledger, State, Step, operation_id
from mineos_integration.logs import log
from mineos_integration.mineos_client import MineOSClient, MineOSUnavailable, ReportResult
from mineos_integration.sources.base import DataSource, DeleteMode, SourceError

logger = logging.getLogger(__name__)


class Delivery(StrEnum):
    """How the push transport answers Pub/Sub."""

    ACK = "ack"  # done, or nothing left to do
    RETRY = "retry"  # not now: Pub/Sub redelivers later


class TransientFailure(Exception):
    """Something outside our control failed for now; the operation is retried on redelivery."""


@dataclass
class Collector:
    ledger: Ledger
    sources: list[DataSource]
    mineos: MineOSClient
    bucket: storage.Bucket
    signer: UrlSigner
    inline_data_max_bytes: int = 0


@dataclass
class Outcome:
    """What the status call will say; stored in the ledger, so it holds no personal data."""

    status: Status
    message: str | None = None
    files: list[dict[str, Any]] = field(default_factory=list)
    manifest: dict[str, Any] | None = None
    receipt: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "status": self.status.value,
            "message": self.message,
            "files": self.files,
            "manifest": self.manifest,
            "receipt": self.receipt,
        }

    @classmethod
    def from_dict(cls, stored: Mapping[str, Any]) -> "Outcome":
        return cls(
            status=Status(stored["status"]),
            message=stored.get("message"),
            files=list(stored.get("files") or []),
            manifest=stored.get("manifest"),
            receipt=stored.get("receipt"),
        )


def new_worker_id() -> str:
    """A lease owner per delivery: two deliveries of one message in one process are two workers."""
    return uuid.uuid4().hex


def handle_request(collector: Collector, request: PrivacyRequest, worker: str) -> Delivery:
    """Process one delivery of a Copy or Delete operation.

    Raises:
        TransientFailure: a store or MineOS failed for now (the lease is released for the retry).
    """
    claim = collector.ledger.claim(request, worker)
    log(
        logger,
        logging.INFO,
        "operation claimed",
        step=claim.step.value,
        attempt=claim.document.get("attempt"),
    )
    if claim.step is Step.DONE:
        return Delivery.ACK
    if claim.step is Step.BUSY:
        return Delivery.RETRY
    with _lease_released_on_failure(collector, request, worker):
        if claim.step is Step.COLLECT:
            outcome = collect(collector, request, worker, claim.document.get("progress") or {})
            collector.ledger.mark_collected(request, worker, outcome.to_dict())
        report(collector, request, worker, settle_first=claim.step is Step.SETTLE)
    return Delivery.ACK


@contextlib.contextmanager
def _lease_released_on_failure(collector: Collector, request: PrivacyRequest, worker: str) -> Iterator[None]:
    """On any failure give the lease up, so the redelivery need not wait for it to expire."""
    try:
        yield
    except LeaseLost:
        raise  # another worker owns the operation now: nothing of ours to release
    except Exception as error:
        collector.ledger.release(request, worker)
        if isinstance(error, SourceError):
            raise TransientFailure(str(error)) from error
        raise


def handle_dead_letter(collector: Collector, request: PrivacyRequest, worker: str, attempts: str) -> Delivery:
    """Pub/Sub gave up on an operation: report it Failed once, unless it got further than that."""
    claim = collector.ledger.claim(request, worker)
    if claim.step is Step.DONE:
        return Delivery.ACK
    if claim.step is Step.BUSY:
        return Delivery.RETRY  # a worker is still at it; its lease decides, not the dead letter
    if claim.step is Step.COLLECT:
        failed = Outcome(
            Status.FAILED, f"The request could not be processed after {attempts} delivery attempts."
        )
        collector.ledger.mark_dead_lettered(request, worker, failed.to_dict())
    # An outcome that was already collected is still reported as it is: the work was done.
    with _lease_released_on_failure(collector, request, worker):
        report(collector, request, worker, settle_first=claim.step is Step.SETTLE)
    return Delivery.ACK


def _missing_identities(collector: Collector, request: PrivacyRequest) -> str | None:
    missing = [
        f"{source.config.identity.value} (needed by {source.config.name})"
        for source in collector.sources
        if source.config.identity not in request.identities
    ]
    return "Missing identifiers: " + ", ".join(missing) if missing else None


def collect(
    collector: Collector, request: PrivacyRequest, worker: str, progress: Mapping[str, Any]
) -> Outcome:
    """Run the data map for the operation; sources finished by an earlier attempt are reused."""
    if request.is_test:
        # MineOS's "test your integration" call must not touch production data.
        return Outcome(Status.COMPLETED, "Test request: no data source was read or changed.")
    if message := _missing_identities(collector, request):
        return Outcome(Status.MISSING_IDENTIFIERS, message)
    if request.action is Action.COPY:
        return _collect_copy(collector, request, worker, progress)
    return _collect_delete(collector, request, worker, progress)


class _SourceFailed(Exception):
    """A source failed permanently: the operation is reported Failed, naming the source."""


def _run_each_source(
    collector: Collector,
    request: PrivacyRequest,
    worker: str,
    progress: Mapping[str, Any],
    work: Callable[[DataSource, str], Any],
) -> dict[str, Any]:
    """`work(source, identity value)` for each source in data-map order, skipping those an earlier
    attempt finished; each result is recorded in the ledger before the next source starts."""
    results = dict(progress)
    for source in collector.sources:
        name = source.config.name
        if name in results:
            continue
        try:
            results[name] = work(source, request.identities[source.config.identity])
        except SourceError as error:
            if error.transient:
                raise
            raise _SourceFailed(f"Data source '{name}' failed: {error}") from None
        collector.ledger.record_progress(request, worker, name, results[name])
        log(logger, logging.INFO, "source done", source=name, action=request.action.value)
    return results


def _collect_copy(
    collector: Collector, request: PrivacyRequest, worker: str, progress: Mapping[str, Any]
) -> Outcome:
    prefix = export_prefix(operation_id(request))

    def export(source: DataSource, value: str) -> list[dict[str, Any]]:
        if source.count(value) == 0:
            return []  # no empty files for sources that do not know the person
        sink = SourceExport(collector.bucket, prefix, source.config.name)
        source.export(value, sink)
        return [file_to_dict(file) for file in sink.files]

    try:
        exported = _run_each_source(collector, request, worker, progress, export)
    except _SourceFailed as failure:
        return Outcome(Status.FAILED, str(failure))
    files = [file for source in collector.sources for file in exported[source.config.name]]
    if not files:
        return Outcome(Status.USER_NOT_FOUND, "No data source holds data about this person.")
    operation = {"integrationId": request.integration_id, "traceId": request.trace_id, "action": "Copy"}
    manifest = write_manifest(collector.bucket, prefix, operation, [ExportedFile(**file) for file in files])
    return Outcome(Status.COMPLETED, None, files=files, manifest=file_to_dict(manifest))


def _delete_one(source: DataSource, value: str) -> dict[str, Any]:
    """Apply one source's delete policy; the receipt entry holds counts only."""
    mode = source.config.delete.mode
    if mode is DeleteMode.RETAIN:
        found = source.count(value)
        return {"mode": mode.value, "found": found, "changed": 0, "remaining": found}
    result = source.delete(value)
    return {
        "mode": mode.value,
        "found": result.found,
        "changed": result.changed,
        "remaining": result.remaining,
    }


def _collect_delete(
    collector: Collector, request: PrivacyRequest, worker: str, progress: Mapping[str, Any]
) -> Outcome:
    """Delete in data-map order (children before parents); each source's counts go into the receipt."""
    try:
        receipt = _run_each_source(collector, request, worker, progress, _delete_one)
    except _SourceFailed as failure:
        return Outcome(Status.FAILED, str(failure))
    kept = [
        f"{source.config.name} ({source.config.delete.reason or 'data still present after deletion'})"
        for source in collector.sources
        if receipt[source.config.name]["remaining"] > 0
    ]
    if kept:
        return Outcome(
            Status.CANNOT_DELETE_DATA, "Data was kept in: " + "; ".join(kept) + ".", receipt=receipt
        )
    if not any(entry["found"] for entry in receipt.values()):
        return Outcome(Status.USER_NOT_FOUND, "No data source holds data about this person.", receipt=receipt)
    changed = sum(entry["changed"] for entry in receipt.values())
    holding = sum(1 for entry in receipt.values() if entry["found"])
    message = f"Deleted or anonymised {changed} records in {holding} of {len(receipt)} sources; none is left."
    return Outcome(Status.COMPLETED, message, receipt=receipt)


def status_update(collector: Collector, request: PrivacyRequest, outcome: Outcome) -> StatusUpdate:
    """The body of the status call; signed URLs are made now so that their lifetime starts now."""
    if request.action is not Action.COPY:
        return StatusUpdate(
            action=request.action, status=outcome.status, message=outcome.message, test=request.is_test
        )
    bucket_name = collector.bucket.name
    sources = {
        source.config.name: source.config.description or source.config.name for source in collector.sources
    }
    references = []
    for file in ([outcome.manifest] if outcome.manifest else []) + outcome.files:
        described = sources.get(file["source"], file["source"])
        if file["file_name"] == "manifest.json":
            described = "Manifest: every file with its record count, size and SHA-256"
        elif (count := file["records"]) is not None:
            described += f" ({count} {'record' if count == 1 else 'records'})"
        references.append(
            FileReference(
                fileName=file["file_name"],
                description=described,
                url=collector.signer.signed_url(bucket_name, file["object_name"]),
            )
        )
    return StatusUpdate(
        action=request.action,
        status=outcome.status,
        message=outcome.message,
        files=references or None,
        data=_inline_data(collector, outcome),
        test=request.is_test,
    )


def _inline_data(collector: Collector, outcome: Outcome) -> dict[str, Any] | None:
    """Small exports also go inline in `data`, read back from the export (the ledger holds no data)."""
    record_files = [file for file in outcome.files if file["content_type"] == JSONL]
    total = sum(file["bytes"] for file in record_files)
    if not record_files or total > collector.inline_data_max_bytes or len(record_files) != len(outcome.files):
        return None
    data: dict[str, Any] = {}
    for file in record_files:
        text = collector.bucket.blob(file["object_name"]).download_as_text(timeout=60)
        data[file["source"]] = [json.loads(line) for line in text.splitlines() if line]
    return data


def report(collector: Collector, request: PrivacyRequest, worker: str, *, settle_first: bool) -> None:
    """Make the one status call, or settle an earlier call whose outcome was not recorded."""
    ledger, mineos = collector.ledger, collector.mineos
    document = ledger.mark_reporting(request, worker)
    final_state = State.DEAD_LETTERED if document.get("dead_lettered") else State.REPORTED
    outcome = Outcome.from_dict(document["outcome"])
    try:
        if settle_first and mineos.is_settled(request.ticket_id, request.integration_id):
            log(logger, logging.WARNING, "earlier status call found applied in the ticket log")
            ledger.mark_final(request, final_state, {"result": ReportResult.ALREADY_SETTLED.value})
            return
        update = status_update(collector, request, outcome)
        result = mineos.report_status(request.ticket_id, request.integration_id, update)
    except MineOSUnavailable as error:
        raise TransientFailure(str(error)) from error
    state = final_state if result.result is not ReportResult.REJECTED else State.FAILED
    ledger.mark_final(
        request,
        state,
        {"result": result.result.value, "http_status": result.http_status, "detail": result.detail},
    )
    level = logging.ERROR if state is State.FAILED else logging.INFO
    log(
        logger,
        level,
        "status reported",
        status=outcome.status.value,
        result=result.result.value,
        state=state.value,
    )
