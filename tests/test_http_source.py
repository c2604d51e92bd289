"""The HTTP connector against a real local HTTP server (werkzeug on 127.0.0.1), scripted per test."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from pydantic import ValidationError
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

from mineos_integration.contract import Identity
from mineos_integration.datamap import DataMapError
from mineos_integration.sources.base import DataSource, DeletionResult, PreviewProperty, SourceError
from mineos_integration.sources.http import HttpSourceConfig
from tests.sources_helpers import CollectingSink, emulator_context

PERSON = "ada@example.com"
TOKEN = "Bearer test-token-123"


@dataclass
class Call:
    method: str
    path: str
    raw_query: str
    args: dict[str, str]
    authorization: str | None
    body: Any


@dataclass
class FakeCrm:
    """A small people API: records by email, scripted failures first, every call recorded."""

    people: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    scripted: list[Response] = field(default_factory=list)  # answered, in order, before any real one
    calls: list[Call] = field(default_factory=list)
    delay_seconds: float = 0.0
    url: str = ""

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        return self.answer(Request(environ))(environ, start_response)

    def answer(self, request: Request) -> Response:
        body = request.get_json(silent=True)
        self.calls.append(
            Call(
                request.method,
                request.path,
                request.query_string.decode(),
                dict(request.args),
                request.headers.get("Authorization"),
                body,
            )
        )
        if self.delay_seconds:
            time.sleep(self.delay_seconds)
        if self.scripted:
            return self.scripted.pop(0)
        if request.headers.get("Authorization") != TOKEN:
            return Response("no", status=401)
        if request.path == "/api/people" and request.method == "GET":
            return json_response({"data": {"items": self.people.get(request.args["email"], [])}})
        if request.path == "/api/search" and request.method == "POST":
            assert isinstance(body, dict)
            return json_response({"data": {"items": self.people.get(body["query"]["email"], [])}})
        if request.path == "/api/people" and request.method == "DELETE":
            removed = self.people.pop(request.args["email"], None)
            return Response(status=204 if removed else 404)
        if request.path.startswith("/api/people/") and request.method == "DELETE":
            record_id = request.path.rsplit("/", 1)[1]
            for records in self.people.values():
                for record in records:
                    if str(record["id"]) == record_id:
                        records.remove(record)
                        return Response(status=204)
            return Response(status=404)
        return Response(status=404)

    def count(self, method: str, path: str) -> int:
        return sum(1 for call in self.calls if call.method == method and call.path == path)


def json_response(document: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(json.dumps(document), status=status, headers=headers, content_type="application/json")


@pytest.fixture
def crm() -> Iterator[FakeCrm]:
    crm = FakeCrm()
    server = make_server("127.0.0.1", 0, crm, threaded=True)
    crm.url = f"http://127.0.0.1:{server.server_port}"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield crm
    finally:
        server.shutdown()
        thread.join(timeout=5)


@pytest.fixture(autouse=True)
def crm_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRM_TOKEN", TOKEN)


def make_config(crm: FakeCrm, **overrides: Any) -> HttpSourceConfig:
    fields: dict[str, Any] = {
        "type": "http",
        "name": "crm",
        "identity": Identity.EMAIL,
        "url": crm.url + "/api/people?email={value}",
        "auth_header": "Authorization",
        "auth_env": "CRM_TOKEN",
        "records_path": "data.items",
        "delete_url": crm.url + "/api/people?email={value}",
        "backoff_seconds": 0.01,
    }
    fields.update(overrides)
    return HttpSourceConfig.model_validate(fields)


def make_source(crm: FakeCrm, **overrides: Any) -> DataSource:
    return make_config(crm, **overrides).build(emulator_context(timeout_seconds=10.0))


def ada_records() -> list[dict[str, Any]]:
    return [
        {"id": 1, "email": PERSON, "plan": "gold", "updatedAt": "2024-02-01T10:00:00Z"},
        {"id": 2, "email": PERSON, "plan": "gold", "updatedAt": "2025-06-30T08:15:00+00:00"},
    ]


def test_http_export_writes_the_records_and_sends_the_auth_header_from_env(crm):
    crm.people = {PERSON: ada_records(), "grace@example.com": [{"id": 3}]}
    sink = CollectingSink()

    make_source(crm).export(PERSON, sink)

    assert sink.records == ada_records()
    assert [call.authorization for call in crm.calls] == [TOKEN]


def test_http_lookup_value_with_ampersand_and_spaces_is_url_encoded(crm):
    value = "a&b c+d@example.com"
    crm.people = {value: [{"id": 7}], "a": [{"id": 8}]}

    count = make_source(crm).count(value)

    assert count == 1
    assert crm.calls[0].args == {"email": value}
    assert crm.calls[0].raw_query == "email=a%26b%20c%2Bd%40example.com"


def test_http_post_lookup_fills_the_value_into_the_json_body(crm):
    crm.people = {PERSON: ada_records()}
    source = make_source(
        crm,
        url=crm.url + "/api/search",
        method="POST",
        json_body={"query": {"email": "{value}"}, "limit": 50},
    )

    assert source.count(PERSON) == 2
    assert crm.calls[0].body == {"query": {"email": PERSON}, "limit": 50}


def test_http_lookup_429_then_500_then_success_is_retried(crm):
    crm.people = {PERSON: ada_records()}
    crm.scripted = [Response(status=429, headers={"Retry-After": "0"}), Response(status=500)]

    count = make_source(crm).count(PERSON)

    assert count == 2
    assert crm.count("GET", "/api/people") == 3


def test_http_lookup_always_503_is_transient_after_max_attempts(crm):
    crm.scripted = [Response(status=503) for _ in range(10)]
    source = make_source(crm, max_attempts=3)

    with pytest.raises(SourceError) as raised:
        source.count(PERSON)

    assert raised.value.transient is True
    assert crm.count("GET", "/api/people") == 3
    message = str(raised.value)
    assert "{value}" in message
    assert PERSON not in message
    assert "ada%40example.com" not in message


def test_http_lookup_long_retry_after_gives_up_at_once_as_transient(crm):
    crm.scripted = [Response(status=429, headers={"Retry-After": "3600"})]

    with pytest.raises(SourceError) as raised:
        make_source(crm).count(PERSON)

    assert raised.value.transient is True
    assert crm.count("GET", "/api/people") == 1


def test_http_lookup_timeout_is_retried_then_transient(crm):
    crm.delay_seconds = 0.5
    source = make_source(crm, timeout_seconds=0.1, max_attempts=2)

    with pytest.raises(SourceError) as raised:
        source.count(PERSON)

    assert raised.value.transient is True
    assert "ReadTimeout" in str(raised.value) or "ConnectionError" in str(raised.value)
    assert crm.count("GET", "/api/people") == 2


def test_http_connection_refused_is_transient(crm):
    source = make_source(crm, url="http://127.0.0.1:9/api/people?email={value}", max_attempts=2)

    with pytest.raises(SourceError) as raised:
        source.count(PERSON)

    assert raised.value.transient is True


@pytest.mark.parametrize("status", [400, 401, 403, 422])
def test_http_lookup_4xx_is_permanent_without_retry(crm, status):
    crm.scripted = [Response(status=status)]

    with pytest.raises(SourceError) as raised:
        make_source(crm).count(PERSON)

    assert raised.value.transient is False
    assert f"HTTP {status}" in str(raised.value)
    assert crm.count("GET", "/api/people") == 1


def test_http_lookup_redirect_is_not_followed(crm):
    crm.scripted = [Response(status=302, headers={"Location": "http://127.0.0.1:9/elsewhere"})]

    with pytest.raises(SourceError) as raised:
        make_source(crm).count(PERSON)

    assert raised.value.transient is False
    assert len(crm.calls) == 1


def test_http_lookup_404_is_permanent_unless_configured_as_empty(crm):
    url = crm.url + "/api/people/by-email/{value}"
    with pytest.raises(SourceError) as raised:
        make_source(crm, url=url).count(PERSON)
    assert raised.value.transient is False

    assert make_source(crm, url=url, not_found_is_empty=True).count(PERSON) == 0


def test_http_lookup_wrong_records_path_is_permanent_not_empty(crm):
    crm.people = {PERSON: ada_records()}

    with pytest.raises(SourceError, match=r"has no 'data\.records'") as raised:
        make_source(crm, records_path="data.records").count(PERSON)

    assert raised.value.transient is False


def test_http_delete_calls_delete_url_and_verifies_nothing_remains(crm):
    crm.people = {PERSON: ada_records(), "grace@example.com": [{"id": 3}]}

    result = make_source(crm).delete(PERSON)

    assert result == DeletionResult(found=2, changed=2, remaining=0)
    assert crm.people == {"grace@example.com": [{"id": 3}]}
    assert [call.method for call in crm.calls] == ["GET", "DELETE", "GET"]
    assert all(call.authorization == TOKEN for call in crm.calls)


def test_http_delete_per_record_template_deletes_each_record_and_404_is_already_gone(crm):
    crm.people = {PERSON: ada_records()}
    crm.scripted = [json_response({"data": {"items": ada_records()}}), Response(status=404)]

    result = make_source(crm, delete_url=crm.url + "/api/people/{record.id}").delete(PERSON)

    assert result == DeletionResult(found=2, changed=1, remaining=1)  # record 1 was "already gone"
    assert [call.path for call in crm.calls if call.method == "DELETE"] == ["/api/people/1", "/api/people/2"]


def test_http_delete_404_means_already_gone(crm):
    crm.scripted = [json_response({"data": {"items": ada_records()}}), Response(status=404)]

    result = make_source(crm).delete(PERSON)

    assert result == DeletionResult(found=2, changed=0, remaining=0)


def test_http_delete_retried_on_503_then_succeeds(crm):
    crm.people = {PERSON: ada_records()}
    crm.scripted = [json_response({"data": {"items": ada_records()}}), Response(status=503)]

    result = make_source(crm).delete(PERSON)

    assert result == DeletionResult(found=2, changed=2, remaining=0)
    assert crm.count("DELETE", "/api/people") == 2


def test_http_delete_403_is_permanent(crm):
    crm.people = {PERSON: ada_records()}
    crm.scripted = [json_response({"data": {"items": ada_records()}}), Response(status=403)]

    with pytest.raises(SourceError) as raised:
        make_source(crm).delete(PERSON)

    assert raised.value.transient is False
    assert crm.people == {PERSON: ada_records()}


def test_http_delete_of_unknown_person_calls_no_delete(crm):
    result = make_source(crm).delete(PERSON)

    assert result == DeletionResult(found=0, changed=0, remaining=0)
    assert crm.count("DELETE", "/api/people") == 0


def test_http_preview_shows_records_last_update_and_show_field(crm):
    crm.people = {PERSON: ada_records()}
    source = make_source(crm, preview={"updated_field": "updatedAt", "show_field": "plan"})

    preview = source.preview(PERSON)

    assert preview == [
        PreviewProperty("Records", "2"),
        PreviewProperty("Last updated", "2025-06-30T08:15:00+00:00"),
        PreviewProperty("plan", "gold"),
    ]


def test_http_preview_unknown_person_is_empty(crm):
    assert make_source(crm, preview={"show_field": "plan"}).preview(PERSON) == []


def test_http_single_object_response_is_one_record(crm):
    crm.scripted = [json_response({"id": 1, "email": PERSON})]
    sink = CollectingSink()

    make_source(crm, records_path="").export(PERSON, sink)

    assert sink.records == [{"id": 1, "email": PERSON}]


def test_http_build_without_the_auth_env_var_fails_naming_the_variable(crm, monkeypatch):
    monkeypatch.delenv("CRM_TOKEN")

    with pytest.raises(DataMapError, match="CRM_TOKEN"):
        make_source(crm)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"delete": {"mode": "anonymise", "fields": {"name": "null"}}}, "anonymise is not supported"),
        ({"url": "http://crm.example.com/api?email={value}"}, "https"),
        ({"url": "https://{value}.example.com/api"}, "not the host"),
        ({"url": "https://user:pw@crm.example.com/api?email={value}"}, "credentials"),
        ({"url": "https://crm.example.com/api/people"}, "must contain {value}"),
        ({"url": "https://crm.example.com/api/{record.id}"}, "only use {value}"),
        ({"url": "https://crm.example.com/api/{email}"}, "unknown placeholder"),
        ({"delete_url": None}, "delete_url is required"),
        ({"delete_url": "https://crm.example.com/api/people"}, "must contain {value}"),
        ({"auth_env": None}, "both auth_header and auth_env"),
        ({"auth_env": "crm-token"}, "auth_env"),
        ({"json_body": {"email": "{value}"}}, "only sent with method POST"),
        ({"records_path": "data..items"}, "dotted path"),
    ],
)
def test_http_config_invalid_is_refused(overrides, message):
    crm = FakeCrm(url="https://crm.example.com")
    with pytest.raises(ValidationError, match=message):
        make_config(crm, **overrides)


def test_http_config_retain_needs_no_delete_url():
    crm = FakeCrm(url="https://crm.example.com")

    config = make_config(crm, delete_url=None, delete={"mode": "retain", "reason": "contract records"})

    assert config.delete_url is None
