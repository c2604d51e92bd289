"""The Firestore connector against Google's Firestore emulator (a project of its own per test)."""

from __future__ import annotations

import hashlib
import hmac
import math
import os
from datetime import UTC, datetime
from typing import Any

import pytest
from google.cloud import firestore
from google.cloud.firestore_v1 import GeoPoint
from pydantic import ValidationError

from mineos_integration.contract import Identity
from mineos_integration.sources.base import DataSource, DeletionResult, PreviewProperty, SourceError
from mineos_integration.sources.firestore import FirestoreSource, FirestoreSourceConfig
from tests.sources_helpers import ANONYMISATION_KEY, CollectingSink, emulator_context, seed_firestore

pytestmark = pytest.mark.emulators

PERSON = "ada@example.com"
OTHER = "grace@example.com"


def make_config(**overrides: Any) -> FirestoreSourceConfig:
    fields: dict[str, Any] = {
        "type": "firestore",
        "name": "profiles",
        "identity": Identity.EMAIL,
        "collection": "users",
        "match_field": "email",
    }
    fields.update(overrides)
    return FirestoreSourceConfig.model_validate(fields)


def make_source(**overrides: Any) -> DataSource:
    return make_config(**overrides).build(emulator_context())


@pytest.fixture
def client(emulator_env: dict[str, str]) -> firestore.Client:
    return firestore.Client(project=os.environ["GOOGLE_CLOUD_PROJECT"])


def ids(client: firestore.Client, collection: str) -> set[str]:
    return {snapshot.id for snapshot in client.collection(collection).stream()}


def test_firestore_export_by_match_field_finds_exactly_the_persons_documents(client):
    seed_firestore(
        client,
        "users",
        {
            "u1": {"email": PERSON, "plan": "pro"},
            "u2": {"email": PERSON, "plan": "free"},
            "u3": {"email": OTHER, "plan": "pro"},
            "u4": {"email": PERSON.upper()},
        },
    )
    sink = CollectingSink()

    make_source().export(PERSON, sink)

    assert sorted(sink.records, key=lambda record: record["path"]) == [
        {"path": "u1", "data": {"email": PERSON, "plan": "pro"}},
        {"path": "u2", "data": {"email": PERSON, "plan": "free"}},
    ]
    assert ids(client, "users") == {"u1", "u2", "u3", "u4"}


def test_firestore_export_1200_documents_streams_every_one_in_pages(client):
    documents = {f"doc-{index:04d}": {"email": PERSON, "index": index} for index in range(1200)}
    documents.update({f"other-{index}": {"email": OTHER} for index in range(50)})
    seed_firestore(client, "users", documents)
    sink = CollectingSink()
    source = make_source()

    source.export(PERSON, sink)

    assert sink.record_calls == 1
    assert sorted(record["data"]["index"] for record in sink.records) == list(range(1200))
    assert len({record["path"] for record in sink.records}) == 1200
    assert source.count(PERSON) == 1200


def test_firestore_export_small_pages_resume_after_the_last_document(client):
    seed_firestore(client, "users", {f"d{index:02d}": {"email": PERSON} for index in range(23)})
    source = FirestoreSource(make_config(), emulator_context(), page_size=5)
    sink = CollectingSink()

    source.export(PERSON, sink)

    assert [record["path"] for record in sink.records] == [f"d{index:02d}" for index in range(23)]


def test_firestore_export_special_values_become_json_safe(client):
    moment = datetime(2024, 5, 17, 8, 30, 15, 123456, tzinfo=UTC)
    seed_firestore(
        client,
        "users",
        {
            "u1": {
                "email": PERSON,
                "created": moment,
                "avatar": b"\x00\x01\xff",
                "manager": client.document("users/u9"),
                "home": GeoPoint(51.5, -0.12),
                "ratio": math.nan,
                "nested": {"when": [moment], "deep": {"bytes": b"hi"}},
            }
        },
    )
    sink = CollectingSink()

    make_source().export(PERSON, sink)

    assert sink.records == [
        {
            "path": "u1",
            "data": {
                "email": PERSON,
                "created": "2024-05-17T08:30:15.123456+00:00",
                "avatar": "AAH/",
                "manager": "users/u9",
                "home": {"lat": 51.5, "lng": -0.12},
                "ratio": "nan",
                "nested": {"when": ["2024-05-17T08:30:15.123456+00:00"], "deep": {"bytes": "aGk="}},
            },
        }
    ]


def test_firestore_export_nested_collection_path_and_document_id_template_finds_one_document(client):
    seed_firestore(client, "tenants/acme/users", {"user-42": {"name": "Ada"}, "user-43": {"name": "Grace"}})
    source = make_source(collection="tenants/acme/users", match_field=None, document_id="user-{value}")
    sink = CollectingSink()

    source.export("42", sink)

    assert sink.records == [{"path": "user-42", "data": {"name": "Ada"}}]
    assert source.count("42") == 1
    assert source.count("44") == 0


@pytest.mark.parametrize("value", ["a/b", "..", ".", "__reserved__", "", "  "])
def test_firestore_document_id_unsafe_value_is_refused_permanently(client, value):
    seed_firestore(client, "users", {"a": {"x": 1}})
    source = make_source(match_field=None, document_id="{value}")

    with pytest.raises(SourceError) as raised:
        source.delete(value)

    assert raised.value.transient is False
    assert ids(client, "users") == {"a"}


def test_firestore_delete_removes_exactly_the_persons_documents_and_verifies(client):
    # 620 crosses the 500-write batch limit.
    documents: dict[str, dict[str, Any]] = {f"p{index:03d}": {"email": PERSON} for index in range(620)}
    documents.update({"o1": {"email": OTHER}, "o2": {"email": ""}})
    seed_firestore(client, "users", documents)
    source = make_source()

    result = source.delete(PERSON)

    assert result == DeletionResult(found=620, changed=620, remaining=0)
    assert ids(client, "users") == {"o1", "o2"}
    assert source.delete(PERSON) == DeletionResult(found=0, changed=0, remaining=0)


def test_firestore_delete_with_subcollections_removes_every_descendant(client):
    seed_firestore(client, "users", {"u1": {"email": PERSON}, "u2": {"email": OTHER}})
    seed_firestore(client, "users/u1/orders", {"o1": {"total": 3}, "o2": {"total": 4}})
    seed_firestore(client, "users/u1/orders/o1/items", {"i1": {"sku": "x"}})
    # A descendant under a document that does not itself exist is still the person's data.
    seed_firestore(client, "users/u1/carts/missing/lines", {"l1": {"sku": "y"}})
    seed_firestore(client, "users/u2/orders", {"o9": {"total": 5}})
    source = make_source(subcollections=True)
    assert source.count(PERSON) == 5
    sink = CollectingSink()
    source.export(PERSON, sink)
    assert sorted(record["path"] for record in sink.records) == [
        "u1",
        "u1/carts/missing/lines/l1",
        "u1/orders/o1",
        "u1/orders/o1/items/i1",
        "u1/orders/o2",
    ]

    result = source.delete(PERSON)

    assert result == DeletionResult(found=5, changed=5, remaining=0)
    assert list(client.document("users/u1").collections()) == []
    assert ids(client, "users") == {"u2"}
    assert ids(client, "users/u2/orders") == {"o9"}


def test_firestore_delete_without_subcollections_keeps_them(client):
    seed_firestore(client, "users", {"u1": {"email": PERSON}})
    seed_firestore(client, "users/u1/orders", {"o1": {"total": 3}})

    result = make_source().delete(PERSON)

    assert result == DeletionResult(found=1, changed=1, remaining=0)
    assert ids(client, "users/u1/orders") == {"o1"}


def test_firestore_anonymise_null_fixed_and_hash_rewrite_only_those_fields(client):
    seed_firestore(
        client,
        "users",
        {
            "u1": {
                "email": PERSON,
                "name": "Ada",
                "phone": "+44 1",
                "plan": "pro",
                "address": {"city": "Ldn"},
            },
            "u2": {"email": PERSON, "name": "Ada L."},  # no phone, no address: nothing to rewrite there
            "u3": {"email": OTHER, "name": "Grace", "phone": "+1 2"},
        },
    )
    source = make_source(
        delete={
            "mode": "anonymise",
            "fields": {"name": "hash", "phone": "null", "address.city": {"value": "redacted"}},
        }
    )

    result = source.delete(PERSON)

    assert result == DeletionResult(found=2, changed=2, remaining=0)
    expected_hash = hmac.new(ANONYMISATION_KEY, b"Ada", hashlib.sha256).hexdigest()
    assert client.document("users/u1").get().to_dict() == {
        "email": PERSON,
        "name": expected_hash,
        "phone": None,
        "plan": "pro",
        "address": {"city": "redacted"},
    }
    assert client.document("users/u2").get().to_dict() == {
        "email": PERSON,
        "name": hmac.new(ANONYMISATION_KEY, b"Ada L.", hashlib.sha256).hexdigest(),
    }
    assert client.document("users/u3").get().to_dict() == {"email": OTHER, "name": "Grace", "phone": "+1 2"}


def test_firestore_anonymise_run_again_changes_nothing_and_never_hashes_a_hash(client):
    seed_firestore(client, "users", {"u1": {"email": PERSON, "name": "Ada"}})
    source = make_source(delete={"mode": "anonymise", "fields": {"name": "hash"}})
    source.delete(PERSON)
    first = client.document("users/u1").get().to_dict()

    result = source.delete(PERSON)

    assert result == DeletionResult(found=1, changed=0, remaining=0)
    assert client.document("users/u1").get().to_dict() == first


def test_firestore_anonymise_of_the_match_field_leaves_nothing_matching(client):
    seed_firestore(client, "users", {"u1": {"email": PERSON, "plan": "pro"}})
    source = make_source(delete={"mode": "anonymise", "fields": {"email": "hash"}})

    result = source.delete(PERSON)

    assert result == DeletionResult(found=1, changed=1, remaining=0)
    assert client.document("users/u1").get().get("plan") == "pro"
    assert source.count(PERSON) == 0


def test_firestore_anonymise_hash_without_key_is_a_permanent_error(client):
    seed_firestore(client, "users", {"u1": {"email": PERSON, "name": "Ada"}})
    config = make_config(delete={"mode": "anonymise", "fields": {"name": "hash"}})
    source = config.build(emulator_context(anonymisation_key=b""))

    with pytest.raises(SourceError) as raised:
        source.delete(PERSON)

    assert raised.value.transient is False
    assert client.document("users/u1").get().get("name") == "Ada"


def test_firestore_preview_shows_count_last_update_and_show_field(client):
    seed_firestore(
        client,
        "users",
        {
            "u1": {"email": PERSON, "updated": datetime(2024, 1, 2, tzinfo=UTC), "plan": "pro"},
            "u2": {"email": PERSON, "updated": datetime(2025, 3, 4, 5, 6, 7, tzinfo=UTC), "plan": "pro"},
            "u3": {"email": OTHER, "updated": datetime(2026, 1, 1, tzinfo=UTC), "plan": "free"},
        },
    )
    source = make_source(preview={"updated_field": "updated", "show_field": "plan"})

    preview = source.preview(PERSON)

    assert preview == [
        PreviewProperty("Records", "2"),
        PreviewProperty("Last updated", "2025-03-04T05:06:07+00:00"),
        PreviewProperty("plan", "pro"),
    ]
    assert len(preview) <= 3
    assert all(isinstance(item.value, str) for item in preview)


def test_firestore_preview_unknown_person_is_empty(client):
    seed_firestore(client, "users", {"u1": {"email": OTHER}})

    assert make_source(preview={"updated_field": "updated"}).preview(PERSON) == []


def test_firestore_named_database_is_separate_from_the_default(client):
    named = firestore.Client(project=os.environ["GOOGLE_CLOUD_PROJECT"], database="crm-db")
    seed_firestore(named, "users", {"u1": {"email": PERSON}})
    seed_firestore(client, "users", {"u1": {"email": PERSON}, "u2": {"email": PERSON}})

    assert make_source(database="crm-db").delete(PERSON) == DeletionResult(found=1, changed=1, remaining=0)
    assert ids(client, "users") == {"u1", "u2"}


@pytest.mark.usefixtures("emulator_env")
def test_firestore_unreachable_store_is_a_transient_error_without_the_value(monkeypatch):
    monkeypatch.setenv("FIRESTORE_EMULATOR_HOST", "127.0.0.1:9")  # the discard port: nothing listens
    source = make_config().build(emulator_context(timeout_seconds=1.0))

    with pytest.raises(SourceError) as raised:
        source.count(PERSON)

    assert raised.value.transient is True
    assert PERSON not in str(raised.value)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"document_id": "{value}"}, "exactly one of match_field and document_id"),
        ({"match_field": None}, "exactly one of match_field and document_id"),
        ({"match_field": None, "document_id": "user-1"}, "must contain {value}"),
        ({"match_field": None, "document_id": "x/{value}"}, "must not contain '/'"),
        ({"collection": "tenants/acme"}, "document path"),
        ({"collection": "users//x"}, "not a valid collection path"),
    ],
)
def test_firestore_config_invalid_is_refused(overrides, message):
    with pytest.raises(ValidationError, match=message):
        make_config(**overrides)
