"""What a Cloud Run instance's identity looks like from inside, on loopback: a metadata server that
hands out the service account's email and access tokens, and the IAM Credentials `signBlob` API that
signs with the account's Google-held key.

`signBlob` lives at a fixed https URL (iamcredentials.googleapis.com), so it is served behind an HTTP
CONNECT proxy (`HTTPS_PROXY`): the proxy answers the tunnel itself with TLS for that name, under a
certificate authority made for the test (`REQUESTS_CA_BUNDLE`). It never connects anywhere; any
other host is refused. Clients find the metadata server through GCE_METADATA_HOST / GCE_METADATA_IP.
"""

from __future__ import annotations

import base64
import datetime
import http.server
import json
import re
import ssl
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

IAM_HOST = "iamcredentials.googleapis.com"
SIGN_BLOB_PATH = re.compile(r"^/v1/projects/-/serviceAccounts/(?P<email>[^/:]+):signBlob(\?.*)?$")


@dataclass
class Identity:
    """The service account and what was asked of it."""

    email: str
    project: str
    access_token: str
    key: rsa.RSAPrivateKey = field(default_factory=lambda: rsa.generate_private_key(65537, 2048))
    tokens_issued: int = 0
    blobs_signed: int = 0
    refused: list[str] = field(default_factory=list)


def _answer(handler: http.server.BaseHTTPRequestHandler, status: int, body: str, content_type: str) -> None:
    data = body.encode()
    handler.send_response(status)
    handler.send_header("Content-Type", content_type)
    handler.send_header("Metadata-Flavor", "Google")
    handler.send_header("Content-Length", str(len(data)))
    handler.end_headers()
    handler.wfile.write(data)


def _metadata_handler(identity: Identity) -> type[http.server.BaseHTTPRequestHandler]:
    class MetadataHandler(http.server.BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            if self.headers.get("Metadata-Flavor") != "Google":
                _answer(self, 403, "Metadata-Flavor header missing", "text/plain")
                return
            path = self.path.split("?", 1)[0]
            if path == "/":
                _answer(self, 200, "", "text/plain")  # google.auth's "am I on Google Cloud" ping
            elif path == "/computeMetadata/v1/project/project-id":
                _answer(self, 200, identity.project, "text/plain")
            elif path == "/computeMetadata/v1/instance/service-accounts/default/":
                info = {"email": identity.email, "aliases": ["default"], "scopes": ["cloud-platform"]}
                _answer(self, 200, json.dumps(info), "application/json")
            elif path == "/computeMetadata/v1/instance/service-accounts/default/token":
                identity.tokens_issued += 1
                token = {"access_token": identity.access_token, "expires_in": 3600, "token_type": "Bearer"}
                _answer(self, 200, json.dumps(token), "application/json")
            else:
                _answer(self, 404, "not found", "text/plain")

    return MetadataHandler


def _iam_handler(identity: Identity) -> type[http.server.BaseHTTPRequestHandler]:
    class IamHandler(http.server.BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            match = SIGN_BLOB_PATH.match(self.path)
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            if self.headers.get("Authorization") != f"Bearer {identity.access_token}":
                identity.refused.append("bad access token")
                _answer(self, 401, json.dumps({"error": {"code": 401}}), "application/json")
                return
            if match is None or match["email"] != identity.email:
                identity.refused.append(f"unknown path {self.path}")
                _answer(self, 404, json.dumps({"error": {"code": 404}}), "application/json")
                return
            payload = base64.b64decode(json.loads(body)["payload"])
            signature = identity.key.sign(payload, padding.PKCS1v15(), hashes.SHA256())
            identity.blobs_signed += 1
            signed = {"keyId": "fake-google-held-key", "signedBlob": base64.b64encode(signature).decode()}
            _answer(self, 200, json.dumps(signed), "application/json")

    return IamHandler


def _proxy_handler(
    tls: ssl.SSLContext, iam_handler: type[http.server.BaseHTTPRequestHandler], identity: Identity
) -> type[http.server.BaseHTTPRequestHandler]:
    class ProxyHandler(http.server.BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_CONNECT(self) -> None:
            if self.path != f"{IAM_HOST}:443":
                identity.refused.append(f"tunnel to {self.path}")
                self.send_error(403, "this proxy serves only the fake IAM Credentials API")
                return
            self.send_response(200, "Connection established")
            self.end_headers()
            with tls.wrap_socket(self.connection, server_side=True) as tunnel:
                iam_handler(tunnel, self.client_address, self.server)
            self.close_connection = True

    return ProxyHandler


def _write_certificates(folder: Path) -> tuple[Path, Path, Path]:
    """A CA (its certificate is what clients trust) and a server certificate for IAM_HOST."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = rsa.generate_private_key(65537, 2048)
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fake Google identity test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    server_key = rsa.generate_private_key(65537, 2048)
    server = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, IAM_HOST)]))
        .issuer_name(ca_name)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=2))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(IAM_HOST)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    ca_path, cert_path, key_path = folder / "ca.pem", folder / "iam.pem", folder / "iam-key.pem"
    ca_path.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_path.write_bytes(server.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        server_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    key_path.chmod(0o600)
    return ca_path, cert_path, key_path


class FakeGoogleIdentity:
    """Both servers on loopback, threads of this process; `env` points a client process at them."""

    def __init__(self, identity: Identity, folder: Path) -> None:
        self.identity = identity
        ca_path, cert_path, key_path = _write_certificates(folder)
        tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        tls.load_cert_chain(cert_path, key_path)
        self._metadata = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _metadata_handler(identity))
        self._proxy = http.server.ThreadingHTTPServer(
            ("127.0.0.1", 0), _proxy_handler(tls, _iam_handler(identity), identity)
        )
        metadata_host = f"127.0.0.1:{self._metadata.server_address[1]}"
        self.env = {
            "GCE_METADATA_HOST": metadata_host,
            "GCE_METADATA_IP": metadata_host,
            "HTTPS_PROXY": f"http://127.0.0.1:{self._proxy.server_address[1]}",
            "REQUESTS_CA_BUNDLE": str(ca_path),
        }
        self._servers = (self._metadata, self._proxy)
        self._threads = [threading.Thread(target=each.serve_forever, daemon=True) for each in self._servers]

    def __enter__(self) -> FakeGoogleIdentity:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        for server in self._servers:
            server.shutdown()
            server.server_close()
        for thread in self._threads:
            thread.join(timeout=5)
