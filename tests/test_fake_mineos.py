"""The fake MineOS: the sender signs like MineOS, the status API enforces MineOS's contract.

Real HTTP on 127.0.0.1 throughout; no emulators.
"""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import requests
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

from infra.emulators import free_port
from infra.fake_mineos import (
    ALREADY_UPDATED_MESSAGE,
    LOG_STATE_FOR_STATUS,
    STATUS_REQUEST_SCHEMA_PATH,
    FakeMineOS,
    Fault,
    Person,
    build_call,
    main,
    send_call,
)
from mineos_integration.contract import SETTLED_LOG_STATES, Action, Identity, Status, parse_request
from mineos_integration.signature import (
    SIGNATURE_HEADER,
    SignatureAlgorithm,
    SignatureEncoding,
    SignatureScheme,
    verify,
)

REPOSITORY_ROOT = Path(__file__).resolve().parent.parent
OPENAPI_PATH = REPOSITORY_ROOT.parent / "shared" / "mineos" / "mineos-openapi.json"
API_KEY = "fake-mineos-test-key"
SIGNING_SECRET = "fake-mineos-signing-secret"
PERSON = Person("Ada Lovelace", "ada@example.com", internal_id="user-42", phone_number="+15550100")
COPY_COMPLETED = {"action": "Copy", "status": "Completed", "message": "2 files", "data": {"rows": 2}}


@pytest.fixture
def fake() -> Iterator[FakeMineOS]:
    with FakeMineOS(API_KEY) as server:
        yield server


@dataclass(frozen=True)
class ReceivedCall:
    body: bytes
    headers: dict[str, str]


@dataclass(frozen=True)
class Receiver:
    url: str
    received: list[ReceivedCall]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """An integration endpoint that records the exact bytes and headers it gets and answers 202."""
    received: list[ReceivedCall] = []

    @Request.application
    def record(request: Request) -> Response:
        received.append(ReceivedCall(request.get_data(), dict(request.headers)))
        return Response(status=202)

    server = make_server("127.0.0.1", 0, record, threaded=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
    thread.start()
    try:
        yield Receiver(f"http://127.0.0.1:{server.server_port}/copy", received)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture
def signing_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI signs with the first of MINE_SIGNING_SECRETS (conftest clears the cached settings)."""
    monkeypatch.setenv("MINE_SIGNING_SECRETS", f"{SIGNING_SECRET},an-older-rotated-secret")


def status_url(fake: FakeMineOS, ticket_id: str, integration_id: str) -> str:
    return f"{fake.base_url}/api/ticket/{ticket_id}/custom-integrations/{integration_id}"


def post_status(
    fake: FakeMineOS,
    ticket_id: str,
    integration_id: str,
    body: Any,
    *,
    api_key: str = API_KEY,
    timeout_seconds: float = 5.0,
) -> requests.Response:
    return requests.post(
        status_url(fake, ticket_id, integration_id),
        json=body,
        headers={"Authorization": f"Bearer {api_key}"},
        timeout=timeout_seconds,
    )


def get_log(fake: FakeMineOS, ticket_id: str, *, api_key: str = API_KEY) -> requests.Response:
    return requests.get(
        f"{fake.base_url}/api/ticket/{ticket_id}/log",
        headers={"Authorization": f"Bearer {api_key}"},
        timeout=5,
    )


def log_items(fake: FakeMineOS, ticket_id: str) -> list[dict[str, Any]]:
    response = get_log(fake, ticket_id)
    assert response.status_code == 200
    items: list[dict[str, Any]] = response.json()["integrationsLogs"]["items"]
    return items


def as_json_schema(node: Any, schemas: dict[str, Any]) -> Any:
    """An OpenAPI 3.0 schema as JSON Schema: `$ref`s resolved inline, `nullable` as a null type."""
    if isinstance(node, list):
        return [as_json_schema(item, schemas) for item in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        return as_json_schema(schemas[node["$ref"].removeprefix("#/components/schemas/")], schemas)
    converted = {key: as_json_schema(value, schemas) for key, value in node.items() if key != "nullable"}
    if node.get("nullable"):
        converted["type"] = [node["type"], "null"]
    return converted


# --- The schema file ------------------------------------------------------------------------------


def test_status_request_schema_file_matches_openapi_document() -> None:
    if not OPENAPI_PATH.exists():
        pytest.skip(f"MineOS's OpenAPI document is not at {OPENAPI_PATH} (../shared beside the checkout)")
    schemas = json.loads(OPENAPI_PATH.read_text())["components"]["schemas"]
    expected = as_json_schema(schemas["CustomIntegrationActionStatusRequest"], schemas)

    schema_file = json.loads(STATUS_REQUEST_SCHEMA_PATH.read_text())

    assert "mineos-openapi.json" in schema_file["$comment"]
    copied = {key: value for key, value in schema_file.items() if key not in {"$schema", "$comment", "title"}}
    assert copied == expected
    assert copied["additionalProperties"] is False
    assert copied["properties"]["files"]["items"]["additionalProperties"] is False
    assert set(copied["properties"]["status"]["enum"]) == {"Unknown", *(status.value for status in Status)}
    assert set(copied["properties"]["action"]["enum"]) == {"Unknown", "Copy", "Delete"}


# --- The status API -------------------------------------------------------------------------------


def test_status_update_valid_body_returns_200_and_is_recorded(fake: FakeMineOS) -> None:
    response = post_status(fake, "ticket-1", "integration-1", COPY_COMPLETED)

    assert response.status_code == 200
    [call] = fake.calls()
    assert (call.ticket_id, call.integration_id, call.body, call.response_status) == (
        "ticket-1",
        "integration-1",
        COPY_COMPLETED,
        200,
    )
    datetime.fromisoformat(call.received_at)
    assert fake.status_calls_for("ticket-1", "integration-1") == [call]
    assert fake.status_calls_for("ticket-1", "another-integration") == []


def test_status_update_second_call_returns_400_already_updated(fake: FakeMineOS) -> None:
    first = post_status(fake, "ticket-1", "integration-1", COPY_COMPLETED)
    second = post_status(fake, "ticket-1", "integration-1", {"action": "Copy", "status": "Failed"})

    assert first.status_code == 200
    assert second.status_code == 400
    assert second.json() == {"internalErrorCode": "AlreadyExists", "message": ALREADY_UPDATED_MESSAGE}
    assert fake.reports_per_operation() == {("ticket-1", "integration-1"): 2}
    # The first call completed the operation; the second changed nothing.
    assert log_items(fake, "ticket-1")[0]["state"] == "Completed"


def test_status_update_other_integration_of_same_ticket_returns_200(fake: FakeMineOS) -> None:
    assert post_status(fake, "ticket-1", "integration-1", COPY_COMPLETED).status_code == 200

    assert post_status(fake, "ticket-1", "integration-2", COPY_COMPLETED).status_code == 200


def test_status_update_quoted_ids_with_slash_and_space_route_to_operation(fake: FakeMineOS) -> None:
    # As the project's MineOS client builds the URL.
    quoted_ticket, quoted_integration = quote("ticket/1", safe=""), quote("integration 1", safe="")

    response = post_status(fake, quoted_ticket, quoted_integration, COPY_COMPLETED)

    assert response.status_code == 200
    assert fake.reports_per_operation() == {("ticket/1", "integration 1"): 1}
    assert log_items(fake, "ticket/1")[0]["id"] == "integration 1"


@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer wrong-key", f"Basic {API_KEY}", f"Bearer {API_KEY}-suffix"],
    ids=["missing", "wrong-key", "not-bearer", "longer-key"],
)
def test_status_update_bad_bearer_returns_401_without_applying(
    fake: FakeMineOS, authorization: str | None
) -> None:
    headers = {"Authorization": authorization} if authorization else {}

    response = requests.post(
        status_url(fake, "ticket-1", "integration-1"), json=COPY_COMPLETED, headers=headers, timeout=5
    )

    assert response.status_code == 401
    assert [call.response_status for call in fake.calls()] == [401]
    assert post_status(fake, "ticket-1", "integration-1", COPY_COMPLETED).status_code == 200


@pytest.mark.parametrize(
    "body",
    [
        {**COPY_COMPLETED, "extra": "not in the schema"},
        {"action": "Copy"},
        {"status": "Completed"},
        {"action": "Preview", "status": "Completed"},
        {"action": "Copy", "status": "Done"},
        {"action": "Copy", "status": "Completed", "message": 7},
        {"action": "Copy", "status": "Completed", "files": [{"url": "https://x", "size": 1}]},
        {"action": "Copy", "status": "Completed", "data": ["not", "an", "object"]},
        {"action": "Unknown", "status": "Completed"},
        {"action": "Copy", "status": "Unknown"},
        ["not", "an", "object"],
    ],
    ids=[
        "extra-property",
        "no-status",
        "no-action",
        "preview-action",
        "unknown-enum-value",
        "message-not-string",
        "file-extra-property",
        "data-not-object",
        "action-unknown",
        "status-unknown",
        "not-an-object",
    ],
)
def test_status_update_invalid_body_returns_400_without_applying(fake: FakeMineOS, body: Any) -> None:
    response = post_status(fake, "ticket-1", "integration-1", body)

    assert response.status_code == 400
    assert response.json()["internalErrorCode"] == "InvalidArgument"
    assert response.json()["message"]
    assert post_status(fake, "ticket-1", "integration-1", COPY_COMPLETED).status_code == 200


@pytest.mark.parametrize(
    "copy_only_field",
    [{"files": [{"fileName": "a.json", "description": "export", "url": "https://x"}]}, {"data": {"rows": 1}}],
    ids=["files", "data"],
)
def test_status_update_delete_with_copy_only_field_returns_400(
    fake: FakeMineOS, copy_only_field: dict[str, Any]
) -> None:
    response = post_status(
        fake, "ticket-1", "integration-1", {"action": "Delete", "status": "Completed", **copy_only_field}
    )

    assert response.status_code == 400
    assert "Copy" in response.json()["message"]


def test_status_update_delete_with_null_files_returns_200(fake: FakeMineOS) -> None:
    body = {"action": "Delete", "status": "Completed", "message": None, "data": None, "files": None}

    assert post_status(fake, "ticket-1", "integration-1", body).status_code == 200


def test_status_update_non_json_content_type_returns_415(fake: FakeMineOS) -> None:
    response = requests.post(
        status_url(fake, "ticket-1", "integration-1"),
        data=json.dumps(COPY_COMPLETED),
        headers={"Authorization": f"Bearer {API_KEY}", "Content-Type": "text/plain"},
        timeout=5,
    )

    assert response.status_code == 415
    assert fake.calls()[0].body == COPY_COMPLETED


def test_status_update_test_flag_returns_200_without_applying(fake: FakeMineOS) -> None:
    fake.register_operation("ticket-1", "integration-1", Action.COPY)

    test_update = post_status(fake, "ticket-1", "integration-1", {**COPY_COMPLETED, "test": True})

    assert test_update.status_code == 200
    assert log_items(fake, "ticket-1")[0]["state"] == "InProgress"
    assert post_status(fake, "ticket-1", "integration-1", COPY_COMPLETED).status_code == 200


def test_status_update_action_other_than_sent_returns_400(fake: FakeMineOS) -> None:
    fake.register_operation("ticket-1", "integration-1", Action.DELETE)

    response = post_status(fake, "ticket-1", "integration-1", COPY_COMPLETED)

    assert response.status_code == 400
    assert log_items(fake, "ticket-1")[0]["state"] == "InProgress"


# --- Faults ---------------------------------------------------------------------------------------


def test_status_update_scripted_faults_answer_in_order_without_applying(fake: FakeMineOS) -> None:
    fake.register_operation("ticket-1", "integration-1")
    fake.inject_faults([{"status": 500}, Fault(status=429)])

    codes = []
    for _ in range(4):
        codes.append(post_status(fake, "ticket-1", "integration-1", COPY_COMPLETED).status_code)
        if len(codes) == 2:
            # Neither error fault applied the update.
            assert log_items(fake, "ticket-1")[0]["state"] == "InProgress"

    assert codes == [500, 429, 200, 400]
    assert [call.response_status for call in fake.calls()] == codes
    assert fake.reports_per_operation() == {("ticket-1", "integration-1"): 4}


def test_status_update_delay_fault_applies_after_client_timeout(fake: FakeMineOS) -> None:
    fake.inject_faults([{"delay_seconds": 0.4, "apply": True}])

    with pytest.raises(requests.exceptions.ReadTimeout):
        post_status(fake, "ticket-1", "integration-1", COPY_COMPLETED, timeout_seconds=0.1)

    deadline = time.monotonic() + 3
    while not fake.calls() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert [call.response_status for call in fake.calls()] == [200]
    assert log_items(fake, "ticket-1")[0]["state"] == "Completed"


def test_status_update_error_fault_with_apply_applies_and_answers_error(fake: FakeMineOS) -> None:
    fake.inject_faults([Fault(status=502, apply=True)])

    lost_answer = post_status(fake, "ticket-1", "integration-1", COPY_COMPLETED)

    assert lost_answer.status_code == 502
    assert log_items(fake, "ticket-1")[0]["state"] == "Completed"
    assert post_status(fake, "ticket-1", "integration-1", COPY_COMPLETED).status_code == 400


@pytest.mark.parametrize(
    "fault",
    [{"apply": False}, {"status": 42}, {"delay_seconds": -1}, {"status": "500"}, {"code": 500}],
    ids=["nothing-to-answer", "not-http-status", "negative-delay", "status-string", "unknown-key"],
)
def test_fault_from_json_invalid_raises_value_error(fault: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="fault"):
        Fault.from_json(fault)


def test_fake_controls_over_http_record_script_and_reset(fake: FakeMineOS) -> None:
    scripted = requests.post(f"{fake.base_url}/_fake/faults", json={"faults": [{"status": 503}]}, timeout=5)
    refused = requests.post(f"{fake.base_url}/_fake/faults", json={"faults": [{"apply": False}]}, timeout=5)
    registered = requests.post(
        f"{fake.base_url}/_fake/operations",
        json={"ticketId": "ticket-2", "integrationId": "integration-1"},
        timeout=5,
    )
    post_status(fake, "ticket-1", "integration-1", COPY_COMPLETED)

    calls = requests.get(f"{fake.base_url}/_fake/calls", timeout=5).json()
    reset = requests.post(f"{fake.base_url}/_fake/reset", timeout=5)

    assert (scripted.status_code, refused.status_code, registered.status_code) == (200, 400, 200)
    assert [(call["ticketId"], call["integrationId"], call["responseStatus"]) for call in calls] == [
        ("ticket-1", "integration-1", 503)
    ]
    assert calls[0]["body"] == COPY_COMPLETED
    assert reset.status_code == 200
    assert fake.calls() == []
    assert get_log(fake, "ticket-2").status_code == 404
    assert post_status(fake, "ticket-1", "integration-1", COPY_COMPLETED).status_code == 200


# --- The ticket log and the key check -------------------------------------------------------------


def test_ticket_log_sent_call_shows_in_progress_until_updated(fake: FakeMineOS, receiver: Receiver) -> None:
    call = build_call(Action.DELETE, PERSON, integration_id="integration-1")

    fake.send(receiver.url, call, SIGNING_SECRET)
    before = log_items(fake, call.ticket_id)
    post_status(fake, call.ticket_id, "integration-1", {"action": "Delete", "status": "Completed"})
    after = log_items(fake, call.ticket_id)

    assert len(receiver.received) == 1
    assert before == [
        {
            "id": "integration-1",
            "state": "InProgress",
            "success": False,
            "customMessage": None,
            "createdAt": before[0]["createdAt"],
            "retryCount": 0,
        }
    ]
    datetime.fromisoformat(before[0]["createdAt"])
    assert (after[0]["state"], after[0]["success"]) == ("Completed", True)


@pytest.mark.parametrize(
    ("status", "state", "success"),
    [
        (Status.COMPLETED, "Completed", True),
        (Status.USER_NOT_FOUND, "Completed", True),
        (Status.FAILED, "Failed", False),
        (Status.CANNOT_DELETE_DATA, "Failed", False),
        (Status.MISSING_IDENTIFIERS, "MissingIdentifiers", False),
    ],
)
def test_ticket_log_applied_status_shows_mapped_state(
    fake: FakeMineOS, status: Status, state: str, success: bool
) -> None:
    fake.register_operation("ticket-1", "integration-1")
    fake.register_operation("ticket-1", "integration-2")

    post_status(fake, "ticket-1", "integration-1", {"action": "Delete", "status": status, "message": "why"})

    assert [
        (item["id"], item["state"], item["success"], item["customMessage"])
        for item in log_items(fake, "ticket-1")
    ] == [
        ("integration-1", state, success, "why"),
        ("integration-2", "InProgress", False, None),
    ]


def test_log_state_for_status_every_applied_state_is_settled() -> None:
    assert set(LOG_STATE_FOR_STATUS) == set(Status)
    assert set(LOG_STATE_FOR_STATUS.values()) <= SETTLED_LOG_STATES


def test_ticket_log_unknown_ticket_returns_404(fake: FakeMineOS) -> None:
    assert get_log(fake, "no-such-ticket").status_code == 404


def test_ticket_log_bad_bearer_returns_401(fake: FakeMineOS) -> None:
    fake.register_operation("ticket-1", "integration-1")

    assert get_log(fake, "ticket-1", api_key="wrong-key").status_code == 401


def test_test_me_checks_api_key(fake: FakeMineOS) -> None:
    def test_me(api_key: str) -> int:
        url = f"{fake.base_url}/api/Test/Me"
        return requests.get(url, headers={"Authorization": f"Bearer {api_key}"}, timeout=5).status_code

    assert (test_me(API_KEY), test_me("wrong-key")) == (200, 401)


def test_fake_mineos_send_preview_registers_nothing(fake: FakeMineOS, receiver: Receiver) -> None:
    call = build_call(Action.PREVIEW, PERSON, integration_id="integration-1")

    fake.send(receiver.url, call, SIGNING_SECRET)

    assert get_log(fake, call.ticket_id).status_code == 404


def test_fake_mineos_log_lines_carry_no_personal_data(
    fake: FakeMineOS, receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="infra.fake_mineos")
    call = build_call(Action.COPY, PERSON, integration_id="integration-1")

    fake.send(receiver.url, call, SIGNING_SECRET)
    post_status(fake, call.ticket_id, "integration-1", {**COPY_COMPLETED, "message": f"found {PERSON.email}"})
    get_log(fake, call.ticket_id)

    fake_lines = [record for record in caplog.records if record.name == "infra.fake_mineos"]
    assert len(fake_lines) == 2  # one line per call
    assert call.ticket_id in caplog.text
    for personal in (PERSON.email, PERSON.name, "user-42", "+15550100", API_KEY):
        assert personal not in caplog.text


def test_fake_mineos_stopped_has_no_base_url() -> None:
    server = FakeMineOS(API_KEY).start()
    server.stop()

    with pytest.raises(RuntimeError, match="not running"):
        _ = server.base_url


# --- The sender -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "scheme",
    [SignatureScheme(), SignatureScheme(SignatureAlgorithm.SHA512, SignatureEncoding.HEX)],
    ids=str,
)
def test_send_call_current_shape_sends_signed_current_body(
    receiver: Receiver, scheme: SignatureScheme
) -> None:
    call = build_call(
        Action.COPY, PERSON, integration_id="integration-1", trace_id="trace-1", ticket_id="ticket-1"
    )

    response = send_call(receiver.url, call, SIGNING_SECRET, scheme)

    assert response.status_code == 202
    [received] = receiver.received
    assert received.body == call.body
    assert received.headers["Content-Type"] == "application/json"
    verify(received.body, received.headers[SIGNATURE_HEADER], [SIGNING_SECRET], scheme)
    body = json.loads(received.body)
    assert body == {
        "traceId": "trace-1",
        "integrationId": "integration-1",
        "isTest": False,
        "request": {
            "id": "ticket-1",
            "type": "Get",
            "source": "Form",
            "domain": "example.com",
            "createdAt": body["request"]["createdAt"],
            "userInfo": {
                "name": "Ada Lovelace",
                "email": "ada@example.com",
                "isVerified": True,
                "customFields": {"$internalId": "user-42", "$phoneNumber": "+15550100"},
            },
        },
    }
    assert body["request"]["createdAt"].endswith("Z")
    assert datetime.fromisoformat(body["request"]["createdAt"]).utcoffset() == timedelta(0)


def test_send_call_legacy_shape_sends_signed_legacy_body(receiver: Receiver) -> None:
    call = build_call(
        Action.DELETE,
        Person("Ada", "ada@example.com"),
        integration_id="integration-1",
        is_test=True,
        shape="legacy",
    )

    send_call(receiver.url, call, SIGNING_SECRET)

    [received] = receiver.received
    verify(received.body, received.headers[SIGNATURE_HEADER], [SIGNING_SECRET])
    body = json.loads(received.body)
    assert set(body) == {"EventId", "EventType", "integrationId", "isTest", "ticketInfo"}
    assert (body["EventId"], body["EventType"], body["isTest"]) == (call.trace_id, "WebhookSlim", "true")
    assert (body["ticketInfo"]["id"], body["ticketInfo"]["type"]) == (call.ticket_id, "Delete")
    assert body["ticketInfo"]["userInfo"]["customFields"] is None


def test_send_call_same_call_twice_sends_identical_bytes(receiver: Receiver) -> None:
    call = build_call(Action.COPY, PERSON, integration_id="integration-1")

    send_call(receiver.url, call, SIGNING_SECRET)
    send_call(receiver.url, call, SIGNING_SECRET)

    first, second = receiver.received
    assert first.body == second.body == call.body
    assert first.headers[SIGNATURE_HEADER] == second.headers[SIGNATURE_HEADER]


def test_build_call_without_ids_uses_fresh_uuids() -> None:
    first = build_call(Action.COPY, PERSON, integration_id="integration-1")
    second = build_call(Action.COPY, PERSON, integration_id="integration-1")

    assert len({first.trace_id, second.trace_id, first.ticket_id, second.ticket_id}) == 4


@pytest.mark.parametrize("shape", ["current", "legacy"])
def test_build_call_either_shape_parses_with_project_parser(shape: Any) -> None:
    call = build_call(Action.DELETE, PERSON, integration_id="integration-1", is_test=True, shape=shape)

    request = parse_request(Action.DELETE, call.body)

    assert (request.trace_id, request.ticket_id, request.integration_id, request.is_test) == (
        call.trace_id,
        call.ticket_id,
        "integration-1",
        True,
    )
    assert request.identities == {
        Identity.EMAIL: PERSON.email,
        Identity.INTERNAL_ID: PERSON.internal_id,
        Identity.PHONE_NUMBER: PERSON.phone_number,
    }


def test_build_call_unknown_shape_raises_value_error() -> None:
    with pytest.raises(ValueError, match="shape"):
        build_call(Action.COPY, PERSON, integration_id="integration-1", shape="v3")  # type: ignore[arg-type]


# --- The CLI --------------------------------------------------------------------------------------


@pytest.mark.usefixtures("signing_environment")
def test_cli_send_signs_with_first_secret_and_registers(
    fake: FakeMineOS, receiver: Receiver, capsys: pytest.CaptureFixture[str]
) -> None:
    exit_code = main(
        [
            "send",
            "--url",
            receiver.url,
            "--action",
            "delete",
            "--email",
            PERSON.email,
            "--name",
            PERSON.name,
            "--internal-id",
            "user-42",
            "--integration-id",
            "integration-1",
            "--ticket-id",
            "ticket-cli",
            "--legacy",
            "--register-at",
            fake.base_url,
        ]
    )

    assert exit_code == 0
    [received] = receiver.received
    verify(received.body, received.headers[SIGNATURE_HEADER], [SIGNING_SECRET])
    parsed = parse_request(Action.DELETE, received.body)
    assert (parsed.ticket_id, parsed.identities[Identity.INTERNAL_ID]) == ("ticket-cli", "user-42")
    output = capsys.readouterr().out
    assert parsed.trace_id in output
    assert "ticket-cli" in output
    assert "202" in output
    assert log_items(fake, "ticket-cli")[0]["state"] == "InProgress"


def test_cli_send_without_secret_exits_2(monkeypatch: pytest.MonkeyPatch, receiver: Receiver) -> None:
    monkeypatch.delenv("MINE_SIGNING_SECRETS", raising=False)
    exit_code = main(
        [
            *("send", "--url", receiver.url, "--action", "copy"),
            *("--email", "a@example.com", "--name", "A", "--integration-id", "integration-1"),
        ]
    )

    assert exit_code == 2
    assert receiver.received == []


def test_cli_serve_answers_until_sigterm() -> None:
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "infra.fake_mineos", "serve", "--port", str(port), "--api-key", API_KEY],
        cwd=REPOSITORY_ROOT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        status = None
        deadline = time.monotonic() + 10
        while status is None and time.monotonic() < deadline:
            try:
                status = requests.get(
                    f"http://127.0.0.1:{port}/api/Test/Me",
                    headers={"Authorization": f"Bearer {API_KEY}"},
                    timeout=1,
                ).status_code
            except requests.ConnectionError:
                time.sleep(0.05)
        server.send_signal(signal.SIGTERM)
        _, errors = server.communicate(timeout=10)
    finally:
        if server.poll() is None:
            server.kill()
            server.communicate(timeout=10)

    assert status == 200
    assert server.returncode == 0
    assert "GET /api/Test/Me -> 200" in errors
    assert API_KEY not in errors
