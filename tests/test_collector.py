"""The collector's exactly-once behaviour on the real Firestore emulator, fake-gcs-server and the fake
MineOS. The data sources here are in-memory (the connectors have their own tests against real stores):
what is under test is the ledger, the export and the reporting path."""

import hashlib
import json
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pytest
import requests
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from google.cloud import firestore, storage

from infra.emulators import create_bucket, generate_local_signing_key
from infra.fake_mineos import FakeMineOS, Person, build_call
from mineos_integration.collector import (
    Collector,
    Delivery,
    TransientFailure,
    handle_dead_letter,
    handle_request,
)
from mineos_integration.contract import Action, Identity, PrivacyRequest, parse_request
from mineos_integration.export import UrlSigner
from mineos_integration.ledger import Ledger, State, operation_id
from mineos_integration.mineos_client import MineOSClient
from mineos_integration.sources.base import (
    DeletePolicy,
    DeletionResult,
    ExportSink,
    PreviewProperty,
    SourceConfig,
    SourceError,
)
from tests.v4_signature import verify_v4_signed_url

pytestmark = pytest.mark.emulators

API_KEY = "fake-mineos-api-key-for-tests"
INTEGRATION = "integration-under-test"
ADA = Person(name="Ada Lovelace", email="ada@example.com", internal_id="cust-1")
NOBODY = Person(name="No Body", email="nobody@example.com", internal_id="cust-404")


@dataclass
class MemorySource:
    """A data source over a list of dicts, counting the calls made to it."""

    config: SourceConfig
    records: list[dict[str, str]]
    calls: list[str] = field(default_factory=list)
    fail_with: Exception | None = None

    def _matching(self, value: str) -> list[dict[str, str]]:
        return [r for r in self.records if r.get(self.config.identity.value) == value]

    def _enter(self, name: str) -> None:
        self.calls.append(name)
        if self.fail_with is not None:
            raise self.fail_with

    def count(self, identity_value: str) -> int:
        self._enter("count")
        return len(self._matching(identity_value))

    def export(self, identity_value: str, sink: ExportSink) -> None:
        self._enter("export")
        sink.write_records(iter(self._matching(identity_value)))

    def delete(self, identity_value: str) -> DeletionResult:
        self._enter("delete")
        found = self._matching(identity_value)
        self.records = [r for r in self.records if r not in found]
        return DeletionResult(len(found), len(found), len(self._matching(identity_value)))

    def preview(self, identity_value: str) -> list[PreviewProperty]:
        return [PreviewProperty("Records", str(len(self._matching(identity_value))))]


def source(name: str, identity: Identity, records: list[dict[str, str]], **config) -> MemorySource:
    return MemorySource(SourceConfig(name=name, identity=identity, **config), records)


@pytest.fixture
def fake_mineos() -> Iterator[FakeMineOS]:
    with FakeMineOS(API_KEY) as server:
        yield server


@dataclass
class World:
    collector: Collector
    mineos: FakeMineOS
    bucket: storage.Bucket
    key_file: Path
    ledger_client: firestore.Client

    def request(self, person: Person, action: Action = Action.COPY, **kwargs) -> PrivacyRequest:
        call = build_call(action, person, integration_id=INTEGRATION, **kwargs)
        self.mineos.register_operation(call.ticket_id, call.integration_id, action)
        return parse_request(action, call.body)

    def reports(self, request: PrivacyRequest) -> list:
        return self.mineos.status_calls_for(request.ticket_id, request.integration_id)

    def ledger_document(self, request: PrivacyRequest) -> dict:
        snapshot = self.ledger_client.collection("mineos_operations").document(operation_id(request)).get()
        return snapshot.to_dict()


def build_world(
    emulator_env, fake_mineos, tmp_path, sources, *, lease_seconds=60, inline=0, **mineos_options
):
    project = emulator_env["GOOGLE_CLOUD_PROJECT"]
    bucket_name = f"exports-{uuid.uuid4().hex[:10]}"
    create_bucket(emulator_env["STORAGE_EMULATOR_HOST"], project, bucket_name)
    storage_client = storage.Client(project=project)
    firestore_client = firestore.Client(project=project)
    key_file = generate_local_signing_key(tmp_path / "signer.json", project)
    collector = Collector(
        ledger=Ledger(firestore_client, "mineos_operations", lease_seconds=lease_seconds, retention_days=30),
        sources=sources,
        mineos=MineOSClient(
            fake_mineos.base_url,
            API_KEY,
            timeout_seconds=mineos_options.get("timeout_seconds", 5),
            max_attempts=mineos_options.get("max_attempts", 4),
            backoff_seconds=0.05,
        ),
        bucket=storage_client.bucket(bucket_name),
        signer=UrlSigner(storage_client, 3600, str(key_file)),
        inline_data_max_bytes=inline,
    )
    return World(collector, fake_mineos, collector.bucket, key_file, firestore_client)


ACCOUNTS = [
    {"email": "ada@example.com", "plan": "pro"},
    {"email": "ada@example.com", "plan": "trial"},
    {"email": "grace@example.com", "plan": "pro"},
]
ORDERS = [{"$internalId": "cust-1", "order": "A-1"}, {"$internalId": "cust-2", "order": "B-1"}]


@pytest.fixture
def world(emulator_env, fake_mineos, tmp_path) -> World:
    sources = [
        source("accounts", Identity.EMAIL, list(ACCOUNTS)),
        source("orders", Identity.INTERNAL_ID, list(ORDERS)),
    ]
    return build_world(emulator_env, fake_mineos, tmp_path, sources)


def test_copy_found_person_reports_completed_once_with_verifiable_files(world):
    request = world.request(ADA)
    assert handle_request(world.collector, request, "worker-1") is Delivery.ACK

    (report,) = world.reports(request)
    assert report.response_status == 200
    assert report.body["action"] == "Copy"
    assert report.body["status"] == "Completed"
    files = {f["fileName"]: f for f in report.body["files"]}
    assert set(files) == {"manifest.json", "accounts.jsonl", "orders.jsonl"}
    assert files["accounts.jsonl"]["description"] == "accounts (2 records)"
    assert files["orders.jsonl"]["description"] == "orders (1 record)"

    key = json.loads(world.key_file.read_text())
    public_key = load_pem_private_key(key["private_key"].encode(), None).public_key()
    manifest = requests.get(files["manifest.json"]["url"], timeout=10).json()
    assert manifest["operation"] == {
        "integrationId": INTEGRATION,
        "traceId": request.trace_id,
        "action": "Copy",
    }
    for entry in manifest["files"]:
        url = files[entry["fileName"]]["url"]
        signed_at, expires_at = verify_v4_signed_url(url, public_key)
        assert (expires_at - signed_at).total_seconds() == 3600
        assert signed_at <= datetime.now(UTC) < expires_at
        content = requests.get(url, timeout=10).content
        assert hashlib.sha256(content).hexdigest() == entry["sha256"]
        assert len(content) == entry["bytes"]
        assert len(content.splitlines()) == entry["records"]
    accounts = requests.get(files["accounts.jsonl"]["url"], timeout=10).text.splitlines()
    assert [json.loads(line)["plan"] for line in accounts] == ["pro", "trial"]
    assert world.ledger_document(request)["state"] == State.REPORTED


def test_copy_unknown_person_reports_user_not_found(world):
    request = world.request(NOBODY)
    handle_request(world.collector, request, "worker-1")
    (report,) = world.reports(request)
    assert report.body["status"] == "UserNotFound"
    assert "files" not in report.body
    assert not list(world.bucket.list_blobs())


def test_copy_missing_identifier_reports_missing_identifiers_naming_it(world):
    request = world.request(Person(name="Ada", email="ada@example.com"))
    handle_request(world.collector, request, "worker-1")
    (report,) = world.reports(request)
    assert report.body["status"] == "MissingIdentifiers"
    assert "$internalId (needed by orders)" in report.body["message"]


def test_copy_is_test_touches_no_source_and_reports_test_true(world):
    request = world.request(ADA, is_test=True)
    handle_request(world.collector, request, "worker-1")
    (report,) = world.reports(request)
    assert report.body["test"] is True
    assert report.body["status"] == "Completed"
    assert all(not s.calls for s in world.collector.sources)


def test_copy_small_result_also_goes_inline_in_data(emulator_env, fake_mineos, tmp_path):
    sources = [source("accounts", Identity.EMAIL, list(ACCOUNTS))]
    world = build_world(emulator_env, fake_mineos, tmp_path, sources, inline=10_000)
    request = world.request(ADA)
    handle_request(world.collector, request, "worker-1")
    (report,) = world.reports(request)
    assert report.body["data"] == {"accounts": ACCOUNTS[:2]}


def test_copy_same_push_three_times_reports_once(world):
    request = world.request(ADA)
    deliveries = [handle_request(world.collector, request, f"worker-{n}") for n in range(3)]
    assert deliveries == [Delivery.ACK] * 3
    assert len(world.reports(request)) == 1
    assert world.collector.sources[0].calls.count("export") == 1


def test_copy_concurrent_deliveries_report_once_and_others_back_off(world):
    request = world.request(ADA)
    results: list[Delivery] = []

    def deliver(worker: str) -> None:
        results.append(handle_request(world.collector, request, worker))

    threads = [threading.Thread(target=deliver, args=(f"worker-{n}",)) for n in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert len(world.reports(request)) == 1
    assert results.count(Delivery.ACK) >= 1
    # A backed-off delivery is redelivered by Pub/Sub and then finds the operation done.
    assert handle_request(world.collector, request, "worker-late") is Delivery.ACK
    assert len(world.reports(request)) == 1


def test_copy_worker_dies_mid_collection_another_takes_over_after_lease(emulator_env, fake_mineos, tmp_path):
    accounts = source("accounts", Identity.EMAIL, list(ACCOUNTS))
    orders = source("orders", Identity.INTERNAL_ID, list(ORDERS))
    world = build_world(emulator_env, fake_mineos, tmp_path, [accounts, orders], lease_seconds=1)
    request = world.request(ADA)
    # The first worker exports one source, then dies (it never answers or releases its lease).
    orders.fail_with = SourceError("worker died", transient=True)
    ledger = world.collector.ledger
    ledger.claim(request, "worker-dead")
    from mineos_integration.collector import collect

    with pytest.raises(SourceError):
        collect(world.collector, request, "worker-dead", {})
    assert handle_request(world.collector, request, "worker-2") is Delivery.RETRY  # lease still live
    time.sleep(1.2)
    orders.fail_with = None
    assert handle_request(world.collector, request, "worker-2") is Delivery.ACK
    assert accounts.calls.count("export") == 1  # reused, not redone
    (report,) = world.reports(request)
    assert report.body["status"] == "Completed"
    assert world.ledger_document(request)["attempt"] == 2


def test_copy_transient_source_failure_releases_lease_for_retry(world):
    request = world.request(ADA)
    world.collector.sources[0].fail_with = SourceError("database unavailable", transient=True)
    with pytest.raises(TransientFailure):
        handle_request(world.collector, request, "worker-1")
    world.collector.sources[0].fail_with = None
    assert handle_request(world.collector, request, "worker-2") is Delivery.ACK
    assert len(world.reports(request)) == 1


def test_copy_permanent_source_failure_reports_failed_naming_source(world):
    request = world.request(ADA)
    world.collector.sources[1].fail_with = SourceError("table missing", transient=False)
    handle_request(world.collector, request, "worker-1")
    (report,) = world.reports(request)
    assert report.body["status"] == "Failed"
    assert "orders" in report.body["message"]


@pytest.mark.parametrize("faults", [[{"status": 500}], [{"status": 429}, {"status": 503}]])
def test_report_transient_mineos_errors_are_retried_and_applied_once(world, faults):
    request = world.request(ADA)
    world.mineos.inject_faults(faults)
    handle_request(world.collector, request, "worker-1")
    reports = world.reports(request)
    assert [r.response_status for r in reports] == [f["status"] for f in faults] + [200]
    assert world.mineos.reports_per_operation()[(request.ticket_id, INTEGRATION)] == len(faults) + 1
    assert world.ledger_document(request)["state"] == State.REPORTED


def test_report_timeout_after_mineos_applied_is_settled_without_second_call(
    emulator_env, fake_mineos, tmp_path
):
    sources = [source("accounts", Identity.EMAIL, list(ACCOUNTS))]
    world = build_world(emulator_env, fake_mineos, tmp_path, sources, timeout_seconds=0.5)
    request = world.request(ADA)
    world.mineos.inject_faults([{"delay_seconds": 1.5, "apply": True}])
    # The client gives up after 0.5 s, waits as long again, finds the log still open: it must not
    # call a second time while the first call may still be in flight, so the delivery is retried.
    with pytest.raises(TransientFailure):
        handle_request(world.collector, request, "worker-1")
    time.sleep(0.8)  # the slow call completes on the server meanwhile
    assert handle_request(world.collector, request, "worker-2") is Delivery.ACK
    assert len(world.reports(request)) == 1
    assert world.ledger_document(request)["report"]["result"] == "already-settled"


def test_report_timeout_then_log_settled_within_wait_is_not_called_again(emulator_env, fake_mineos, tmp_path):
    sources = [source("accounts", Identity.EMAIL, list(ACCOUNTS))]
    world = build_world(emulator_env, fake_mineos, tmp_path, sources, timeout_seconds=0.5)
    request = world.request(ADA)
    world.mineos.inject_faults([{"delay_seconds": 0.7, "apply": True}])
    assert handle_request(world.collector, request, "worker-1") is Delivery.ACK
    assert len(world.reports(request)) == 1
    assert world.ledger_document(request)["state"] == State.REPORTED


def test_report_mineos_down_keeps_operation_for_redelivery(world):
    request = world.request(ADA)
    world.mineos.inject_faults([{"status": 500}] * 4)
    with pytest.raises(TransientFailure):
        handle_request(world.collector, request, "worker-1")
    assert world.ledger_document(request)["state"] == State.REPORTING
    assert handle_request(world.collector, request, "worker-2") is Delivery.ACK
    statuses = [r.response_status for r in world.reports(request)]
    assert statuses == [500, 500, 500, 500, 200]


def test_crash_after_status_call_before_ledger_write_is_settled_on_redelivery(world):
    from mineos_integration.collector import Outcome, collect, status_update

    request = world.request(ADA)
    ledger = world.collector.ledger
    ledger.claim(request, "worker-dead")
    outcome = collect(world.collector, request, "worker-dead", {})
    ledger.mark_collected(request, "worker-dead", outcome.to_dict())
    document = ledger.mark_reporting(request, "worker-dead")
    update = status_update(world.collector, request, Outcome.from_dict(document["outcome"]))
    world.collector.mineos.report_status(request.ticket_id, request.integration_id, update)
    ledger.release(request, "worker-dead")  # as if its lease had expired: the process is gone

    assert handle_request(world.collector, request, "worker-2") is Delivery.ACK
    assert len(world.reports(request)) == 1
    assert world.ledger_document(request)["state"] == State.REPORTED


def test_report_rejected_by_mineos_is_recorded_failed_not_retried(world):
    request = world.request(ADA)
    world.mineos.inject_faults([{"status": 400}])
    assert handle_request(world.collector, request, "worker-1") is Delivery.ACK
    document = world.ledger_document(request)
    assert document["state"] == State.FAILED
    assert document["report"]["http_status"] == 400
    assert handle_request(world.collector, request, "worker-2") is Delivery.ACK
    assert len(world.reports(request)) == 1


def test_dead_letter_of_unfinished_operation_reports_failed_once(world):
    request = world.request(ADA)
    world.collector.sources[0].fail_with = SourceError("still down", transient=True)
    with pytest.raises(TransientFailure):
        handle_request(world.collector, request, "worker-1")
    assert handle_dead_letter(world.collector, request, "dlq-1", "5") is Delivery.ACK
    assert handle_dead_letter(world.collector, request, "dlq-2", "5") is Delivery.ACK
    (report,) = world.reports(request)
    assert report.body["status"] == "Failed"
    assert "5 delivery attempts" in report.body["message"]
    assert world.ledger_document(request)["state"] == State.DEAD_LETTERED


def test_dead_letter_of_reported_operation_does_nothing(world):
    request = world.request(ADA)
    handle_request(world.collector, request, "worker-1")
    assert handle_dead_letter(world.collector, request, "dlq-1", "5") is Delivery.ACK
    assert len(world.reports(request)) == 1
    assert world.ledger_document(request)["state"] == State.REPORTED


def test_dead_letter_while_a_worker_holds_the_lease_backs_off(world):
    request = world.request(ADA)
    world.collector.ledger.claim(request, "worker-busy")
    assert handle_dead_letter(world.collector, request, "dlq-1", "5") is Delivery.RETRY
    assert world.reports(request) == []


def test_delete_removes_data_and_reports_receipt(world):
    request = world.request(ADA, Action.DELETE)
    handle_request(world.collector, request, "worker-1")
    (report,) = world.reports(request)
    assert report.body["status"] == "Completed"
    assert "files" not in report.body
    receipt = world.ledger_document(request)["outcome"]["receipt"]
    assert receipt["accounts"] == {"mode": "delete", "found": 2, "changed": 2, "remaining": 0}
    assert receipt["orders"] == {"mode": "delete", "found": 1, "changed": 1, "remaining": 0}
    assert [r["email"] for r in world.collector.sources[0].records] == ["grace@example.com"]


def test_delete_retained_source_reports_cannot_delete_data_with_reason(emulator_env, fake_mineos, tmp_path):
    retained = source(
        "invoices",
        Identity.EMAIL,
        [{"email": "ada@example.com"}],
        delete=DeletePolicy(mode="retain", reason="tax law: 10 years"),
    )
    world = build_world(
        emulator_env, fake_mineos, tmp_path, [source("accounts", Identity.EMAIL, []), retained]
    )
    request = world.request(ADA, Action.DELETE)
    handle_request(world.collector, request, "worker-1")
    (report,) = world.reports(request)
    assert report.body["status"] == "CannotDeleteData"
    assert "invoices (tax law: 10 years)" in report.body["message"]
    assert retained.records == [{"email": "ada@example.com"}]


def test_delete_unknown_person_reports_user_not_found(world):
    request = world.request(NOBODY, Action.DELETE)
    handle_request(world.collector, request, "worker-1")
    (report,) = world.reports(request)
    assert report.body["status"] == "UserNotFound"


def test_unexpected_failure_releases_lease_so_redelivery_is_not_blocked(world):
    request = world.request(ADA)
    world.collector.sources[0].fail_with = RuntimeError("bug or storage outage")
    with pytest.raises(RuntimeError):
        handle_request(world.collector, request, "worker-1")
    world.collector.sources[0].fail_with = None
    assert handle_request(world.collector, request, "worker-2") is Delivery.ACK
    assert len(world.reports(request)) == 1
