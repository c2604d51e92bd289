"""The ledger: one Firestore document per MineOS operation, the heart of exactly-once reporting.

The document is keyed by MineOS's own ids (integrationId, traceId, action), never by a Pub/Sub
message id, and only moves forward (design.md):

    received → collecting (lease) → collected → reporting → reported
                                                          ↘ failed (MineOS rejected the report)
    any non-final state → dead-lettered (reported Failed after Pub/Sub gave up)

Every transition is a Firestore transaction (or a `create()` precondition) that checks the state and,
where work is done under it, that the caller still holds the lease. Documents hold ids, states,
counts and object names: no personal data.
"""

import contextlib
import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from google.api_core import exceptions as google_exceptions
from google.api_core import retry as retries
from google.cloud import firestore

from mineos_integration.contract import PrivacyRequest

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


class State(StrEnum):
    RECEIVED = "received"
    COLLECTING = "collecting"
    COLLECTED = "collected"
    REPORTING = "reporting"
    REPORTED = "reported"
    FAILED = "failed"
    DEAD_LETTERED = "dead-lettered"


FINAL_STATES = frozenset({State.REPORTED, State.FAILED, State.DEAD_LETTERED})


class Step(StrEnum):
    """What a worker that claimed an operation must do next."""

    DONE = "done"  # already final: acknowledge and do nothing
    BUSY = "busy"  # another worker holds a live lease: back off, Pub/Sub redelivers later
    COLLECT = "collect"  # (re)start collecting; sources already done are in `progress`
    REPORT = "report"  # the outcome is known and nothing was sent yet
    SETTLE = "settle"  # a status call may have been sent: ask MineOS before calling again


class LeaseLost(Exception):
    """Another worker took the operation over (our lease expired); stop without writing."""


def _run_transaction(transactional: Callable[[firestore.Transaction], Any], client: firestore.Client) -> Any:
    """Run a `@firestore.transactional` function; contention that outlasts the client's attempts is
    raised as `Aborted` (a retryable API error: the delivery is retried), not the client's ValueError."""
    try:
        return transactional(client.transaction())
    except ValueError as error:
        if isinstance(error.__cause__, google_exceptions.Aborted):
            raise error.__cause__ from error
        raise


@dataclass(frozen=True)
class Claim:
    step: Step
    document: Mapping[str, Any]


def operation_id(request: PrivacyRequest) -> str:
    """The ledger document id: a digest of MineOS's ids (they may hold characters Firestore refuses)."""
    return hashlib.sha256("\x1f".join(request.operation_key).encode()).hexdigest()[:40]


class Ledger:
    def __init__(
        self,
        client: firestore.Client,
        collection: str,
        *,
        lease_seconds: int,
        retention_days: int,
        timeout_seconds: float = 10.0,
        clock: Clock = utc_now,
    ) -> None:
        self._client = client
        self._collection = client.collection(collection)
        self._lease = timedelta(seconds=lease_seconds)
        self._retention = timedelta(days=retention_days)
        self._clock = clock
        self._timeout = timeout_seconds
        # Retries of transient errors stop at the same bound: a call never takes longer than that.
        self._retry = retries.Retry(initial=0.1, maximum=1.0, timeout=timeout_seconds)

    def _ref(self, request: PrivacyRequest) -> firestore.DocumentReference:
        return self._collection.document(operation_id(request))

    def get(self, request: PrivacyRequest) -> dict[str, Any] | None:
        snapshot = self._ref(request).get(retry=self._retry, timeout=self._timeout)
        return snapshot.to_dict() if snapshot.exists else None

    def _new_document(self, request: PrivacyRequest, state: State) -> dict[str, Any]:
        now = self._clock()
        return {
            "integration_id": request.integration_id,
            "trace_id": request.trace_id,
            "action": request.action.value,
            "ticket_id": request.ticket_id,
            "is_test": request.is_test,
            "state": state.value,
            "attempt": 0,
            "progress": {},
            "created_at": now,
            "updated_at": now,
            # A Firestore TTL policy on this field deletes the document after the retention period.
            "expires_at": now + self._retention,
        }

    def record_received(self, request: PrivacyRequest) -> State:
        """Record a request the ingress accepted; return its state (an existing one's if a duplicate)."""
        ref = self._ref(request)
        try:
            ref.create(self._new_document(request, State.RECEIVED), retry=self._retry, timeout=self._timeout)
        except google_exceptions.AlreadyExists:
            document = self.get(request)
            return State(document["state"]) if document else State.RECEIVED
        return State.RECEIVED

    def claim(self, request: PrivacyRequest, worker: str) -> Claim:
        """Take the operation's lease for `worker` if it is free, and say what to do next."""
        ref = self._ref(request)

        @firestore.transactional
        def claim_in(transaction: firestore.Transaction) -> Claim:
            snapshot = ref.get(transaction=transaction, retry=self._retry, timeout=self._timeout)
            now = self._clock()
            stored = snapshot.to_dict() if snapshot.exists else None
            document = stored or self._new_document(request, State.RECEIVED)
            state = State(document["state"])
            if state in FINAL_STATES:
                return Claim(Step.DONE, document)
            lease_expires_at = document.get("lease_expires_at")
            if (
                document.get("lease_owner") not in (None, worker)
                and lease_expires_at
                and lease_expires_at > now
            ):
                return Claim(Step.BUSY, document)
            next_state, step = {
                State.RECEIVED: (State.COLLECTING, Step.COLLECT),
                State.COLLECTING: (State.COLLECTING, Step.COLLECT),
                State.COLLECTED: (State.COLLECTED, Step.REPORT),
                State.REPORTING: (State.REPORTING, Step.SETTLE),
            }[state]
            document.update(
                state=next_state.value,
                lease_owner=worker,
                lease_expires_at=now + self._lease,
                attempt=document.get("attempt", 0) + 1,
                updated_at=now,
            )
            transaction.set(ref, document)
            return Claim(step, document)

        result: Claim = _run_transaction(claim_in, self._client)
        return result

    def _update_holding_lease(
        self,
        request: PrivacyRequest,
        worker: str,
        changes: Callable[[dict[str, Any]], dict[str, Any]],
        *,
        allowed: frozenset[State],
    ) -> dict[str, Any]:
        ref = self._ref(request)

        @firestore.transactional
        def update_in(transaction: firestore.Transaction) -> dict[str, Any]:
            snapshot = ref.get(transaction=transaction, retry=self._retry, timeout=self._timeout)
            document = snapshot.to_dict() or {}
            if document.get("lease_owner") != worker or State(document.get("state", "")) not in allowed:
                raise LeaseLost(f"lease of operation {ref.id} is no longer held by this worker")
            update = {**changes(document), "updated_at": self._clock()}
            transaction.update(ref, update)
            document.update(update)
            return document

        result: dict[str, Any] = _run_transaction(update_in, self._client)
        return result

    def record_progress(self, request: PrivacyRequest, worker: str, source_name: str, result: Any) -> None:
        """Remember one finished source (so a takeover reuses it) and renew the lease."""
        self._update_holding_lease(
            request,
            worker,
            lambda _: {f"progress.`{source_name}`": result, "lease_expires_at": self._clock() + self._lease},
            allowed=frozenset({State.COLLECTING}),
        )

    def mark_collected(self, request: PrivacyRequest, worker: str, outcome: Mapping[str, Any]) -> None:
        self._update_holding_lease(
            request,
            worker,
            lambda _: {
                "state": State.COLLECTED.value,
                "outcome": dict(outcome),
                "lease_expires_at": self._clock() + self._lease,
            },
            allowed=frozenset({State.COLLECTING}),
        )

    def mark_reporting(self, request: PrivacyRequest, worker: str) -> dict[str, Any]:
        """Write the reporting intent: from here on a crash is settled by asking MineOS first."""
        return self._update_holding_lease(
            request,
            worker,
            lambda _: {"state": State.REPORTING.value, "lease_expires_at": self._clock() + self._lease},
            allowed=frozenset({State.COLLECTED, State.REPORTING}),
        )

    def mark_final(self, request: PrivacyRequest, state: State, report: Mapping[str, Any]) -> None:
        """Record how the report ended. MineOS's answer is the truth, so no lease is required here."""
        assert state in FINAL_STATES
        now = self._clock()
        self._ref(request).update(
            {
                "state": state.value,
                "report": {**report, "at": now},
                "lease_owner": None,
                "lease_expires_at": None,
                "updated_at": now,
            },
            retry=self._retry,
            timeout=self._timeout,
        )

    def mark_dead_lettered(self, request: PrivacyRequest, worker: str, outcome: Mapping[str, Any]) -> None:
        """Replace an unfinished collection's outcome with Failed: Pub/Sub gave up on the message."""
        self._update_holding_lease(
            request,
            worker,
            lambda _: {"state": State.COLLECTED.value, "outcome": dict(outcome), "dead_lettered": True},
            allowed=frozenset({State.COLLECTING}),
        )

    def release(self, request: PrivacyRequest, worker: str) -> None:
        """Give the lease up after a transient failure, so the redelivery need not wait for it."""
        # If this fails too, the lease simply expires.
        with contextlib.suppress(LeaseLost, google_exceptions.GoogleAPIError):
            self._update_holding_lease(
                request,
                worker,
                lambda _: {"lease_owner": None, "lease_expires_at": None},
                allowed=frozenset(State) - FINAL_STATES,
            )
