"""The whole pipeline, end to end, through the local stack: the fake MineOS sends signed calls to the
ingress, Pub/Sub pushes them to the collector, which reads and deletes in SQL (a real PostgreSQL),
Firestore and Cloud Storage and reports back to the fake MineOS. Every test counts status calls."""

import json
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import sqlalchemy as sa
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from google.cloud import firestore, pubsub_v1, storage

from infra.driver import StackDriver, download_and_check
from infra.fake_mineos import MineCall, Person
from infra.sample.seed import ACCOUNTS, ADA, DATA_MAP, GRACE, INVOICES, LINUS, ORDERS, UNKNOWN, seed_all
from infra.stack import LocalStack, StackConfig, StackPorts, start_stack
from mineos_integration.contract import Action, parse_request
from mineos_integration.ledger import FINAL_STATES, Ledger, operation_id
from tests.postgres import postgres_server_fixture  # noqa: F401
from tests.v4_signature import verify_v4_signed_url

pytestmark = pytest.mark.emulators

LEASE_SECONDS = 6
PREVIEW_DEADLINE_SECONDS = 2.0


@pytest.fixture(scope="module")
def stack(tmp_path_factory, postgres_server) -> Iterator[LocalStack]:
    saved_environ = dict(os.environ)
    config = StackConfig(
        state_dir=tmp_path_factory.mktemp("stack"),
        ports=StackPorts.free(),
        data_map_path=str(DATA_MAP),
        lease_seconds=LEASE_SECONDS,
        mineos_backoff_seconds=0.1,
        retry_backoff_seconds=None,  # the emulator then redelivers every ~1 s: faster tests
        extra_env={
            "SAMPLE_DATABASE_URL": postgres_server.url,
            "SOURCE_TIMEOUT_SECONDS": "2",
            "PREVIEW_DEADLINE_SECONDS": str(PREVIEW_DEADLINE_SECONDS),
            "SIGNED_URL_TTL_SECONDS": "900",
        },
        seed=lambda started: seed_all(postgres_server.url, started.use_emulators()),
    )
    try:
        with start_stack(config) as started:
            yield started
    finally:
        os.environ.clear()
        os.environ.update(saved_environ)


@pytest.fixture
def driver(stack) -> StackDriver:
    stack.use_emulators()
    return StackDriver(stack)


@pytest.fixture
def database(stack, postgres_server) -> Iterator[sa.Engine]:
    engine = sa.create_engine(postgres_server.url)
    yield engine
    engine.dispose()


def ledger_state(stack: LocalStack, call: MineCall) -> str:
    client = firestore.Client(project=stack.config.project)
    request = parse_request(call.action, call.body)
    snapshot = client.collection("mineos_operations").document(operation_id(request)).get().to_dict() or {}
    return snapshot["state"]


def assert_reported_once(
    driver: StackDriver, call: MineCall, status: str, settle_seconds: float = 1.5
) -> dict:
    report = driver.wait_for_report(call)
    time.sleep(settle_seconds)  # room for a wrong second call to show up
    reports = driver.reports_for(call)
    assert len(reports) == 1, reports
    assert report["body"]["status"] == status
    assert ledger_state(driver.stack, call) in {state.value for state in FINAL_STATES}
    return report


def test_copy_exports_every_source_and_reports_once_with_verified_signed_urls(driver):
    call = driver.call(Action.COPY, ADA)
    assert driver.send(call).status_code == 202
    report = assert_reported_once(driver, call, "Completed")

    files = download_and_check(report)  # every file's SHA-256 and size against the manifest
    assert {f["fileName"] for f in files} == {
        "orders.jsonl",
        "accounts.jsonl",
        "profiles.jsonl",
        "uploads/avatar.txt",
    }
    key = json.loads(Path(driver.stack.signing_key_file).read_text())
    public_key = load_pem_private_key(key["private_key"].encode(), None).public_key()
    for reference in report["body"]["files"]:
        signed_at, expires_at = verify_v4_signed_url(reference["url"], public_key)
        assert (expires_at - signed_at).total_seconds() == 900
    accounts = next(f for f in report["body"]["files"] if f["fileName"] == "accounts.jsonl")
    (account,) = [json.loads(line) for line in requests.get(accounts["url"], timeout=10).text.splitlines()]
    assert account["email"] == ADA.email
    assert "password_hash" not in account  # only the data map's columns are exported


def test_copy_same_mineos_request_three_times_concurrently_reports_once(driver):
    call = driver.call(Action.COPY, ADA)
    answers: list[int] = []
    threads = [
        threading.Thread(target=lambda: answers.append(driver.send(call).status_code)) for _ in range(3)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert answers == [202, 202, 202]
    assert_reported_once(driver, call, "Completed")
    assert driver.send(call).status_code == 202  # a MineOS retry after the report: accepted, not redone
    time.sleep(1)
    assert len(driver.reports_for(call)) == 1


def test_copy_same_push_delivered_three_times_reports_once(driver, stack):
    call = driver.call(Action.COPY, LINUS)
    driver.send(call)
    request = parse_request(Action.COPY, call.body)
    publisher = pubsub_v1.PublisherClient()
    for _ in range(2):  # Pub/Sub's at-least-once delivery, played out: the same data published again
        publisher.publish(stack.pubsub.topic, request.model_dump_json().encode()).result(timeout=10)
    assert_reported_once(driver, call, "Completed", settle_seconds=3)


def test_copy_unknown_person_is_user_not_found(driver):
    call = driver.call(Action.COPY, UNKNOWN)
    driver.send(call)
    report = assert_reported_once(driver, call, "UserNotFound")
    assert "files" not in report["body"]


def test_copy_test_call_is_reported_with_test_true(driver):
    call = driver.call(Action.COPY, ADA, is_test=True, shape="legacy")
    driver.send(call)
    report = assert_reported_once(driver, call, "Completed")
    assert report["body"]["test"] is True


def test_copy_mineos_status_api_failing_transiently_is_retried_and_reported_once(driver):
    driver.inject_faults([{"status": 500}, {"status": 429}])
    call = driver.call(Action.COPY, GRACE)
    driver.send(call)
    driver.wait_for_report(call)
    time.sleep(1.5)
    assert [c["responseStatus"] for c in driver.reports_for(call)] == [500, 429, 200]


def test_preview_answers_within_deadline_with_at_most_three_string_properties(driver):
    started = time.monotonic()
    response = driver.send(driver.call(Action.PREVIEW, ADA))
    elapsed = time.monotonic() - started
    assert response.status_code == 200
    records = response.json()["records"]
    assert {r["name"] for r in records} >= {"accounts", "orders", "profiles", "uploads"}
    for record in records:
        assert isinstance(record["name"], str)
        assert 1 <= len(record["properties"]) <= 3
        assert all(isinstance(p["name"], str) and isinstance(p["value"], str) for p in record["properties"])
    assert elapsed < PREVIEW_DEADLINE_SECONDS + 1


def test_delete_then_copy_finds_nothing_and_every_store_is_verified_empty(driver, stack, database):
    person = Person(name="Erin Erasable", email="erin@example.com", internal_id="cust-2001")
    with database.begin() as connection:
        connection.execute(ACCOUNTS.insert(), [{"email": person.email, "name": person.name, "plan": "pro"}])
        connection.execute(
            ORDERS.insert(),
            [{"customer_id": person.internal_id, "shipping_name": person.name, "total_cents": 2001}],
        )
    firestore.Client(project=stack.config.project).collection("profiles").document().set(
        {"email": person.email}
    )
    bucket = storage.Client(project=stack.config.project).bucket("mineos-sample-uploads")
    bucket.blob(f"users/{person.internal_id}/cv.txt").upload_from_string(b"cv")

    call = driver.call(Action.DELETE, person)
    driver.send(call)
    assert_reported_once(driver, call, "Completed")

    with database.connect() as connection:
        assert connection.execute(sa.select(ACCOUNTS).where(ACCOUNTS.c.email == person.email)).all() == []
        (order,) = connection.execute(sa.select(ORDERS).where(ORDERS.c.total_cents == 2001)).all()
        # Anonymised: the order is kept for the books, the person is gone from it.
        assert (order.customer_id, order.shipping_name) != (person.internal_id, person.name)
        assert order.shipping_name is None
    profiles = firestore.Client(project=stack.config.project).collection("profiles")
    assert list(profiles.where(filter=firestore.FieldFilter("email", "==", person.email)).stream()) == []
    assert list(bucket.list_blobs(prefix=f"users/{person.internal_id}/")) == []

    again = driver.call(Action.COPY, person)
    driver.send(again)
    assert_reported_once(driver, again, "UserNotFound")


def test_delete_with_retained_source_is_cannot_delete_data_and_keeps_it(driver, database):
    call = driver.call(Action.DELETE, GRACE)
    driver.send(call)
    report = assert_reported_once(driver, call, "CannotDeleteData")
    assert "invoices" in report["body"]["message"]
    with database.connect() as connection:
        assert len(connection.execute(sa.select(INVOICES).where(INVOICES.c.email == GRACE.email)).all()) == 1


def test_delete_unknown_person_is_user_not_found(driver):
    call = driver.call(Action.DELETE, UNKNOWN, shape="legacy")
    driver.send(call)
    assert_reported_once(driver, call, "UserNotFound")


def test_delete_partial_failure_then_redelivery_finishes_and_reports_once(driver, database):
    person = Person(name="Pat Partial", email="pat@example.com", internal_id="cust-3001")
    with database.begin() as connection:
        connection.execute(ACCOUNTS.insert(), [{"email": person.email, "name": person.name}])
        connection.execute(
            ORDERS.insert(), [{"customer_id": person.internal_id, "shipping_name": person.name}]
        )
    # Hold a lock on `accounts`: orders is anonymised first, then the accounts delete times out
    # (SOURCE_TIMEOUT_SECONDS=2) and the delivery fails; Pub/Sub redelivers until the lock is gone.
    blocker = database.connect()
    transaction = blocker.begin()
    blocker.execute(sa.text("LOCK TABLE accounts IN ACCESS EXCLUSIVE MODE"))
    try:
        call = driver.call(Action.DELETE, person)
        driver.send(call)
        time.sleep(5)
        assert driver.reports_for(call) == []
    finally:
        transaction.rollback()
        blocker.close()
    assert_reported_once(driver, call, "Completed")
    with database.connect() as connection:
        assert connection.execute(sa.select(ACCOUNTS).where(ACCOUNTS.c.email == person.email)).all() == []


def test_operation_pubsub_gave_up_on_is_dead_lettered_and_reported_failed_once(driver, stack):
    call = driver.call(Action.COPY, ADA)
    request = parse_request(Action.COPY, call.body)
    # A worker that hangs: it holds the lease, so every delivery backs off until Pub/Sub dead-letters
    # the message; the dead-letter handler waits for the lease to expire, then reports Failed.
    ledger = Ledger(
        firestore.Client(project=stack.config.project),
        "mineos_operations",
        lease_seconds=12,
        retention_days=1,
    )
    ledger.claim(request, "hung-worker")
    driver.send(call)
    report = driver.wait_for_report(call, timeout_seconds=60)
    time.sleep(1.5)
    assert len(driver.reports_for(call)) == 1
    assert report["body"]["status"] == "Failed"
    assert "delivery attempts" in report["body"]["message"]
    assert ledger_state(stack, call) == "dead-lettered"
