"""Keyless V4 signed URLs, as on Cloud Run: no key file, the service account's identity from the
metadata server, each signature made by IAM Credentials `signBlob`. The signer runs in a process of
its own whose environment is that of an instance (google.auth reads the metadata host at import)."""

import json
import os
import subprocess
import sys
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from google.cloud import storage  # type: ignore[attr-defined]

from infra.emulators import REPO_ROOT
from tests.fake_google_identity import FakeGoogleIdentity, Identity
from tests.sources_helpers import unique_name
from tests.v4_signature import verify_v4_signed_url

pytestmark = pytest.mark.emulators

TTL_SECONDS = 900

SIGN_KEYLESSLY = """
import json, sys
from google.cloud import storage
from mineos_integration.export import UrlSigner

project, bucket_name, ttl_seconds, *object_names = sys.argv[1:]
signer = UrlSigner(storage.Client(project=project), int(ttl_seconds))  # no key file
print(json.dumps([signer.signed_url(bucket_name, name) for name in object_names]))
"""


def sign_in_instance_process(env: dict[str, str], bucket_name: str, object_names: list[str]) -> list[str]:
    completed = subprocess.run(
        [
            sys.executable,
            "-c",
            SIGN_KEYLESSLY,
            "keyless-project",
            bucket_name,
            str(TTL_SECONDS),
            *object_names,
        ],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    urls: list[str] = json.loads(completed.stdout)
    return urls


def test_urls_signed_without_a_key_file_are_signed_by_iam_as_the_service_account(
    gcs_server, tmp_path, monkeypatch
):
    identity = Identity(
        email="mineos-collector@keyless-project.iam.gserviceaccount.com",
        project="keyless-project",
        access_token="ya29.instance-token-for-tests",
    )
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs_server)
    bucket = storage.Client(project="keyless-project").create_bucket(unique_name("keyless"))
    objects = {"exports/op-1/manifest.json": b'{"files": []}', "exports/op-1/orders.jsonl": b'{"id": 1}\n'}
    for name, data in objects.items():
        bucket.blob(name).upload_from_string(data)
    gcloud_config = tmp_path / "gcloud"  # no application-default credentials of this machine's user
    gcloud_config.mkdir()
    with FakeGoogleIdentity(identity, tmp_path) as fake:
        env = {
            key: value
            for key, value in os.environ.items()
            if key not in ("GOOGLE_APPLICATION_CREDENTIALS", "NO_PROXY", "no_proxy")
        }
        env.update(fake.env, STORAGE_EMULATOR_HOST=gcs_server, CLOUDSDK_CONFIG=str(gcloud_config))

        urls = sign_in_instance_process(env, bucket.name, list(objects))

    assert identity.refused == []
    assert identity.blobs_signed == 2
    assert identity.tokens_issued == 1  # one token from the metadata server, reused for both
    for url, (name, data) in zip(urls, objects.items(), strict=True):
        signed_at, expires_at = verify_v4_signed_url(url, identity.key.public_key())
        assert (expires_at - signed_at).total_seconds() == TTL_SECONDS
        credential = parse_qs(urlsplit(url).query)["X-Goog-Credential"][0]
        assert credential.startswith(identity.email + "/")
        assert urlsplit(url).path == f"/{bucket.name}/{name}"
        assert requests.get(url, timeout=10).content == data
