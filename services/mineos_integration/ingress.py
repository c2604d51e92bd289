"""The ingress: a signed MineOS call becomes a Pub/Sub message, confirmed before we answer 202.

Plain functions over an `Ingress`; main.py maps their typed exceptions to HTTP status codes.
"""

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from google.api_core import exceptions as google_exceptions
from google.cloud import pubsub_v1  # type: ignore[attr-defined]

from mineos_integration.contract import Action, PrivacyRequest, parse_request
from mineos_integration.ledger import FINAL_STATES, Ledger
from mineos_integration.logs import log, operation_context
from mineos_integration.signature import SignatureScheme, verify

logger = logging.getLogger(__name__)


class Unavailable(Exception):
    """Pub/Sub or the ledger did not confirm in time: answer 503 so MineOS retries; nothing is lost."""


@dataclass
class Ingress:
    signing_secrets: list[str]
    signature_scheme: SignatureScheme
    publisher: pubsub_v1.PublisherClient
    topic_path: str
    publish_timeout_seconds: float
    ledger: Ledger
    preview: Callable[[PrivacyRequest], dict[str, Any]]


def message_attributes(request: PrivacyRequest) -> dict[str, str]:
    return {
        "action": request.action.value,
        "integrationId": request.integration_id,
        "traceId": request.trace_id,
        "isTest": "true" if request.is_test else "false",
    }


def publish(ingress: Ingress, request: PrivacyRequest) -> str:
    """Publish the normalised request and wait for Pub/Sub's confirmation; return the message id."""
    future = ingress.publisher.publish(
        ingress.topic_path, request.model_dump_json().encode(), **message_attributes(request)
    )
    try:
        message_id: str = future.result(timeout=ingress.publish_timeout_seconds)
    except (TimeoutError, google_exceptions.GoogleAPIError) as error:
        future.cancel()
        raise Unavailable(f"publish not confirmed: {type(error).__name__}") from None
    return message_id


def handle_call(
    ingress: Ingress, action: Action, body: bytes, signature: str | None
) -> dict[str, Any] | None:
    """Verify, validate and hand on one MineOS call; a Preview's answer is returned, else None.

    Raises:
        InvalidSignature: not signed by an accepted secret (401).
        InvalidRequest: the body is not a usable MineOS call (400).
        Unavailable: Pub/Sub or the ledger failed (503).
    """
    verify(body, signature, ingress.signing_secrets, ingress.signature_scheme)
    request = parse_request(action, body)
    with operation_context(
        traceId=request.trace_id, integrationId=request.integration_id, action=action.value
    ):
        if action is Action.PREVIEW:
            return ingress.preview(request)
        try:
            state = ingress.ledger.record_received(request)
        except google_exceptions.GoogleAPIError as error:
            raise Unavailable(f"ledger unavailable: {type(error).__name__}") from None
        if state in FINAL_STATES:
            # MineOS retried an operation we already reported: accept it again, do nothing again.
            log(logger, logging.INFO, "duplicate of a finished operation", state=state.value)
            return None
        message_id = publish(ingress, request)
        log(logger, logging.INFO, "request published", message_id=message_id, is_test=request.is_test)
    return None
