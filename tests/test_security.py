"""Security checks: signature bypass attempts, oversized, slow and bomb bodies, secrets and personal data
in logs, and the lifetime of the signed URLs MineOS receives.

The signature and body checks run against the ingress in-process (the fuzz module's fixture, with an
in-memory publisher that shows whether anything got through). The rest runs against the whole local
stack: the real servers, as deployed (functions-framework on gunicorn), and every log they write.
"""

import base64
import hashlib
import hmac
import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import pytest
import requests
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from infra.driver import StackDriver, download_and_check
from infra.emulators import EmulatorUnavailable
from infra.fake_mineos import Person
from infra.sample.seed import ADA, DATA_MAP, GRACE, LINUS, UNKNOWN, seed_all
from infra.stack import LocalStack, StackConfig, StackPorts, start_stack
from mineos_integration.contract import Action
from tests.test_ingress_fuzz import MAX_BODY_BYTES, ROTATED_SECRET, SECRET, hmac_base64
from tests.test_ingress_fuzz import ingress as ingress  # the in-process ingress fixture
from tests.v4_signature import verify_v4_signed_url

COPY_BODY = json.dumps(
    {
        "traceId": "trace-security-1",
        "integrationId": "integration-1",
        "isTest": False,
        "request": {"id": "ticket-1", "type": "Get", "userInfo": {"email": "ada@example.com"}},
    },
    separators=(",", ":"),
).encode()
JSON = ("Content-Type", "application/json")


def post(ingress, headers: list[tuple[str, str]], body: bytes = COPY_BODY, path: str = "/copy") -> Any:
    return ingress.post(path, body, [JSON, *headers])


# --- the signature ----------------------------------------------------------------------------------


def test_valid_signature_in_any_header_name_casing_is_accepted(ingress):
    for name in ("X-Mine-Signature", "x-mine-signature", "X-MINE-SIGNATURE", "x-MiNe-SiGnAtUrE"):
        response = post(ingress, [(name, hmac_base64(COPY_BODY, SECRET))])
        assert response.status_code == 202, name  # HTTP header names are case-insensitive: no bypass
        assert len(ingress.publisher.published) == 1


def test_rotated_secret_still_signs(ingress):
    assert post(ingress, [("X-Mine-Signature", hmac_base64(COPY_BODY, ROTATED_SECRET))]).status_code == 202


def _digest(secret: bytes, body: bytes = COPY_BODY, algorithm: str = "sha256") -> bytes:
    return hmac.new(secret, body, algorithm).digest()


VALID = base64.b64encode(_digest(SECRET.encode())).decode()
BYPASS_ATTEMPTS = {
    "missing": [],
    "empty": [("X-Mine-Signature", "")],
    "blank": [("X-Mine-Signature", "   ")],
    "literal-null": [("X-Mine-Signature", "null")],
    "truncated-half": [("X-Mine-Signature", VALID[: len(VALID) // 2])],
    "truncated-one-char": [("X-Mine-Signature", VALID[:-2] + "=")],
    "extended": [("X-Mine-Signature", VALID + "AAAA")],
    "another-secret": [("X-Mine-Signature", base64.b64encode(_digest(b"another-secret")).decode())],
    "empty-secret": [("X-Mine-Signature", base64.b64encode(_digest(b"")).decode())],
    "sha1": [("X-Mine-Signature", base64.b64encode(_digest(SECRET.encode(), algorithm="sha1")).decode())],
    "sha512": [("X-Mine-Signature", base64.b64encode(_digest(SECRET.encode(), algorithm="sha512")).decode())],
    "md5": [("X-Mine-Signature", base64.b64encode(_digest(SECRET.encode(), algorithm="md5")).decode())],
    "plain-sha256-no-key": [
        ("X-Mine-Signature", base64.b64encode(hashlib.sha256(COPY_BODY).digest()).decode())
    ],
    "hex-instead-of-base64": [("X-Mine-Signature", _digest(SECRET.encode()).hex())],
    "base64-of-hex": [
        ("X-Mine-Signature", base64.b64encode(_digest(SECRET.encode()).hex().encode()).decode())
    ],
    "prefixed": [("X-Mine-Signature", f"sha256={VALID}")],
    "scheme-word": [("X-Mine-Signature", f"HMAC-SHA256 {VALID}")],
    "case-swapped": [("X-Mine-Signature", VALID.swapcase())],
    "other-body-bytes": [("X-Mine-Signature", hmac_base64(COPY_BODY + b"\n", SECRET))],
    "zero-bytes": [("X-Mine-Signature", base64.b64encode(bytes(32)).decode())],
    "twice-valid": [("X-Mine-Signature", VALID), ("X-Mine-Signature", VALID)],
    "invalid-then-valid": [("X-Mine-Signature", "garbage"), ("x-mine-signature", VALID)],
    "other-header": [("X-Signature", VALID), ("X-Hub-Signature-256", f"sha256={VALID}")],
    "authorization-header": [("Authorization", f"Bearer {VALID}")],
}


@pytest.mark.parametrize("attempt", list(BYPASS_ATTEMPTS))
def test_signature_bypass_attempt_is_refused_401_and_nothing_published(ingress, attempt):
    response = post(ingress, BYPASS_ATTEMPTS[attempt])
    assert response.status_code == 401
    assert response.get_json() == {"error": "invalid signature"}  # says nothing about why
    assert ingress.publisher.published == []
    assert ingress.ledger.received == []


def test_signature_in_query_string_is_ignored(ingress):
    response = post(ingress, [], path=f"/copy?signature={VALID}&X-Mine-Signature={VALID}")
    assert response.status_code == 401
    assert ingress.publisher.published == []


def test_body_re_serialised_after_signing_is_refused(ingress):
    same_meaning = json.dumps(json.loads(COPY_BODY), indent=1).encode()
    response = post(ingress, [("X-Mine-Signature", VALID)], body=same_meaning)
    assert response.status_code == 401  # the signature is over the raw bytes, not the JSON's meaning


def test_signed_copy_call_replayed_to_the_delete_url_is_refused(ingress):
    """The signature covers the body, not the URL: the ticket's type must agree with the route."""
    response = post(ingress, [("X-Mine-Signature", VALID)], path="/delete")
    assert response.status_code == 400
    assert "Delete URL" in response.get_json()["error"]
    assert ingress.publisher.published == []


def test_signed_delete_call_replayed_to_the_copy_url_is_refused(ingress):
    body = COPY_BODY.replace(b'"type":"Get"', b'"type":"Delete"')
    signature = ("X-Mine-Signature", hmac_base64(body, SECRET))
    assert post(ingress, [signature], body=body, path="/delete").status_code == 202
    response = post(ingress, [signature], body=body, path="/copy")
    assert response.status_code == 400
    assert ingress.publisher.published == []


# --- JSON bombs and sizes, in-process -----------------------------------------------------------------


@pytest.fixture
def large_bodies_allowed(monkeypatch):
    """The production default (256 KiB) instead of the fuzz fixture's 4 KiB, for bombs that need room."""
    from mineos_integration.settings import get_settings

    monkeypatch.setenv("MAX_BODY_BYTES", str(256 * 1024))
    get_settings.cache_clear()
    yield 256 * 1024
    get_settings.cache_clear()


def _with_field(value: str) -> bytes:
    return COPY_BODY[:-1] + b',"x":' + value.encode() + b"}"


BOMBS = {
    "nested-arrays-100k": _with_field("[" * 100_000 + "]" * 100_000),
    "nested-objects-20k": _with_field('{"a":' * 20_000 + "1" + "}" * 20_000),
    "nested-33-levels": _with_field("[" * 31 + "1" + "]" * 31),
    "integer-200k-digits": _with_field("9" * 200_000),
    "integer-31-digits": _with_field("1" * 31),
    "negative-integer-200k-digits": _with_field("-" + "9" * 200_000),
    "nan": _with_field("NaN"),
    "infinity": _with_field("-Infinity"),
    "many-small-arrays": _with_field("[" + ",".join(["[]"] * 12_000) + "]"),
}


@pytest.mark.parametrize("bomb", list(BOMBS))
def test_json_bomb_is_refused_400_quickly(ingress, large_bodies_allowed, bomb):
    body = BOMBS[bomb]
    assert len(body) <= large_bodies_allowed
    started = time.monotonic()
    response = post(ingress, [("X-Mine-Signature", hmac_base64(body, SECRET))], body=body)
    elapsed = time.monotonic() - started
    assert response.status_code == 400, response.get_json()
    assert elapsed < 1.0
    assert ingress.publisher.published == []


def test_huge_float_and_wide_but_shallow_json_are_harmless(ingress, large_bodies_allowed):
    for value in ("1e999999999", "0." + "0" * 100_000 + "1", "[" + ",".join(["1"] * 40_000) + "]"):
        body = _with_field(value)
        started = time.monotonic()
        response = post(ingress, [("X-Mine-Signature", hmac_base64(body, SECRET))], body=body)
        assert response.status_code == 202  # parsed within bounds; the field is simply not used
        assert time.monotonic() - started < 1.0


def test_body_one_byte_over_the_limit_is_413_before_the_signature_is_checked(ingress):
    body = b" " * (MAX_BODY_BYTES - len(COPY_BODY) + 1) + COPY_BODY
    response = post(ingress, [("X-Mine-Signature", hmac_base64(body, SECRET))], body=body)
    assert response.status_code == 413
    assert ingress.publisher.published == []


# --- the whole stack ------------------------------------------------------------------------------------

SIGNED_URL_TTL_SECONDS = 600


@pytest.fixture(scope="module")
def stack(tmp_path_factory) -> Iterator[LocalStack]:
    saved_environ = dict(os.environ)
    state_dir = tmp_path_factory.mktemp("security-stack")
    database_url = f"sqlite:///{state_dir / 'sample.db'}"

    def seed(started: LocalStack) -> None:
        started.use_emulators()
        seed_all(database_url, started.config.project)

    config = StackConfig(
        state_dir=state_dir,
        ports=StackPorts.free(),
        data_map_path=str(DATA_MAP),
        lease_seconds=5,
        mineos_backoff_seconds=0.1,
        retry_backoff_seconds=None,
        extra_env={
            "SAMPLE_DATABASE_URL": database_url,
            "SIGNED_URL_TTL_SECONDS": str(SIGNED_URL_TTL_SECONDS),
            "MAX_BODY_BYTES": str(64 * 1024),
        },
        seed=seed,
    )
    try:
        try:
            started = start_stack(config)
        except EmulatorUnavailable as reason:
            pytest.skip(f"local Google Cloud stand-in unavailable: {reason}")
        with started:
            yield started
    finally:
        os.environ.clear()
        os.environ.update(saved_environ)


def _public_key(stack: LocalStack) -> Any:
    key = json.loads(Path(stack.signing_key_file).read_text())
    return load_pem_private_key(key["private_key"].encode(), None).public_key()


def _with_query(url: str, **changes: str) -> str:
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    query.update(changes)
    return urlunsplit(parts._replace(query=urlencode(query)))


@pytest.mark.emulators
def test_signed_urls_carry_the_configured_lifetime_from_the_report_on_and_cannot_be_extended(stack):
    driver = StackDriver(stack)
    call = driver.call(Action.COPY, ADA)
    sent_at = datetime.now(UTC).replace(microsecond=0)
    assert driver.send(call).status_code == 202
    report = driver.wait_for_report(call, timeout_seconds=60)
    reported_at = datetime.now(UTC)
    download_and_check(report)

    public_key = _public_key(stack)
    files = report["body"]["files"]
    assert {f["fileName"] for f in files} >= {"manifest.json", "accounts.jsonl"}
    for reference in files:
        signed_at, expires_at = verify_v4_signed_url(reference["url"], public_key)
        # Signed when the status call was made (the lifetime starts when MineOS gets the link).
        assert sent_at <= signed_at <= reported_at
        assert expires_at - signed_at == timedelta(seconds=SIGNED_URL_TTL_SECONDS)
        # Neither the lifetime nor the object can be changed without breaking the signature.
        with pytest.raises(InvalidSignature):
            verify_v4_signed_url(_with_query(reference["url"], **{"X-Goog-Expires": "604800"}), public_key)
        later = (signed_at + timedelta(days=1)).strftime("%Y%m%dT%H%M%SZ")
        with pytest.raises(InvalidSignature):
            verify_v4_signed_url(_with_query(reference["url"], **{"X-Goog-Date": later}), public_key)
        tampered_path = reference["url"].replace("/exports/", "/exports/../exports/", 1)
        with pytest.raises(InvalidSignature):
            verify_v4_signed_url(tampered_path, public_key)


def _raw_request(stack: LocalStack, head: bytes, body_parts: list[bytes], pause_seconds: float) -> bytes:
    """Send a request over a raw socket, the body in parts with a pause before each; the answer's head."""
    with socket.create_connection(("127.0.0.1", stack.processes["ingress"].port), timeout=10) as connection:
        connection.sendall(head)
        for part in body_parts:
            time.sleep(pause_seconds)
            connection.sendall(part)
        return connection.recv(4096)


def _request_head(length: int | None, extra: str = "") -> bytes:
    framing = f"Content-Length: {length}\r\n" if length is not None else "Transfer-Encoding: chunked\r\n"
    return (
        f"POST /copy HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n{framing}{extra}\r\n"
    ).encode()


@pytest.mark.emulators
def test_slow_bodies_are_read_to_the_end_and_do_not_hold_up_other_callers(stack):
    body = b'{"traceId": "slow"}'
    answers: list[bytes] = []
    slow_clients = [
        threading.Thread(
            target=lambda: answers.append(
                _raw_request(
                    stack,
                    _request_head(len(body), "X-Mine-Signature: AAAA\r\n"),
                    [body[i : i + 2] for i in range(0, len(body), 2)],
                    0.15,
                )
            )
        )
        for _ in range(3)
    ]
    for client in slow_clients:
        client.start()
    time.sleep(0.3)
    started = time.monotonic()
    health = requests.get(stack.ingress_url + "/healthz", timeout=5)
    assert health.status_code == 200
    assert time.monotonic() - started < 1.0  # while three bodies are still trickling in
    for client in slow_clients:
        client.join(timeout=30)
    assert len(answers) == 3
    assert all(answer.startswith(b"HTTP/1.1 401") for answer in answers)


@pytest.mark.emulators
def test_oversized_body_sent_in_full_is_refused_413(stack):
    body = b"{" + b" " * (64 * 1024) + b"}"
    response = requests.post(
        stack.ingress_url + "/copy",
        data=body,
        headers={"Content-Type": "application/json", "X-Mine-Signature": hmac_base64(body, SECRET)},
        timeout=10,
    )
    assert response.status_code == 413
    assert "error" in response.json()


@pytest.mark.emulators
@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_oversized_body_is_refused_413_without_waiting_for_the_rest(stack, framing):
    """functions-framework reads the whole request body after every ordinary response; the ingress
    streams its 413 and closes the connection, so a client cannot hold it open with a body that
    never ends (a 100 MiB declared length, an endless chunked body). Found by this test."""
    if framing == "content-length":
        head, parts = _request_head(100 * 1024 * 1024), [b"{"]  # declares 100 MiB, sends one byte
    else:
        head, parts = _request_head(None), [b"10000\r\n" + b" " * 0x10000 + b"\r\n"] * 2  # never ends
    with socket.create_connection(("127.0.0.1", stack.processes["ingress"].port), timeout=5) as connection:
        connection.sendall(head)
        for part in parts:
            connection.sendall(part)
        connection.settimeout(3)
        try:
            answer = connection.recv(4096)
        except TimeoutError:
            answer = b""
    assert answer.startswith(b"HTTP/1.1 413")


# --- no personal data or secret in any log line -------------------------------------------------------


def _personal_data() -> list[str]:
    values = []
    for person in (ADA, GRACE, LINUS, UNKNOWN):
        values += [person.name, person.email, person.internal_id or "", person.phone_number or ""]
    # Seeded records: addresses, invoice numbers, an uploaded file's content.
    values += ["12 Analytical Row", "1 Compiler Way", "INV-2026-0042", "a small picture of Ada"]
    return [value for value in values if value]


@pytest.mark.emulators
def test_no_log_line_of_an_end_to_end_run_holds_personal_data_or_a_secret(stack):
    driver = StackDriver(stack)
    calls = [
        driver.call(Action.COPY, ADA),
        driver.call(Action.COPY, GRACE, shape="legacy"),
        driver.call(Action.DELETE, LINUS),
        driver.call(Action.COPY, UNKNOWN),
        driver.call(Action.COPY, ADA, is_test=True),
        driver.call(Action.COPY, Person(name=ADA.name, email=ADA.email)),  # missing identifiers
    ]
    driver.inject_faults([{"status": 500}, {"status": 429}])  # the warning paths log too
    for call in calls:
        assert driver.send(call).status_code == 202
    assert driver.send(driver.call(Action.PREVIEW, ADA)).status_code == 200
    # Refused calls that carry personal data in their bodies.
    secret = stack.signing_secret
    ingress_url = stack.ingress_url
    bad_bodies = [
        b'{"traceId": "t-1", "integrationId": "i", "request": {"id": "x", "userInfo": "Ada Lovelace, '
        b'ada@example.com"}}',
        b'{"traceId": "t-2", "integrationId": "i", "request": {"id": "x", "userInfo": {"email": "ada@exam',
        b'{"traceId": "t-3", "isTest": "ada@example.com", "integrationId": "i", "request": {"id": "x"}}',
    ]
    for body in bad_bodies:
        headers = {"Content-Type": "application/json", "X-Mine-Signature": hmac_base64(body, secret)}
        assert requests.post(ingress_url + "/copy", data=body, headers=headers, timeout=10).status_code == 400
    unsigned = driver.call(Action.COPY, ADA).body
    headers = {"Content-Type": "application/json", "X-Mine-Signature": "forged"}
    assert requests.post(ingress_url + "/copy", data=unsigned, headers=headers, timeout=10).status_code == 401
    for call in calls:
        driver.wait_for_report(call, timeout_seconds=60)
    time.sleep(1.0)  # the last log lines are flushed (PYTHONUNBUFFERED) and written

    private_key_pem = json.loads(Path(stack.signing_key_file).read_text())["private_key"]
    secrets = {
        "signing secret": stack.signing_secret,
        "MineOS API key": stack.api_key,
        "anonymisation key": stack.service_env["ANONYMISATION_KEY"],
        "URL signing key": private_key_pem.splitlines()[5],
        "a signed URL": "X-Goog-Signature",
    }
    log_dir = stack.config.state_dir / "logs"
    service_logs = [log_dir / name for name in ("ingress.log", "collector.log", "fake-mineos.log")]
    assert all(path.stat().st_size > 0 for path in service_logs)
    leaks = []
    # fake-gcs-server's access log stands in for Cloud Storage's own request logs, which name the
    # objects the data map reads (`users/<internal id>/...`): the company's storage, not a log of ours.
    for path in sorted(set(log_dir.glob("*.log")) - {log_dir / "fake-gcs-server.log"}):
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), start=1):
            lowered = line.lower()
            leaks += [
                f"{path.name}:{number}: personal data {value!r}"
                for value in _personal_data()
                if value.lower() in lowered
            ]
            leaks += [f"{path.name}:{number}: {what}" for what, value in secrets.items() if value in line]
    assert leaks == []
