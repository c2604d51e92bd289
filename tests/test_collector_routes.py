"""The collector's HTTP edge: Pub/Sub push bodies in, status codes out (the emulators behind it)."""

import base64
import json
import sqlite3
import uuid

import pytest
from functions_framework import create_app

from infra.emulators import create_bucket, generate_local_signing_key
from infra.fake_mineos import FakeMineOS, Person, build_call
from mineos_integration.contract import Action, parse_request
from mineos_integration.services import collector_service
from tests.services_helpers import clear_service_caches
from tests.test_ingress import MAIN

pytestmark = pytest.mark.emulators

API_KEY = "collector-routes-api-key"


@pytest.fixture
def collector_client(emulator_env, monkeypatch, tmp_path, caplog):
    database = tmp_path / "app.db"
    with sqlite3.connect(database) as connection:
        connection.execute("CREATE TABLE accounts (email TEXT, plan TEXT)")
        connection.execute("INSERT INTO accounts VALUES ('ada@example.com', 'pro')")
    data_map = tmp_path / "datamap.yaml"
    data_map.write_text(
        "version: 1\nsources:\n"
        f"  - {{name: accounts, type: sql, identity: email, url: 'sqlite:///{database}', table: accounts,"
        " match_column: email}\n"
    )
    bucket = f"exports-{uuid.uuid4().hex[:10]}"
    create_bucket(emulator_env["STORAGE_EMULATOR_HOST"], emulator_env["GOOGLE_CLOUD_PROJECT"], bucket)
    with FakeMineOS(API_KEY) as mineos:
        for name, value in {
            "MINEOS_API_KEY": API_KEY,
            "MINEOS_BACKOFF_SECONDS": "0.01",
            "MINEOS_API_BASE_URL": mineos.base_url,
            "EXPORT_BUCKET": bucket,
            "DATA_MAP_PATH": str(data_map),
            "URL_SIGNING_KEY_FILE": str(generate_local_signing_key(tmp_path / "key.json")),
        }.items():
            monkeypatch.setenv(name, value)
        clear_service_caches()
        yield create_app("collector", MAIN).test_client(), mineos
    clear_service_caches()


def push_body(data: bytes, attributes: dict | None = None) -> dict:
    message = {"data": base64.b64encode(data).decode(), "attributes": attributes or {}, "messageId": "1"}
    return {"subscription": "projects/p/subscriptions/s", "message": message}


ADA = Person(name="Ada Lovelace", email="ada@example.com")


def copy_request():
    return parse_request(Action.COPY, build_call(Action.COPY, ADA, integration_id="routes").body)


def test_collector_push_is_processed_and_acknowledged(collector_client):
    client, mineos = collector_client
    request = copy_request()
    response = client.post("/requests", json=push_body(request.model_dump_json().encode()))
    assert response.status_code == 200
    (call,) = mineos.status_calls_for(request.ticket_id, request.integration_id)
    assert call.body["status"] == "Completed"


@pytest.mark.parametrize(
    "body",
    [
        {"message": {"data": base64.b64encode(b"not json").decode()}},
        {"message": {"data": "%%% not base64 %%%"}},
        {"message": {"data": base64.b64encode(b'{"action": "Copy"}').decode()}},
        {"no message": True},
        "a string",
    ],
)
def test_collector_undecodable_message_is_acknowledged_and_logged_without_content(
    collector_client, body, caplog
):
    client, mineos = collector_client
    response = client.post("/requests", data=json.dumps(body), content_type="application/json")
    assert response.status_code == 200
    assert response.get_json() == {"status": "undecodable"}
    assert mineos.calls() == []
    assert "not json" not in caplog.text


def test_collector_busy_operation_answers_non_2xx_for_redelivery(collector_client):
    client, mineos = collector_client
    request = copy_request()
    collector_service().ledger.claim(request, "another-live-worker")
    response = client.post("/requests", json=push_body(request.model_dump_json().encode()))
    assert response.status_code == 409
    assert mineos.calls() == []


def test_collector_mineos_unavailable_answers_503_for_redelivery(collector_client):
    client, mineos = collector_client
    mineos.inject_faults([{"status": 500}] * 5)
    request = copy_request()
    response = client.post("/requests", json=push_body(request.model_dump_json().encode()))
    assert response.status_code == 503
    assert client.post("/requests", json=push_body(request.model_dump_json().encode())).status_code == 200
    assert [c.response_status for c in mineos.calls()] == [500] * 5 + [200]


def test_collector_dead_letter_push_reports_failed_with_the_attempt_count(collector_client):
    client, mineos = collector_client
    request = copy_request()
    attributes = {"CloudPubSubDeadLetterSourceDeliveryCount": "10"}
    response = client.post("/dead-letters", json=push_body(request.model_dump_json().encode(), attributes))
    assert response.status_code == 200
    (call,) = mineos.status_calls_for(request.ticket_id, request.integration_id)
    assert call.body["status"] == "Failed"
    assert "10 delivery attempts" in call.body["message"]


def test_collector_unknown_path_is_404(collector_client):
    client, _ = collector_client
    assert client.post("/other", json={}).status_code == 404
    assert client.get("/healthz").status_code == 200
