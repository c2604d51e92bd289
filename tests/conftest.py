"""Shared fixtures: an isolated environment per test, and the local Google Cloud stand-ins, started
once per session on free ports."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from infra.emulators import (
    EmulatorUnavailable,
    ManagedProcess,
    free_port,
    start_fake_gcs,
    start_firestore_emulator,
    start_pubsub_emulator,
)


def _clear_settings_cache() -> None:
    try:
        from mineos_integration.settings import get_settings
    except ImportError:
        return
    get_settings.cache_clear()


@pytest.fixture(autouse=True)
def isolated_environ() -> Iterator[None]:
    """Restore os.environ after each test and drop settings cached from another test's environment."""
    saved_environ = dict(os.environ)
    _clear_settings_cache()
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved_environ)
        _clear_settings_cache()


@contextmanager
def _started_or_skipped(
    start: Callable[[int, Path], ManagedProcess], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ManagedProcess]:
    """Start a stand-in on a free port, stop it on exit; skip the tests if its tools are missing."""
    try:
        process = start(free_port(), tmp_path_factory.mktemp("emulator-logs"))
    except EmulatorUnavailable as reason:
        pytest.skip(f"local Google Cloud stand-in unavailable: {reason}")
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture(scope="session")
def pubsub_emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The Pub/Sub emulator's `127.0.0.1:<port>` (a PUBSUB_EMULATOR_HOST value)."""
    with _started_or_skipped(start_pubsub_emulator, tmp_path_factory) as process:
        yield process.host


@pytest.fixture(scope="session")
def firestore_emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The Firestore emulator's `127.0.0.1:<port>` (a FIRESTORE_EMULATOR_HOST value)."""
    with _started_or_skipped(start_firestore_emulator, tmp_path_factory) as process:
        yield process.host


@pytest.fixture(scope="session")
def gcs_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """fake-gcs-server's `http://127.0.0.1:<port>` (a STORAGE_EMULATOR_HOST value)."""
    with _started_or_skipped(start_fake_gcs, tmp_path_factory) as process:
        yield process.url


@pytest.fixture
def emulator_env(
    monkeypatch: pytest.MonkeyPatch, pubsub_emulator: str, firestore_emulator: str, gcs_server: str
) -> dict[str, str]:
    """Point the Google clients at the stand-ins, under a project id of this test's own.

    The unique project keeps one test's Firestore documents and Pub/Sub topics out of every other
    test's sight, so nothing needs resetting between tests. fake-gcs-server ignores projects: use
    unique bucket names there.
    """
    env = {
        "PUBSUB_EMULATOR_HOST": pubsub_emulator,
        "FIRESTORE_EMULATOR_HOST": firestore_emulator,
        "STORAGE_EMULATOR_HOST": gcs_server,
        "GOOGLE_CLOUD_PROJECT": f"test-{uuid.uuid4().hex[:8]}",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    _clear_settings_cache()
    return env
