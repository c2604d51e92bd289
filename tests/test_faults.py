"""Fault injection through the whole local stack: crashes, duplicates, MineOS errors, emulator restarts.

Every scenario ends with the same three checks (`assert_reported_once`, `assert_ledger_settled`):
- MineOS received exactly one status call that it applied (answered 200), with the right status, and
  no other call except those a scripted fault answered with an error (those MineOS did not apply); a
  schema-invalid body or a second call would have been answered 400 by the fake MineOS and fails it.
- No ledger document is left in a non-final state.
- A Copy's export holds exactly the manifest and the files it lists, each matching its SHA-256.

The collector runs from `tests/faults/crashing_main.py`, which can SIGKILL its own process group at a
chosen step (CRASH_AT); the services themselves carry no fault hooks. Leases are 3 s so that a takeover
after a crash happens within the test; Pub/Sub redelivers every ~1 s (no retry policy on the emulator)
and dead-letters only after 20 attempts, so that a scenario's restarts are not cut short by the
dead-letter path (that path has its own end-to-end test).
"""

import base64
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import requests
from google.cloud import firestore, pubsub_v1, storage

from infra.driver import StackDriver, download_and_check
from infra.emulators import (
    EmulatorUnavailable,
    ManagedProcess,
    create_pubsub_resources,
    start_firestore_emulator,
    start_function,
    start_pubsub_emulator,
)
from infra.fake_mineos import MineCall, Person
from infra.sample.seed import ADA, DATA_MAP, GRACE, LINUS, UNKNOWN, seed_all, seed_firestore
from infra.stack import LocalStack, StackConfig, StackPorts, start_stack
from mineos_integration.contract import Action, parse_request
from mineos_integration.export import export_prefix
from mineos_integration.ingress import message_attributes
from mineos_integration.ledger import FINAL_STATES, operation_id

pytestmark = pytest.mark.emulators

CRASHING_MAIN = Path(__file__).parent / "faults" / "crashing_main.py"
LEDGER_COLLECTION = "mineos_operations"
LEASE_SECONDS = 3
MAX_DELIVERY_ATTEMPTS = 20
MINEOS_TIMEOUT_SECONDS = 1.0
REPORT_TIMEOUT_SECONDS = 45.0
# After the report and the final ledger state, how long a wrong second call gets to show up: two of
# the emulator's ~1 s redelivery intervals.
SETTLE_SECONDS = 2.0
FINAL = {state.value for state in FINAL_STATES}


@dataclass
class FaultStack:
    """The running stack plus what the scenarios do to it: replace processes, read the ledger."""

    stack: LocalStack
    driver: StackDriver
    marker_dir: Path
    ledger: firestore.CollectionReference
    bucket: storage.Bucket
    restarts: list[str] = field(default_factory=list)

    def start_collector(self, **env: str) -> ManagedProcess:
        """(Re)start the collector on its port, from the crashing source; `env` adds e.g. CRASH_AT."""
        old = self.stack.processes["collector"]
        old.stop()
        self.restarts.append(env.get("CRASH_AT", "normal"))
        process = start_function(
            "collector",
            old.port,
            {**self.stack.service_env, **env},
            old.log_path.parent,
            source=CRASHING_MAIN,
            name=f"collector-{len(self.restarts)}-{env.get('CRASH_AT', 'normal')}",
        )
        self.stack.processes["collector"] = process
        return process

    def stop_collector(self) -> None:
        self.stack.processes["collector"].stop()

    def restart_emulator(self, name: str, start: Callable[..., ManagedProcess]) -> None:
        """Stop an emulator and start a fresh (empty) one on the same port."""
        old = self.stack.processes[name]
        old.stop()
        self.stack.processes[name] = start(old.port, old.log_path.parent)

    def ledger_document(self, call: MineCall) -> dict[str, Any]:
        snapshot = self.ledger.document(operation_id(parse_request(call.action, call.body))).get()
        return snapshot.to_dict() or {}


def wait_until(condition: Callable[[], bool], timeout_seconds: float, what: str) -> None:
    deadline = time.monotonic() + timeout_seconds
    while not condition():
        if time.monotonic() >= deadline:
            raise AssertionError(f"not within {timeout_seconds} s: {what}")
        time.sleep(0.05)


def seed_sample_data(stack: LocalStack, database_url: str) -> None:
    seed_all(database_url, stack.use_emulators())


@pytest.fixture(scope="module")
def faults(tmp_path_factory) -> Iterator[FaultStack]:
    saved_environ = dict(os.environ)
    state_dir = tmp_path_factory.mktemp("fault-stack")
    database_url = f"sqlite:///{state_dir / 'sample.db'}"
    config = StackConfig(
        state_dir=state_dir,
        ports=StackPorts.free(),
        data_map_path=str(DATA_MAP),
        function_source=CRASHING_MAIN,
        lease_seconds=LEASE_SECONDS,
        mineos_backoff_seconds=0.1,
        retry_backoff_seconds=None,
        max_delivery_attempts=MAX_DELIVERY_ATTEMPTS,
        extra_env={
            "SAMPLE_DATABASE_URL": database_url,
            "MINEOS_TIMEOUT_SECONDS": str(MINEOS_TIMEOUT_SECONDS),
            "FIRESTORE_TIMEOUT_SECONDS": "2",
            "PUBLISH_TIMEOUT_SECONDS": "2",
        },
        seed=lambda started: seed_sample_data(started, database_url),
    )
    try:
        try:
            stack = start_stack(config)
        except EmulatorUnavailable as reason:
            pytest.skip(f"local Google Cloud stand-in unavailable: {reason}")
        with stack:
            project = stack.config.project
            yield FaultStack(
                stack=stack,
                driver=StackDriver(stack),
                marker_dir=state_dir,
                ledger=firestore.Client(project=project).collection(LEDGER_COLLECTION),
                bucket=storage.Client(project=project).bucket(stack.config.export_bucket),
            )
    finally:
        os.environ.clear()
        os.environ.update(saved_environ)


@pytest.fixture
def fault_stack(faults) -> Iterator[FaultStack]:
    """The module's stack, with a normal collector running and no fault pending when the test starts."""
    if not faults.stack.processes["collector"].is_running():
        faults.start_collector()
    yield faults
    assert_ledger_settled(faults)


# --- the checks -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Expected:
    """An operation, the status MineOS must receive once, and the scripted error answers besides."""

    call: MineCall
    status: str
    fault_answers: tuple[int, ...] = ()


def assert_reported_once(faults: FaultStack, *expected: Expected) -> list[dict[str, Any]]:
    """Each operation got exactly one applied status call, with its status; no other call except the
    scripted `fault_answers`; its ledger document is final; a Copy's export is complete."""
    reports = []
    for operation in expected:
        reports.append(faults.driver.wait_for_report(operation.call, timeout_seconds=REPORT_TIMEOUT_SECONDS))
        wait_until(
            partial(ledger_is_final, faults, operation.call),
            REPORT_TIMEOUT_SECONDS,
            f"the ledger of trace {operation.call.trace_id} reaches a final state",
        )
    time.sleep(SETTLE_SECONDS)
    for operation, report in zip(expected, reports, strict=True):
        calls = faults.driver.reports_for(operation.call)
        answers = sorted(c["responseStatus"] for c in calls)
        assert answers == sorted((200, *operation.fault_answers)), calls
        assert report["body"]["status"] == operation.status
        assert report["body"]["action"] == operation.call.action.value
        if report["body"].get("files"):
            assert_export_complete(faults, operation.call, report)
        else:
            assert (
                operation.call.action is not Action.COPY
                or operation.status != "Completed"
                or (report["body"]["test"] is True)
            ), "a Copy that found data must list its files"
    return reports


def ledger_is_final(faults: FaultStack, call: MineCall) -> bool:
    return faults.ledger_document(call).get("state") in FINAL


def assert_export_complete(faults: FaultStack, call: MineCall, report: dict[str, Any]) -> None:
    """The export holds the manifest and exactly the files it lists (none lost, none extra)."""
    prefix = export_prefix(operation_id(parse_request(call.action, call.body)))
    stored = sorted(blob.name.removeprefix(prefix) for blob in faults.bucket.list_blobs(prefix=prefix))
    listed = download_and_check(report)  # every file through its signed URL, against its SHA-256
    assert stored == sorted(["manifest.json", *(entry["fileName"] for entry in listed)])
    assert sorted(f["fileName"] for f in report["body"]["files"]) == stored


def assert_ledger_settled(faults: FaultStack) -> None:
    """No operation of any scenario so far is left in a non-final state."""
    unfinished = [
        (snapshot.id, snapshot.get("state"))
        for snapshot in faults.ledger.stream()
        if snapshot.get("state") not in FINAL
    ]
    assert unfinished == []


def send_accepted(faults: FaultStack, call: MineCall) -> None:
    response = faults.driver.send(call)
    assert response.status_code == 202, response.text


def push_body(call: MineCall) -> dict[str, Any]:
    """A Pub/Sub push body carrying `call`, as the ingress publishes it."""
    request = parse_request(call.action, call.body)
    return {
        "subscription": "projects/mineos-local/subscriptions/mineos-requests-collector",
        "message": {
            "data": base64.b64encode(request.model_dump_json().encode()).decode(),
            "attributes": message_attributes(request),
            "messageId": uuid.uuid4().hex,
        },
    }


def run_concurrently(action: Callable[[], int], times: int) -> list[int]:
    results: list[int] = []
    barrier = threading.Barrier(times)

    def run() -> None:
        barrier.wait(timeout=10)
        results.append(action())

    threads = [threading.Thread(target=run) for _ in range(times)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return results


# --- crashes ----------------------------------------------------------------------------------------

CRASHES = [
    (Action.COPY, "after-claim"),
    (Action.COPY, "mid-upload"),
    (Action.COPY, "after-upload"),
    (Action.COPY, "before-report"),
    (Action.COPY, "after-status-call"),
    (Action.DELETE, "before-report"),
    (Action.DELETE, "after-status-call"),
]


@pytest.mark.parametrize(("action", "crash_at"), CRASHES, ids=[f"{a}-{c}" for a, c in CRASHES])
def test_collector_killed_at_a_step_is_taken_over_and_reports_once(fault_stack, action, crash_at):
    marker = fault_stack.marker_dir / f"crashed-{action}-{crash_at}"
    crashing = fault_stack.start_collector(CRASH_AT=crash_at, CRASH_MARKER_FILE=str(marker))
    person, status = (ADA, "Completed") if action is Action.COPY else (GRACE, "CannotDeleteData")
    call = fault_stack.driver.call(action, person)

    send_accepted(fault_stack, call)
    wait_until(lambda: not crashing.is_running(), 30, f"the collector is killed {crash_at}")
    assert marker.exists()
    state_at_crash = fault_stack.ledger_document(call)["state"]
    fault_stack.start_collector()  # Pub/Sub redelivers to the new one; the lease expires in 3 s

    assert_reported_once(fault_stack, Expected(call, status))
    expected_state_at_crash = {
        "after-claim": "collecting",
        "mid-upload": "collecting",
        "after-upload": "collecting",
        "before-report": "reporting",
        "after-status-call": "reporting",
    }[crash_at]
    assert state_at_crash == expected_state_at_crash
    document = fault_stack.ledger_document(call)
    assert document["state"] == "reported"
    assert document["attempt"] >= 2  # the work was taken over, not started afresh by a lucky retry
    if crash_at == "after-status-call":
        # The takeover asked MineOS's ticket log instead of calling again.
        assert document["report"]["result"] == "already-settled"


# --- duplicates -------------------------------------------------------------------------------------


def test_same_push_delivered_many_times_at_once_reports_once(fault_stack):
    call = fault_stack.driver.call(Action.COPY, ADA)
    fault_stack.driver.send(call)  # the original, through the ingress and Pub/Sub
    body = push_body(call)
    url = fault_stack.stack.collector_url + "/requests"
    answers = run_concurrently(lambda: requests.post(url, json=body, timeout=60).status_code, 6)
    # The same data published again twice: Pub/Sub's at-least-once delivery, with new message ids.
    publisher = pubsub_v1.PublisherClient()
    data = base64.b64decode(body["message"]["data"])
    for _ in range(2):
        publisher.publish(fault_stack.stack.pubsub.topic, data).result(timeout=10)

    assert set(answers) <= {200, 409, 503}  # done, or "another worker holds it": redelivered later
    assert_reported_once(fault_stack, Expected(call, "Completed"))


def test_same_mineos_request_sent_many_times_at_once_reports_once(fault_stack):
    call = fault_stack.driver.call(Action.DELETE, GRACE, shape="legacy")
    answers = run_concurrently(lambda: fault_stack.driver.send(call).status_code, 6)
    assert answers == [202] * 6
    assert_reported_once(fault_stack, Expected(call, "CannotDeleteData"))
    assert fault_stack.driver.send(call).status_code == 202  # a retry after the report changes nothing
    time.sleep(SETTLE_SECONDS)
    assert len(fault_stack.driver.reports_for(call)) == 1


# --- MineOS's status API failing -------------------------------------------------------------------

STATUS_API_FAULTS = {
    "500": ([{"status": 500}], (500,)),
    "429": ([{"status": 429}], (429,)),
    "500-429-503": ([{"status": 500}, {"status": 429}, {"status": 503}], (500, 429, 503)),
    # More failures than the client's 5 attempts: the delivery fails, the redelivery settles it.
    "down-for-six-calls": ([{"status": 500}] * 6, (500,) * 6),
    "slow-within-timeout": ([{"delay_seconds": MINEOS_TIMEOUT_SECONDS / 2}], ()),
    # The call times out and MineOS did not apply it: the redelivery finds the ticket log open, calls.
    "timeout-not-applied": ([{"delay_seconds": MINEOS_TIMEOUT_SECONDS * 2.5, "status": 504}], (504,)),
    # The call times out but MineOS applied it (the answer was lost): the log settles it, no 2nd call.
    "timeout-applied": ([{"delay_seconds": MINEOS_TIMEOUT_SECONDS * 1.5, "apply": True}], ()),
}


# Every fault on a Copy; a Delete takes the same reporting path, so only the trickier ones on it.
STATUS_API_CASES = [(Action.COPY, fault) for fault in STATUS_API_FAULTS] + [
    (Action.DELETE, fault) for fault in ("500-429-503", "timeout-not-applied", "timeout-applied")
]


@pytest.mark.parametrize(("action", "fault"), STATUS_API_CASES, ids=[f"{a}-{f}" for a, f in STATUS_API_CASES])
def test_status_api_errors_and_timeouts_are_retried_and_applied_once(fault_stack, action, fault):
    scripted, fault_answers = STATUS_API_FAULTS[fault]
    person, status = (LINUS, "Completed") if action is Action.COPY else (GRACE, "CannotDeleteData")
    call = fault_stack.driver.call(action, person)
    fault_stack.driver.inject_faults(scripted)
    send_accepted(fault_stack, call)
    assert_reported_once(fault_stack, Expected(call, status, fault_answers))
    assert fault_stack.ledger_document(call)["state"] == "reported"


# --- the collector down while work piles up ---------------------------------------------------------


def test_collector_down_while_requests_pile_up_reports_each_once_when_back(fault_stack):
    fault_stack.stop_collector()
    driver = fault_stack.driver
    expected = [
        Expected(driver.call(Action.COPY, ADA), "Completed"),
        Expected(driver.call(Action.COPY, LINUS, shape="legacy"), "Completed"),
        Expected(driver.call(Action.COPY, UNKNOWN), "UserNotFound"),
        Expected(driver.call(Action.COPY, ADA, is_test=True), "Completed"),
        Expected(driver.call(Action.COPY, Person(name="No Id", email=ADA.email)), "MissingIdentifiers"),
        Expected(driver.call(Action.DELETE, GRACE), "CannotDeleteData"),
        Expected(driver.call(Action.DELETE, UNKNOWN), "UserNotFound"),
    ]
    for operation in expected:
        send_accepted(fault_stack, operation.call)
    # Every message fails a few deliveries (~1 s apart) against the closed port meanwhile.
    time.sleep(3)
    assert all(driver.reports_for(operation.call) == [] for operation in expected)

    fault_stack.start_collector()
    assert_reported_once(fault_stack, *expected)


# --- the emulators restarting ----------------------------------------------------------------------


def test_pubsub_restart_mid_run_loses_nothing_accepted_and_reports_once(fault_stack):
    """The Pub/Sub emulator restarts empty, so it is restarted only when every accepted message has
    reached the collector (production Pub/Sub keeps undelivered messages; the emulator cannot):
    one delivery is in flight (its status call is slow) when it goes away, and MineOS's calls while it
    is down are refused with 503, which MineOS retries."""
    in_flight = fault_stack.driver.call(Action.COPY, ADA)
    fault_stack.driver.inject_faults([{"delay_seconds": MINEOS_TIMEOUT_SECONDS * 0.8}])
    send_accepted(fault_stack, in_flight)
    wait_until(
        lambda: fault_stack.ledger_document(in_flight).get("state") in {"reporting", *FINAL},
        REPORT_TIMEOUT_SECONDS,
        "the first operation reaches its status call",
    )
    pubsub = fault_stack.stack.processes["pubsub-emulator"]
    pubsub.stop()

    refused = fault_stack.driver.call(Action.DELETE, GRACE)
    assert fault_stack.driver.send(refused).status_code == 503  # not published, so not accepted

    fault_stack.restart_emulator("pubsub-emulator", start_pubsub_emulator)
    config = fault_stack.stack.config
    create_pubsub_resources(
        config.project,
        config.requests_topic,
        fault_stack.stack.collector_url,
        max_delivery_attempts=MAX_DELIVERY_ATTEMPTS,
        retry_backoff_seconds=None,
        emulator_host=fault_stack.stack.pubsub_host,
    )
    # MineOS retries the refused call; a late retry of the in-flight one must change nothing.
    wait_until(
        lambda: fault_stack.driver.send(refused).status_code == 202,
        30,
        "the ingress publishes again once Pub/Sub is back",
    )
    send_accepted(fault_stack, in_flight)

    assert_reported_once(fault_stack, Expected(in_flight, "Completed"), Expected(refused, "CannotDeleteData"))


def test_firestore_restart_before_claims_and_collector_up_meanwhile_reports_each_once(fault_stack):
    """The Firestore emulator restarts empty, so the ledger is lost: it is restarted when the ledger
    holds only `received` documents (the collector is down), which is what the scenario can show
    truthfully: the collector needs none of them, it creates the document when it claims. While
    Firestore is down, the ingress refuses calls with 503 and the collector answers 503 to pushes."""
    fault_stack.stop_collector()
    piled = [
        Expected(fault_stack.driver.call(Action.COPY, LINUS), "Completed"),
        Expected(fault_stack.driver.call(Action.DELETE, GRACE), "CannotDeleteData"),
    ]
    for operation in piled:
        send_accepted(fault_stack, operation.call)

    firestore_emulator = fault_stack.stack.processes["firestore-emulator"]
    firestore_emulator.stop()
    refused = fault_stack.driver.call(Action.COPY, UNKNOWN)
    assert fault_stack.driver.send(refused).status_code == 503
    fault_stack.start_collector()  # pushes now fail on the ledger (503) and are redelivered
    time.sleep(2)

    fault_stack.restart_emulator("firestore-emulator", start_firestore_emulator)
    seed_firestore(firestore.Client(project=fault_stack.stack.config.project))  # the profiles source
    wait_until(
        lambda: fault_stack.driver.send(refused).status_code == 202,
        30,
        "the ingress records calls again once Firestore is back",
    )
    assert_reported_once(fault_stack, *piled, Expected(refused, "UserNotFound"))


# --- contention -------------------------------------------------------------------------------------


def test_ledger_transaction_aborted_on_every_attempt_is_a_retryable_api_error(fault_stack, monkeypatch):
    """Firestore aborts contended transactions; when the client's attempts run out it raises a plain
    ValueError. The ledger turns that back into `Aborted`, which the collector answers with 503
    (retry later) instead of an unhandled 500."""
    from google.api_core import exceptions as google_exceptions

    from mineos_integration.ledger import Ledger

    collection = f"contention-{uuid.uuid4().hex[:8]}"  # the abandoned attempts' locks stay here
    ledger = Ledger(fault_stack.ledger._client, collection, lease_seconds=3, retention_days=1)
    request = parse_request(Action.COPY, fault_stack.driver.call(Action.COPY, ADA).body)

    def always_aborted(transaction: firestore.Transaction) -> None:
        raise google_exceptions.Aborted("contention")

    ledger.claim(request, "worker-1")
    monkeypatch.setattr(firestore.Transaction, "_commit", always_aborted)
    with pytest.raises(google_exceptions.Aborted):
        ledger.claim(request, "worker-2")
    with pytest.raises(google_exceptions.Aborted):
        ledger.record_progress(request, "worker-1", "orders", [])
