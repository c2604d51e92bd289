"""The two Cloud Run services' HTTP edges (functions-framework targets `ingress` and `collector`).

Each route parses the transport, calls one plain function and maps typed exceptions to status
codes. The image sets FUNCTION_TARGET, so a service with a missing or placeholder setting fails at
start-up instead of on its first request.
"""

import base64
import binascii
import json
import logging
import os
from typing import Any

import functions_framework
from flask import Request, Response
from google.api_core import exceptions as google_exceptions
from pydantic import ValidationError

from mineos_integration.collector import (
    Delivery,
    TransientFailure,
    handle_dead_letter,
    handle_request,
    new_worker_id,
)
from mineos_integration.contract import Action, InvalidRequest, PrivacyRequest
from mineos_integration.ingress import Unavailable, handle_call
from mineos_integration.ledger import LeaseLost
from mineos_integration.logs import log, operation_context
from mineos_integration.services import collector_service, ingress_service
from mineos_integration.settings import get_settings
from mineos_integration.signature import SIGNATURE_HEADER, InvalidSignature

logger = logging.getLogger("mineos_integration")

INGRESS_ROUTES = {"/copy": Action.COPY, "/delete": Action.DELETE, "/preview": Action.PREVIEW}


def _json(status: int, payload: dict[str, Any], headers: dict[str, str] | None = None) -> Response:
    return Response(json.dumps(payload), status=status, mimetype="application/json", headers=headers)


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    return _json(status, {"error": message}, headers)


def _too_large(max_bytes: int) -> Response:
    """413 at once, closing the connection instead of reading the rest of the body.

    The response is streamed because functions-framework reads the whole request body after every
    non-streamed response, which would let a client hold the request (and its memory) open.
    """
    body = json.dumps({"error": f"body larger than {max_bytes} bytes"})
    return Response(iter([body]), status=413, mimetype="application/json", headers={"Connection": "close"})


@functions_framework.http
def ingress(request: Request) -> Response:
    """MineOS's Copy, Delete and Preview URLs, and a health route."""
    service = ingress_service()
    if request.path == "/healthz":
        return _json(200, {"status": "ok"})
    action = INGRESS_ROUTES.get(request.path.rstrip("/"))
    if action is None:
        return _error(404, "not found")
    if request.method != "POST":
        return _error(405, "use POST", {"Allow": "POST"})
    if request.mimetype != "application/json":
        return _error(415, "Content-Type must be application/json")
    max_bytes = get_settings().max_body_bytes
    too_large = (request.content_length or 0) > max_bytes
    body = b"" if too_large else request.stream.read(max_bytes + 1)  # bounded, whatever the headers say
    if too_large or len(body) > max_bytes:
        return _too_large(max_bytes)
    try:
        answer = handle_call(service, action, body, request.headers.get(SIGNATURE_HEADER))
    except InvalidSignature:
        log(logger, logging.WARNING, "request refused: bad signature", route=request.path)
        return _error(401, "invalid signature")
    except InvalidRequest as error:
        log(logger, logging.WARNING, "request refused: invalid body", route=request.path, reason=str(error))
        return _error(400, str(error))
    except Unavailable as error:
        log(logger, logging.ERROR, "request not accepted: dependency unavailable", reason=str(error))
        return _error(503, "temporarily unavailable, retry later", {"Retry-After": "5"})
    if action is Action.PREVIEW:
        return _json(200, answer or {"records": []})
    return _json(202, {"status": "accepted"})


def _pushed_request(envelope: Any) -> tuple[PrivacyRequest, dict[str, str]]:
    """The PrivacyRequest inside a Pub/Sub push body, and the message's attributes."""
    message = envelope["message"]
    data = base64.b64decode(message["data"], validate=True)
    return PrivacyRequest.model_validate_json(data), dict(message.get("attributes") or {})


@functions_framework.http
def collector(request: Request) -> Response:
    """Pub/Sub push endpoints: `/requests` (the work) and `/dead-letters` (what Pub/Sub gave up on)."""
    service = collector_service()
    if request.path == "/healthz":
        return _json(200, {"status": "ok"})
    if request.path not in ("/requests", "/dead-letters") or request.method != "POST":
        return _error(404, "not found")
    try:
        privacy_request, attributes = _pushed_request(request.get_json(force=True, silent=True))
    except (KeyError, TypeError, ValueError, binascii.Error, ValidationError) as error:
        # Redelivering an undecodable message cannot help: log it (without its content) and ack.
        log(logger, logging.ERROR, "undecodable push message acknowledged", error=type(error).__name__)
        return _json(200, {"status": "undecodable"})
    worker = new_worker_id()
    with operation_context(
        traceId=privacy_request.trace_id,
        integrationId=privacy_request.integration_id,
        action=privacy_request.action.value,
    ):
        try:
            if request.path == "/requests":
                delivery = handle_request(service, privacy_request, worker)
            else:
                attempts = attributes.get("CloudPubSubDeadLetterSourceDeliveryCount", "several")
                delivery = handle_dead_letter(service, privacy_request, worker, attempts)
        except (TransientFailure, LeaseLost, google_exceptions.GoogleAPIError) as error:
            log(logger, logging.WARNING, "delivery to be retried", reason=f"{type(error).__name__}: {error}")
            return _error(503, "retry later")
    if delivery is Delivery.RETRY:
        return _error(409, "another worker holds this operation")
    return _json(200, {"status": "done"})


if os.environ.get("FUNCTION_TARGET") == "ingress":
    ingress_service()
elif os.environ.get("FUNCTION_TARGET") == "collector":
    collector_service()
