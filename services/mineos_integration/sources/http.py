"""The HTTP connector: a person's records in a company API (a CRM, a support desk, a loyalty service).

A lookup (`url`, GET or POST) returns the person's records as JSON; a delete calls `delete_url` once,
or once per record when the template names a record field (`{record.id}`). The person's value is
URL-encoded into the templates; the API's credential comes from an environment variable (Secret
Manager on Cloud Run), never from the data map. Each call retries 429, 5xx, timeouts and dropped
connections with capped exponential backoff and full jitter, honours a short `Retry-After`, and all
attempts of one call stay within `context.timeout_seconds`. Errors and logs name the URL template,
never the rendered URL, and never the response body: both can hold the person's data.
"""

import json
import logging
import random
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, Literal, Self
from urllib.parse import quote, urlsplit

import requests
from pydantic import Field, model_validator

from mineos_integration.datamap import secret_from_env
from mineos_integration.sources.base import (
    DataSource,
    DeleteMode,
    DeletionResult,
    ExportSink,
    PreviewProperty,
    Record,
    SourceConfig,
    SourceContext,
    SourceError,
)
from mineos_integration.sources.values import as_datetime, check_identity_value

logger = logging.getLogger(__name__)

MAX_BACKOFF_SECONDS = 8.0
MAX_RETRY_AFTER_SECONDS = 30.0  # a longer Retry-After is left to Pub/Sub's redelivery
MAX_RESPONSE_BYTES = 32 * 1024 * 1024  # a lookup is one person's records: more means a wrong URL
_PLACEHOLDER = re.compile(r"\{(value|record\.[A-Za-z0-9_.-]+)\}")
_LOOPBACK_HOSTS = {"localhost", "127.0.0.1", "::1"}
_HEADER_NAME = r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$"  # an HTTP header name (RFC 9110 token)


@dataclass(frozen=True)
class _Answer:
    """A response, read in full (and closed)."""

    status_code: int
    headers: Mapping[str, str]
    content: bytes


_NETWORK_ERRORS = (requests.Timeout, requests.ConnectionError, requests.exceptions.ChunkedEncodingError)


def _is_retryable(status: int) -> bool:
    return status in {408, 429} or (status >= 500 and status not in {501, 505})


class HttpSourceConfig(SourceConfig):
    """A JSON API that finds a person by a URL (or POST body) holding `{value}`."""

    type: Literal["http"]
    url: str  # e.g. https://crm.example.com/api/people?email={value}
    method: Literal["GET", "POST"] = "GET"
    json_body: dict[str, Any] | None = None  # POST body; "{value}" inside its strings is replaced
    auth_header: str | None = Field(default=None, pattern=_HEADER_NAME)  # e.g. Authorization
    auth_env: str | None = Field(default=None, pattern=r"^[A-Z_][A-Z0-9_]*$")  # holds e.g. "Bearer …"
    records_path: str = ""  # dotted path to the records in the response, e.g. data.items; "" = top level
    not_found_is_empty: bool = False  # a 404 from the lookup means "no such person" (/people/{value})
    delete_url: str | None = None  # {value} and {record.<field>} placeholders
    delete_method: Literal["DELETE", "POST", "PUT", "PATCH"] = "DELETE"
    timeout_seconds: float = Field(default=10.0, gt=0, le=300)  # per attempt
    max_attempts: int = Field(default=4, ge=1, le=10)
    backoff_seconds: float = Field(default=0.5, ge=0, le=MAX_BACKOFF_SECONDS)  # first retry's cap

    @model_validator(mode="after")
    def _check(self) -> Self:
        _check_url_template(self.url, "url", allow_record=False)
        body_uses_value = "{value}" in json.dumps(self.json_body)
        if "{value}" not in self.url and not body_uses_value:
            raise ValueError("url (or json_body, for POST) must contain {value}")
        if self.json_body is not None and self.method != "POST":
            raise ValueError("json_body is only sent with method POST")
        if (self.auth_header is None) != (self.auth_env is None):
            raise ValueError("set both auth_header and auth_env, or neither")
        if self.delete.mode is DeleteMode.ANONYMISE:
            raise ValueError("delete mode anonymise is not supported for HTTP sources; use delete or retain")
        if self.delete.mode is DeleteMode.DELETE:
            if self.delete_url is None:
                raise ValueError("delete_url is required when delete mode is delete")
            _check_url_template(self.delete_url, "delete_url", allow_record=True)
            if _PLACEHOLDER.search(self.delete_url) is None:
                raise ValueError("delete_url must contain {value} or a {record.<field>}")
        if self.records_path and not all(self.records_path.split(".")):
            raise ValueError("records_path must be a dotted path such as data.items")
        return self

    def build(self, context: SourceContext) -> DataSource:
        auth_value = secret_from_env(self.auth_env) if self.auth_env else None
        return HttpSource(self, context, auth_value=auth_value)


def _check_url_template(template: str, field_name: str, *, allow_record: bool) -> None:
    for match in _PLACEHOLDER.finditer(template):
        if match.group(1) != "value" and not allow_record:
            raise ValueError(f"{field_name} can only use {{value}}")
    raw_parts = urlsplit(template)
    if "{" in raw_parts.scheme + raw_parts.netloc:
        raise ValueError(f"{field_name}: placeholders belong in the path or query, not the host")
    parts = urlsplit(_PLACEHOLDER.sub("x", template))
    if parts.scheme not in {"https", "http"} or not parts.hostname:
        raise ValueError(f"{field_name} must be an https:// URL")
    if parts.scheme == "http" and parts.hostname not in _LOOPBACK_HOSTS:
        raise ValueError(f"{field_name} must use https:// (http:// only for localhost)")
    if parts.username or parts.password:
        raise ValueError(f"{field_name} must not hold credentials: use auth_header and auth_env")
    if "{" in _PLACEHOLDER.sub("", template):
        raise ValueError(f"{field_name} has an unknown placeholder; use {{value}} or {{record.<field>}}")


class HttpSource:
    """A `DataSource` over one JSON API (see `HttpSourceConfig`)."""

    def __init__(self, config: HttpSourceConfig, context: SourceContext, *, auth_value: str | None) -> None:
        self.config: SourceConfig = config
        self._config = config
        self._deadline_seconds = context.timeout_seconds
        self._what = f"http source '{config.name}'"
        self._session = requests.Session()
        self._session.headers.update({"Accept": "application/json", "User-Agent": "mineos-integration"})
        if config.auth_header and auth_value:
            self._session.headers[config.auth_header] = auth_value

    def close(self) -> None:
        self._session.close()

    # -- DataSource -------------------------------------------------------------------------------

    def count(self, identity_value: str) -> int:
        return len(self._lookup(identity_value))

    def export(self, identity_value: str, sink: ExportSink) -> None:
        records = self._lookup(identity_value)
        sink.write_records(iter(records))

    def delete(self, identity_value: str) -> DeletionResult:
        records = self._lookup(identity_value)
        if self._config.delete.mode is not DeleteMode.DELETE:
            return DeletionResult(found=len(records), changed=0, remaining=len(records))
        assert self._config.delete_url is not None
        template = self._config.delete_url
        changed = 0
        if records:
            per_record = "{record." in template
            targets = records if per_record else [records[0]]
            for record in targets:
                url = self._render(template, identity_value, record)
                response = self._send(self._config.delete_method, template, url)
                if 200 <= response.status_code < 300:
                    changed += 1 if per_record else len(records)
                elif response.status_code not in {404, 410}:  # already gone is fine
                    raise self._status_error(self._config.delete_method, template, response.status_code)
        remaining = len(self._lookup(identity_value))
        return DeletionResult(found=len(records), changed=changed, remaining=remaining)

    def preview(self, identity_value: str) -> list[PreviewProperty]:
        records = self._lookup(identity_value)
        if not records:
            return []
        policy = self._config.preview
        properties = [PreviewProperty("Records", str(len(records)))]
        if policy.updated_field:
            moments = [as_datetime(_dig(record, policy.updated_field)) for record in records]
            known = [moment for moment in moments if moment is not None]
            if known:
                properties.append(PreviewProperty("Last updated", max(known).isoformat()))
        if policy.show_field:
            shown = next((v for r in records if (v := _dig(r, policy.show_field)) is not None), None)
            if shown is not None:
                text = shown if isinstance(shown, str) else json.dumps(shown, sort_keys=True)
                properties.append(PreviewProperty(policy.show_field, text))
        return properties

    # -- calls ------------------------------------------------------------------------------------

    def _lookup(self, identity_value: str) -> list[Record]:
        value = check_identity_value(identity_value)
        template = self._config.url
        body = _fill_body(self._config.json_body, value) if self._config.json_body is not None else None
        response = self._send(self._config.method, template, self._render(template, value, None), body)
        if response.status_code == 404 and self._config.not_found_is_empty:
            return []
        if not 200 <= response.status_code < 300:
            raise self._status_error(self._config.method, template, response.status_code)
        if response.status_code == 204:
            return []
        try:
            document = json.loads(response.content)
        except ValueError:
            raise SourceError(f"{self._what}: {template} did not answer JSON", transient=False) from None
        return self._records_in(document)

    def _records_in(self, document: Any) -> list[Record]:
        found = document
        for key in filter(None, self._config.records_path.split(".")):
            if not isinstance(found, Mapping) or key not in found:
                # Strict: a wrong path must not look like "no data" and let a Delete pass empty-handed.
                raise SourceError(
                    f"{self._what}: the response has no '{self._config.records_path}'", transient=False
                )
            found = found[key]
        if found is None:
            return []
        if isinstance(found, Mapping):
            return [found]  # one record, e.g. GET /people/{value}
        if isinstance(found, list) and all(isinstance(item, Mapping) for item in found):
            return found
        raise SourceError(
            f"{self._what}: '{self._config.records_path or '(response)'}' is not a list of objects",
            transient=False,
        )

    def _render(self, template: str, value: str, record: Record | None) -> str:
        def substitute(match: re.Match[str]) -> str:
            name = match.group(1)
            if name == "value":
                return quote(value, safe="")
            field = _dig(record or {}, name.removeprefix("record."))
            if field is None or isinstance(field, Mapping | list):
                raise SourceError(
                    f"{self._what}: a record has no usable '{name}' for delete_url", transient=False
                )
            return quote(str(field), safe="")

        # One pass, so that a value containing "{record.x}" is never substituted again.
        return _PLACEHOLDER.sub(substitute, template)

    def _send(self, method: str, template: str, url: str, body: Any = None) -> _Answer:
        """One call, retried on 429/5xx/timeouts within the source's deadline; the response is read."""
        deadline = time.monotonic() + self._deadline_seconds
        attempt = 0
        while True:
            attempt += 1
            timeout = max(0.1, min(self._config.timeout_seconds, deadline - time.monotonic()))
            retry_after: float | None = None
            try:
                response = self._read(method, url, body, timeout)
            except _NETWORK_ERRORS as error:
                problem = type(error).__name__
            else:
                if not _is_retryable(response.status_code):
                    return response
                problem = f"HTTP {response.status_code}"
                retry_after = _retry_after_seconds(response.headers.get("Retry-After"))
            if attempt >= self._config.max_attempts:
                break
            if retry_after is not None and retry_after > MAX_RETRY_AFTER_SECONDS:
                break  # the API asks for longer than a call may take: let redelivery come back later
            delay = retry_after if retry_after is not None else self._backoff(attempt)
            if time.monotonic() + delay >= deadline:
                break
            logger.warning(
                "%s: %s %s failed (%s); attempt %d of %d in %.2f s",
                self._what,
                method,
                template,
                problem,
                attempt + 1,
                self._config.max_attempts,
                delay,
            )
            time.sleep(delay)
        raise SourceError(
            f"{self._what}: {method} {template} failed after {attempt} attempt(s): {problem}", transient=True
        )

    def _read(self, method: str, url: str, body: Any, timeout: float) -> _Answer:
        """Send, and read the whole body, refusing one larger than MAX_RESPONSE_BYTES."""
        # No redirects: a custom auth header would follow them to another host.
        with self._session.request(
            method, url, json=body, timeout=timeout, allow_redirects=False, stream=True
        ) as response:
            content = bytearray()
            for chunk in response.iter_content(chunk_size=64 * 1024):
                content += chunk
                if len(content) > MAX_RESPONSE_BYTES:
                    raise SourceError(
                        f"{self._what}: the response is larger than {MAX_RESPONSE_BYTES} bytes",
                        transient=False,
                    )
            return _Answer(response.status_code, response.headers, bytes(content))

    def _backoff(self, attempt: int) -> float:
        cap = min(MAX_BACKOFF_SECONDS, self._config.backoff_seconds * 2 ** (attempt - 1))
        return random.uniform(0, cap)  # noqa: S311 - jitter, not a secret

    def _status_error(self, method: str, template: str, status: int) -> SourceError:
        return SourceError(f"{self._what}: {method} {template} answered HTTP {status}", transient=False)


def _fill_body(body: Any, value: str) -> Any:
    if isinstance(body, str):
        return body.replace("{value}", value)
    if isinstance(body, Mapping):
        return {key: _fill_body(item, value) for key, item in body.items()}
    if isinstance(body, list):
        return [_fill_body(item, value) for item in body]
    return body


def _dig(record: Mapping[str, Any], dotted_path: str) -> Any:
    found: Any = record
    for key in dotted_path.split("."):
        if not isinstance(found, Mapping):
            return None
        found = found.get(key)
    return found


def _retry_after_seconds(header: str | None) -> float | None:
    """Retry-After as seconds: delta-seconds or an HTTP date; None when absent or unreadable."""
    if header is None:
        return None
    header = header.strip()
    if header.isdigit():
        return float(header)
    try:
        moment = parsedate_to_datetime(header)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return max(0.0, (moment - datetime.now(UTC)).total_seconds())
