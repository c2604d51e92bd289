"""MineOS's status API: the one status call per operation, and the ticket log that settles doubts.

`report_status` retries what is safe to retry: a 5xx or 429 answer means MineOS did not apply the
update. A timeout or a dropped connection is ambiguous (MineOS may have applied it), so before
calling again it asks the ticket log whether the integration is already settled.
"""

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from urllib.parse import quote

import requests

from mineos_integration.contract import SETTLED_LOG_STATES, StatusUpdate
from mineos_integration.logs import log

logger = logging.getLogger(__name__)

Sleep = Callable[[float], None]


class MineOSUnavailable(Exception):
    """MineOS could not be reached or kept failing; the report is retried on redelivery."""


class ReportResult(StrEnum):
    ACCEPTED = "accepted"  # MineOS answered 200 to our call
    ALREADY_SETTLED = "already-settled"  # the ticket log shows the integration already settled
    REJECTED = "rejected"  # 400/401/other 4xx, and the log does not show it settled


@dataclass(frozen=True)
class ReportOutcome:
    result: ReportResult
    http_status: int | None = None
    detail: str = ""  # MineOS's error message, or how the outcome was settled


class MineOSClient:
    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout_seconds: float,
        max_attempts: int,
        backoff_seconds: float,
        sleep: Sleep = time.sleep,
    ) -> None:
        self._base_url = base_url.rstrip("/")
        self._timeout = timeout_seconds
        self._max_attempts = max_attempts
        self._backoff = backoff_seconds
        self._sleep = sleep
        self._session = requests.Session()
        self._session.headers.update({"Authorization": f"Bearer {api_key}", "Accept": "application/json"})

    def _ticket_url(self, ticket_id: str) -> str:
        return f"{self._base_url}/api/ticket/{quote(ticket_id, safe='')}"

    def integration_state(self, ticket_id: str, integration_id: str) -> str | None:
        """The integration's state in the ticket log (`Completed`, `InProgress`, …), None if absent."""
        try:
            response = self._session.get(f"{self._ticket_url(ticket_id)}/log", timeout=self._timeout)
        except requests.RequestException as error:
            raise MineOSUnavailable(f"ticket log unreachable: {type(error).__name__}") from None
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise MineOSUnavailable(f"ticket log answered {response.status_code}")
        items = ((response.json() or {}).get("integrationsLogs") or {}).get("items") or []
        states = [item.get("state") for item in items if item.get("id") == integration_id]
        return states[-1] if states else None

    def is_settled(self, ticket_id: str, integration_id: str) -> bool:
        return self.integration_state(ticket_id, integration_id) in SETTLED_LOG_STATES

    def report_status(self, ticket_id: str, integration_id: str, update: StatusUpdate) -> ReportOutcome:
        """Send the status update once; raise MineOSUnavailable when the outcome stays unknown."""
        url = f"{self._ticket_url(ticket_id)}/custom-integrations/{quote(integration_id, safe='')}"
        body = update.to_json()
        for attempt in range(1, self._max_attempts + 1):
            response: requests.Response | None = None
            try:
                response = self._session.post(url, json=body, timeout=self._timeout)
            except requests.RequestException as error:
                # Ambiguous: MineOS may have applied the update, or may still be applying it. Calling
                # again now could make a second call, so give it time, look at the ticket log, and
                # otherwise leave the decision to the redelivery (which asks the log first, too).
                log(logger, logging.WARNING, "status call outcome unknown", error=type(error).__name__)
                self._sleep(self._timeout)
                if self.is_settled(ticket_id, integration_id):
                    return ReportOutcome(ReportResult.ALREADY_SETTLED, detail="ticket log after a timeout")
                raise MineOSUnavailable("status call outcome unknown; settled on redelivery") from None
            else:
                if response.status_code == 200:
                    return ReportOutcome(ReportResult.ACCEPTED, 200)
                if response.status_code != 429 and response.status_code < 500:
                    return self._rejected(ticket_id, integration_id, response)
                log(logger, logging.WARNING, "status call not applied", http_status=response.status_code)
            if attempt < self._max_attempts:
                self._sleep(self._backoff_delay(attempt, response))
        raise MineOSUnavailable(f"status call failed {self._max_attempts} times")

    def _rejected(self, ticket_id: str, integration_id: str, response: requests.Response) -> ReportOutcome:
        detail = _error_message(response)
        # A second call for an already-updated integration is rejected; the log tells that apart
        # from a rejection of our body or key, which must be recorded and looked at by a person.
        if response.status_code != 401 and self.is_settled(ticket_id, integration_id):
            return ReportOutcome(ReportResult.ALREADY_SETTLED, response.status_code, detail)
        return ReportOutcome(ReportResult.REJECTED, response.status_code, detail)

    def _backoff_delay(self, attempt: int, response: requests.Response | None) -> float:
        retry_after = response.headers.get("Retry-After", "") if response is not None else ""
        if retry_after.isdigit():
            return min(float(retry_after), 30.0)
        # Exponential with full jitter: many workers retrying at once must not move in step.
        return float(random.uniform(0, self._backoff * 2 ** (attempt - 1)))  # noqa: S311


def _error_message(response: requests.Response) -> str:
    try:
        payload = response.json()
    except ValueError:
        return response.text[:200]
    if isinstance(payload, dict):
        return str(payload.get("message") or payload)[:200]
    return str(payload)[:200]
