"""MineOS's wire formats, in one place (../shared/mineos/contract.md).

- `parse_request` turns a Copy, Delete or Preview call, in its current or legacy spelling, into a
  `PrivacyRequest`; anything unusable raises `InvalidRequest` with a message fit for the caller.
- `StatusUpdate` is `CustomIntegrationActionStatusRequest` from MineOS's OpenAPI document: the body of
  the one status call per operation.
"""

import json
from collections.abc import Mapping
from enum import StrEnum
from typing import Any, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

# Deep nesting is never legitimate in a MineOS call; refusing it early keeps a JSON bomb cheap.
MAX_JSON_DEPTH = 32


class Action(StrEnum):
    COPY = "Copy"
    DELETE = "Delete"
    PREVIEW = "Preview"


class Status(StrEnum):
    COMPLETED = "Completed"
    FAILED = "Failed"
    USER_NOT_FOUND = "UserNotFound"
    CANNOT_DELETE_DATA = "CannotDeleteData"
    MISSING_IDENTIFIERS = "MissingIdentifiers"


class Identity(StrEnum):
    """The identifiers by which a data source can find a person."""

    EMAIL = "email"
    INTERNAL_ID = "$internalId"
    PHONE_NUMBER = "$phoneNumber"


class InvalidRequest(ValueError):
    """A MineOS call that cannot be used. The message says what is wrong, never the person's data."""


class PrivacyRequest(BaseModel):
    """One MineOS operation, normalised: what the ingress publishes and the collector consumes."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    action: Action
    trace_id: str
    integration_id: str
    ticket_id: str
    is_test: bool = False
    name: str | None = None
    identities: dict[Identity, str] = Field(default_factory=dict)

    @property
    def operation_key(self) -> tuple[str, str, str]:
        """MineOS's own ids for this operation: the key of exactly-once reporting."""
        return (self.integration_id, self.trace_id, self.action.value)


class FileReference(BaseModel):
    """`Reference` in MineOS's OpenAPI: one exported file MineOS fetches."""

    model_config = ConfigDict(extra="forbid")

    fileName: str | None = None  # noqa: N815 - MineOS's field name
    description: str | None = None
    url: str | None = None


class StatusUpdate(BaseModel):
    """`CustomIntegrationActionStatusRequest` (additionalProperties: false)."""

    model_config = ConfigDict(extra="forbid")

    action: Action
    status: Status
    message: str | None = None
    data: dict[str, Any] | None = None
    files: list[FileReference] | None = None
    test: bool = False

    @model_validator(mode="after")
    def _copy_only_fields(self) -> Self:
        if self.action is Action.PREVIEW:
            raise ValueError("Preview has no status update")
        if self.action is not Action.COPY and (self.data is not None or self.files is not None):
            raise ValueError("data and files are for the Copy action only")
        return self

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=True)


# MineOS's integration log states (IntegrationState) that mean our status update was applied.
SETTLED_LOG_STATES = frozenset({"Completed", "Failed", "MissingIdentifiers", "PartialCompleted"})


def _folded(mapping: Mapping[str, Any]) -> dict[str, Any]:
    """Keys folded to lower case: MineOS has sent `EventId` and `eventId` alike."""
    return {str(key).lower(): value for key, value in mapping.items()}


def _depth(value: Any, limit: int) -> int:
    stack = [(value, 1)]
    deepest = 0
    while stack:
        item, depth = stack.pop()
        deepest = max(deepest, depth)
        if deepest > limit:
            return deepest
        if isinstance(item, dict):
            stack.extend((child, depth + 1) for child in item.values())
        elif isinstance(item, list):
            stack.extend((child, depth + 1) for child in item)
    return deepest


def load_json_object(body: bytes) -> dict[str, Any]:
    """Decode a request body into a JSON object, or raise InvalidRequest."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidRequest("body is not UTF-8") from None
    if text.count("[") + text.count("{") > 10_000:
        raise InvalidRequest("body has too many nested values")
    try:
        value = json.loads(text, parse_int=_bounded_int, parse_constant=_refuse_constant)
    except RecursionError:
        raise InvalidRequest("body is nested too deeply") from None
    except ValueError as error:
        raise InvalidRequest(f"body is not valid JSON: {error}") from None
    if not isinstance(value, dict):
        raise InvalidRequest("body must be a JSON object")
    if _depth(value, MAX_JSON_DEPTH) > MAX_JSON_DEPTH:
        raise InvalidRequest(f"body is nested deeper than {MAX_JSON_DEPTH} levels")
    if "\\u" in text:
        # JSON may escape lone surrogates ("\ud800"), which are not Unicode: nothing downstream
        # (ids, Firestore, Pub/Sub) could encode them.
        try:
            json.dumps(value, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidRequest("body holds invalid Unicode escapes") from None
    return value


def _bounded_int(text: str) -> int:
    if len(text.lstrip("-")) > 30:
        raise ValueError("number too large")
    return int(text)


def _refuse_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def _text(fields: Mapping[str, Any], *names: str) -> str | None:
    for name in names:
        value = fields.get(name.lower())
        if isinstance(value, str) and value.strip():
            return value.strip()
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)
    return None


def _required_text(fields: Mapping[str, Any], *names: str) -> str:
    value = _text(fields, *names)
    if value is None:
        raise InvalidRequest(f"'{names[0]}' is required and must be a non-empty string")
    return value


def _boolean(value: Any, field_name: str) -> bool:
    if value is None:
        return False
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in {"true", "false"}:
        return value.strip().lower() == "true"
    raise InvalidRequest(f"'{field_name}' must be true or false")


def _object(value: Any, field_name: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidRequest(f"'{field_name}' must be an object")
    return _folded(value)


def _identities(user_info: Mapping[str, Any]) -> dict[Identity, str]:
    identities: dict[Identity, str] = {}
    if email := _text(user_info, "email"):
        identities[Identity.EMAIL] = email
    custom_fields = _object(user_info.get("customfields"), "customFields")
    for identity in (Identity.INTERNAL_ID, Identity.PHONE_NUMBER):
        if value := _text(custom_fields, identity.value):
            identities[identity] = value
    return identities


def _check_ticket_type(action: Action, ticket: Mapping[str, Any]) -> None:
    """Refuse a Delete ticket at the Copy URL and any other ticket at the Delete URL.

    The signature covers the body, not the URL: without this a captured signed Copy call could be
    replayed to the Delete URL. A ticket without a type is accepted (older payloads have none).
    """
    ticket_type = (_text(ticket, "type") or "").lower()
    if (
        ticket_type
        and (action is Action.DELETE) != (ticket_type == "delete")
        and action is not Action.PREVIEW
    ):
        raise InvalidRequest(f"a '{_text(ticket, 'type')}' ticket cannot be sent to the {action.value} URL")


def parse_request(action: Action, body: bytes) -> PrivacyRequest:
    """Parse a MineOS call for `action` (the URL it came to decides the action).

    Raises:
        InvalidRequest: the body is not a usable MineOS call; the message says which field.
    """
    fields = _folded(load_json_object(body))
    ticket = _object(fields.get("request", fields.get("ticketinfo")), "request")
    # Whether userInfo sits inside the ticket or beside it is not published: accept both.
    user_info = _object(ticket.get("userinfo", fields.get("userinfo")), "userInfo")
    is_test = _boolean(fields.get("istest"), "isTest")
    _check_ticket_type(action, ticket)
    if action is Action.PREVIEW:
        # Preview calls may come without a ticket; they are answered synchronously and never reported.
        trace_id = _text(fields, "traceid", "eventid") or "preview"
        integration_id = _text(fields, "integrationid") or "preview"
        ticket_id = _text(ticket, "ticketid", "id") or "preview"
    else:
        trace_id = _required_text(fields, "traceId", "eventid")
        integration_id = _required_text(fields, "integrationId")
        if not ticket:
            raise InvalidRequest("'request' (the ticket) is required")
        ticket_id = _required_text(ticket, "ticketId", "id")
    return PrivacyRequest(
        action=action,
        trace_id=trace_id,
        integration_id=integration_id,
        ticket_id=ticket_id,
        is_test=is_test,
        name=_text(user_info, "name"),
        identities=_identities(user_info),
    )
