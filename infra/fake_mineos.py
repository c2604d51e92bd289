"""A fake MineOS over real HTTP, for tests, the demo and manual use (../shared/mineos/contract.md).

- The sender: `build_call` and `send_call` sign and POST Copy, Delete and Preview calls the way MineOS
  does (§1, §2), in the current or the legacy body shape.
- `FakeMineOS`: MineOS's status API (§4), ticket log and key check (§5) on 127.0.0.1, enforcing the
  contract: Bearer auth, bodies valid against MineOS's own schema, one status call per operation.
  Test controls under `/_fake/` (and as methods) record every status call, reset the state and script
  faults (error codes, slow answers) for the next status calls.
- CLI: `python -m infra.fake_mineos serve ...` and `python -m infra.fake_mineos send ...`.
"""

import argparse
import hmac
import json
import logging
import signal
import sys
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType, TracebackType
from typing import TYPE_CHECKING, Any, Literal, Self

import jsonschema
import requests
from jsonschema.exceptions import best_match
from werkzeug.exceptions import HTTPException
from werkzeug.routing import Map, Rule
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server
from werkzeug.wrappers import Request, Response

from mineos_integration.contract import Action, Status
from mineos_integration.settings import ConfigurationError, get_settings
from mineos_integration.signature import SIGNATURE_HEADER, SignatureScheme, sign

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

# Named, not __name__: run as `python -m`, the module is __main__.
logger = logging.getLogger("infra.fake_mineos")

STATUS_REQUEST_SCHEMA_PATH = (
    Path(__file__).resolve().parent.parent
    / "tests"
    / "data"
    / "mineos"
    / "custom-integration-status-request.schema.json"
)

# How MineOS's ticket log shows an integration once its status update is applied (contract.md §4:
# UserNotFound counts as completed, CannotDeleteData as failed).
LOG_STATE_FOR_STATUS: Mapping[Status, str] = {
    Status.COMPLETED: "Completed",
    Status.USER_NOT_FOUND: "Completed",
    Status.FAILED: "Failed",
    Status.CANNOT_DELETE_DATA: "Failed",
    Status.MISSING_IDENTIFIERS: "MissingIdentifiers",
}
IN_PROGRESS_LOG_STATE = "InProgress"
ALREADY_UPDATED_MESSAGE = "already updated"
DEFAULT_SCHEME = SignatureScheme()  # contract.md §2's assumed default

CallShape = Literal["current", "legacy"]
JsonObject = dict[str, Any]


def _utc_now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# --- The sender: calls like MineOS makes them ------------------------------------------------------


@dataclass(frozen=True)
class Person:
    """The data subject of a fake privacy request."""

    name: str
    email: str
    internal_id: str | None = None
    phone_number: str | None = None


@dataclass(frozen=True)
class MineCall:
    """One signed-to-be MineOS call: its ids and the exact bytes that go on the wire."""

    trace_id: str
    ticket_id: str
    integration_id: str
    body: bytes
    action: Action


def _custom_fields(person: Person) -> dict[str, str] | None:
    fields = {
        name: value
        for name, value in (("$internalId", person.internal_id), ("$phoneNumber", person.phone_number))
        if value is not None
    }
    # MineOS sends null, not an empty map, when a request has no custom identifiers.
    return fields or None


def build_call(
    action: Action,
    person: Person,
    *,
    integration_id: str,
    trace_id: str | None = None,
    ticket_id: str | None = None,
    is_test: bool = False,
    shape: CallShape = "current",
) -> MineCall:
    """A MineOS Copy/Delete/Preview call for `person`, with fresh uuid ids unless given."""
    trace_id = trace_id or str(uuid.uuid4())
    ticket_id = ticket_id or str(uuid.uuid4())
    ticket = {
        "id": ticket_id,
        # A ticket is a Get (access) or a Delete request; a preview looks into a Get request.
        "type": "Delete" if action is Action.DELETE else "Get",
        "source": "Form",
        "domain": "example.com",
        "createdAt": _utc_now_iso(),
        "userInfo": {
            "name": person.name,
            "email": person.email,
            "isVerified": True,
            "customFields": _custom_fields(person),
        },
    }
    body: JsonObject
    if shape == "current":
        body = {"traceId": trace_id, "integrationId": integration_id, "isTest": is_test, "request": ticket}
    elif shape == "legacy":
        # The delete page's example: PascalCase event fields and isTest as a string.
        body = {
            "EventId": trace_id,
            "EventType": "WebhookSlim",
            "integrationId": integration_id,
            "isTest": "true" if is_test else "false",
            "ticketInfo": ticket,
        }
    else:
        raise ValueError(f"unknown call shape {shape!r}; expected 'current' or 'legacy'")
    # Serialised once, here: a retry sends these very bytes, as MineOS's retries keep the same traceId.
    encoded = json.dumps(body, separators=(",", ":")).encode()
    return MineCall(trace_id, ticket_id, integration_id, encoded, action)


def send_call(
    url: str,
    call: MineCall,
    secret: str,
    scheme: SignatureScheme = DEFAULT_SCHEME,
    timeout: float = 10.0,
) -> requests.Response:
    """POST `call` to `url` signed with `secret`, as MineOS would; `timeout` is in seconds."""
    headers = {"Content-Type": "application/json", SIGNATURE_HEADER: sign(call.body, secret, scheme)}
    return requests.post(url, data=call.body, headers=headers, timeout=timeout)


# --- The status API: what MineOS does with our reports ---------------------------------------------


@dataclass(frozen=True)
class StatusCall:
    """One status POST the fake received, whatever it answered."""

    ticket_id: str
    integration_id: str
    body: Any  # the parsed JSON, or the raw text when it was not JSON
    response_status: int
    received_at: str

    def to_json(self) -> JsonObject:
        return {
            "ticketId": self.ticket_id,
            "integrationId": self.integration_id,
            "body": self.body,
            "responseStatus": self.response_status,
            "receivedAt": self.received_at,
        }


@dataclass(frozen=True)
class Fault:
    """A scripted answer to the next status call.

    `status` answers that code; `delay_seconds` sleeps first; `apply` processes the call normally
    (it defaults to true without `status`, false with it). `status` with `apply` models a lost answer:
    MineOS applied the update, the client saw an error.
    """

    status: int | None = None
    delay_seconds: float = 0.0
    apply: bool | None = None

    def __post_init__(self) -> None:
        if self.status is not None and not 100 <= self.status <= 599:
            raise ValueError(f"fault status {self.status} is not an HTTP status code")
        if self.delay_seconds < 0:
            raise ValueError("fault delay_seconds must not be negative")
        if self.status is None and self.apply is False:
            raise ValueError("a fault that does not apply the call needs a status to answer")

    @property
    def applies(self) -> bool:
        return self.apply if self.apply is not None else self.status is None

    @classmethod
    def from_json(cls, value: Any) -> Self:
        """A fault from its JSON form, e.g. {"status": 500} or {"delay_seconds": 3, "apply": true}."""
        if not isinstance(value, Mapping) or set(value) - {"status", "delay_seconds", "apply"}:
            raise ValueError("a fault is an object with status, delay_seconds and/or apply")
        status, delay, apply = value.get("status"), value.get("delay_seconds", 0.0), value.get("apply")
        if status is not None and (not isinstance(status, int) or isinstance(status, bool)):
            raise ValueError("fault status must be an integer")
        if not isinstance(delay, int | float) or isinstance(delay, bool):
            raise ValueError("fault delay_seconds must be a number")
        if apply is not None and not isinstance(apply, bool):
            raise ValueError("fault apply must be true or false")
        return cls(status=status, delay_seconds=float(delay), apply=apply)


@dataclass
class _Operation:
    """One integration's part of one ticket, as MineOS's ticket log shows it."""

    # The ticket log lists one item per state change; the fake keeps only the latest, so an item's
    # createdAt is the time of the operation's last change.
    changed_at: str
    action: Action | None = None  # known when the fake sent the call itself
    applied_status: Status | None = None
    message: str | None = None

    def log_item(self, integration_id: str) -> JsonObject:
        state = IN_PROGRESS_LOG_STATE
        if self.applied_status is not None:
            state = LOG_STATE_FOR_STATUS[self.applied_status]
        return {
            "id": integration_id,
            "state": state,
            "success": state == "Completed",
            "customMessage": self.message,
            "createdAt": self.changed_at,
            "retryCount": 0,
        }


class _StatusCallError(Exception):
    """An answer other than 200 to a status call."""

    def __init__(self, status: int, error_code: str | None, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.error_code = error_code
        self.message = message

    def response(self) -> Response:
        if self.error_code is None:
            return Response(status=self.status)
        return _json_response({"internalErrorCode": self.error_code, "message": self.message}, self.status)


def _json_response(value: Any, status: int = 200) -> Response:
    return Response(json.dumps(value), status=status, mimetype="application/json")


def _is_json_content_type(mimetype: str) -> bool:
    # The content types MineOS's OpenAPI lists for this request body.
    return mimetype in {"application/json", "text/json", "application/json-patch+json"} or (
        mimetype.startswith("application/") and mimetype.endswith("+json")
    )


class _QuietRequestHandler(WSGIRequestHandler):
    """werkzeug's handler without its access log: the fake logs one line per call itself."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass


class FakeMineOS:
    """MineOS's status API, ticket log and key check on a loopback port, plus `/_fake/` test controls."""

    def __init__(
        self,
        api_key: str,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        schema_path: Path = STATUS_REQUEST_SCHEMA_PATH,
    ) -> None:
        self.api_key = api_key
        self.host = host
        self.port = port
        schema = json.loads(schema_path.read_text())
        self._validator = jsonschema.Draft202012Validator(schema)
        self._lock = threading.Lock()
        self._calls: list[StatusCall] = []
        self._operations: dict[str, dict[str, _Operation]] = {}
        self._faults: deque[Fault] = deque()
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None
        self._routes: dict[str, Callable[..., Response]] = {
            "status_update": self._on_status_update,
            "ticket_log": self._on_ticket_log,
            "test_me": self._on_test_me,
            "fake_calls": self._on_fake_calls,
            "fake_reset": self._on_fake_reset,
            "fake_faults": self._on_fake_faults,
            "fake_operations": self._on_fake_operations,
        }
        # path: ids arrive percent-decoded, so an id with a '/' (quoted by the client) still routes.
        self._url_map = Map(
            [
                Rule(
                    "/api/ticket/<path:ticket_id>/custom-integrations/<path:integration_id>",
                    endpoint="status_update",
                    methods=["POST"],
                ),
                Rule("/api/ticket/<path:ticket_id>/log", endpoint="ticket_log", methods=["GET"]),
                Rule("/api/Test/Me", endpoint="test_me", methods=["GET"]),
                Rule("/_fake/calls", endpoint="fake_calls", methods=["GET"]),
                Rule("/_fake/reset", endpoint="fake_reset", methods=["POST"]),
                Rule("/_fake/faults", endpoint="fake_faults", methods=["POST"]),
                Rule("/_fake/operations", endpoint="fake_operations", methods=["POST"]),
            ]
        )

    # Lifecycle

    def start(self) -> Self:
        """Serve in a background thread; returns self once the port is bound."""
        if self._server is not None:
            raise RuntimeError("the fake MineOS is already running")
        self._server = make_server(
            self.host, self.port, self.wsgi_app, threaded=True, request_handler=_QuietRequestHandler
        )
        self.port = self._server.server_port
        # A short poll interval keeps stop() (and so every test fixture) fast.
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and release the port."""
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = None
        self._thread = None

    @property
    def base_url(self) -> str:
        """`http://host:port` without a trailing slash, as the status-API base URL setting takes it."""
        if self._server is None:
            raise RuntimeError("the fake MineOS is not running; call start() first")
        return f"http://{self.host}:{self.port}"

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # Test controls

    def send(
        self,
        url: str,
        call: MineCall,
        secret: str,
        scheme: SignatureScheme = DEFAULT_SCHEME,
        timeout: float = 10.0,
    ) -> requests.Response:
        """Register `call`'s operation as in progress, then send it like `send_call`."""
        if call.action is not Action.PREVIEW:  # previews are answered at once and never reported
            self.register_operation(call.ticket_id, call.integration_id, call.action)
        return send_call(url, call, secret, scheme, timeout)

    def register_operation(self, ticket_id: str, integration_id: str, action: Action | None = None) -> None:
        """Make the ticket log show this integration as in progress (a no-op once known)."""
        with self._lock:
            operations = self._operations.setdefault(ticket_id, {})
            operations.setdefault(integration_id, _Operation(changed_at=_utc_now_iso(), action=action))

    def calls(self) -> list[StatusCall]:
        """Every status POST received so far, accepted or not, in the order they were answered."""
        with self._lock:
            return list(self._calls)

    def status_calls_for(self, ticket_id: str, integration_id: str) -> list[StatusCall]:
        """The status POSTs received for one operation."""
        return [
            call
            for call in self.calls()
            if call.ticket_id == ticket_id and call.integration_id == integration_id
        ]

    def reports_per_operation(self) -> Counter[tuple[str, str]]:
        """How many status POSTs each (ticket, integration) got, whatever the answer: exactly-once checks."""
        return Counter((call.ticket_id, call.integration_id) for call in self.calls())

    def reset(self) -> None:
        """Forget every call, operation and pending fault."""
        with self._lock:
            self._calls.clear()
            self._operations.clear()
            self._faults.clear()

    def inject_faults(self, faults: Iterable[Fault | Mapping[str, Any]]) -> None:
        """Queue scripted answers for the next status calls, in order."""
        parsed = [fault if isinstance(fault, Fault) else Fault.from_json(fault) for fault in faults]
        with self._lock:
            self._faults.extend(parsed)

    # HTTP

    def wsgi_app(self, environ: "WSGIEnvironment", start_response: "StartResponse") -> Iterable[bytes]:
        """The WSGI application; `start()` serves it, and it can be mounted elsewhere too."""
        request = Request(environ)
        try:
            endpoint, arguments = self._url_map.bind_to_environ(environ).match()
            response = self._routes[endpoint](request, **arguments)
        except HTTPException as error:
            response = _json_response(error.description or error.name, error.code or 500)
        # Methods and paths (ids only) are logged; bodies can carry personal data and never are.
        logger.info("%s %s -> %d", request.method, request.path, response.status_code)
        return response(environ, start_response)

    def _is_authorized(self, request: Request) -> bool:
        kind, _, token = request.headers.get("Authorization", "").partition(" ")
        return kind.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), self.api_key.encode())

    def _on_test_me(self, request: Request) -> Response:
        if not self._is_authorized(request):
            return Response(status=401)
        return _json_response("fake MineOS: the API key is valid")

    def _on_ticket_log(self, request: Request, ticket_id: str) -> Response:
        if not self._is_authorized(request):
            return Response(status=401)
        with self._lock:
            operations = self._operations.get(ticket_id)
            if operations is None:
                return _json_response("ticket not found", 404)
            items = [operation.log_item(integration_id) for integration_id, operation in operations.items()]
        return _json_response({"integrationsLogs": {"items": items}})

    def _on_status_update(self, request: Request, ticket_id: str, integration_id: str) -> Response:
        received_at = _utc_now_iso()
        raw_body = request.get_data()
        with self._lock:
            fault = self._faults.popleft() if self._faults else None
        if fault is not None and fault.delay_seconds:
            time.sleep(fault.delay_seconds)  # outside the lock: other calls go on meanwhile
        try:
            body = json.loads(raw_body)
        except ValueError:
            body = raw_body.decode("utf-8", errors="replace")

        # Everything but the once-rule is a pure check of the request, made before taking the lock.
        update: tuple[Action, Status, JsonObject] | None = None
        rejection: _StatusCallError | None = None
        if fault is None or fault.applies:
            try:
                update = self._checked_update(request, body)
            except _StatusCallError as rejected:
                rejection = rejected
        with self._lock:
            if update is not None:
                try:
                    self._apply(ticket_id, integration_id, *update)
                except _StatusCallError as rejected:
                    rejection = rejected
            if fault is not None and fault.status is not None:
                injected = f"injected fault: HTTP {fault.status}"
                rejection = _StatusCallError(fault.status, "GeneralError", injected)
            response = rejection.response() if rejection else Response(status=200)
            self._calls.append(StatusCall(ticket_id, integration_id, body, response.status_code, received_at))
        return response

    def _checked_update(self, request: Request, body: Any) -> tuple[Action, Status, JsonObject]:
        if not self._is_authorized(request):
            raise _StatusCallError(401, None, "unauthorized")
        if not _is_json_content_type(request.mimetype):
            raise _StatusCallError(415, None, "the body must be JSON")
        if not isinstance(body, dict):
            raise _StatusCallError(400, "InvalidArgument", "the body must be a JSON object")
        error = best_match(self._validator.iter_errors(body))
        if error is not None:
            raise _StatusCallError(400, "InvalidArgument", f"invalid status request: {error.message}")
        # The schema's enums admit Unknown; an update to Unknown means nothing.
        if "Unknown" in (body["action"], body["status"]):
            raise _StatusCallError(400, "InvalidArgument", "action and status must not be Unknown")
        action, status = Action(body["action"]), Status(body["status"])
        if action is not Action.COPY and (body.get("data") is not None or body.get("files") is not None):
            raise _StatusCallError(400, "InvalidArgument", "data and files are for the Copy action only")
        return action, status, body

    def _apply(
        self, ticket_id: str, integration_id: str, action: Action, status: Status, body: JsonObject
    ) -> None:
        """Apply a checked update; the caller holds the lock."""
        operation = self._operations.get(ticket_id, {}).get(integration_id)
        if operation is not None and operation.applied_status is not None:
            raise _StatusCallError(400, "AlreadyExists", ALREADY_UPDATED_MESSAGE)
        if operation is not None and operation.action not in (None, action):
            mismatch = f"this operation is a {operation.action}, not a {action}"
            raise _StatusCallError(400, "InvalidArgument", mismatch)
        if body.get("test") is True:
            return  # MineOS accepts a test update but does not apply it
        if operation is None:
            # An operation the fake did not send itself: known from its first report on.
            operation = _Operation(changed_at=_utc_now_iso(), action=action)
            self._operations.setdefault(ticket_id, {})[integration_id] = operation
        operation.applied_status = status
        operation.message = body.get("message")
        operation.changed_at = _utc_now_iso()

    def _on_fake_calls(self, request: Request) -> Response:
        return _json_response([call.to_json() for call in self.calls()])

    def _on_fake_reset(self, request: Request) -> Response:
        self.reset()
        return _json_response({})

    def _on_fake_faults(self, request: Request) -> Response:
        payload = request.get_json(silent=True)
        faults = payload.get("faults") if isinstance(payload, dict) else None
        if not isinstance(faults, list):
            return _json_response({"message": 'expected {"faults": [...]}'}, 400)
        try:
            self.inject_faults(faults)
        except ValueError as error:
            return _json_response({"message": str(error)}, 400)
        with self._lock:
            pending = len(self._faults)
        return _json_response({"pendingFaults": pending})

    def _on_fake_operations(self, request: Request) -> Response:
        payload = request.get_json(silent=True)
        if not isinstance(payload, dict) or not all(
            isinstance(payload.get(key), str) and payload[key] for key in ("ticketId", "integrationId")
        ):
            return _json_response({"message": 'expected {"ticketId": ..., "integrationId": ...}'}, 400)
        action = payload.get("action")
        if action not in (None, Action.COPY.value, Action.DELETE.value):
            return _json_response({"message": "action must be Copy or Delete"}, 400)
        self.register_operation(
            payload["ticketId"], payload["integrationId"], Action(action) if action else None
        )
        return _json_response({})


# --- CLI ------------------------------------------------------------------------------------------


def _serve(arguments: argparse.Namespace) -> int:
    try:
        api_key = arguments.api_key or get_settings().mineos_api_key.get_secret_value()
    except ConfigurationError as error:
        print(f"configuration error: {error}", file=sys.stderr)
        return 2
    if not api_key:
        print("give --api-key or set MINEOS_API_KEY", file=sys.stderr)
        return 2
    stop_requested = threading.Event()

    def request_stop(signal_number: int, frame: FrameType | None) -> None:
        stop_requested.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    with FakeMineOS(api_key, host=arguments.host, port=arguments.port) as fake:
        logger.info("fake MineOS listening on %s", fake.base_url)
        while not stop_requested.wait(timeout=0.5):
            pass
        logger.info("fake MineOS stopping")
    return 0


def _send(arguments: argparse.Namespace) -> int:
    try:
        settings = get_settings()
    except ConfigurationError as error:
        print(f"configuration error: {error}", file=sys.stderr)
        return 2
    if not settings.signing_secrets:
        print("set MINE_SIGNING_SECRETS (the first secret signs)", file=sys.stderr)
        return 2
    person = Person(arguments.name, arguments.email, arguments.internal_id, arguments.phone)
    call = build_call(
        Action(arguments.action.capitalize()),
        person,
        integration_id=arguments.integration_id,
        trace_id=arguments.trace_id,
        ticket_id=arguments.ticket_id,
        is_test=arguments.test,
        shape="legacy" if arguments.legacy else "current",
    )
    if arguments.register_at:
        registration = requests.post(
            f"{arguments.register_at.rstrip('/')}/_fake/operations",
            json={"ticketId": call.ticket_id, "integrationId": call.integration_id, "action": call.action},
            timeout=arguments.timeout,
        )
        registration.raise_for_status()
    print(f"trace id:  {call.trace_id}")
    print(f"ticket id: {call.ticket_id}")
    response = send_call(
        arguments.url, call, settings.signing_secrets[0], settings.signature_scheme, arguments.timeout
    )
    print(f"response:  {response.status_code}")
    print(response.text)
    return 0 if response.ok else 1


def _argument_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m infra.fake_mineos", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the fake status API until SIGTERM/SIGINT")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8090)
    serve.add_argument("--api-key", help="the accepted Bearer key (default: $MINEOS_API_KEY)")
    serve.set_defaults(run=_serve)

    send = commands.add_parser("send", help="sign and send one call like MineOS ($MINE_SIGNING_SECRETS)")
    send.add_argument("--url", required=True, help="the integration's Copy, Delete or Preview URL")
    send.add_argument("--action", required=True, choices=["copy", "delete", "preview"])
    send.add_argument("--email", required=True)
    send.add_argument("--name", required=True)
    send.add_argument("--internal-id")
    send.add_argument("--phone")
    send.add_argument("--integration-id", required=True)
    send.add_argument("--trace-id", help="default: a fresh uuid")
    send.add_argument("--ticket-id", help="default: a fresh uuid")
    send.add_argument("--legacy", action="store_true", help="the legacy EventId/ticketInfo body")
    send.add_argument("--test", action="store_true", help="mark it a test call (isTest)")
    send.add_argument("--timeout", type=float, default=70.0, help="seconds (MineOS waits 60 s for a copy)")
    send.add_argument("--register-at", help="a fake MineOS base URL whose ticket log should list this call")
    send.set_defaults(run=_send)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    arguments = _argument_parser().parse_args(argv)
    run: Callable[[argparse.Namespace], int] = arguments.run
    return run(arguments)


if __name__ == "__main__":
    sys.exit(main())
