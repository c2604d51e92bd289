"""What the e2e and soak benchmarks share: the seeded local stack, timed signed calls, and the count
of status calls the fake MineOS received for each operation.

A call's time to report runs from just before its POST to the ingress (this process's clock) to the
fake MineOS's `receivedAt` of the operation's first status call (its clock): the same machine's clock.
"""

import contextlib
import math
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import requests
from google.cloud import firestore

from infra.driver import INTEGRATION_ID, ROUTES
from infra.fake_mineos import MineCall, Person, build_call
from infra.sample.seed import DATA_MAP, seed_all
from infra.stack import LocalStack, StackConfig, StackPorts, start_stack
from mineos_integration.contract import Action, parse_request
from mineos_integration.ledger import operation_id
from mineos_integration.settings import Settings
from mineos_integration.signature import SIGNATURE_HEADER, sign

POST_TIMEOUT_SECONDS = 30.0
# /_fake/calls returns every status call so far (~3 KB each): poll less often as it grows.
MIN_POLL_INTERVAL_SECONDS = 1.0
MAX_POLL_INTERVAL_SECONDS = 10.0
STATUS_CALLS_PER_POLL_SECOND = 1000
FAKE_MINEOS_TIMEOUT_SECONDS = 30.0
FIRESTORE_TIMEOUT_SECONDS = 60.0
# After the last operation is reported, how long to keep watching for a second status call.
DUPLICATE_GRACE_SECONDS = 5.0


@contextlib.contextmanager
def sample_stack(log_level: str = "INFO") -> Iterator[LocalStack]:
    """The whole local stack on free ports with the sample company's data seeded, as `make demo` runs it."""
    with tempfile.TemporaryDirectory(prefix="bench-stack-") as folder:
        state_dir = Path(folder)
        database_url = f"sqlite:///{state_dir / 'sample.db'}"

        def seed(stack: LocalStack) -> None:
            # This process's own Google clients (the seeding) talk to the stack's emulators.
            stack.use_emulators()
            seed_all(database_url, stack.config.project)

        config = StackConfig(
            state_dir=state_dir,
            ports=StackPorts.free(),
            data_map_path=str(DATA_MAP),
            log_level=log_level,
            extra_env={"SAMPLE_DATABASE_URL": database_url},
            seed=seed,
        )
        with start_stack(config) as stack:
            yield stack


@dataclass(frozen=True)
class SentCall:
    """One call as the sender saw it: the ingress's answer and when the POST started (epoch seconds)."""

    call: MineCall
    status_code: int  # 0: no answer (connection error or timeout)
    posted_at: float
    answered_at: float

    @property
    def operation(self) -> tuple[str, str]:
        return (self.call.ticket_id, self.call.integration_id)


class Sender:
    """Signs and POSTs calls to the stack's ingress; one HTTP session per thread (kept-alive connections)."""

    def __init__(self, stack: LocalStack) -> None:
        self._ingress_url = stack.ingress_url
        self._fake_mineos_url = stack.fake_mineos_url
        self._secret = stack.signing_secret
        self._local = threading.local()

    def _session(self) -> requests.Session:
        session: requests.Session | None = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            session.trust_env = False  # 127.0.0.1 only: never through a proxy from the environment
            self._local.session = session
        return session

    def register(self, call: MineCall) -> None:
        """Make the fake MineOS's ticket log show the operation in progress, as MineOS's own would."""
        response = self._session().post(
            f"{self._fake_mineos_url}/_fake/operations",
            json={"ticketId": call.ticket_id, "integrationId": call.integration_id, "action": call.action},
            timeout=FAKE_MINEOS_TIMEOUT_SECONDS,
        )
        response.raise_for_status()

    def send(self, call: MineCall) -> SentCall:
        """Register the operation (untimed), then POST the signed call and time it; never raises."""
        headers = {"Content-Type": "application/json", SIGNATURE_HEADER: sign(call.body, self._secret)}
        try:
            self.register(call)
        except requests.RequestException:
            now = time.time()
            return SentCall(call, 0, now, now)  # not sent: counted as not accepted, and never reported
        posted_at = time.time()
        try:
            response = self._session().post(
                self._ingress_url + ROUTES[call.action],
                data=call.body,
                headers=headers,
                timeout=POST_TIMEOUT_SECONDS,
            )
            status_code = response.status_code
        except requests.RequestException:
            status_code = 0
        return SentCall(call, status_code, posted_at, time.time())


def copy_call(person: Person, *, is_test: bool = False) -> MineCall:
    return build_call(Action.COPY, person, integration_id=INTEGRATION_ID, is_test=is_test)


def status_calls(fake_mineos_url: str) -> list[dict[str, Any]]:
    """Every status POST the fake MineOS received, whatever it answered."""
    response = requests.get(f"{fake_mineos_url}/_fake/calls", timeout=FAKE_MINEOS_TIMEOUT_SECONDS)
    response.raise_for_status()
    calls: list[dict[str, Any]] = response.json()
    return calls


def wait_for_reports(
    fake_mineos_url: str, operations: Iterable[tuple[str, str]], timeout_seconds: float
) -> list[dict[str, Any]]:
    """Poll the fake MineOS until each operation has a status call (or the deadline), then watch a few
    seconds more for duplicates; returns the status calls of these operations."""
    wanted = set(operations)
    deadline = time.monotonic() + timeout_seconds
    while True:
        every_call = status_calls(fake_mineos_url)
        reported = {(c["ticketId"], c["integrationId"]) for c in every_call}
        if reported >= wanted or time.monotonic() >= deadline:
            break
        interval = MIN_POLL_INTERVAL_SECONDS + len(every_call) / STATUS_CALLS_PER_POLL_SECOND
        time.sleep(min(interval, MAX_POLL_INTERVAL_SECONDS, max(0.0, deadline - time.monotonic())))
    time.sleep(DUPLICATE_GRACE_SECONDS)
    return [c for c in status_calls(fake_mineos_url) if (c["ticketId"], c["integrationId"]) in wanted]


def received_at_epoch(status_call: dict[str, Any]) -> float:
    return datetime.fromisoformat(status_call["receivedAt"]).timestamp()


def percentile(values: Sequence[float], fraction: float) -> float:
    """The nearest-rank percentile (`fraction` in 0..1) of `values`; NaN when there are none."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


@dataclass(frozen=True)
class Outcome:
    """What happened to a batch of calls: answers, status calls per operation, times to report."""

    sent: int
    accepted: int  # answered 202
    not_accepted: int  # any other answer, or none
    reported_once: int
    reported_twice_or_more: int
    never_reported: int
    statuses: dict[str, int]  # status of each operation's first status call
    report_seconds_by_call: list[float | None]  # per call: POST start -> first status call, None: never
    answer_seconds: list[float]  # per call: POST start -> the ingress's answer
    first_posted_at: float
    last_reported_at: float

    @property
    def report_seconds(self) -> list[float]:
        return [seconds for seconds in self.report_seconds_by_call if seconds is not None]

    @property
    def operations_per_second(self) -> float:
        reported = self.reported_once + self.reported_twice_or_more
        span = self.last_reported_at - self.first_posted_at
        return reported / span if span > 0 else 0.0

    @property
    def exactly_once(self) -> bool:
        return self.reported_once == self.sent and self.not_accepted == 0


def outcome(sent: Sequence[SentCall], calls: Sequence[dict[str, Any]]) -> Outcome:
    """Match the sender's record with the status calls the fake MineOS received."""
    per_operation: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for status_call in calls:
        per_operation.setdefault((status_call["ticketId"], status_call["integrationId"]), []).append(
            status_call
        )
    counts = Counter(len(per_operation.get(item.operation, [])) for item in sent)
    report_seconds: list[float | None] = []
    statuses: Counter[str] = Counter()
    last_reported_at = 0.0
    for item in sent:
        received = per_operation.get(item.operation)
        if not received:
            report_seconds.append(None)
            continue
        first = min(received, key=received_at_epoch)
        first_at = received_at_epoch(first)
        report_seconds.append(first_at - item.posted_at)
        last_reported_at = max(last_reported_at, first_at)
        body = first.get("body")
        statuses[str(body.get("status")) if isinstance(body, dict) else "?"] += 1
    accepted = sum(1 for item in sent if item.status_code == 202)
    return Outcome(
        sent=len(sent),
        accepted=accepted,
        not_accepted=len(sent) - accepted,
        reported_once=counts[1],
        reported_twice_or_more=sum(number for times, number in counts.items() if times >= 2),
        never_reported=counts[0],
        statuses=dict(statuses),
        report_seconds_by_call=report_seconds,
        answer_seconds=[item.answered_at - item.posted_at for item in sent],
        first_posted_at=min((item.posted_at for item in sent), default=0.0),
        last_reported_at=last_reported_at,
    )


def count_log_errors(log_path: Path) -> int:
    """Lines of a service's log at ERROR or worse, plus tracebacks (gunicorn's are plain text)."""
    try:
        text = log_path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return 0
    markers = ('"severity": "ERROR"', '"severity": "CRITICAL"', "Traceback (most recent call last)")
    return sum(1 for line in text.splitlines() if any(marker in line for marker in markers))


def ledger_states(stack: LocalStack, calls: Iterable[MineCall]) -> dict[tuple[str, str], str]:
    """The ledger state of each call's operation ("missing": no document), read from the Firestore
    emulator: tells an operation still queued (received) from one that was lost."""
    collection_name = stack.service_env.get(
        "LEDGER_COLLECTION", Settings.model_fields["ledger_collection"].default
    )
    client = firestore.Client(project=stack.config.project)
    collection = client.collection(collection_name)
    references = {
        (call.ticket_id, call.integration_id): collection.document(
            operation_id(parse_request(call.action, call.body))
        )
        for call in calls
    }
    found = {
        snapshot.id: (snapshot.to_dict() or {}).get("state", "?")
        for snapshot in client.get_all(list(references.values()), timeout=FIRESTORE_TIMEOUT_SECONDS)
        if snapshot.exists
    }
    return {operation: found.get(reference.id, "missing") for operation, reference in references.items()}
