import base64
import io
import json
from collections.abc import Iterator
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path

import pytest
from functions_framework import create_app
from google.cloud import pubsub_v1

from infra.emulators import free_port
from mineos_integration.signature import SIGNATURE_HEADER, sign
from tests.services_helpers import clear_service_caches

MAIN = str(Path(__file__).parents[1] / "services" / "mineos_integration" / "main.py")
REQUESTS = Path(__file__).parent / "data" / "mineos" / "requests"
SECRET = "test-signing-secret-0123456789"
TOPIC = "mineos-requests"


@pytest.fixture
def ingress_env(monkeypatch) -> Iterator[None]:
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", "unit-tests")
    monkeypatch.setenv("MINE_SIGNING_SECRETS", f"old-secret-for-rotation,{SECRET}")
    monkeypatch.setenv("REQUESTS_TOPIC", TOPIC)
    monkeypatch.setenv("MAX_BODY_BYTES", "4096")
    monkeypatch.setenv("PUBLISH_TIMEOUT_SECONDS", "2")
    monkeypatch.setenv("FIRESTORE_TIMEOUT_SECONDS", "2")
    # Unit tests never reach the network: nothing listens on these ports, and the error paths
    # under test answer before any remote call.
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", f"127.0.0.1:{free_port()}")
    monkeypatch.setenv("FIRESTORE_EMULATOR_HOST", f"127.0.0.1:{free_port()}")
    clear_service_caches()
    yield
    clear_service_caches()


@pytest.fixture
def client(ingress_env):
    return create_app("ingress", MAIN).test_client()


def signed_post(client, path: str, body: bytes, *, secret: str = SECRET, headers: dict | None = None):
    all_headers = {
        "Content-Type": "application/json",
        SIGNATURE_HEADER: sign(body, secret),
        **(headers or {}),
    }
    return client.post(path, data=body, headers=all_headers)


COPY = (REQUESTS / "copy-current.json").read_bytes()


def test_ingress_health_route_answers_ok(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok"}


def test_ingress_unknown_path_is_404(client):
    assert signed_post(client, "/export", COPY).status_code == 404


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
def test_ingress_wrong_method_is_405(client, method):
    response = client.open("/copy", method=method)
    assert response.status_code == 405
    assert response.headers["Allow"] == "POST"


def test_ingress_not_json_is_415(client):
    response = signed_post(client, "/copy", COPY, headers={"Content-Type": "text/plain"})
    assert response.status_code == 415


def test_ingress_body_over_limit_is_413(client):
    body = json.dumps({"traceId": "x" * 5000}).encode()
    assert signed_post(client, "/copy", body).status_code == 413


def test_ingress_body_over_limit_without_length_header_is_413(client):
    body = json.dumps({"traceId": "x" * 5000}).encode()
    response = client.post(
        "/copy",
        input_stream=io.BytesIO(body),
        headers={"Content-Type": "application/json", SIGNATURE_HEADER: sign(body, SECRET)},
    )
    assert response.status_code == 413


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {SIGNATURE_HEADER: ""},
        {SIGNATURE_HEADER: "garbage!"},
        {SIGNATURE_HEADER: sign(COPY, "some-other-secret")},
        {SIGNATURE_HEADER: sign(COPY, SECRET)[:-4]},
    ],
)
def test_ingress_missing_or_wrong_signature_is_401_without_detail(client, headers):
    response = client.post("/copy", data=COPY, headers={"Content-Type": "application/json", **headers})
    assert response.status_code == 401
    assert response.get_json() == {"error": "invalid signature"}


def test_ingress_signature_header_name_is_case_insensitive(client):
    body = b'{"traceId": "t"}'  # signed correctly, invalid: reaches the body check, so 400 not 401
    response = client.post(
        "/copy",
        data=body,
        headers={"content-type": "application/json", "x-mine-signature": sign(body, SECRET)},
    )
    assert response.status_code == 400


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"not json", "not valid JSON"),
        (b"[]", "JSON object"),
        (b'{"integrationId": "i", "request": {"id": "t"}}', "traceId"),
        (b'{"traceId": "t", "integrationId": "i"}', "request"),
    ],
)
def test_ingress_malformed_body_is_400_with_clear_message(client, body, message):
    response = signed_post(client, "/delete", body)
    assert response.status_code == 400
    assert message in response.get_json()["error"]


def test_ingress_refuses_placeholder_secret_at_start(monkeypatch, ingress_env):
    from mineos_integration.settings import ConfigurationError

    monkeypatch.setenv("MINE_SIGNING_SECRETS", "changeme")
    clear_service_caches()
    with pytest.raises(ConfigurationError, match="MINE_SIGNING_SECRETS"):
        create_app("ingress", MAIN).test_client().get("/healthz")


def test_ingress_refuses_missing_secret_at_start(monkeypatch, ingress_env):
    from mineos_integration.settings import ConfigurationError

    monkeypatch.delenv("MINE_SIGNING_SECRETS")
    clear_service_caches()
    with pytest.raises(ConfigurationError, match="MINE_SIGNING_SECRETS"):
        create_app("ingress", MAIN).test_client().get("/healthz")


# Against the real Pub/Sub and Firestore emulators.


@pytest.fixture
def emulator_client(ingress_env, monkeypatch, pubsub_emulator, firestore_emulator):
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", pubsub_emulator)
    monkeypatch.setenv("FIRESTORE_EMULATOR_HOST", firestore_emulator)
    project = f"ingress-{free_port()}"
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", project)
    clear_service_caches()
    publisher = pubsub_v1.PublisherClient()
    subscriber = pubsub_v1.SubscriberClient()
    topic = publisher.topic_path(project, TOPIC)
    subscription = subscriber.subscription_path(project, "probe")
    publisher.create_topic(name=topic, timeout=10)
    subscriber.create_subscription(name=subscription, topic=topic, timeout=10)
    yield create_app("ingress", MAIN).test_client(), subscriber, subscription
    subscriber.close()


def pull_all(subscriber, subscription, expected: int):
    """Pull until `expected` messages came and one more pull found nothing (bounded)."""
    messages: list = []
    for _ in range(10):
        response = subscriber.pull(subscription=subscription, max_messages=10, timeout=2, retry=None)
        received = list(response.received_messages)
        if received:
            subscriber.acknowledge(subscription=subscription, ack_ids=[m.ack_id for m in received])
        elif len(messages) >= expected:
            break
        messages.extend(received)
    return messages


@pytest.mark.emulators
def test_ingress_valid_copy_is_published_then_202(emulator_client):
    client, subscriber, subscription = emulator_client
    response = signed_post(client, "/copy", COPY)
    assert response.status_code == 202
    (received,) = pull_all(subscriber, subscription, 1)
    message = received.message
    assert dict(message.attributes) == {
        "action": "Copy",
        "integrationId": "0b8e5c3a-71d2-4f6e-b9a4-2d3c5e7f9a10",
        "traceId": "6f1c2a9e-3b7d-4e10-9a55-0c2f4d1e8b21",
        "isTest": "false",
    }
    data = json.loads(message.data)
    assert data["ticket_id"] == "3664feb0-b48c-4a8a-a81d-1303a4efc64f"
    assert data["identities"]["email"] == "ada@example.com"


@pytest.mark.emulators
def test_ingress_legacy_delete_is_published_with_string_is_test(emulator_client):
    client, subscriber, subscription = emulator_client
    assert signed_post(client, "/delete", (REQUESTS / "delete-legacy.json").read_bytes()).status_code == 202
    (received,) = pull_all(subscriber, subscription, 1)
    assert received.message.attributes["action"] == "Delete"
    assert received.message.attributes["isTest"] == "false"


@pytest.mark.emulators
def test_ingress_request_for_a_reported_operation_is_202_without_publishing(emulator_client):
    from mineos_integration.contract import Action, parse_request
    from mineos_integration.ledger import State
    from mineos_integration.services import ingress_service

    client, subscriber, subscription = emulator_client
    assert signed_post(client, "/copy", COPY).status_code == 202
    ledger = ingress_service().ledger
    ledger.mark_final(parse_request(Action.COPY, COPY), State.REPORTED, {"result": "accepted"})
    assert signed_post(client, "/copy", COPY).status_code == 202
    assert len(pull_all(subscriber, subscription, 2)) == 1


@pytest.mark.emulators
def test_ingress_publish_failure_is_503(emulator_client, monkeypatch):
    client, _, _ = emulator_client
    from mineos_integration.services import ingress_service

    class NeverConfirmed:
        def result(self, timeout):
            raise FutureTimeout()

        def cancel(self):
            return True

    monkeypatch.setattr(ingress_service().publisher, "publish", lambda *a, **k: NeverConfirmed())
    response = signed_post(client, "/copy", COPY)
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "5"


@pytest.mark.emulators
def test_ingress_pubsub_emulator_down_is_503(ingress_env, monkeypatch, firestore_emulator):
    monkeypatch.setenv("FIRESTORE_EMULATOR_HOST", firestore_emulator)
    monkeypatch.setenv("PUBLISH_TIMEOUT_SECONDS", "1")
    clear_service_caches()
    client = create_app("ingress", MAIN).test_client()
    assert signed_post(client, "/copy", COPY).status_code == 503


@pytest.mark.emulators
def test_ingress_firestore_down_is_503(ingress_env, monkeypatch, pubsub_emulator):
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", pubsub_emulator)
    clear_service_caches()
    client = create_app("ingress", MAIN).test_client()
    assert signed_post(client, "/copy", COPY).status_code == 503


def test_pushed_message_round_trips_through_base64(ingress_env):
    from mineos_integration.contract import Action, parse_request

    request = parse_request(Action.COPY, COPY)
    encoded = base64.b64encode(request.model_dump_json().encode()).decode()
    from mineos_integration.main import _pushed_request

    decoded, attributes = _pushed_request({"message": {"data": encoded, "attributes": {"a": "b"}}})
    assert decoded == request
    assert attributes == {"a": "b"}
