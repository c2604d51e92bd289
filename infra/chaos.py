"""Chaos run: N MineOS operations through the local stack while faults are injected at random.

    python -m infra.chaos --operations 1000 --seed 7

Starts the seeded local stack, then plays MineOS at a fixed rate: Copy and Delete operations for the
sample people (found, unknown, kept by law, test calls, missing identifiers, both body shapes). Each
operation may draw faults (seeded): the status API answering 500, 429 or 503, answering slowly, timing
out with or without applying the update; the same request sent again later or several times at once;
its Pub/Sub message published again. Meanwhile the collector is SIGKILLed now and then and restarted
after a short outage. The run then waits (bounded) until every operation is reported and prints how
many were reported once (with the right status), more than once and never, and the time to report.

Exit code 0 only if every operation was reported exactly once with its right status (N / 0 / 0), no
ledger document is left unfinished, and every Copy export holds exactly the files it reported.

One exception is counted apart: a test call (isTest) whose status call had an unknown outcome (a lost
answer, a kill right after the call) is reported again. MineOS accepts a test update without applying
it, so its ticket log cannot show whether the first one arrived, and sending it again is the only way
to be sure MineOS gets it; a repeated test update is not a second application.

Not part of the test suite. Logs of the last run stay in `.local/chaos/logs/` for a post-mortem.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import sys
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import requests
from google.cloud import firestore, pubsub_v1, storage  # type: ignore[attr-defined]

from infra.driver import StackDriver
from infra.emulators import (
    PUBSUB_EMULATOR_OPTS,
    REPO_ROOT,
    EmulatorUnavailable,
    ManagedProcess,
    start_function,
)
from infra.fake_mineos import MineCall, Person
from infra.sample.seed import ADA, DATA_MAP, GRACE, LINUS, UNKNOWN, seed_all
from infra.stack import LocalStack, StackConfig, StackPorts, start_stack
from mineos_integration.contract import Action, parse_request
from mineos_integration.export import export_prefix
from mineos_integration.ledger import FINAL_STATES, operation_id

DEFAULT_STATE_DIR = REPO_ROOT / ".local" / "chaos"
LEDGER_COLLECTION = "mineos_operations"
MINEOS_TIMEOUT_SECONDS = 1.0
SEND_ATTEMPTS = 20  # MineOS retries a call that was not answered 2xx
SETTLE_SECONDS = 5.0
MAX_QUEUED_STATUS_FAULTS = 2  # after the last report: room for a wrong second call to show up
EXIT_FAILED = 1
EXIT_UNAVAILABLE = 3

NO_IDENTIFIERS = Person(name="Ada Lovelace", email=ADA.email)  # the data map also needs $internalId


@dataclass(frozen=True)
class Kind:
    """A kind of operation and the status MineOS must receive for it (whatever the faults)."""

    name: str
    action: Action
    person: Person
    status: str
    weight: int
    is_test: bool = False


# No Delete for Ada, Grace's account or Linus: their Copy results must stay the same all run long.
# Grace's Delete always ends CannotDeleteData (her invoices are kept by law), whatever ran before.
KINDS = [
    Kind("copy-found", Action.COPY, ADA, "Completed", 30),
    Kind("copy-found-small", Action.COPY, LINUS, "Completed", 10),
    Kind("copy-unknown", Action.COPY, UNKNOWN, "UserNotFound", 15),
    Kind("copy-test-call", Action.COPY, ADA, "Completed", 5, is_test=True),
    Kind("copy-missing-identifiers", Action.COPY, NO_IDENTIFIERS, "MissingIdentifiers", 5),
    Kind("delete-kept-by-law", Action.DELETE, GRACE, "CannotDeleteData", 20),
    Kind("delete-unknown", Action.DELETE, UNKNOWN, "UserNotFound", 15),
]

# Scripted answers of the fake MineOS's status API; they apply to whichever status call comes next.
STATUS_API_FAULTS: dict[str, list[dict[str, Any]]] = {
    "status-500": [{"status": 500}],
    "status-429": [{"status": 429}],
    "status-503-twice": [{"status": 503}, {"status": 503}],
    "status-slow": [{"delay_seconds": MINEOS_TIMEOUT_SECONDS / 2}],
    "status-timeout-not-applied": [{"delay_seconds": MINEOS_TIMEOUT_SECONDS * 2, "status": 504}],
    # MineOS applies the update but the answer is lost (the client times out): settled by the log.
    "status-timeout-applied": [{"delay_seconds": MINEOS_TIMEOUT_SECONDS * 1.3, "apply": True}],
}
DELIVERY_FAULTS = ("resend-later", "resend-concurrently", "duplicate-push")
FAULT_WEIGHTS = {"none": 40, **dict.fromkeys(STATUS_API_FAULTS, 5), **dict.fromkeys(DELIVERY_FAULTS, 10)}


@dataclass
class Operation:
    index: int
    kind: Kind
    call: MineCall
    faults: list[str]
    sent_at: float | None = None  # wall clock (the fake MineOS stamps calls with its wall clock)
    send_failures: int = 0


@dataclass
class Plan:
    operations: list[Operation]
    kill_before: dict[int, float]  # operation index → collector outage (seconds) started before it


def make_plan(driver: StackDriver, count: int, seed: int, kills_per_thousand: float) -> Plan:
    """Every operation, its faults and the collector kills, drawn from `seed`."""
    rng = random.Random(seed)
    kinds = rng.choices(KINDS, weights=[kind.weight for kind in KINDS], k=count)
    fault_names = list(FAULT_WEIGHTS)
    operations = []
    for index, kind in enumerate(kinds):
        faults = [
            name for name in rng.choices(fault_names, list(FAULT_WEIGHTS.values()), k=2) if name != "none"
        ]
        call = driver.call(
            kind.action,
            kind.person,
            is_test=kind.is_test,
            shape=rng.choice(["current", "current", "legacy"]),
            trace_id=f"chaos-{seed}-{index}-{rng.getrandbits(32):08x}",
        )
        operations.append(Operation(index, kind, call, sorted(set(faults))))
    kills = {
        index: rng.uniform(0.5, 2.0) for index in range(1, count) if rng.random() < kills_per_thousand / 1000
    }
    return Plan(operations, kills)


@dataclass
class Chaos:
    """The running stack and what the run does to it."""

    stack: LocalStack
    driver: StackDriver
    publisher: pubsub_v1.PublisherClient
    rng: random.Random
    lock: threading.Lock = field(default_factory=threading.Lock)
    kill_lock: threading.Lock = field(default_factory=threading.Lock)  # one outage at a time
    collector_kills: int = 0
    collector_generation: int = 0
    fault_counts: Counter[str] = field(default_factory=Counter)
    timers: list[threading.Timer] = field(default_factory=list)
    # Status-API faults wait here and are fed to the fake MineOS a few at a time: its queue answers
    # whichever status call comes next, so faults queued all at once would hit every call in a row.
    pending_status_faults: deque[str] = field(default_factory=deque)
    stopping: threading.Event = field(default_factory=threading.Event)

    def feed_status_faults(self) -> None:
        """Keep at most MAX_QUEUED_STATUS_FAULTS scripted answers queued in the fake MineOS."""
        url = f"{self.driver.fake_mineos}/_fake/faults"
        while not self.stopping.wait(0.2):
            queued = requests.post(url, json={"faults": []}, timeout=10).json()["pendingFaults"]
            for _ in range(MAX_QUEUED_STATUS_FAULTS - queued):
                with self.lock:
                    if not self.pending_status_faults:
                        break
                    fault = self.pending_status_faults.popleft()
                    self.fault_counts[fault] += 1
                requests.post(url, json={"faults": STATUS_API_FAULTS[fault]}, timeout=10).raise_for_status()

    def send(self, operation: Operation) -> None:
        """Send like MineOS: retry until answered 2xx (a 503 while a dependency is down, say)."""
        for attempt in range(SEND_ATTEMPTS):
            try:
                if operation.sent_at is None:
                    operation.sent_at = time.time()
                if self.driver.send(operation.call, timeout_seconds=30).status_code in (200, 202):
                    return
            except requests.RequestException:
                pass
            operation.send_failures += 1
            time.sleep(min(0.5 * 2**attempt, 5.0))
        raise RuntimeError(f"operation {operation.index} was never accepted by the ingress")

    def run_operation(self, operation: Operation) -> None:
        self.send(operation)
        for fault in operation.faults:
            if fault in STATUS_API_FAULTS:
                with self.lock:
                    self.pending_status_faults.append(fault)
                continue
            with self.lock:
                self.fault_counts[fault] += 1
            if fault == "resend-concurrently":
                threads = [threading.Thread(target=self.send, args=(operation,)) for _ in range(3)]
                for thread in threads:
                    thread.start()
                for thread in threads:
                    thread.join(timeout=120)
            elif fault == "resend-later":
                self.later(self.rng.uniform(0.5, 10.0), lambda: self.send(operation))
            elif fault == "duplicate-push":
                self.publish_again(operation)

    def publish_again(self, operation: Operation) -> None:
        """Pub/Sub's at-least-once delivery: the same data published again, with a new message id."""
        request = parse_request(operation.call.action, operation.call.body)
        for _ in range(2):
            self.publisher.publish(self.stack.pubsub.topic, request.model_dump_json().encode()).result(
                timeout=30
            )

    def later(self, delay_seconds: float, action: Callable[[], None]) -> None:
        timer = threading.Timer(delay_seconds, action)
        timer.daemon = True
        with self.lock:
            self.timers.append(timer)
        timer.start()

    def kill_collector(self, outage_seconds: float) -> None:
        """SIGKILL the collector's process group (a lost instance), then start a new one."""
        with self.kill_lock:
            process = self.stack.processes["collector"]
            if process.is_running():
                os.killpg(process.pid, signal.SIGKILL)  # our own child's group, by its id
            process.stop()
            self.collector_kills += 1
            time.sleep(outage_seconds)
            self.collector_generation += 1
            self.stack.processes["collector"] = restart_collector(
                self.stack, process, self.collector_generation
            )


def restart_collector(stack: LocalStack, old: ManagedProcess, generation: int) -> ManagedProcess:
    return start_function(
        "collector",
        old.port,
        stack.service_env,
        old.log_path.parent,
        source=stack.config.function_source,
        name=f"collector-{generation}",
    )


# --- the verdict --------------------------------------------------------------------------------------


def is_processed(call: dict[str, Any]) -> bool:
    """Whether MineOS processed a status call: 200, or a 4xx of its own (a second call, a bad body);
    500/429/503/504 are the injected answers of calls it did not apply."""
    status: int = call["responseStatus"]
    return status == 200 or (400 <= status < 500 and status != 429)


def received_at(call: dict[str, Any]) -> float:
    return datetime.fromisoformat(call["receivedAt"].replace("Z", "+00:00")).timestamp()


@dataclass
class Verdict:
    once: int = 0
    more_than_once: int = 0
    never: int = 0
    wrong_status: int = 0
    test_updates_sent_again: int = 0
    times_to_report: list[float] = field(default_factory=list)
    unfinished_ledger: int = 0
    bad_exports: int = 0
    examples: list[str] = field(default_factory=list)

    def ok(self, count: int) -> bool:
        return (
            self.once == count
            and self.more_than_once == self.never == self.wrong_status == 0
            and self.unfinished_ledger == self.bad_exports == 0
        )


def reports_by_operation(driver: StackDriver) -> dict[tuple[str, str], list[dict[str, Any]]]:
    grouped: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for call in driver.status_calls():
        grouped.setdefault((call["ticketId"], call["integrationId"]), []).append(call)
    return grouped


def judge(chaos: Chaos, operations: list[Operation]) -> Verdict:
    verdict = Verdict()
    grouped = reports_by_operation(chaos.driver)
    project = chaos.stack.config.project
    bucket = storage.Client(project=project).bucket(chaos.stack.config.export_bucket)
    for operation in operations:
        calls = grouped.get((operation.call.ticket_id, operation.call.integration_id), [])
        processed = [call for call in calls if is_processed(call)]
        accepted = [call for call in processed if call["responseStatus"] == 200]
        if operation.kind.is_test and len(accepted) > 1 and len(accepted) == len(processed):
            # MineOS accepts a test update without applying it, so its ticket log cannot settle an
            # unknown outcome: the collector sends it again, which MineOS accepts again. Not a
            # second application; counted apart.
            verdict.test_updates_sent_again += 1
            processed = accepted = accepted[:1]
        if len(processed) > 1:
            verdict.more_than_once += 1
            verdict.examples.append(
                f"op {operation.index} ({operation.kind.name}, {operation.faults}): {calls}"
            )
        elif not accepted:
            verdict.never += 1
            verdict.examples.append(
                f"op {operation.index} ({operation.kind.name}, {operation.faults}): {calls}"
            )
        elif accepted[0]["body"]["status"] != operation.kind.status:
            verdict.wrong_status += 1
            verdict.examples.append(f"op {operation.index} ({operation.kind.name}): {accepted[0]['body']}")
        else:
            verdict.once += 1
        if accepted and operation.sent_at is not None:
            verdict.times_to_report.append(received_at(accepted[0]) - operation.sent_at)
        files = (accepted[0]["body"].get("files") or []) if accepted else []
        if files:
            request = parse_request(operation.call.action, operation.call.body)
            prefix = export_prefix(operation_id(request))
            stored = sorted(blob.name.removeprefix(prefix) for blob in bucket.list_blobs(prefix=prefix))
            if stored != sorted(file["fileName"] for file in files):
                verdict.bad_exports += 1
                verdict.examples.append(f"op {operation.index}: export {stored} vs report {files}")
    verdict.unfinished_ledger = unfinished_ledger_documents(chaos)
    return verdict


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] if ordered else float("nan")


# --- the run ------------------------------------------------------------------------------------------


def unfinished_ledger_documents(chaos: Chaos) -> int:
    ledger = firestore.Client(project=chaos.stack.config.project).collection(LEDGER_COLLECTION)
    final = {state.value for state in FINAL_STATES}
    return sum(1 for snapshot in ledger.stream() if snapshot.get("state") not in final)


def wait_for_reports(chaos: Chaos, operations: list[Operation], deadline: float) -> None:
    """Poll until every operation has an accepted status call and every ledger document is final (or
    the deadline), then give a wrong second call time to show up."""
    keys = {(operation.call.ticket_id, operation.call.integration_id) for operation in operations}
    while time.monotonic() < deadline:
        grouped = reports_by_operation(chaos.driver)
        done = sum(1 for key in keys if any(c["responseStatus"] == 200 for c in grouped.get(key, [])))
        unfinished = unfinished_ledger_documents(chaos) if done == len(keys) else None
        print(
            f"  reported {done}/{len(keys)}" + (f", ledger unfinished {unfinished}" if unfinished else ""),
            flush=True,
        )
        if unfinished == 0:
            break
        time.sleep(5)
    time.sleep(SETTLE_SECONDS)


def quiet_push_failures(state_dir: Path) -> None:
    """Keep the Pub/Sub emulator from logging a stack trace per refused push: during a collector
    outage that is thousands a second (100 MB of log, and CPU the stack needs)."""
    properties = state_dir / "pubsub-logging.properties"
    state_dir.mkdir(parents=True, exist_ok=True)
    properties.write_text(
        "handlers=java.util.logging.ConsoleHandler\n"
        ".level=INFO\n"
        "java.util.logging.ConsoleHandler.level=ALL\n"
        "com.google.cloud.pubsub.testing.v1.PushLoop.level=SEVERE\n"
    )
    # start_pubsub_emulator passes this process's CLOUD_PUBSUB_EMULATOR_OPTS to the emulator's JVM.
    os.environ["CLOUD_PUBSUB_EMULATOR_OPTS"] = (
        f"{PUBSUB_EMULATOR_OPTS} -Djava.util.logging.config.file={properties}"
    )


def run(arguments: argparse.Namespace) -> int:
    state_dir: Path = arguments.state_dir
    shutil.rmtree(state_dir / "logs", ignore_errors=True)
    database_url = f"sqlite:///{state_dir / 'sample.db'}"

    def seed(started: LocalStack) -> None:
        started.use_emulators()
        seed_all(database_url, started.config.project)

    config = StackConfig(
        state_dir=state_dir,
        ports=StackPorts.free(),
        data_map_path=str(DATA_MAP),
        lease_seconds=arguments.lease_seconds,
        mineos_backoff_seconds=0.1,
        # Dead-lettering reports Failed by design; here it would only mean the run outlasted the
        # emulator's redelivery schedule, so it is pushed out of reach (100 is the maximum).
        max_delivery_attempts=100,
        # No retry policy: with one, the emulator stopped pushing altogether (until the 600 s ack
        # deadline) after the few hundred refused pushes of three collector outages; without, it
        # redelivers every ~1 s and recovers from an outage at once.
        retry_backoff_seconds=None,
        extra_env={
            "SAMPLE_DATABASE_URL": database_url,
            "MINEOS_TIMEOUT_SECONDS": str(MINEOS_TIMEOUT_SECONDS),
            "FIRESTORE_TIMEOUT_SECONDS": "5",
            "PUBLISH_TIMEOUT_SECONDS": "5",
        },
        seed=seed,
    )
    quiet_push_failures(state_dir)
    started_at = time.monotonic()
    print(f"Starting the local stack (state and logs in {state_dir})…", flush=True)
    try:
        stack = start_stack(config)
    except EmulatorUnavailable as reason:
        print(f"error: a local Google Cloud stand-in is unavailable: {reason}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    with stack:
        driver = StackDriver(stack)
        chaos = Chaos(stack, driver, pubsub_v1.PublisherClient(), random.Random(arguments.seed + 1))
        plan = make_plan(driver, arguments.operations, arguments.seed, arguments.kills_per_thousand)
        feeder = threading.Thread(target=chaos.feed_status_faults, daemon=True)
        feeder.start()
        print(
            f"Stack ready in {time.monotonic() - started_at:.1f} s. "
            f"Sending {len(plan.operations)} operations at {arguments.rate}/s, "
            f"{len(plan.kill_before)} collector kills planned…",
            flush=True,
        )
        load_started_at = time.monotonic()
        with ThreadPoolExecutor(max_workers=32, thread_name_prefix="mineos") as senders:
            futures = []
            for operation in plan.operations:
                due = load_started_at + operation.index / arguments.rate
                time.sleep(max(0.0, due - time.monotonic()))
                if operation.index in plan.kill_before:
                    threading.Thread(
                        target=chaos.kill_collector, args=(plan.kill_before[operation.index],), daemon=True
                    ).start()
                futures.append(senders.submit(chaos.run_operation, operation))
                if operation.index % 100 == 99:
                    print(f"  sent {operation.index + 1}/{len(plan.operations)}", flush=True)
            for future in futures:
                future.result()
        for timer in list(chaos.timers):
            timer.join(timeout=120)
        with chaos.kill_lock:  # a kill still in progress finishes its restart first
            pass
        wait_for_reports(chaos, plan.operations, time.monotonic() + arguments.timeout_seconds)
        chaos.stopping.set()
        feeder.join(timeout=30)
        verdict = judge(chaos, plan.operations)
        chaos.publisher.stop()
    print_verdict(arguments, plan, chaos, verdict, time.monotonic() - started_at)
    return 0 if verdict.ok(len(plan.operations)) else EXIT_FAILED


def print_verdict(
    arguments: argparse.Namespace, plan: Plan, chaos: Chaos, verdict: Verdict, seconds: float
) -> None:
    count = len(plan.operations)
    print()
    print(f"operations:                  {count} (seed {arguments.seed})")
    print(f"reported once, right status: {verdict.once}")
    print(f"reported more than once:     {verdict.more_than_once}")
    print(f"never reported:              {verdict.never}")
    print(f"reported with a wrong status:{verdict.wrong_status:>2}")
    print(f"test updates sent again:     {verdict.test_updates_sent_again} (MineOS does not apply them)")
    print(f"ledger documents unfinished: {verdict.unfinished_ledger}")
    print(f"exports not as reported:     {verdict.bad_exports}")
    print(
        f"time to report:              p50 {percentile(verdict.times_to_report, 0.5):.2f} s, "
        f"p99 {percentile(verdict.times_to_report, 0.99):.2f} s, "
        f"max {max(verdict.times_to_report, default=float('nan')):.2f} s"
    )
    kinds = Counter(operation.kind.name for operation in plan.operations)
    print("operations by kind:          " + ", ".join(f"{name} {n}" for name, n in sorted(kinds.items())))
    print(
        "faults injected:             "
        + ", ".join(f"{name} {n}" for name, n in sorted(chaos.fault_counts.items()))
        + f", collector killed {chaos.collector_kills} times"
    )
    print(f"total time:                  {seconds:.0f} s")
    verdict_line = f"{verdict.once} / {verdict.more_than_once} / {verdict.never}"
    print(f"result:                      {'PASS' if verdict.ok(count) else 'FAIL'} ({verdict_line})")
    for example in verdict.examples[:10]:
        print("  " + json.dumps(example)[:2000])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra.chaos", description=__doc__.splitlines()[0])
    parser.add_argument("--operations", type=int, default=1000, help="how many operations (default 1000)")
    parser.add_argument("--seed", type=int, default=7, help="seeds the operations and the faults")
    parser.add_argument("--rate", type=float, default=10.0, help="operations sent per second (default 10)")
    parser.add_argument(
        "--kills-per-thousand",
        type=float,
        default=4.0,
        help="collector kills (SIGKILL, 0.5-2 s outage, restart) per 1000 operations (default 4)",
    )
    parser.add_argument("--lease-seconds", type=int, default=6, help="the collector's lease (default 6)")
    parser.add_argument(
        "--timeout-seconds", type=float, default=600.0, help="how long to wait for the reports after sending"
    )
    parser.add_argument("--state-dir", type=Path, default=DEFAULT_STATE_DIR, help=argparse.SUPPRESS)
    arguments = parser.parse_args(argv)
    if arguments.operations < 1 or arguments.rate <= 0:
        parser.error("--operations must be at least 1 and --rate positive")
    return run(arguments)


if __name__ == "__main__":
    sys.exit(main())
