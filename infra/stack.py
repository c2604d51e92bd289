"""The whole local stack: emulators, fake-gcs-server, the fake MineOS, the collector and the ingress.

    python -m infra.stack up        # start everything; writes .local/stack/{state.json,env,logs/}
    source .local/stack/env         # talk to it from a shell (PUBSUB_EMULATOR_HOST, INGRESS_URL, ...)
    python -m infra.stack status
    python -m infra.stack down      # stops exactly the processes `up` recorded

The demo and the end-to-end tests start the same stack in-process:

    with start_stack(StackConfig(state_dir=tmp_path, ports=StackPorts.free())) as stack:
        ...  # stack.ingress_url, stack.client_env, stack.processes["collector"].log_tail()

Logs are under <state dir>/logs/<component>.log, overwritten by each `up`.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import secrets
import shlex
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import requests

from infra.emulators import (
    FUNCTION_READY_TIMEOUT_SECONDS,
    LOCAL_HOST,
    REPO_ROOT,
    SERVICES_SOURCE,
    EmulatorUnavailable,
    ManagedProcess,
    PubsubResources,
    create_bucket,
    create_pubsub_resources,
    free_port,
    generate_local_signing_key,
    port_is_free,
    start_fake_gcs,
    start_firestore_emulator,
    start_function,
    start_process,
    start_pubsub_emulator,
    stop_all,
    wait_until_all_ready,
)

DEFAULT_STATE_DIR = REPO_ROOT / ".local" / "stack"
LOCAL_PROJECT = "mineos-local"
STATE_FILE_NAME = "state.json"
ENV_FILE_NAME = "env"
SIGNING_KEY_FILE_NAME = "url-signing-key.json"

EXIT_UNAVAILABLE = 3  # `up` exit code when the Cloud SDK, Java or fake-gcs-server is missing

ProgressReporter = Callable[[str, float], None]


class StackStartError(RuntimeError):
    """The stack could not start; everything it had started is stopped again."""


@dataclass(frozen=True)
class StackPorts:
    """The port of every component (the defaults are the fixed ports of `python -m infra.stack up`)."""

    pubsub: int = 8085
    firestore: int = 8080
    gcs: int = 4443
    fake_mineos: int = 8090
    ingress: int = 8081
    collector: int = 8082

    @classmethod
    def free(cls) -> StackPorts:
        """Ports nothing listens on now: for stacks started by tests, beside anything else running."""
        return cls(**{port_field.name: free_port() for port_field in fields(cls)})


@dataclass
class StackConfig:
    """What to start and how; `extra_env` adds or overrides service settings without code changes."""

    state_dir: Path = DEFAULT_STATE_DIR
    ports: StackPorts = field(default_factory=StackPorts)
    project: str = LOCAL_PROJECT
    requests_topic: str = "mineos-requests"
    export_bucket: str = "mineos-exports-local"
    # Relative paths are taken from the repository root, wherever the stack is started from.
    data_map_path: str = "infra/sample/datamap.yaml"
    log_level: str = "INFO"
    lease_seconds: int | None = None
    mineos_backoff_seconds: float | None = None
    max_delivery_attempts: int = 5
    # (minimum, maximum) redelivery backoff; None drops the retry policy, which makes the emulator
    # redeliver every ~1 s (dead-lettering in ~5 s instead of ~15 s): see create_pubsub_resources.
    retry_backoff_seconds: tuple[int, int] | None = (1, 60)
    extra_pull_subscription: str | None = None
    extra_env: dict[str, str] = field(default_factory=dict)
    function_source: Path = SERVICES_SOURCE
    seed: Callable[[LocalStack], None] | None = None


@dataclass
class LocalStack:
    """A running stack: its processes (in start order), the services' environment, and its URLs."""

    config: StackConfig
    processes: dict[str, ManagedProcess]
    service_env: dict[str, str]
    pubsub: PubsubResources
    signing_key_file: Path

    @property
    def ingress_url(self) -> str:
        return self.processes["ingress"].url

    @property
    def collector_url(self) -> str:
        return self.processes["collector"].url

    @property
    def fake_mineos_url(self) -> str:
        return self.processes["fake-mineos"].url

    @property
    def pubsub_host(self) -> str:
        return self.processes["pubsub-emulator"].host

    @property
    def firestore_host(self) -> str:
        return self.processes["firestore-emulator"].host

    @property
    def storage_url(self) -> str:
        return self.processes["fake-gcs-server"].url

    @property
    def signing_secret(self) -> str:
        """The secret the fake MineOS signs with and the ingress verifies."""
        return self.service_env["MINE_SIGNING_SECRETS"]

    @property
    def api_key(self) -> str:
        """The Bearer key the fake MineOS accepts from the collector."""
        return self.service_env["MINEOS_API_KEY"]

    @property
    def client_env(self) -> dict[str, str]:
        """Everything a shell or test needs to talk to the stack: the services' settings plus URLs."""
        return {
            **self.service_env,
            "INGRESS_URL": self.ingress_url,
            "COLLECTOR_URL": self.collector_url,
            "FAKE_MINEOS_URL": self.fake_mineos_url,
        }

    def use_emulators(self) -> str:
        """Point this process's Google clients at the stack's emulators; returns the project id."""
        os.environ.update({name: value for name, value in self.client_env.items() if name.endswith("_HOST")})
        return self.config.project

    @property
    def state_file(self) -> Path:
        return self.config.state_dir / STATE_FILE_NAME

    @property
    def env_file(self) -> Path:
        return self.config.state_dir / ENV_FILE_NAME

    def stop(self) -> None:
        """Stop every process of the stack, last started first, and remove its state and secrets."""
        errors = stop_all(list(self.processes.values()))
        _remove_state_files(self.config.state_dir)
        if errors:
            raise RuntimeError("some stack processes did not stop: " + "; ".join(errors))

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def start_stack(config: StackConfig, progress: ProgressReporter | None = None) -> LocalStack:
    """Start the stack in dependency order and wait until every part answers.

    `progress(name, seconds)` is called as each component becomes ready.

    Raises:
        StackStartError: a port is taken, a stack already runs from `config.state_dir`, or a component
            failed (its log tail is in the message); everything started is stopped again.
        EmulatorUnavailable: the Cloud SDK, Java or fake-gcs-server is not installed.
    """
    report = progress or (lambda name, seconds: None)
    _refuse_running_stack(config.state_dir)
    _check_ports(config.ports)
    config.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    log_dir = config.state_dir / "logs"
    state_file = config.state_dir / STATE_FILE_NAME
    started: list[ManagedProcess] = []
    stack_started_at = time.monotonic()
    try:
        signing_key_file = generate_local_signing_key(
            config.state_dir / SIGNING_KEY_FILE_NAME, config.project
        )
        api_key = secrets.token_urlsafe(32)

        # The stand-ins do not depend on each other: launch them together, then wait for each.
        ports = config.ports
        launches: list[Callable[[], ManagedProcess]] = [
            lambda: start_pubsub_emulator(ports.pubsub, log_dir, wait=False),
            lambda: start_firestore_emulator(ports.firestore, log_dir, wait=False),
            lambda: start_fake_gcs(ports.gcs, log_dir, wait=False),
            lambda: _start_fake_mineos(ports.fake_mineos, api_key, log_dir),
        ]
        _launch_and_wait(launches, started, state_file, report)
        processes = {process.name: process for process in started}

        service_env = _service_env(config, processes, api_key, signing_key_file)
        step_started_at = time.monotonic()
        collector_url = f"http://{LOCAL_HOST}:{ports.collector}"
        pubsub_resources = create_pubsub_resources(
            config.project,
            config.requests_topic,
            collector_url,
            max_delivery_attempts=config.max_delivery_attempts,
            retry_backoff_seconds=config.retry_backoff_seconds,
            extra_pull_subscription=config.extra_pull_subscription,
            emulator_host=processes["pubsub-emulator"].host,
        )
        report("pubsub-resources", time.monotonic() - step_started_at)
        step_started_at = time.monotonic()
        create_bucket(processes["fake-gcs-server"].url, config.project, config.export_bucket)
        report("exports-bucket", time.monotonic() - step_started_at)

        # The services start last, so they find their topic, bucket and MineOS in place.
        source = config.function_source
        _launch_and_wait(
            [
                lambda: start_function(
                    "collector", ports.collector, service_env, log_dir, source=source, wait=False
                ),
                lambda: start_function(
                    "ingress", ports.ingress, service_env, log_dir, source=source, wait=False
                ),
            ],
            started,
            state_file,
            report,
        )
        stack = LocalStack(
            config=config,
            processes={process.name: process for process in started},
            service_env=service_env,
            pubsub=pubsub_resources,
            signing_key_file=signing_key_file,
        )
        _write_state(stack)
        if config.seed is not None:
            step_started_at = time.monotonic()
            config.seed(stack)
            report("seed", time.monotonic() - step_started_at)
        report("stack", time.monotonic() - stack_started_at)
        return stack
    except BaseException as error:
        stop_errors = stop_all(started)
        _remove_state_files(config.state_dir)
        if isinstance(error, EmulatorUnavailable | KeyboardInterrupt | SystemExit):
            raise
        message = f"the local stack did not start: {error}"
        if stop_errors:
            message += "\nand some processes did not stop: " + "; ".join(stop_errors)
        raise StackStartError(message) from error


def read_state(state_dir: Path = DEFAULT_STATE_DIR) -> dict[str, Any] | None:
    """The state `up` recorded in `state_dir`, or None if there is none."""
    try:
        state: dict[str, Any] = json.loads((state_dir / STATE_FILE_NAME).read_text())
    except FileNotFoundError:
        return None
    return state


def recorded_processes(state_dir: Path = DEFAULT_STATE_DIR) -> list[ManagedProcess]:
    """The processes `up` recorded in `state_dir`, in start order (empty if none)."""
    state = read_state(state_dir)
    if state is None:
        return []
    return [ManagedProcess.from_state(record) for record in state["processes"]]


def stop_recorded_stack(state_dir: Path = DEFAULT_STATE_DIR) -> list[str]:
    """Stop the processes `up` recorded (only those, and only while their identity matches), then
    remove the state; returns one line per process."""
    lines = []
    processes = list(reversed(recorded_processes(state_dir)))
    was_running = [process.is_running() for process in processes]
    for process in processes:
        process.terminate()  # all at once first, so their shutdowns overlap
    for process, running in zip(processes, was_running, strict=True):
        if not running:
            lines.append(f"{process.name:<20} pid {process.pid} was not running")
            continue
        try:
            process.stop()
        except RuntimeError as error:
            lines.append(f"{process.name:<20} pid {process.pid} NOT stopped: {error}")
            continue
        lines.append(f"{process.name:<20} pid {process.pid} stopped")
    _remove_state_files(state_dir)
    return lines


def _launch_and_wait(
    launches: Sequence[Callable[[], ManagedProcess]],
    started: list[ManagedProcess],
    state_file: Path,
    report: ProgressReporter,
) -> None:
    launched = []
    for launch in launches:
        process = launch()
        started.append(process)  # recorded at once, so a later failure stops it too
        launched.append(process)
    # On disk before waiting too: if this command is killed mid-start, `down` still finds them.
    _write_private_file(
        state_file, json.dumps({"processes": [p.to_state() for p in started]}, indent=2) + "\n"
    )
    wait_until_all_ready(
        launched, on_ready=lambda process: report(process.name, process.ready_seconds or 0.0)
    )


def _start_fake_mineos(port: int, api_key: str, log_dir: Path) -> ManagedProcess:
    command = [sys.executable, "-m", "infra.fake_mineos", "serve", "--host", LOCAL_HOST, "--port", str(port)]
    return start_process(
        "fake-mineos",
        [*command, f"--api-key={api_key}"],  # "=": a key may start with "-"
        port=port,
        log_dir=log_dir,
        ready_url=f"http://{LOCAL_HOST}:{port}/api/Test/Me",
        ready_headers={"Authorization": f"Bearer {api_key}"},
        ready_timeout_seconds=FUNCTION_READY_TIMEOUT_SECONDS,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        cwd=REPO_ROOT,  # `-m infra.fake_mineos` imports from the repository root
        wait=False,
    )


def _service_env(
    config: StackConfig, processes: Mapping[str, ManagedProcess], api_key: str, signing_key_file: Path
) -> dict[str, str]:
    data_map_path = Path(config.data_map_path)
    env = {
        "GOOGLE_CLOUD_PROJECT": config.project,
        "PUBSUB_EMULATOR_HOST": processes["pubsub-emulator"].host,
        "FIRESTORE_EMULATOR_HOST": processes["firestore-emulator"].host,
        "STORAGE_EMULATOR_HOST": processes["fake-gcs-server"].url,
        "MINE_SIGNING_SECRETS": secrets.token_urlsafe(32),
        # The HMAC key of the data map's `hash` anonymisation: a per-stack local secret like the others.
        "ANONYMISATION_KEY": secrets.token_urlsafe(32),
        "REQUESTS_TOPIC": config.requests_topic,
        "MINEOS_API_BASE_URL": processes["fake-mineos"].url,
        "MINEOS_API_KEY": api_key,
        "EXPORT_BUCKET": config.export_bucket,
        "URL_SIGNING_KEY_FILE": str(signing_key_file),
        "DATA_MAP_PATH": str(data_map_path if data_map_path.is_absolute() else REPO_ROOT / data_map_path),
        "LOG_LEVEL": config.log_level,
    }
    if config.lease_seconds is not None:
        env["LEASE_SECONDS"] = str(config.lease_seconds)
    if config.mineos_backoff_seconds is not None:
        env["MINEOS_BACKOFF_SECONDS"] = str(config.mineos_backoff_seconds)
    return {**env, **config.extra_env}


def _check_ports(ports: StackPorts) -> None:
    by_port: dict[int, list[str]] = {}
    for name, port in asdict(ports).items():
        by_port.setdefault(port, []).append(name)
    shared = {port: names for port, names in by_port.items() if len(names) > 1}
    if shared:
        raise StackStartError(f"components share ports: {shared}")
    taken = [f"{name} {port}" for name, port in asdict(ports).items() if not port_is_free(port)]
    if taken:
        raise StackStartError(
            f"ports already in use: {', '.join(taken)} (another stack? `python -m infra.stack status`; "
            "or choose others with --<name>-port)"
        )


def _refuse_running_stack(state_dir: Path) -> None:
    running = [process for process in recorded_processes(state_dir) if process.is_running()]
    if running:
        pids = ", ".join(f"{process.name} {process.pid}" for process in running)
        raise StackStartError(f"a stack recorded in {state_dir} is still running ({pids}); stop it first")


def _write_state(stack: LocalStack) -> None:
    state = {
        "started_at": datetime.now(UTC).isoformat(),
        "project": stack.config.project,
        "processes": [process.to_state() for process in stack.processes.values()],
        "urls": {name: process.url for name, process in stack.processes.items()},
        "pubsub": asdict(stack.pubsub),
        "env_file": str(stack.env_file),
    }
    _write_private_file(stack.state_file, json.dumps(state, indent=2) + "\n")
    exports = "".join(
        f"export {name}={shlex.quote(value)}\n" for name, value in sorted(stack.client_env.items())
    )
    # The env file holds the stack's secrets (signing secret, API key): owner-only, like the key file.
    _write_private_file(stack.env_file, "# written by `python -m infra.stack up`; local secrets\n" + exports)


def _write_private_file(path: Path, text: str) -> None:
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as file:
        os.fchmod(file.fileno(), 0o600)
        file.write(text)


def _remove_state_files(state_dir: Path) -> None:
    # Logs stay for a post-mortem; the state and the per-stack secrets go.
    for name in (STATE_FILE_NAME, ENV_FILE_NAME, SIGNING_KEY_FILE_NAME):
        (state_dir / name).unlink(missing_ok=True)


# --- CLI ------------------------------------------------------------------------------------------


def _print_ready(name: str, seconds: float) -> None:
    print(f"{name:<20} ready in {seconds:6.2f} s", flush=True)


def _up(arguments: argparse.Namespace) -> int:
    ports = StackPorts(
        **{
            port_field.name: getattr(arguments, f"{port_field.name}_port")
            for port_field in fields(StackPorts)
        }
    )
    config = StackConfig(
        state_dir=arguments.state_dir,
        ports=ports,
        project=arguments.project,
        data_map_path=arguments.data_map_path,
        log_level=arguments.log_level,
        lease_seconds=arguments.lease_seconds,
        mineos_backoff_seconds=arguments.mineos_backoff_seconds,
        max_delivery_attempts=arguments.max_delivery_attempts,
        extra_pull_subscription=arguments.extra_pull_subscription,
        extra_env=dict(arguments.env),
        function_source=arguments.source,
        seed=arguments.seed,
    )
    try:
        stack = start_stack(config, progress=_print_ready)
    except EmulatorUnavailable as reason:
        print(f"error: a local Google Cloud stand-in is unavailable: {reason}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    except StackStartError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    for name, process in stack.processes.items():
        print(f"{name:<20} pid {process.pid:<8} {process.url}")
    print(f"logs in {config.state_dir / 'logs'}; `source {stack.env_file}` to talk to the stack; ", end="")
    state_dir_flag = "" if config.state_dir == DEFAULT_STATE_DIR else f" --state-dir {config.state_dir}"
    print(f"`python -m infra.stack down{state_dir_flag}` stops it")
    return 0


def _down(arguments: argparse.Namespace) -> int:
    if read_state(arguments.state_dir) is None:
        print(f"no stack recorded in {arguments.state_dir}; nothing to stop")
        return 0
    lines = stop_recorded_stack(arguments.state_dir)
    print("\n".join(lines))
    return 1 if any("NOT stopped" in line for line in lines) else 0


def _status(arguments: argparse.Namespace) -> int:
    processes = recorded_processes(arguments.state_dir)
    if not processes:
        print(f"no stack recorded in {arguments.state_dir}")
        return 1
    all_running = True
    with requests.Session() as session:
        session.trust_env = False
        for process in processes:
            running = process.is_running()
            all_running = all_running and running
            answer = "-"
            if running:
                try:
                    answer = str(session.get(process.ready_url, timeout=2).status_code)
                except requests.RequestException as error:
                    answer = type(error).__name__
            state = "running" if running else "NOT RUNNING"
            print(f"{process.name:<20} {state:<12} pid {process.pid:<8} {process.url}  probe: {answer}")
    return 0 if all_running else 1


def _seed_function(text: str) -> Callable[[LocalStack], None]:
    module_name, separator, function_name = text.partition(":")
    if not separator:
        raise argparse.ArgumentTypeError(f"expected MODULE:FUNCTION, got {text!r}")
    try:
        seed: Callable[[LocalStack], None] = getattr(importlib.import_module(module_name), function_name)
    except (ImportError, AttributeError) as error:
        raise argparse.ArgumentTypeError(f"cannot load {text!r}: {error}") from error
    return seed


def _key_value(text: str) -> tuple[str, str]:
    name, separator, value = text.partition("=")
    if not separator or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    return name, value


def _argument_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m infra.stack", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    for name, run, help_text in (
        ("up", _up, "start the stack and return (its processes keep running)"),
        ("down", _down, "stop the processes `up` recorded"),
        ("status", _status, "show whether the recorded processes run and answer"),
    ):
        command = commands.add_parser(name, help=help_text)
        command.add_argument("--state-dir", type=Path, default=DEFAULT_STATE_DIR, help="default: %(default)s")
        command.set_defaults(run=run)
        if name != "up":
            continue
        defaults = StackConfig()
        for port_field in fields(StackPorts):
            flag = f"--{port_field.name.replace('_', '-')}-port"
            command.add_argument(flag, type=int, default=getattr(defaults.ports, port_field.name))
        command.add_argument("--project", default=defaults.project)
        command.add_argument("--data-map-path", default=defaults.data_map_path)
        command.add_argument("--log-level", default=defaults.log_level)
        command.add_argument("--lease-seconds", type=int)
        command.add_argument("--mineos-backoff-seconds", type=float)
        command.add_argument("--max-delivery-attempts", type=int, default=defaults.max_delivery_attempts)
        command.add_argument(
            "--extra-pull-subscription", help="also a pull subscription on the requests topic"
        )
        command.add_argument(
            "--env",
            type=_key_value,
            action="append",
            default=[],
            metavar="NAME=VALUE",
            help="extra service setting",
        )
        command.add_argument(
            "--seed",
            type=_seed_function,
            metavar="MODULE:FUNCTION",
            help="called with the LocalStack once up",
        )
        command.add_argument(
            "--source", type=Path, default=SERVICES_SOURCE, help="functions-framework source of both services"
        )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code."""
    arguments = _argument_parser().parse_args(argv)
    run: Callable[[argparse.Namespace], int] = arguments.run
    return run(arguments)


if __name__ == "__main__":
    sys.exit(main())
