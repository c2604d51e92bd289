"""The data map: loading, the errors that stop a start-up (each naming its line and field), building."""

import re
import sys
import types
from pathlib import Path
from typing import Any

import pytest

from mineos_integration import datamap
from mineos_integration.contract import Identity
from mineos_integration.datamap import (
    DataMapError,
    build_sources,
    load_data_map,
    parse_data_map,
    secret_from_env,
)
from mineos_integration.sources.base import (
    Anonymisation,
    DataSource,
    DeleteMode,
    SourceContext,
)
from mineos_integration.sources.plugin import PluginSourceConfig
from mineos_integration.sources.sql import SqlSource, SqlSourceConfig
from tests import plugin_example

DATAMAPS = Path(__file__).parent / "data" / "datamaps"
DOCS = Path(__file__).parent.parent / "docs" / "data-map.md"


def _no_client() -> Any:
    raise AssertionError("building a data map must not open Google clients")


CONTEXT = SourceContext(firestore_client=_no_client, storage_client=_no_client, anonymisation_key=b"key")


def _problems(name: str) -> list[str]:
    path = DATAMAPS / name
    with pytest.raises(DataMapError) as raised:
        load_data_map(path)
    prefix = f"{path} "
    assert all(problem.startswith(prefix) for problem in raised.value.problems)
    assert str(raised.value) == "\n".join(raised.value.problems)
    return [problem.removeprefix(prefix) for problem in raised.value.problems]


def _close(sources: list[DataSource]) -> None:
    for source in sources:
        if isinstance(source, SqlSource):
            source.close()


def test_load_data_map_valid_file_keeps_sources_in_order():
    data_map = load_data_map(DATAMAPS / "valid.yaml")

    assert data_map.version == 1
    assert [source.name for source in data_map.sources] == ["order_items", "customers", "invoices", "loyalty"]
    assert [type(source) for source in data_map.sources] == [
        SqlSourceConfig,
        SqlSourceConfig,
        SqlSourceConfig,
        PluginSourceConfig,
    ]
    customers = data_map.sources[1]
    assert customers.identity is Identity.EMAIL
    assert customers.delete.mode is DeleteMode.ANONYMISE
    assert customers.delete.fields == {
        "email": Anonymisation.HASH,
        "name": Anonymisation.NULL,  # written as YAML null
        "plan": {"value": "closed"},
    }
    assert data_map.sources[2].delete.reason == "Invoices are kept 10 years for tax law."


def test_load_data_map_missing_field_names_line_and_field():
    assert _problems("missing-table.yaml") == ["line 9, sources[1].table: field required"]


def test_load_data_map_duplicate_names_refused_with_both_lines():
    assert _problems("duplicate-names.yaml") == [
        "line 9, sources[1].name: duplicate source name 'customers' (also sources[0], line 3)"
    ]


def test_load_data_map_inconsistent_delete_policies_refused():
    assert _problems("delete-policies.yaml") == [
        "line 9, sources[0].delete.reason: required when mode is retain (MineOS is told why)",
        "line 17, sources[1].delete.fields: required when mode is anonymise: the fields to overwrite",
        "line 27, sources[2].delete.fields: only allowed when mode is anonymise, not delete",
    ]


def test_load_data_map_several_problems_all_listed_by_line():
    kinds = "firestore, gcs, http, plugin, sql"
    assert _problems("mixed-problems.yaml") == [
        f"line 4, sources[0].type: unknown source type 'mongodb'; expected one of {kinds}",
        "line 8, sources[1].identity: input should be 'email', '$internalId' or '$phoneNumber'",
        "line 12, sources[1].colour: unknown field",
        f"line 13, sources[2].type: field required (one of {kinds})",
        'line 24, sources[3].delete.fields.email: must be null, "hash" or {value: <the value to write>}',
    ]


def test_load_data_map_key_given_twice_refused():
    assert _problems("duplicate-key.yaml") == ["line 8: not valid YAML: key 'table' is given twice"]


def test_load_data_map_password_in_url_refused_without_echoing_it():
    problems = _problems("secrets-in-url.yaml")

    assert len(problems) == 1
    assert problems[0].startswith("line 6, sources[0].url: must not contain a password")
    assert "hunter2" not in problems[0]


def test_load_data_map_unsafe_identifier_refused():
    assert _problems("unsafe-identifier.yaml") == [
        "line 7, sources[0].table: 'users; DROP TABLE x' is not a plain SQL table name "
        "(`table` or `schema.table`)"
    ]


def test_load_data_map_unknown_plugin_factory_refused_at_load():
    assert _problems("broken-plugin.yaml") == [
        "line 6, sources[0].factory: module 'tests.plugin_example' has no function 'no_such_function'",
        "line 10, sources[1].factory: cannot import 'tests.no_such_module': "
        "ModuleNotFoundError: No module named 'tests.no_such_module'",
    ]


def test_load_data_map_connector_that_cannot_be_imported_named_at_its_line(monkeypatch):
    monkeypatch.setitem(datamap.CONNECTOR_CONFIGS, "gcs", "tests.no_such_connector:GcsSourceConfig")
    text = "version: 1\nsources:\n  - name: uploads\n    type: gcs\n    identity: email\n"

    with pytest.raises(DataMapError) as raised:
        parse_data_map(text, label="datamap.yaml")

    assert str(raised.value).startswith(
        "datamap.yaml line 4, sources[0].type: the 'gcs' connector cannot be loaded (ModuleNotFoundError"
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "datamap.yaml: the data map is empty"),
        ("version: 1\nsources:\n  - name: [\n", "datamap.yaml line 4: not valid YAML: "),
        ("- just\n- a list\n", "datamap.yaml line 1, (top level): input should be a valid dictionary"),
        ("version: 2\nsources: []\n", "datamap.yaml line 1, version: input should be 1"),
        ("version: 1\nsources: []\n", "datamap.yaml line 2, sources: list should have at least 1 item"),
        ("version: 1\n", "datamap.yaml line 1, sources: field required"),
        ("version: 1\nsource: []\n", "datamap.yaml line 1, sources: field required"),
        (
            "version: 1\nsources:\n  - just a name\n",
            "datamap.yaml line 3, sources[0]: input should be a valid",
        ),
    ],
)
def test_parse_data_map_malformed_document_refused(text, expected):
    with pytest.raises(DataMapError) as raised:
        parse_data_map(text, label="datamap.yaml")

    assert str(raised.value).startswith(expected)


def test_load_data_map_missing_file_raises_data_map_error(tmp_path):
    with pytest.raises(DataMapError, match="cannot read the data map"):
        load_data_map(tmp_path / "absent.yaml")


def test_docs_full_example_loads():
    """docs/data-map.md's full example stays valid as the connectors change."""
    example = re.search(r"## A full example.*?```yaml\n(.*?)```", DOCS.read_text(), re.DOTALL)
    assert example is not None
    company_package = types.ModuleType("acme_privacy")
    company_plugin = types.ModuleType("acme_privacy.loyalty")
    company_plugin.build_source = plugin_example.build_source  # type: ignore[attr-defined]
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(sys.modules, "acme_privacy", company_package)
        patch.setitem(sys.modules, "acme_privacy.loyalty", company_plugin)
        data_map = parse_data_map(example.group(1))

    assert {type(source).__name__ for source in data_map.sources} == {
        "SqlSourceConfig",
        "FirestoreSourceConfig",
        "GcsSourceConfig",
        "HttpSourceConfig",
        "PluginSourceConfig",
    }


def test_build_sources_valid_map_builds_every_source_and_the_plugin(monkeypatch, tmp_path):
    monkeypatch.setenv("SHOP_DATABASE_URL", f"sqlite:///{tmp_path / 'shop.db'}")
    data_map = load_data_map(DATAMAPS / "valid.yaml")

    sources = build_sources(data_map, CONTEXT)
    try:
        assert [source.config.name for source in sources] == [source.name for source in data_map.sources]
        assert all(isinstance(source, DataSource) for source in sources)
        loyalty = sources[3]
        assert isinstance(loyalty, plugin_example.PointsSource)
        assert loyalty.config is data_map.sources[3]
        assert loyalty.count("ann@example.com") == 1
        assert loyalty.preview("ann@example.com")[0].value == "120"
    finally:
        _close(sources)


def test_build_sources_missing_secret_names_the_variable(monkeypatch):
    monkeypatch.delenv("SHOP_DATABASE_URL", raising=False)
    data_map = load_data_map(DATAMAPS / "valid.yaml")

    with pytest.raises(DataMapError, match="environment variable SHOP_DATABASE_URL is not set"):
        build_sources(data_map, CONTEXT)


def test_build_sources_plugin_returning_no_data_source_refused():
    text = (
        "version: 1\nsources:\n  - name: broken\n    type: plugin\n    identity: email\n"
        '    factory: "tests.plugin_example:build_nothing"\n'
    )

    with pytest.raises(DataMapError, match="returned object, not a DataSource"):
        build_sources(parse_data_map(text), CONTEXT)


def test_build_sources_hash_without_anonymisation_key_refused(monkeypatch, tmp_path):
    monkeypatch.setenv("SHOP_DATABASE_URL", f"sqlite:///{tmp_path / 'shop.db'}")
    context = SourceContext(firestore_client=_no_client, storage_client=_no_client, anonymisation_key=b"")

    with pytest.raises(DataMapError, match="'customers' hashes fields on delete but ANONYMISATION_KEY"):
        build_sources(load_data_map(DATAMAPS / "valid.yaml"), context)


def test_secret_from_env_set_returns_value(monkeypatch):
    monkeypatch.setenv("CRM_DATABASE_URL", "postgresql+psycopg://crm:pw@db/crm")

    assert secret_from_env("CRM_DATABASE_URL") == "postgresql+psycopg://crm:pw@db/crm"


@pytest.mark.parametrize("value", [None, "", "  "])
def test_secret_from_env_unset_or_empty_raises(monkeypatch, value):
    if value is None:
        monkeypatch.delenv("CRM_DATABASE_URL", raising=False)
    else:
        monkeypatch.setenv("CRM_DATABASE_URL", value)

    with pytest.raises(DataMapError, match="CRM_DATABASE_URL is not set"):
        secret_from_env("CRM_DATABASE_URL")
