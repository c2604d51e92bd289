"""What every connector does with values: refuse an empty identity value, turn what a store returns
into JSON, hash it for `hash` anonymisation, read a timestamp.

No store's client library is imported here: a connector passes its own types in through `convert`.
"""

import base64
import datetime
import decimal
import hashlib
import hmac
import json
import math
import re
from collections.abc import Callable, Mapping
from typing import Any

from mineos_integration.sources.base import SourceError

# What `anonymised_hash` writes: HMAC-SHA256 in lowercase hex.
_ANONYMISED_HASH = re.compile(r"[0-9a-f]{64}")


def check_identity_value(value: str) -> str:
    """Refuse an empty value: matching "" would find (and delete) every record with an empty field."""
    if not value or not value.strip():
        raise SourceError("the identity value is empty", transient=False)
    return value


def json_safe(value: Any, *, convert: Callable[[Any], Any] | None = None) -> Any:
    """A value as JSON can carry it: datetimes as ISO 8601, Decimal as text, bytes as base64.

    `convert` turns the types only one store has into plain values (e.g. a Firestore GeoPoint into
    `{lat, lng}`) and returns any other value as it is; it is applied first, at every nesting level.
    """
    if convert is not None:
        value = convert(value)
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, datetime.datetime | datetime.date | datetime.time):
        return value.isoformat()
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, Mapping):
        return {str(key): json_safe(item, convert=convert) for key, item in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [json_safe(item, convert=convert) for item in value]
    return str(value)  # UUID, timedelta, network addresses, ranges, BSON types...


def anonymised_hash(key: bytes, value: Any, *, convert: Callable[[Any], Any] | None = None) -> str:
    """`hash` anonymisation: HMAC-SHA256 hex of the value (a string as is, else its JSON form).

    Every connector hashes through this one function, so a hashed email still joins across sources.
    `convert` is the store's converter, as for `json_safe`.
    """
    text = value if isinstance(value, str) else json.dumps(json_safe(value, convert=convert), sort_keys=True)
    return hmac.new(key, text.encode("utf-8"), hashlib.sha256).hexdigest()


def is_anonymised_hash(value: Any) -> bool:
    """Whether `value` already is what `anonymised_hash` writes (64 lowercase hex).

    Such a value is not hashed again, so that a redelivered Delete (after a crash half-way) leaves the
    same, still joinable, value: a hash of a hash would no longer join with the other sources.
    """
    return isinstance(value, str) and _ANONYMISED_HASH.fullmatch(value) is not None


def as_datetime(value: Any) -> datetime.datetime | None:
    """A timestamp field as an aware datetime (naive ones taken as UTC): a datetime or an ISO 8601
    string; else None."""
    if isinstance(value, str):
        try:
            value = datetime.datetime.fromisoformat(value)
        except ValueError:
            return None
    if not isinstance(value, datetime.datetime):
        return None
    return value if value.tzinfo is not None else value.replace(tzinfo=datetime.UTC)
