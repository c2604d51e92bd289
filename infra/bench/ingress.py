"""Ingress throughput: signed Copy requests through the real ingress (signature, validation, ledger,
publish confirmed by the Pub/Sub emulator) against a functions-framework handler that does nothing,
at 1, 8 and 32 concurrent clients, side by side in one run."""

import os
import secrets
import tempfile
from pathlib import Path

from google.cloud import pubsub_v1  # type: ignore[attr-defined]

from infra.bench.wrk import PreparedRequest, WrkResult, run_wrk
from infra.emulators import (
    free_port,
    start_firestore_emulator,
    start_function,
    start_pubsub_emulator,
    stop_all,
)
from infra.fake_mineos import Person, build_call
from mineos_integration.contract import Action
from mineos_integration.signature import sign

PROJECT = "bench-ingress"
TOPIC = "mineos-requests"
BARE_SOURCE = Path(__file__).with_name("bare.py")


def prepared_requests(secret: str, count: int) -> list[PreparedRequest]:
    """Distinct signed Copy calls (new traceIds), as MineOS would send them."""
    person = Person(name="Bench Person", email="bench@example.com", internal_id="bench-1")
    calls = (build_call(Action.COPY, person, integration_id="bench") for _ in range(count))
    return [PreparedRequest("/copy", call.body.decode(), sign(call.body, secret)) for call in calls]


def run(seconds: int = 10, client_counts: tuple[int, ...] = (1, 8, 32)) -> list[tuple[WrkResult, WrkResult]]:
    secret = secrets.token_urlsafe(32)
    with tempfile.TemporaryDirectory(prefix="bench-ingress-") as folder:
        log_dir = Path(folder)
        processes = []
        try:
            pubsub = start_pubsub_emulator(free_port(), log_dir)
            processes.append(pubsub)
            firestore = start_firestore_emulator(free_port(), log_dir)
            processes.append(firestore)
            env = {
                "PUBSUB_EMULATOR_HOST": pubsub.host,
                "FIRESTORE_EMULATOR_HOST": firestore.host,
                "GOOGLE_CLOUD_PROJECT": PROJECT,
                "MINE_SIGNING_SECRETS": secret,
                "REQUESTS_TOPIC": TOPIC,
                "LOG_LEVEL": "WARNING",
                "THREADS": os.environ.get("BENCH_THREADS", "64"),
                "WORKERS": os.environ.get("BENCH_WORKERS", "1"),
            }
            os.environ["PUBSUB_EMULATOR_HOST"] = pubsub.host  # this benchmark process's own client
            publisher = pubsub_v1.PublisherClient()
            publisher.create_topic(name=publisher.topic_path(PROJECT, TOPIC), timeout=10)
            bare = start_function("bare", free_port(), {}, log_dir, source=BARE_SOURCE, name="bare")
            processes.append(bare)
            ingress = start_function("ingress", free_port(), env, log_dir)
            processes.append(ingress)
            requests = prepared_requests(secret, 20_000)
            results = []
            for clients in client_counts:
                baseline = run_wrk(bare.url + "/copy", requests, clients, seconds)
                measured = run_wrk(ingress.url + "/copy", requests, clients, seconds)
                results.append((baseline, measured))
            return results
        finally:
            stop_all(processes)


def report(results: list[tuple[WrkResult, WrkResult]]) -> str:
    lines = [
        "ingress: signed Copy requests, publish confirmed by the Pub/Sub emulator, vs a bare 202 handler",
        f"{'clients':>7} | {'bare req/s':>10} {'p50 ms':>7} {'p99 ms':>7} | "
        f"{'ingress req/s':>13} {'p50 ms':>7} {'p99 ms':>7} {'errors':>6} | {'ratio':>5}",
    ]
    for baseline, measured in results:
        lines.append(
            f"{measured.clients:>7} | {baseline.requests_per_second:>10.0f} {baseline.p50_ms:>7.1f} "
            f"{baseline.p99_ms:>7.1f} | {measured.requests_per_second:>13.0f} {measured.p50_ms:>7.1f} "
            f"{measured.p99_ms:>7.1f} {measured.errors:>6} | "
            f"{measured.requests_per_second / baseline.requests_per_second:>5.2f}"
        )
    return "\n".join(lines)
