"""The SQL connector against real databases: SQLite (a file in tmp_path) and a PostgreSQL server the tests
start themselves (tests/postgres.py)."""

import base64
import contextlib
import datetime
import decimal
import hashlib
import hmac
import json
import sqlite3
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from pydantic import ValidationError

from mineos_integration.sources.base import (
    DataSource,
    DeletionResult,
    PreviewProperty,
    Record,
    SourceContext,
    SourceError,
)
from mineos_integration.sources.sql import SqlSource, SqlSourceConfig
from mineos_integration.sources.values import anonymised_hash
from tests.postgres import postgres_server_fixture, running_server  # noqa: F401 - registers the fixture

ANN = "ann@example.com"
BOB = "bob@example.com"
INJECTION = "' OR '1'='1"
KEY = b"test-anonymisation-key"


def _no_client() -> Any:
    raise AssertionError("the SQL connector must not open Google clients")


def _context(timeout_seconds: float = 10.0, key: bytes = KEY) -> SourceContext:
    return SourceContext(
        firestore_client=_no_client,
        storage_client=_no_client,
        anonymisation_key=key,
        timeout_seconds=timeout_seconds,
    )


class CollectingSink:
    """An ExportSink that checks it is handed a lazy stream and keeps the records it reads."""

    def __init__(self) -> None:
        self.records: list[Record] = []
        self.streamed = False

    def write_records(self, records: Iterable[Record]) -> None:
        self.streamed = isinstance(records, Iterator)
        for record in records:
            json.dumps(record, allow_nan=False)  # JSON-safe, or this raises
            self.records.append(record)

    def write_file(self, relative_name: str, chunks: Iterable[bytes], content_type: str) -> None:
        raise AssertionError("the SQL connector writes records, not files")


@dataclass
class Shop:
    """A `customers_<uuid>` table in a real database, dropped after the test."""

    url: str
    dialect: str
    engine: sa.Engine
    table: sa.Table

    def rows(self) -> list[dict[str, Any]]:
        with self.engine.connect() as connection:
            result = connection.execute(sa.select(self.table).order_by(self.table.c.id))
            return [dict(row) for row in result.mappings()]

    def rows_of(self, email: str) -> list[dict[str, Any]]:
        return [row for row in self.rows() if row["email"] == email]


ANN_ROWS = [
    {
        "id": 1,
        "email": ANN,
        "customer_number": 1001,
        "name": "Ann",
        "plan": "pro",
        "balance": decimal.Decimal("12.50"),
        "updated_at": datetime.datetime(2024, 1, 2, 3, 4, 5),
        "avatar": b"\x00\xffpng",
    },
    {
        "id": 2,
        "email": ANN,
        "customer_number": 1001,
        "name": "Ann B.",
        "plan": "team",
        "balance": decimal.Decimal("0.99"),
        "updated_at": datetime.datetime(2024, 3, 4, 5, 6, 7),
        "avatar": None,
    },
]
BOB_ROWS = [
    {
        "id": 3,
        "email": BOB,
        "customer_number": 1002,
        "name": "Bob",
        "plan": "free",
        "balance": decimal.Decimal("1.00"),
        "updated_at": datetime.datetime(2023, 5, 6, 7, 8, 9),
        "avatar": None,
    }
]


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'shop.db'}"
    url: str = request.getfixturevalue("postgres_server").url
    return url


@pytest.fixture
def shop(database_url: str) -> Iterator[Shop]:
    engine = sa.create_engine(database_url)
    metadata = sa.MetaData()
    table = sa.Table(
        f"customers_{uuid.uuid4().hex[:8]}",
        metadata,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("email", sa.String(200), nullable=True, index=True),
        sa.Column("customer_number", sa.Integer),
        sa.Column("name", sa.String(200)),
        sa.Column("plan", sa.String(50)),
        sa.Column("balance", sa.Numeric(10, 2)),
        sa.Column("updated_at", sa.DateTime),
        sa.Column("avatar", sa.LargeBinary, nullable=True),
    )
    metadata.create_all(engine)
    with engine.begin() as connection:
        connection.execute(table.insert(), [*ANN_ROWS, *BOB_ROWS])
    try:
        yield Shop(url=database_url, dialect=engine.dialect.name, engine=engine, table=table)
    finally:
        metadata.drop_all(engine)
        engine.dispose()


@pytest.fixture
def make_source() -> Iterator[Callable[..., SqlSource]]:
    """Build sources from config fields; their engines are disposed after the test."""
    built: list[SqlSource] = []

    def make(context: SourceContext | None = None, **fields: Any) -> SqlSource:
        config = SqlSourceConfig.model_validate({"name": "customers", "identity": "email", **fields})
        source = config.build(context or _context())
        built.append(source)
        return source

    yield make
    for source in built:
        source.close()


def _shop_source(make_source: Callable[..., SqlSource], shop: Shop, **fields: Any) -> SqlSource:
    return make_source(**{"url": shop.url, "table": shop.table.name, "match_column": "email", **fields})


def test_source_built_from_config_is_a_data_source(make_source, shop):
    source = _shop_source(make_source, shop)

    assert isinstance(source, DataSource)
    assert source.config.name == "customers"


def test_count_person_with_rows_counts_only_theirs(make_source, shop):
    source = _shop_source(make_source, shop)

    assert source.count(ANN) == 2
    assert source.count(BOB) == 1
    assert source.count("nobody@example.com") == 0


def test_count_schema_qualified_table_finds_rows(make_source, shop):
    schema = "main" if shop.dialect == "sqlite" else "public"
    source = _shop_source(make_source, shop, table=f"{schema}.{shop.table.name}")

    assert source.count(ANN) == 2


def test_export_many_rows_streams_all_with_json_safe_values(make_source, shop):
    many = [{**ANN_ROWS[0], "id": 100 + index, "name": f"Ann {index}"} for index in range(2_500)]
    with shop.engine.begin() as connection:
        connection.execute(shop.table.insert(), many)
    source = _shop_source(make_source, shop)
    sink = CollectingSink()

    source.export(ANN, sink)

    assert sink.streamed
    assert len(sink.records) == 2 + 2_500
    assert {record["email"] for record in sink.records} == {ANN}
    first = next(record for record in sink.records if record["id"] == 1)
    assert set(first) == {"id", "email", "customer_number", "name", "plan", "balance", "updated_at", "avatar"}
    assert first["avatar"] == base64.b64encode(b"\x00\xffpng").decode()
    assert isinstance(first["updated_at"], str)
    assert first["updated_at"].startswith("2024-01-02")
    if shop.dialect == "postgresql":  # SQLite keeps neither Decimal nor datetime types
        assert first["balance"] == "12.50"
        assert first["updated_at"] == "2024-01-02T03:04:05"


def test_export_with_columns_and_order_by_exports_those_in_order(make_source, shop):
    source = _shop_source(make_source, shop, columns=["name", "plan"], order_by="updated_at")
    sink = CollectingSink()

    source.export(ANN, sink)

    assert sink.records == [{"name": "Ann", "plan": "pro"}, {"name": "Ann B.", "plan": "team"}]


def test_export_unknown_person_writes_nothing(make_source, shop):
    source = _shop_source(make_source, shop)
    sink = CollectingSink()

    source.export("nobody@example.com", sink)

    assert sink.records == []


def test_delete_person_removes_exactly_their_rows(make_source, shop):
    source = _shop_source(make_source, shop)

    result = source.delete(ANN)

    assert result == DeletionResult(found=2, changed=2, remaining=0)
    assert shop.rows_of(ANN) == []
    assert [row["id"] for row in shop.rows()] == [3]


def test_delete_again_after_delete_finds_nothing(make_source, shop):
    source = _shop_source(make_source, shop)
    source.delete(ANN)

    assert source.delete(ANN) == DeletionResult(found=0, changed=0, remaining=0)


def test_delete_retain_policy_keeps_everything(make_source, shop):
    source = _shop_source(make_source, shop, delete={"mode": "retain", "reason": "tax law"})

    result = source.delete(ANN)

    assert result == DeletionResult(found=2, changed=0, remaining=2)
    assert len(shop.rows()) == 3


def test_delete_anonymise_null_and_fixed_overwrites_fields_and_keeps_rows(make_source, shop):
    fields = {"name": "null", "plan": {"value": "closed"}, "customer_number": {"value": 0}}
    source = _shop_source(make_source, shop, delete={"mode": "anonymise", "fields": fields})

    result = source.delete(ANN)

    assert result == DeletionResult(found=2, changed=2, remaining=0)
    for row in shop.rows_of(ANN):
        assert (row["name"], row["plan"], row["customer_number"]) == (None, "closed", 0)
    assert shop.rows_of(BOB) == BOB_ROWS


def test_delete_anonymise_hash_writes_keyed_hmac_of_old_value(make_source, shop):
    source = _shop_source(
        make_source, shop, delete={"mode": "anonymise", "fields": {"name": "hash", "avatar": "null"}}
    )

    result = source.delete(ANN)

    assert result == DeletionResult(found=2, changed=2, remaining=0)
    names = [row["name"] for row in shop.rows_of(ANN)]
    expected = [hmac.new(KEY, name.encode(), hashlib.sha256).hexdigest() for name in ("Ann", "Ann B.")]
    assert names == expected
    assert names[0] == anonymised_hash(KEY, "Ann")  # deterministic: joins with other sources
    assert anonymised_hash(b"another key", "Ann") != names[0]
    assert hashlib.sha256(b"Ann").hexdigest() not in names  # keyed, not a plain digest
    assert shop.rows_of(BOB) == BOB_ROWS


def test_delete_anonymise_hash_redelivered_does_not_hash_twice(make_source, shop):
    source = _shop_source(make_source, shop, delete={"mode": "anonymise", "fields": {"name": "hash"}})
    source.delete(ANN)
    first_names = [row["name"] for row in shop.rows_of(ANN)]

    result = source.delete(ANN)

    assert result.remaining == 0
    assert [row["name"] for row in shop.rows_of(ANN)] == first_names


def test_delete_anonymise_hashed_match_column_person_no_longer_found(make_source, shop):
    fields = {"email": "hash", "name": "null"}
    source = _shop_source(make_source, shop, delete={"mode": "anonymise", "fields": fields})

    result = source.delete(ANN)

    assert result == DeletionResult(found=2, changed=2, remaining=0)
    assert source.count(ANN) == 0
    hashed_rows = [row for row in shop.rows() if row["email"] == anonymised_hash(KEY, ANN)]
    assert [(row["id"], row["name"]) for row in hashed_rows] == [(1, None), (2, None)]


def test_delete_anonymise_without_key_never_hashes_with_empty_key(make_source, shop):
    source = _shop_source(
        make_source,
        shop,
        context=_context(key=b""),
        delete={"mode": "anonymise", "fields": {"name": "hash"}},
    )

    with pytest.raises(SourceError) as raised:
        source.delete(ANN)

    assert not raised.value.transient
    assert [row["name"] for row in shop.rows_of(ANN)] == ["Ann", "Ann B."]


@pytest.mark.parametrize(
    "value", ["ann@example.com", 1001, decimal.Decimal("12.50"), datetime.datetime(2024, 1, 2, 3, 4, 5), None]
)
def test_anonymised_hash_same_value_same_hash_as_firestore_connector(value):
    from mineos_integration.sources.firestore import firestore_value

    assert anonymised_hash(KEY, value) == anonymised_hash(KEY, value, convert=firestore_value)


@pytest.mark.parametrize("value", [INJECTION, "x'; DROP TABLE customers; --", "%", "*"])
def test_injection_text_as_value_matches_nothing_and_harms_nothing(make_source, shop, value):
    source = _shop_source(make_source, shop)
    sink = CollectingSink()

    assert source.count(value) == 0
    source.export(value, sink)
    assert source.preview(value) == []
    assert source.delete(value) == DeletionResult(found=0, changed=0, remaining=0)

    assert sink.records == []
    assert len(shop.rows()) == 3


@pytest.mark.parametrize("value", ["", "   "])
def test_empty_value_matches_nothing(make_source, shop, value):
    with shop.engine.begin() as connection:
        connection.execute(shop.table.insert(), [{**BOB_ROWS[0], "id": 9, "email": value}])
    source = _shop_source(make_source, shop)

    assert source.delete(value) == DeletionResult(found=0, changed=0, remaining=0)
    assert len(shop.rows()) == 4


def test_match_type_integer_matches_numbers_and_nothing_else(make_source, shop):
    source = _shop_source(make_source, shop, match_column="customer_number", match_type="integer")

    assert source.count("1001") == 2
    assert source.count("1001 OR 1=1") == 0
    assert source.count("abc") == 0


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("table", "users; DROP TABLE x"),
        ("table", "a.b.c"),
        ("match_column", "email = email --"),
        ("match_column", 'email"'),
        ("columns", ["name", "plan, password"]),
        ("order_by", "updated_at DESC"),
    ],
)
def test_config_unsafe_identifier_is_refused(field, value):
    fields = {"name": "c", "identity": "email", "url": "sqlite://", "table": "t", "match_column": "email"}

    with pytest.raises(ValidationError) as raised:
        SqlSourceConfig.model_validate({**fields, field: value})

    assert "not a plain SQL" in str(raised.value)


@pytest.mark.parametrize(
    "fields",
    [
        {"delete": {"mode": "anonymise", "fields": {"name; --": "null"}}},
        {"preview": {"show_field": "plan FROM x"}},
        {"url": None, "url_env": None},
        {"url_env": "SHOP_URL"},
    ],
)
def test_config_unsafe_field_or_ambiguous_url_is_refused(fields):
    base = {"name": "c", "identity": "email", "url": "sqlite://", "table": "t", "match_column": "email"}

    with pytest.raises(ValidationError):
        SqlSourceConfig.model_validate({**base, **fields})


def test_preview_person_with_rows_shows_at_most_three_string_properties(make_source, shop):
    source = _shop_source(make_source, shop, preview={"updated_field": "updated_at", "show_field": "plan"})

    properties = source.preview(ANN)

    assert len(properties) <= 3
    assert all(isinstance(item.name, str) and isinstance(item.value, str) for item in properties)
    assert properties[0] == PreviewProperty(name="Records", value="2")
    assert properties[1].name == "Last updated"
    assert properties[1].value.startswith("2024-03-04")
    assert properties[2] == PreviewProperty(name="plan", value="team")  # of the latest row


def test_preview_unknown_person_is_empty(make_source, shop):
    source = _shop_source(make_source, shop, preview={"updated_field": "updated_at", "show_field": "plan"})

    assert source.preview("nobody@example.com") == []


def test_missing_table_error_is_permanent_without_personal_data(make_source, shop):
    source = _shop_source(make_source, shop, table="no_such_table")

    with pytest.raises(SourceError) as raised:
        source.count(ANN)

    assert not raised.value.transient
    assert ANN not in str(raised.value)
    assert raised.value.__cause__ is None


def test_missing_column_error_is_permanent(make_source, shop):
    source = _shop_source(make_source, shop, match_column="no_such_column")

    with pytest.raises(SourceError) as raised:
        source.export(ANN, CollectingSink())

    assert not raised.value.transient


def test_locked_table_error_is_transient_within_timeout(make_source, shop, tmp_path):
    source = _shop_source(make_source, shop, context=_context(timeout_seconds=0.5))
    with _table_locked(shop, tmp_path), pytest.raises(SourceError) as raised:
        source.delete(ANN)

    assert raised.value.transient
    assert ANN not in str(raised.value)
    assert len(shop.rows_of(ANN)) == 2


@contextlib.contextmanager
def _table_locked(shop: Shop, tmp_path: Path) -> Iterator[None]:
    """Hold a lock that blocks the source: another writer (SQLite), ACCESS EXCLUSIVE (PostgreSQL)."""
    if shop.dialect == "sqlite":
        other = sqlite3.connect(tmp_path / "shop.db", isolation_level=None)
        other.execute("BEGIN EXCLUSIVE")
        try:
            yield
        finally:
            other.rollback()
            other.close()
    else:
        with shop.engine.connect() as connection:
            connection.exec_driver_sql(f'LOCK TABLE "{shop.table.name}" IN ACCESS EXCLUSIVE MODE')
            yield
            connection.rollback()


@pytest.mark.postgres
def test_stopped_server_error_is_transient(make_source):
    with running_server() as server:
        engine = sa.create_engine(server.url)
        with engine.begin() as connection:
            connection.exec_driver_sql("CREATE TABLE customers (email text)")
        engine.dispose()
        source = make_source(url=server.url, table="customers", match_column="email")
        assert source.count(ANN) == 0  # a pooled connection to the server that is about to stop

    with pytest.raises(SourceError) as raised:
        source.count(ANN)

    assert raised.value.transient
