"""A real, throw-away PostgreSQL server for tests: `initdb` into a temporary directory, `pg_ctl start`
on a free 127.0.0.1 port, `pg_ctl stop -m fast` at the end.

Use the session fixture by importing it into a test module (the import registers it):

    from tests.postgres import postgres_server_fixture  # noqa: F401

and ask for `postgres_server` in a test or fixture. Without the server binaries the tests that need it
skip, saying what to install. `MINEOS_TEST_POSTGRES_URL` (a SQLAlchemy URL) points the tests at an
existing server instead, e.g. a CI service container.

PostgreSQL refuses to run as root, so when the tests run as root (a fresh clone in a container, CI) the
cluster belongs to the `postgres` user that the Debian/Ubuntu `postgresql` package creates, and
`initdb`/`pg_ctl` run through `runuser -u postgres --`. The directory is made under /tmp (not pytest's
tmp_path, which only root can enter) and handed to that user.
"""

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

POSTGRES_URL_ENV = "MINEOS_TEST_POSTGRES_URL"
POSTGRES_BIN_DIR_ENV = "POSTGRES_BIN_DIR"
SUPERUSER = "mineos_test"
START_TIMEOUT_SECONDS = 30
STOP_TIMEOUT_SECONDS = 30
INSTALL_HINT = "install the server with `apt-get install postgresql` (or set POSTGRES_BIN_DIR)"


@dataclass(frozen=True)
class PostgresServer:
    url: str  # SQLAlchemy URL of a database the tests may create tables in


def find_bin_dir() -> Path | None:
    """The directory holding initdb and pg_ctl: $POSTGRES_BIN_DIR, Debian's layout, or PATH."""
    candidates: list[Path] = []
    if configured := os.environ.get(POSTGRES_BIN_DIR_ENV):
        candidates.append(Path(configured))
    versioned = Path("/usr/lib/postgresql").glob("*/bin")
    candidates.extend(sorted(versioned, key=lambda path: _major_version(path.parent.name), reverse=True))
    if on_path := shutil.which("initdb"):
        candidates.append(Path(on_path).parent)
    for candidate in candidates:
        if (candidate / "initdb").is_file() and (candidate / "pg_ctl").is_file():
            return candidate
    return None


def _major_version(name: str) -> int:
    return int(name) if name.isdigit() else -1


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _run_as() -> tuple[list[str], pwd.struct_passwd | None]:
    """The command prefix and account that run the server: ourselves, or `postgres` when we are root."""
    if os.geteuid() != 0:
        return [], None
    try:
        account = pwd.getpwnam("postgres")
    except KeyError:
        pytest.skip(
            "running as root and there is no 'postgres' user to own the test cluster; " + INSTALL_HINT
        )
    runuser = shutil.which("runuser")
    if runuser is None:
        pytest.skip("running as root and `runuser` is missing, so initdb cannot run as 'postgres'")
    return [runuser, "-u", "postgres", "--"], account


def _run(command: list[str], timeout_seconds: float) -> None:
    completed = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=timeout_seconds,
        check=False,
        stdin=subprocess.DEVNULL,
        cwd="/",  # the server's account may not be allowed into our working directory
    )
    if completed.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({completed.returncode}):\n{completed.stderr}")


@contextlib.contextmanager
def running_server() -> Iterator[PostgresServer]:
    """Start a private PostgreSQL cluster and stop and remove it on exit."""
    bin_dir = find_bin_dir()
    if bin_dir is None:
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) not found; " + INSTALL_HINT)
    prefix, account = _run_as()
    root = Path(tempfile.mkdtemp(prefix="mineos-pg-", dir="/tmp" if account else None))
    data_dir, socket_dir, log_file = root / "data", root / "socket", root / "server.log"
    socket_dir.mkdir()
    if account is not None:
        for path in (root, socket_dir):
            os.chown(path, account.pw_uid, account.pw_gid)
    started = False
    try:
        _run(
            [
                *prefix,
                str(bin_dir / "initdb"),
                "--pgdata",
                str(data_dir),
                "--username",
                SUPERUSER,
                "--auth",
                "trust",
                "--encoding",
                "UTF8",
                "--no-locale",
                "--no-sync",
            ],
            timeout_seconds=120,
        )
        port = _free_port()
        server_options = (
            f"-c listen_addresses=127.0.0.1 -p {port} -k {socket_dir} "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        )
        started = True
        try:
            _run(
                [
                    *prefix,
                    str(bin_dir / "pg_ctl"),
                    "--pgdata",
                    str(data_dir),
                    "--log",
                    str(log_file),
                    "--options",
                    server_options,
                    "--wait",
                    "--timeout",
                    str(START_TIMEOUT_SECONDS),
                    "start",
                ],
                timeout_seconds=START_TIMEOUT_SECONDS + 10,
            )
        except RuntimeError as error:
            server_log = log_file.read_text(errors="replace")[-2000:] if log_file.exists() else ""
            raise RuntimeError(f"{error}\nserver log:\n{server_log}") from None
        yield PostgresServer(url=f"postgresql+psycopg://{SUPERUSER}@127.0.0.1:{port}/postgres")
    finally:
        if started:
            _stop(prefix, bin_dir, data_dir)
        shutil.rmtree(root, ignore_errors=True)


def _stop(prefix: list[str], bin_dir: Path, data_dir: Path) -> None:
    """`pg_ctl stop -m fast`; if that fails, SIGKILL the postmaster this fixture started."""
    command = [*prefix, str(bin_dir / "pg_ctl"), "--pgdata", str(data_dir), "--mode", "fast", "--wait"]
    try:
        _run([*command, "--timeout", str(STOP_TIMEOUT_SECONDS), "stop"], STOP_TIMEOUT_SECONDS + 10)
    except (RuntimeError, subprocess.TimeoutExpired):
        pid_file = data_dir / "postmaster.pid"
        if pid_file.exists():
            with contextlib.suppress(ValueError, ProcessLookupError, IndexError):
                os.kill(int(pid_file.read_text().splitlines()[0]), signal.SIGKILL)
                time.sleep(0.5)


@pytest.fixture(scope="session", name="postgres_server")
def postgres_server_fixture() -> Iterator[PostgresServer]:
    """A PostgreSQL server for the whole test session (or $MINEOS_TEST_POSTGRES_URL's)."""
    if configured_url := os.environ.get(POSTGRES_URL_ENV):
        yield PostgresServer(url=configured_url)
        return
    with running_server() as server:
        yield server
