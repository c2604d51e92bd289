"""The SQL connector: one table of one database (PostgreSQL, MySQL, Cloud SQL, SQLite) through SQLAlchemy.

Safety rules, all enforced here:
- Table and column names come from the data map only; they must be plain identifiers and are still
  quoted by SQLAlchemy (`sqlalchemy.table()`/`column()`), never pasted into SQL text.
- The person's value is always a bound parameter, and never appears in an error message or log
  (`hide_parameters=True`, driver messages are not echoed).
- Exports stream (`yield_per`, a server-side cursor where the driver has one): memory stays constant
  whatever the person's row count.
- A delete is one transaction per source, followed by a verification read after the commit.
"""

import contextlib
import math
import re
import sqlite3
import uuid
from collections.abc import Iterable, Iterator
from enum import StrEnum
from typing import Annotated, Any, Literal, Self

import sqlalchemy as sa
from pydantic import AfterValidator, Field, field_validator, model_validator
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.types import NullType

from mineos_integration.datamap import DataMapError, secret_from_env
from mineos_integration.sources.base import (
    Anonymisation,
    DeleteMode,
    DeletionResult,
    ExportSink,
    PreviewProperty,
    Record,
    SourceConfig,
    SourceContext,
    SourceError,
)
from mineos_integration.sources.values import anonymised_hash, is_anonymised_hash, json_safe

EXPORT_BATCH_ROWS = 500
MAX_PREVIEW_VALUE_CHARS = 200
_IDENTIFIER = r"[A-Za-z_][A-Za-z0-9_]{0,62}"
_IDENTIFIER_PATTERN = re.compile(_IDENTIFIER)
_TABLE_PATTERN = re.compile(rf"({_IDENTIFIER})(?:\.({_IDENTIFIER}))?")


def _identifier(name: str) -> str:
    if not _IDENTIFIER_PATTERN.fullmatch(name):
        raise ValueError(f"{name!r} is not a plain SQL identifier (letters, digits and _, at most 63)")
    return name


def _table_name(name: str) -> str:
    if not _TABLE_PATTERN.fullmatch(name):
        raise ValueError(f"{name!r} is not a plain SQL table name (`table` or `schema.table`)")
    return name


Identifier = Annotated[str, AfterValidator(_identifier)]
TableName = Annotated[str, AfterValidator(_table_name)]


class MatchType(StrEnum):
    """How the identity value is compared with `match_column`: typed, so that an index is used."""

    TEXT = "text"
    INTEGER = "integer"  # a value that is not an integer matches nothing
    UUID = "uuid"  # a value that is not a UUID matches nothing


class SqlSourceConfig(SourceConfig):
    """`type: sql` in the data map: the person's rows of one table are those where `match_column`
    equals the identity value."""

    type: Literal["sql"] = "sql"
    url: str | None = None  # a SQLAlchemy URL without a password, e.g. sqlite:////data/app.db
    url_env: str | None = Field(default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")  # env var with the URL
    table: TableName
    match_column: Identifier
    match_type: MatchType = MatchType.TEXT
    columns: list[Identifier] | None = Field(default=None, min_length=1)  # exported; default all
    order_by: Identifier | None = None

    @field_validator("url")
    @classmethod
    def _refuse_password_in_url(cls, url: str | None) -> str | None:
        if url is None:
            return None
        try:
            parsed = make_url(url)
        except sa_exc.ArgumentError:
            raise ValueError("is not a SQLAlchemy database URL (dialect+driver://...)") from None
        if parsed.password is not None:
            raise ValueError(
                "must not contain a password: put the whole URL in a secret, expose it as an "
                "environment variable and name that in url_env"
            )
        return url

    @model_validator(mode="after")
    def _check_names(self) -> Self:
        if (self.url is None) == (self.url_env is None):
            raise ValueError("exactly one of url and url_env is required")
        named = {
            **{f"delete.fields.{name}": name for name in self.delete.fields},
            "preview.updated_field": self.preview.updated_field,
            "preview.show_field": self.preview.show_field,
        }
        for where, name in named.items():
            if name is not None and not _IDENTIFIER_PATTERN.fullmatch(name):
                raise ValueError(f"{where}: {name!r} is not a plain SQL identifier")
        return self

    def build(self, context: SourceContext) -> "SqlSource":
        """Create the source's engine (once per process); raises DataMapError if it cannot be made."""
        if self.url is not None:
            url = self.url
        else:
            assert self.url_env is not None  # the validator guarantees one of the two
            url = secret_from_env(self.url_env)
        return SqlSource(self, create_source_engine(self.name, url, context.timeout_seconds), context)


def create_source_engine(source_name: str, url: str, timeout_seconds: float) -> Engine:
    """An engine with a connection check, hidden parameters and a statement timeout where possible.

    Raises:
        DataMapError: the URL is unusable or its driver is not installed (the URL is not echoed: it
            may hold a password).
    """
    try:
        parsed = make_url(url)
    except sa_exc.ArgumentError:
        raise DataMapError(f"source {source_name!r}: the database URL is not a SQLAlchemy URL") from None
    try:
        return sa.create_engine(
            parsed,
            pool_pre_ping=True,  # Cloud SQL and proxies drop idle connections
            pool_timeout=timeout_seconds,
            hide_parameters=True,  # errors must not carry the person's value
            connect_args=_timeout_connect_args(parsed, timeout_seconds),
        )
    except (sa_exc.ArgumentError, sa_exc.NoSuchModuleError, ImportError) as error:
        raise DataMapError(
            f"source {source_name!r}: cannot create an engine for {parsed.drivername!r} "
            f"({type(error).__name__}); is its driver installed?"
        ) from None


def _timeout_connect_args(url: sa.URL, timeout_seconds: float) -> dict[str, Any]:
    """Driver arguments that bound every statement by `timeout_seconds`, for the drivers that can."""
    seconds = max(2, math.ceil(timeout_seconds))
    backend, driver = url.get_backend_name(), url.get_driver_name()
    if backend == "postgresql" and driver in {"psycopg", "psycopg2"}:
        # libpq drivers: a server-side statement_timeout (cancels the query, the connection survives;
        # lock waits count too) and a bounded connect. Options already in the URL are kept.
        options = f"-c statement_timeout={math.ceil(timeout_seconds * 1000)}"
        if existing := url.query.get("options"):
            options = f"{existing if isinstance(existing, str) else ' '.join(existing)} {options}"
        return {"options": options, "connect_timeout": seconds}
    if backend == "mysql" and driver in {"pymysql", "mysqldb"}:
        # MySQL has no portable statement timeout (max_execution_time covers SELECT only): socket
        # timeouts bound each call instead, at the cost of the connection.
        return {"connect_timeout": seconds, "read_timeout": seconds, "write_timeout": seconds}
    if backend == "sqlite":
        # SQLite has no statement timeout; `timeout` bounds the wait for another writer's lock.
        return {"timeout": timeout_seconds}
    # Other drivers (pg8000, the Cloud SQL connector's `creator=`): bound them in the URL or creator.
    return {}


class SqlSource:
    """The person's rows of one table: count, export, delete or anonymise, preview."""

    def __init__(self, config: SqlSourceConfig, engine: Engine, context: SourceContext) -> None:
        self.config: SourceConfig = config
        self.sql_config = config
        self.engine = engine
        self._anonymisation_key = context.anonymisation_key
        referenced = {
            config.match_column,
            *(config.columns or ()),
            *([config.order_by] if config.order_by else []),
            *config.delete.fields,
            *(name for name in (config.preview.updated_field, config.preview.show_field) if name),
        }
        schema, _, name = config.table.rpartition(".")
        columns: list[sa.ColumnClause[Any]] = [sa.column(column) for column in sorted(referenced)]
        self.table = sa.table(name, *columns, schema=schema or None)

    def close(self) -> None:
        """Close the engine's pooled connections."""
        self.engine.dispose()

    def count(self, identity_value: str) -> int:
        with self._translated_errors("count"), self.engine.connect() as connection:
            return self._count(connection, self._matches(identity_value))

    def export(self, identity_value: str, sink: ExportSink) -> None:
        config = self.sql_config
        selected = (
            [self.table.c[name] for name in config.columns] if config.columns else [sa.literal_column("*")]
        )
        statement = sa.select(*selected).select_from(self.table).where(self._matches(identity_value))
        if config.order_by:
            statement = statement.order_by(self.table.c[config.order_by])
        with self._translated_errors("export"), self.engine.connect() as connection:
            # yield_per turns on stream_results: a server-side cursor on PostgreSQL/MySQL drivers,
            # SQLite's cursor is lazy already. Only one batch of rows is in memory at a time.
            result = connection.execution_options(yield_per=EXPORT_BATCH_ROWS).execute(statement)
            sink.write_records(_json_records(result.mappings()))

    def delete(self, identity_value: str) -> DeletionResult:
        policy = self.sql_config.delete
        matches = self._matches(identity_value)
        if policy.mode is DeleteMode.RETAIN:
            found = self.count(identity_value)
            return DeletionResult(found=found, changed=0, remaining=found)
        if Anonymisation.HASH in policy.fields.values() and not self._anonymisation_key:
            raise SourceError(
                f"sql source {self.config.name!r}: ANONYMISATION_KEY is not set", transient=False
            )
        with self._translated_errors("delete"):
            with self.engine.begin() as connection:
                found = self._count(connection, matches)
                if found == 0:
                    changed = 0
                elif policy.mode is DeleteMode.DELETE:
                    changed = connection.execute(sa.delete(self.table).where(matches)).rowcount
                else:
                    self._anonymise(connection, identity_value)
                    changed = found
            # After the commit, in a fresh transaction: what does a new reader see?
            with self.engine.connect() as connection:
                if policy.mode is DeleteMode.DELETE:
                    remaining = self._count(connection, matches)
                else:
                    remaining = self._count_not_anonymised(connection, matches)
        return DeletionResult(found=found, changed=changed, remaining=remaining)

    def preview(self, identity_value: str) -> list[PreviewProperty]:
        config = self.sql_config
        matches = self._matches(identity_value)
        with self._translated_errors("preview"), self.engine.connect() as connection:
            found = self._count(connection, matches)
            if found == 0:
                return []
            properties = [PreviewProperty(name="Records", value=str(found))]
            updated_field, show_field = config.preview.updated_field, config.preview.show_field
            if updated_field:
                updated = self.table.c[updated_field]
                last_updated = connection.execute(sa.select(sa.func.max(updated)).where(matches)).scalar()
                if last_updated is not None:
                    properties.append(PreviewProperty(name="Last updated", value=_preview_text(last_updated)))
            if show_field:
                latest_first = updated_field or config.order_by
                statement = sa.select(self.table.c[show_field]).where(matches).limit(1)
                if latest_first:
                    statement = statement.order_by(self.table.c[latest_first].desc().nulls_last())
                shown = connection.execute(statement).scalar()
                if shown is not None:
                    properties.append(PreviewProperty(name=show_field, value=_preview_text(shown)))
        return properties

    def _matches(self, identity_value: str) -> ColumnElement[bool]:
        """`match_column = :identity_value`, bound and typed; false when the value cannot match."""
        match_type = self.sql_config.match_type
        if not identity_value.strip():
            return sa.false()  # an empty value must never match (and delete) every row with an empty field
        column = self.table.c[self.sql_config.match_column]
        if match_type is MatchType.INTEGER:
            if not re.fullmatch(r"-?[0-9]{1,18}", identity_value):
                return sa.false()
            return column == sa.bindparam("identity_value", int(identity_value), type_=sa.BigInteger())
        bound = identity_value
        if match_type is MatchType.UUID:
            try:
                bound = str(uuid.UUID(identity_value))  # canonical: lower case with dashes
            except ValueError:
                return sa.false()
        # Untyped, so that the column's type decides (PostgreSQL: text, varchar, citext, uuid alike).
        return column == sa.bindparam("identity_value", bound, type_=NullType())

    def _count(self, connection: sa.Connection, matches: ColumnElement[bool]) -> int:
        statement = sa.select(sa.func.count()).select_from(self.table).where(matches)
        return int(connection.execute(statement).scalar_one())

    def _anonymise(self, connection: sa.Connection, identity_value: str) -> None:
        """Overwrite the policy's fields of the person's rows, the match column last (it finds them)."""
        match_column = self.sql_config.match_column
        fields = self.sql_config.delete.fields
        matches = self._matches(identity_value)
        overwritten = {
            self.table.c[name]: _fixed_value(rule)
            for name, rule in fields.items()
            if rule != Anonymisation.HASH and name != match_column
        }
        if overwritten:
            connection.execute(sa.update(self.table).where(matches).values(overwritten))
        for name, rule in fields.items():
            if rule == Anonymisation.HASH and name != match_column:
                self._hash_column(connection, name, matches)
        if match_column in fields:
            rule = fields[match_column]
            if rule == Anonymisation.HASH:
                self._hash_column(connection, match_column, matches)
            else:
                column = self.table.c[match_column]
                connection.execute(sa.update(self.table).where(matches).values({column: _fixed_value(rule)}))

    def _hash_column(self, connection: sa.Connection, name: str, matches: ColumnElement[bool]) -> None:
        """Replace each distinct value by its HMAC, row by row in SQL terms: works without a primary key.

        A value that already is a 64-hex hash is left alone, so a redelivered delete does not hash twice
        (a hash of a hash would no longer join with the other sources).
        """
        column = self.table.c[name]
        distinct = sa.select(column).where(matches, column.is_not(None)).distinct()
        for old_value in connection.execute(distinct).scalars().all():
            if is_anonymised_hash(old_value):
                continue
            new_value = anonymised_hash(self._anonymisation_key, old_value)
            same_value = column == sa.bindparam("old_value", old_value, type_=NullType())
            connection.execute(sa.update(self.table).where(matches, same_value).values({column: new_value}))

    def _count_not_anonymised(self, connection: sa.Connection, matches: ColumnElement[bool]) -> int:
        """Rows of the person (still found by the match column) that hold a value the policy overwrites."""
        fields = self.sql_config.delete.fields
        sql_checks: list[ColumnElement[bool]] = []
        for name, rule in fields.items():
            column = self.table.c[name]
            if rule == Anonymisation.NULL:
                sql_checks.append(column.is_not(None))
            elif rule != Anonymisation.HASH:
                fixed = sa.bindparam(f"fixed_{len(sql_checks)}", _fixed_value(rule), type_=NullType())
                sql_checks.append(column.is_distinct_from(fixed))
        hashed = [name for name, rule in fields.items() if rule == Anonymisation.HASH]
        not_anonymised_in_sql = sa.case((sa.or_(*sql_checks), 1), else_=0) if sql_checks else sa.literal(0)
        statement = sa.select(not_anonymised_in_sql, *(self.table.c[name] for name in hashed)).where(matches)
        remaining = 0
        for flagged, *hash_values in connection.execute(statement):
            if flagged or any(value is not None and not is_anonymised_hash(value) for value in hash_values):
                remaining += 1
        return remaining

    @contextlib.contextmanager
    def _translated_errors(self, operation: str) -> Iterator[None]:
        try:
            yield
        except sa_exc.SQLAlchemyError as error:
            transient, detail = classify_error(error)
            message = f"sql source {self.config.name!r}: {operation} failed: {detail}"
            raise SourceError(message, transient=transient) from None  # the cause may hold the value


def _fixed_value(rule: Any) -> Any:
    """None for `null`, the `value` of `{"value": ...}`."""
    return None if rule == Anonymisation.NULL else rule["value"]


def _json_records(rows: Iterable[sa.RowMapping]) -> Iterator[Record]:
    for row in rows:
        yield {str(key): json_safe(value) for key, value in row.items()}


def _preview_text(value: Any) -> str:
    text = str(json_safe(value))
    return text if len(text) <= MAX_PREVIEW_VALUE_CHARS else text[: MAX_PREVIEW_VALUE_CHARS - 1] + "…"


# SQLite reports a missing table or column as OperationalError: configuration errors, not outages.
_SQLITE_PERMANENT = re.compile(r"^(no such table|no such column|near |table )|syntax error|readonly database")
_SQLITE_DESCRIPTIONS = ("no such table", "no such column", "database is locked", "disk I/O error")


def classify_error(error: sa_exc.SQLAlchemyError) -> tuple[bool, str]:
    """(transient, a description without personal data) for a SQLAlchemy error.

    Unreachable servers, timeouts, lost connections and lock or serialisation conflicts are transient
    (redelivery retries them); a missing table or column, a type or constraint problem is permanent.
    """
    original = getattr(error, "orig", None)
    detail = type(original or error).__name__
    if sqlstate := getattr(original, "sqlstate", None):
        detail += f" (SQLSTATE {sqlstate})"  # PostgreSQL's error codes name the problem, not the data
    if isinstance(original, sqlite3.Error):
        message = str(original)
        known = next((text for text in _SQLITE_DESCRIPTIONS if message.startswith(text)), None)
        detail += f" ({known})" if known else ""
        if _SQLITE_PERMANENT.search(message):
            return False, detail
    if isinstance(error, sa_exc.DBAPIError) and error.connection_invalidated:
        return True, detail
    if isinstance(error, sa_exc.IntegrityError):
        return False, detail + ": a constraint refused the change (list child sources before parents)"
    transient_types = (
        sa_exc.OperationalError,  # refused, timed out, cancelled by statement_timeout, deadlock
        sa_exc.InterfaceError,  # the connection broke under the driver
        sa_exc.DisconnectionError,
        sa_exc.TimeoutError,  # no pooled connection within the timeout
    )
    return isinstance(error, transient_types), detail
