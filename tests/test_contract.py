import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from mineos_integration.contract import (
    Action,
    FileReference,
    Identity,
    InvalidRequest,
    Status,
    StatusUpdate,
    parse_request,
)

REQUESTS = Path(__file__).parent / "data" / "mineos" / "requests"


def payload(name: str) -> bytes:
    return (REQUESTS / name).read_bytes()


def test_parse_request_current_copy_reads_ids_and_identities():
    request = parse_request(Action.COPY, payload("copy-current.json"))
    assert request.trace_id == "6f1c2a9e-3b7d-4e10-9a55-0c2f4d1e8b21"
    assert request.integration_id == "0b8e5c3a-71d2-4f6e-b9a4-2d3c5e7f9a10"
    assert request.ticket_id == "3664feb0-b48c-4a8a-a81d-1303a4efc64f"
    assert request.is_test is False
    assert request.name == "Ada Lovelace"
    assert request.identities == {
        Identity.EMAIL: "ada@example.com",
        Identity.INTERNAL_ID: "cust-0042",
        Identity.PHONE_NUMBER: "+44 20 7946 0000",
    }


def test_parse_request_legacy_delete_reads_event_id_ticket_info_and_string_is_test():
    request = parse_request(Action.DELETE, payload("delete-legacy.json"))
    assert request.trace_id == "a2d4c6e8-1357-4b9d-8f0e-24680ace1357"
    assert request.ticket_id == "9f8e7d6c-5b4a-4321-9876-543210fedcba"
    assert request.is_test is False
    assert request.identities == {Identity.EMAIL: "grace@example.com"}


def test_parse_request_ticket_id_field_wins_over_id():
    body = json.loads(payload("copy-current.json"))
    body["request"]["ticketId"] = "ticket-explicit"
    assert parse_request(Action.COPY, json.dumps(body).encode()).ticket_id == "ticket-explicit"


def test_parse_request_user_info_beside_the_ticket_is_accepted():
    body = json.loads(payload("copy-current.json"))
    body["userInfo"] = body["request"].pop("userInfo")
    request = parse_request(Action.COPY, json.dumps(body).encode())
    assert request.identities[Identity.EMAIL] == "ada@example.com"


@pytest.mark.parametrize(
    ("raw", "expected"), [(True, True), ("true", True), ("TRUE", True), ("false", False)]
)
def test_parse_request_is_test_as_bool_or_string(raw, expected):
    body = json.loads(payload("copy-current.json"))
    body["isTest"] = raw
    assert parse_request(Action.COPY, json.dumps(body).encode()).is_test is expected


def test_parse_request_preview_without_ticket_is_accepted():
    request = parse_request(Action.PREVIEW, payload("preview-no-ticket.json"))
    assert request.identities[Identity.INTERNAL_ID] == "cust-0042"


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda b: b.pop("traceId"), "traceId"),
        (lambda b: b.update(traceId=""), "traceId"),
        (lambda b: b.pop("integrationId"), "integrationId"),
        (lambda b: b.pop("request"), "request"),
        (lambda b: b.update(request="a string"), "request"),
        (lambda b: b["request"].pop("id"), "ticketId"),
        (lambda b: b.update(isTest="maybe"), "isTest"),
        (lambda b: b["request"].update(userInfo=[1, 2]), "userInfo"),
    ],
)
def test_parse_request_incomplete_body_names_the_field(mutate, message):
    body = json.loads(payload("copy-current.json"))
    mutate(body)
    with pytest.raises(InvalidRequest, match=message):
        parse_request(Action.COPY, json.dumps(body).encode())


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"", "not valid JSON"),
        (b"\xff\xfe", "UTF-8"),
        (b"[1, 2]", "JSON object"),
        (b'{"a": NaN}', "not valid JSON"),
        (b'{"a": ' + b"9" * 400 + b"}", "not valid JSON"),
        (b"[" * 50_000, "nested"),
        (b'{"a":' * 40 + b"1" + b"}" * 40, "nested deeper"),
    ],
)
def test_parse_request_malformed_body_is_invalid_request(raw, message):
    with pytest.raises(InvalidRequest, match=message):
        parse_request(Action.COPY, raw)


def test_status_update_copy_serialises_to_mineos_field_names():
    update = StatusUpdate(
        action=Action.COPY,
        status=Status.COMPLETED,
        files=[FileReference(fileName="a.jsonl", description="a", url="https://x")],
        data={"a": [1]},
        test=True,
    )
    assert update.to_json() == {
        "action": "Copy",
        "status": "Completed",
        "files": [{"fileName": "a.jsonl", "description": "a", "url": "https://x"}],
        "data": {"a": [1]},
        "test": True,
    }


def test_status_update_delete_with_files_is_refused():
    with pytest.raises(ValidationError, match="Copy action only"):
        StatusUpdate(action=Action.DELETE, status=Status.COMPLETED, files=[])


def test_status_update_unknown_field_is_refused():
    with pytest.raises(ValidationError):
        StatusUpdate.model_validate({"action": "Copy", "status": "Completed", "extra": 1})


def test_parse_request_delete_ticket_at_copy_url_is_refused():
    body = json.loads(payload("copy-current.json"))
    body["request"]["type"] = "Delete"
    with pytest.raises(InvalidRequest, match="'Delete' ticket cannot be sent to the Copy URL"):
        parse_request(Action.COPY, json.dumps(body).encode())


def test_parse_request_copy_call_replayed_to_delete_url_is_refused():
    with pytest.raises(InvalidRequest, match="'Get' ticket cannot be sent to the Delete URL"):
        parse_request(Action.DELETE, payload("copy-current.json"))


def test_parse_request_ticket_without_type_is_accepted_at_either_url():
    body = json.loads(payload("copy-current.json"))
    del body["request"]["type"]
    assert parse_request(Action.DELETE, json.dumps(body).encode()).action is Action.DELETE


def test_parse_request_lone_surrogate_escape_is_invalid_request():
    with pytest.raises(InvalidRequest, match="invalid Unicode"):
        parse_request(Action.COPY, b'{"traceId": "t\\ud800", "integrationId": "i", "request": {"id": "x"}}')
