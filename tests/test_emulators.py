"""The local stand-ins start, answer and stop; the Pub/Sub push and dead-letter paths work on the
emulator; the local signing key signs V4 URLs that fake-gcs-server serves."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import queue
import shlex
import signal
import socket
import stat
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit

import pytest
import requests
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from google.auth.credentials import AnonymousCredentials
from google.cloud import firestore, pubsub_v1, storage  # type: ignore[attr-defined]
from google.oauth2 import service_account

from infra.emulators import (
    EmulatorUnavailable,
    ManagedProcess,
    PortInUseError,
    ProcessStartError,
    create_bucket,
    create_pubsub_resources,
    free_port,
    generate_local_signing_key,
    port_is_free,
    reset_firestore,
    reset_pubsub,
    start_function,
    start_process,
)
from infra.stack import (
    EXIT_UNAVAILABLE,
    LocalStack,
    StackConfig,
    StackPorts,
    StackStartError,
    start_stack,
    stop_recorded_stack,
)

WAIT_SECONDS = 30.0


# --- a tiny push endpoint standing in for the collector -------------------------------------------


@dataclass
class PushReceiver:
    """Records every POST; answers each path with the status set in `statuses` (default 204)."""

    url: str
    received: queue.Queue[tuple[str, dict[str, Any]]] = field(default_factory=queue.Queue)
    statuses: dict[str, int] = field(default_factory=dict)
    paths_seen: list[str] = field(default_factory=list)

    def next_push(self, path: str, timeout_seconds: float = WAIT_SECONDS) -> dict[str, Any]:
        """The next push body received on `path`, skipping pushes to other paths."""
        deadline = time.monotonic() + timeout_seconds
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                received_path, body = self.received.get(timeout=remaining)
            except queue.Empty:
                break
            if received_path == path:
                return body
        raise AssertionError(f"no push to {path} within {timeout_seconds} s")


@pytest.fixture
def push_receiver() -> Iterator[PushReceiver]:
    receiver = PushReceiver(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            receiver.paths_seen.append(self.path)
            receiver.received.put((self.path, json.loads(body)))
            self.send_response(receiver.statuses.get(self.path, 204))
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    receiver.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def storage_client(project: str, api_endpoint: str | None = None) -> storage.Client:
    """A Cloud Storage client for fake-gcs-server ($STORAGE_EMULATOR_HOST unless `api_endpoint`)."""
    return storage.Client(
        project=project,
        credentials=AnonymousCredentials(),  # type: ignore[no-untyped-call]
        client_options={"api_endpoint": api_endpoint} if api_endpoint else None,
    )


def load_service_account_key(key_path: Path) -> service_account.Credentials:
    load_key_file = service_account.Credentials.from_service_account_file
    credentials: service_account.Credentials = load_key_file(str(key_path))  # type: ignore[no-untyped-call]
    return credentials


def publish(project: str, topic: str, data: bytes, **attributes: str) -> str:
    with pubsub_v1.PublisherClient() as publisher:
        future = publisher.publish(f"projects/{project}/topics/{topic}", data, **attributes)
        message_id: str = future.result(timeout=10)
    return message_id


# --- the emulators answer ---------------------------------------------------------------------------


@pytest.mark.emulators
def test_pubsub_emulator_answers_ok(pubsub_emulator):
    response = requests.get(f"http://{pubsub_emulator}/", timeout=5)

    assert response.status_code == 200
    assert response.text.strip() == "Ok"


@pytest.mark.emulators
def test_firestore_emulator_stores_and_reset_deletes_documents(emulator_env, firestore_emulator):
    project = emulator_env["GOOGLE_CLOUD_PROJECT"]
    client = firestore.Client(project=project)
    try:
        document = client.collection("things").document("one")
        document.set({"value": 1}, timeout=10)
        assert document.get(timeout=10).to_dict() == {"value": 1}

        reset_firestore(firestore_emulator, project)

        assert not document.get(timeout=10).exists
    finally:
        client.close()  # type: ignore[no-untyped-call]


@pytest.mark.emulators
def test_gcs_server_uploads_and_downloads_an_object(emulator_env, gcs_server):
    project = emulator_env["GOOGLE_CLOUD_PROJECT"]
    bucket_name = f"test-bucket-{uuid.uuid4().hex[:8]}"
    create_bucket(gcs_server, project, bucket_name)

    with storage_client(project) as client:
        blob = client.bucket(bucket_name).blob("exports/a.json")
        blob.upload_from_string(b'{"a": 1}', if_generation_match=0, timeout=10)

        assert blob.download_as_bytes(timeout=10) == b'{"a": 1}'


# --- Pub/Sub resources: push and dead-letter paths --------------------------------------------------


@pytest.mark.emulators
def test_create_pubsub_resources_configures_push_retry_and_dead_letter(emulator_env, push_receiver):
    project = emulator_env["GOOGLE_CLOUD_PROJECT"]

    resources = create_pubsub_resources(project, "requests", push_receiver.url, max_delivery_attempts=7)

    with pubsub_v1.SubscriberClient() as subscriber:
        subscription = subscriber.get_subscription(subscription=resources.subscription, timeout=10)
        dead_letter_subscription = subscriber.get_subscription(
            subscription=resources.dead_letter_subscription, timeout=10
        )
    assert subscription.topic == f"projects/{project}/topics/requests"
    assert subscription.push_config.push_endpoint == f"{push_receiver.url}/requests"
    assert subscription.ack_deadline_seconds == 600
    assert subscription.retry_policy.minimum_backoff == timedelta(seconds=1)
    assert subscription.retry_policy.maximum_backoff == timedelta(seconds=60)
    assert subscription.dead_letter_policy.dead_letter_topic == resources.dead_letter_topic
    assert subscription.dead_letter_policy.max_delivery_attempts == 7
    assert not subscription.enable_message_ordering
    assert dead_letter_subscription.topic == resources.dead_letter_topic
    assert dead_letter_subscription.push_config.push_endpoint == f"{push_receiver.url}/dead-letters"
    assert resources.pull_subscription is None


@pytest.mark.emulators
def test_published_message_is_pushed_to_the_collector_url(emulator_env, push_receiver):
    project = emulator_env["GOOGLE_CLOUD_PROJECT"]
    resources = create_pubsub_resources(project, "requests", push_receiver.url)

    message_id = publish(project, "requests", b'{"hello": "push"}', action="copy")

    body = push_receiver.next_push("/requests")
    assert body["subscription"] == resources.subscription
    assert body["message"]["messageId"] == message_id
    assert base64.b64decode(body["message"]["data"]) == b'{"hello": "push"}'
    assert body["message"]["attributes"] == {"action": "copy"}


@pytest.mark.emulators
@pytest.mark.timeout(90)
def test_rejected_push_is_dead_lettered_to_the_dead_letter_url(emulator_env, push_receiver):
    project = emulator_env["GOOGLE_CLOUD_PROJECT"]
    push_receiver.statuses["/requests"] = 500
    # Without a retry policy the emulator redelivers every ~1 s: five attempts take ~5 s, not ~15 s.
    resources = create_pubsub_resources(
        project, "requests", push_receiver.url, max_delivery_attempts=5, retry_backoff_seconds=None
    )

    publish(project, "requests", b"poison")

    dead_letter = push_receiver.next_push("/dead-letters", timeout_seconds=60)
    assert dead_letter["subscription"] == resources.dead_letter_subscription
    assert base64.b64decode(dead_letter["message"]["data"]) == b"poison"
    attributes = dead_letter["message"]["attributes"]
    assert attributes["CloudPubSubDeadLetterSourceSubscription"] == "requests-collector"
    assert attributes["CloudPubSubDeadLetterSourceDeliveryCount"] == "5"
    assert push_receiver.paths_seen == ["/requests"] * 5 + ["/dead-letters"]


@pytest.mark.emulators
def test_extra_pull_subscription_sees_published_messages(emulator_env, push_receiver):
    project = emulator_env["GOOGLE_CLOUD_PROJECT"]
    resources = create_pubsub_resources(
        project, "requests", push_receiver.url, extra_pull_subscription="requests-observer"
    )

    publish(project, "requests", b"observed")

    assert resources.pull_subscription == f"projects/{project}/subscriptions/requests-observer"
    with pubsub_v1.SubscriberClient() as subscriber:
        # The message is already there; a short timeout bounds the pull if it were not.
        response = subscriber.pull(subscription=resources.pull_subscription, max_messages=1, timeout=10)
    assert [m.message.data for m in response.received_messages] == [b"observed"]


@pytest.mark.emulators
def test_reset_pubsub_deletes_topics(emulator_env, pubsub_emulator, push_receiver):
    project = emulator_env["GOOGLE_CLOUD_PROJECT"]
    create_pubsub_resources(project, "requests", push_receiver.url)

    reset_pubsub(pubsub_emulator)

    with pubsub_v1.PublisherClient() as publisher:
        topics = list(publisher.list_topics(project=f"projects/{project}", timeout=10))
    assert topics == []


def test_create_pubsub_resources_refuses_without_an_emulator(monkeypatch):
    monkeypatch.delenv("PUBSUB_EMULATOR_HOST", raising=False)

    with pytest.raises(ValueError, match="PUBSUB_EMULATOR_HOST"):
        create_pubsub_resources("any-project", "requests", "http://127.0.0.1:1")


# --- the local URL-signing key ---------------------------------------------------------------------


def verify_v4_signature(signed_url: str, public_key: rsa.RSAPublicKey, method: str = "GET") -> str:
    """Check a GOOG4-RSA-SHA256 signed URL against `public_key`; returns its credential's email.

    fake-gcs-server serves signed URLs without checking signatures, so the test checks them itself.
    """
    parts = urlsplit(signed_url)
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    signature = bytes.fromhex(query.pop("X-Goog-Signature"))
    assert query["X-Goog-Algorithm"] == "GOOG4-RSA-SHA256"
    assert query["X-Goog-SignedHeaders"] == "host"
    canonical_query = "&".join(sorted(f"{quote(k, safe='~')}={quote(v, safe='~')}" for k, v in query.items()))
    canonical_request = "\n".join(
        [method, parts.path, canonical_query, f"host:{parts.netloc}\n", "host", "UNSIGNED-PAYLOAD"]
    )
    email, credential_scope = query["X-Goog-Credential"].split("/", 1)
    string_to_sign = "\n".join(
        [
            "GOOG4-RSA-SHA256",
            query["X-Goog-Date"],
            credential_scope,
            hashlib.sha256(canonical_request.encode()).hexdigest(),
        ]
    )
    public_key.verify(signature, string_to_sign.encode(), padding.PKCS1v15(), hashes.SHA256())
    return email


def test_generate_local_signing_key_writes_a_private_service_account_key(tmp_path):
    key_path = generate_local_signing_key(tmp_path / ".local" / "signer.json", project="demo-project")

    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    key = json.loads(key_path.read_text())
    assert key["type"] == "service_account"
    assert key["client_email"] == "local-signer@demo-project.iam.gserviceaccount.com"
    private_key = load_pem_private_key(key["private_key"].encode(), password=None)
    assert isinstance(private_key, rsa.RSAPrivateKey)
    assert private_key.key_size == 2048
    credentials = load_service_account_key(key_path)
    assert credentials.service_account_email == key["client_email"]
    assert list(tmp_path.joinpath(".local").iterdir()) == [key_path]  # no temporary file left behind


@pytest.mark.emulators
def test_local_signing_key_signs_v4_urls_that_fetch_the_object(emulator_env, gcs_server, tmp_path):
    project = emulator_env["GOOGLE_CLOUD_PROJECT"]
    bucket_name = f"test-exports-{uuid.uuid4().hex[:8]}"
    create_bucket(gcs_server, project, bucket_name)
    key_path = generate_local_signing_key(tmp_path / "signer.json", project=project)
    signer = load_service_account_key(key_path)
    with storage_client(project) as client:
        blob = client.bucket(bucket_name).blob("exports/person.json")
        blob.upload_from_string(b'{"name": "x"}', if_generation_match=0, timeout=10)

        signed_url = blob.generate_signed_url(
            version="v4",
            expiration=timedelta(minutes=10),
            method="GET",
            credentials=signer,
            api_access_endpoint=gcs_server,
        )

    response = requests.get(signed_url, timeout=10)
    assert response.status_code == 200
    assert response.content == b'{"name": "x"}'
    assert signed_url.startswith(f"{gcs_server}/{bucket_name}/exports/person.json?")
    private_key = load_pem_private_key(
        json.loads(key_path.read_text())["private_key"].encode(), password=None
    )
    assert isinstance(private_key, rsa.RSAPrivateKey)
    assert verify_v4_signature(signed_url, private_key.public_key()) == signer.service_account_email


# --- ManagedProcess: start, readiness, stop ---------------------------------------------------------


def python_command(code: str) -> list[str]:
    return [sys.executable, "-c", textwrap.dedent(code)]


def wait_for_file(path: Path, timeout_seconds: float = WAIT_SECONDS) -> str:
    deadline = time.monotonic() + timeout_seconds
    while time.monotonic() < deadline:
        if path.exists() and (text := path.read_text()):
            return text
        time.sleep(0.05)
    raise AssertionError(f"{path} not written within {timeout_seconds} s")


def pid_is_gone(pid: int, timeout_seconds: float = WAIT_SECONDS) -> bool:
    """Whether `pid` has exited (gone, or a zombie waiting for its new parent to reap it)."""
    deadline = time.monotonic() + timeout_seconds
    while time.monotonic() < deadline:
        try:
            stat_line = Path(f"/proc/{pid}/stat").read_text()
        except FileNotFoundError:
            return True
        if stat_line[stat_line.rindex(")") + 2] == "Z":
            return True
        time.sleep(0.05)
    return False


def start_unready(tmp_path: Path, code: str) -> ManagedProcess:
    """A process that serves nothing: started without waiting, readiness is not the point."""
    return start_process(
        "subject",
        python_command(code),
        port=free_port(),
        log_dir=tmp_path,
        ready_url="http://127.0.0.1:1/",
        ready_timeout_seconds=1,
        wait=False,
    )


def test_managed_process_stop_ends_the_process_and_its_group(tmp_path):
    child_pid_file = tmp_path / "child.pid"
    process = start_unready(
        tmp_path,
        f"""
        import pathlib, subprocess, sys, time
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
        pathlib.Path({str(child_pid_file)!r}).write_text(str(child.pid))
        time.sleep(300)
        """,
    )
    try:
        child_pid = int(wait_for_file(child_pid_file))
        assert process.is_running()

        process.stop(timeout_seconds=10)

        assert not process.is_running()
        assert process.popen is not None
        assert process.popen.returncode == -signal.SIGTERM
        assert pid_is_gone(child_pid)
    finally:
        process.stop()


def test_managed_process_stop_kills_a_process_that_ignores_sigterm(tmp_path):
    ready_file = tmp_path / "ready"
    process = start_unready(
        tmp_path,
        f"""
        import pathlib, signal, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        pathlib.Path({str(ready_file)!r}).write_text("ready")
        time.sleep(300)
        """,
    )
    try:
        wait_for_file(ready_file)
        started = time.monotonic()

        process.stop(timeout_seconds=0.5)

        assert process.popen is not None
        assert process.popen.returncode == -signal.SIGKILL
        assert time.monotonic() - started < 5
    finally:
        process.stop()


def test_recorded_process_is_stopped_only_while_its_identity_matches(tmp_path):
    process = start_unready(tmp_path, "import time; time.sleep(300)")
    try:
        record = process.to_state()
        impostor = ManagedProcess.from_state({**record, "start_ticks": record["start_ticks"] + 1})

        impostor.stop(timeout_seconds=1)
        assert process.is_running()  # a pid whose start time differs is somebody else's: untouched

        ManagedProcess.from_state(json.loads(json.dumps(record))).stop(timeout_seconds=10)
        assert not process.is_running()
    finally:
        process.stop()


def test_start_process_reports_an_early_exit_with_the_log_tail(tmp_path):
    with pytest.raises(ProcessStartError, match=r"exited \(code 3\)[\s\S]*boom-marker"):
        start_process(
            "doomed",
            python_command("print('boom-marker', flush=True); raise SystemExit(3)"),
            port=free_port(),
            log_dir=tmp_path,
            ready_url="http://127.0.0.1:1/",
            ready_timeout_seconds=WAIT_SECONDS,
        )


def test_start_process_stops_a_process_that_never_becomes_ready(tmp_path):
    pid_file = tmp_path / "pid"
    code = f"""
        import os, pathlib, time
        pathlib.Path({str(pid_file)!r}).write_text(str(os.getpid()))
        time.sleep(300)
        """

    with pytest.raises(ProcessStartError, match="did not answer"):
        start_process(
            "silent",
            python_command(code),
            port=free_port(),
            log_dir=tmp_path,
            ready_url="http://127.0.0.1:1/",
            ready_timeout_seconds=1,
        )

    assert pid_is_gone(int(wait_for_file(pid_file)))


def test_start_process_refuses_a_port_in_use(tmp_path):
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]

        with pytest.raises(PortInUseError, match=f"port {port}"):
            start_process(
                "late",
                python_command("import time; time.sleep(300)"),
                port=port,
                log_dir=tmp_path,
                ready_url=f"http://127.0.0.1:{port}/",
                ready_timeout_seconds=1,
            )


HEALTHZ_SOURCE = """
import os

import functions_framework


@functions_framework.http
def ingress(request):
    if request.path == "/healthz":
        return "ok"
    return os.environ["STACK_TEST_MARKER"]
"""


def test_start_function_serves_the_target_with_the_given_env(tmp_path):
    source = tmp_path / "main.py"
    source.write_text(HEALTHZ_SOURCE)

    process = start_function(
        "ingress", free_port(), {"STACK_TEST_MARKER": "from-env"}, tmp_path / "logs", source=source
    )
    try:
        assert process.ready_seconds is not None
        assert requests.get(f"{process.url}/healthz", timeout=5).text == "ok"
        assert requests.get(f"{process.url}/anything", timeout=5).text == "from-env"
        assert process.log_path == tmp_path / "logs" / "ingress.log"
    finally:
        process.stop()
    assert not process.is_running()
    assert "STACK_TEST_MARKER" not in os.environ


def test_stopping_twice_is_harmless(tmp_path):
    process = start_unready(tmp_path, "import time; time.sleep(300)")
    process.stop()
    process.stop()
    assert not process.is_running()


# --- the whole stack, with stub services ------------------------------------------------------------

STUB_SERVICES_SOURCE = """
import os

import functions_framework


@functions_framework.http
def ingress(request):
    return "ingress ok"


@functions_framework.http
def collector(request):
    if request.method == "POST":
        with open(os.environ["STUB_RECORD_FILE"], "a") as record:
            record.write(request.path + "\\n")
    return "collector ok"
"""


def stub_stack_config(tmp_path: Path, **overrides: Any) -> StackConfig:
    source = tmp_path / "stub_main.py"
    source.write_text(STUB_SERVICES_SOURCE)
    extra_env = {"STUB_RECORD_FILE": str(tmp_path / "collector-posts.txt")}
    return StackConfig(
        state_dir=tmp_path / "stack",
        ports=StackPorts.free(),
        function_source=source,
        extra_env=extra_env,
        **overrides,
    )


def start_stack_or_skip(config: StackConfig) -> LocalStack:
    try:
        return start_stack(config)
    except EmulatorUnavailable as reason:
        pytest.skip(f"local Google Cloud stand-in unavailable: {reason}")


@pytest.mark.emulators
@pytest.mark.timeout(120)
def test_start_stack_runs_every_component_wires_pubsub_and_stops(tmp_path, monkeypatch):
    seeded: list[LocalStack] = []
    config = stub_stack_config(tmp_path, seed=seeded.append, lease_seconds=30)

    stack = start_stack_or_skip(config)
    with stack:
        assert seeded == [stack]
        assert list(stack.processes) == [
            "pubsub-emulator",
            "firestore-emulator",
            "fake-gcs-server",
            "fake-mineos",
            "collector",
            "ingress",
        ]
        assert all(process.is_running() for process in stack.processes.values())
        assert requests.get(f"{stack.ingress_url}/healthz", timeout=5).text == "ingress ok"
        me = requests.get(
            f"{stack.fake_mineos_url}/api/Test/Me",
            headers={"Authorization": f"Bearer {stack.api_key}"},
            timeout=5,
        )
        assert me.status_code == 200
        env = stack.service_env
        assert env["GOOGLE_CLOUD_PROJECT"] == "mineos-local"
        assert env["MINEOS_API_BASE_URL"] == stack.fake_mineos_url
        assert env["STORAGE_EMULATOR_HOST"] == stack.storage_url
        assert env["LEASE_SECONDS"] == "30"
        assert "MINEOS_BACKOFF_SECONDS" not in env
        assert Path(env["URL_SIGNING_KEY_FILE"]).is_file()

        env_file_text = stack.env_file.read_text()
        assert stat.S_IMODE(stack.env_file.stat().st_mode) == 0o600
        assert f"export INGRESS_URL={stack.ingress_url}\n" in env_file_text
        assert f"export MINE_SIGNING_SECRETS={shlex.quote(stack.signing_secret)}\n" in env_file_text
        state = json.loads(stack.state_file.read_text())
        assert [record["pid"] for record in state["processes"]] == [p.pid for p in stack.processes.values()]

        with storage_client(stack.config.project, api_endpoint=stack.storage_url) as client:
            assert client.bucket("mineos-exports-local").exists(timeout=10)

        # A message on the requests topic reaches the collector through the push subscription.
        monkeypatch.setenv("PUBSUB_EMULATOR_HOST", stack.pubsub_host)
        publish(stack.config.project, "mineos-requests", b"to the collector")
        record_file = Path(config.extra_env["STUB_RECORD_FILE"])
        assert wait_for_file(record_file).splitlines()[0] == "/requests"

    assert not any(process.is_running() for process in stack.processes.values())
    assert not stack.state_file.exists()
    assert not stack.env_file.exists()
    assert not stack.signing_key_file.exists()


@pytest.mark.emulators
@pytest.mark.timeout(120)
def test_start_stack_failure_stops_what_it_started_and_shows_the_log(tmp_path):
    config = stub_stack_config(tmp_path)
    config.function_source.write_text(
        STUB_SERVICES_SOURCE + "\nraise RuntimeError('stub-refuses-to-start')\n"
    )

    with pytest.raises(StackStartError, match="stub-refuses-to-start"):
        start_stack_or_skip(config)

    assert all(port_is_free(port) for port in asdict(config.ports).values())
    assert not (config.state_dir / "state.json").exists()


def test_start_stack_refuses_ports_in_use(tmp_path):
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        config = stub_stack_config(tmp_path)
        config.ports = replace(config.ports, ingress=listener.getsockname()[1])

        with pytest.raises(StackStartError, match=f"ingress {config.ports.ingress}"):
            start_stack(config)


@pytest.mark.emulators
@pytest.mark.timeout(120)
def test_stack_cli_up_status_down(tmp_path):
    config = stub_stack_config(tmp_path)
    port_flags = [f"--{name.replace('_', '-')}-port={port}" for name, port in asdict(config.ports).items()]
    state_flag = f"--state-dir={config.state_dir}"
    env = {**os.environ, **config.extra_env}

    def stack_command(*arguments: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "infra.stack", *arguments],
            capture_output=True,
            text=True,
            timeout=90,
            env=env,
            cwd=Path(__file__).resolve().parents[1],
            check=False,
        )

    try:
        up = stack_command("up", state_flag, *port_flags, f"--source={config.function_source}")
        if up.returncode == EXIT_UNAVAILABLE:
            pytest.skip(up.stderr)
        assert up.returncode == 0, up.stderr
        assert "ingress              ready in" in up.stdout
        pids = [
            record["pid"] for record in json.loads((config.state_dir / "state.json").read_text())["processes"]
        ]
        assert len(pids) == 6

        status = stack_command("status", state_flag)
        assert status.returncode == 0, status.stdout
        assert status.stdout.count("running") == 6

        down = stack_command("down", state_flag)
        assert down.returncode == 0, down.stdout
        assert down.stdout.count("stopped") == 6
        assert all(pid_is_gone(pid) for pid in pids)
        assert stack_command("status", state_flag).returncode == 1
    finally:
        stop_recorded_stack(config.state_dir)
