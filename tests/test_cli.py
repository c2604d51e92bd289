import json
import sqlite3

import pytest

from mineos_integration.cli import main
from mineos_integration.signature import SignatureAlgorithm, SignatureEncoding, SignatureScheme, sign, verify
from tests.services_helpers import clear_service_caches

SECRET = "operator-secret-0123456789"
BODY = b'{"traceId":"t-1","integrationId":"i-1","isTest":false}'


@pytest.fixture
def secrets_env(monkeypatch):
    monkeypatch.setenv("MINE_SIGNING_SECRETS", f"old-operator-secret,{SECRET}")
    clear_service_caches()
    yield
    clear_service_caches()


@pytest.fixture
def body_file(tmp_path):
    path = tmp_path / "body.json"
    path.write_bytes(BODY)
    return path


def test_sign_prints_a_header_that_verifies(secrets_env, body_file, capsys):
    assert main(["sign", "--body", str(body_file)]) == 0
    header = capsys.readouterr().out.strip()
    name, value = header.split(": ", 1)
    assert name == "X-Mine-Signature"
    verify(BODY, value, ["old-operator-secret"])  # the first secret signs


def test_sign_with_url_prints_a_curl_command(secrets_env, body_file, capsys):
    assert main(["sign", "--body", str(body_file), "--url", "http://127.0.0.1:8081/copy"]) == 0
    command = capsys.readouterr().out
    assert command.startswith("curl ")
    assert f"--data-binary @{body_file}" in command
    assert "http://127.0.0.1:8081/copy" in command


def test_sign_without_secret_in_env_refuses(body_file, monkeypatch):
    monkeypatch.delenv("MINE_SIGNING_SECRETS", raising=False)
    clear_service_caches()
    with pytest.raises(SystemExit, match="MINE_SIGNING_SECRETS"):
        main(["sign", "--body", str(body_file)])


def test_probe_signature_names_the_matching_scheme_and_secret(secrets_env, body_file, capsys):
    scheme = SignatureScheme(SignatureAlgorithm.SHA512, SignatureEncoding.HEX)
    assert main(["probe-signature", "--body", str(body_file), "--signature", sign(BODY, SECRET, scheme)]) == 0
    out = capsys.readouterr().out
    assert "hmac-sha512/hex with secret #2" in out
    assert "MINE_SIGNATURE_ALGORITHM=sha512 MINE_SIGNATURE_ENCODING=hex" in out


def test_probe_signature_unknown_scheme_exits_1(secrets_env, body_file, capsys):
    assert (
        main(["probe-signature", "--body", str(body_file), "--signature", sign(BODY, "unknown-secret")]) == 1
    )
    assert "No supported scheme matches" in capsys.readouterr().out


def test_dry_run_counts_per_source_and_changes_nothing(tmp_path, monkeypatch, capsys):
    database = tmp_path / "app.db"
    with sqlite3.connect(database) as connection:
        connection.execute("CREATE TABLE accounts (email TEXT, plan TEXT)")
        connection.executemany("INSERT INTO accounts VALUES (?, ?)", [("a@example.com", "pro")] * 2)
        connection.execute("CREATE TABLE invoices (email TEXT)")
        connection.execute("INSERT INTO invoices VALUES ('a@example.com')")
    data_map = tmp_path / "datamap.yaml"
    data_map.write_text(
        f"""
version: 1
sources:
  - {{name: accounts, type: sql, identity: email, url: "sqlite:///{database}", table: accounts,
      match_column: email}}
  - {{name: invoices, type: sql, identity: email, url: "sqlite:///{database}", table: invoices,
      match_column: email, delete: {{mode: retain, reason: tax law}}}}
  - {{name: phones, type: sql, identity: $phoneNumber, url: "sqlite:///{database}", table: accounts,
      match_column: email}}
"""
    )
    monkeypatch.setenv("DATA_MAP_PATH", str(data_map))
    clear_service_caches()
    assert main(["dry-run", "--email", "a@example.com"]) == 0
    assert json.loads(capsys.readouterr().out) == [
        {"source": "accounts", "identity": "email", "found": 2, "would": "delete"},
        {"source": "invoices", "identity": "email", "found": 1, "would": "retain", "reason": "tax law"},
        {"source": "phones", "identity": "$phoneNumber", "skipped": "identity not given"},
    ]
    with sqlite3.connect(database) as connection:
        assert connection.execute("SELECT count(*) FROM accounts").fetchone() == (2,)
