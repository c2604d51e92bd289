"""Soak: the seeded local stack under a fixed rate of signed Copy requests for a bounded time, with the
resident memory of every process of the stack sampled throughout.

The load is open-loop: call i is due at start + i/rate whatever the answers, so a slow stack shows as
late sends and a growing time to report rather than as a lower rate. Three calls in four are a Copy for
Ada (every source read and exported), one in four a Copy for a person nobody knows (UserNotFound).
Its baseline is its own first minute: memory at the end against memory after the first minute, time
to report in the last minute against the first.
"""

import os
import threading
import time
from collections import Counter
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from infra.bench.stack_load import (
    Outcome,
    Sender,
    SentCall,
    copy_call,
    count_log_errors,
    ledger_states,
    outcome,
    percentile,
    sample_stack,
    status_calls,
    wait_for_reports,
)
from infra.fake_mineos import MineCall
from infra.sample.seed import ADA, UNKNOWN

MAX_IN_FLIGHT = 64  # sender threads; beyond this, calls wait in the queue and are sent late
# After the load, the backlog (if the rate is above what the stack sustains) gets this long to drain.
MIN_DRAIN_SECONDS = 180.0
DRAIN_SECONDS_PER_LOAD_SECOND = 3.0
WARM_UP_TIMEOUT_SECONDS = 60.0
REFERENCE_SECONDS = 60.0  # "the first minute": memory and latency are compared against it
MAX_SAMPLES = 10_000
LATE_SECONDS = 1.0


@dataclass(frozen=True)
class ProcessSample:
    seconds: float  # since the load started
    rss_kib: dict[str, int]  # per stack process: VmRSS summed over its process group
    cpu_seconds: dict[str, float]  # per stack process: user + system CPU time so far, over its group
    group_sizes: dict[str, int]  # how many processes each group had (gunicorn: master + worker)


@dataclass(frozen=True)
class SoakResults:
    minutes: float
    rate: float
    load_seconds: float
    outcome: Outcome
    sent: list[SentCall]
    due_at: list[float]  # when each call was due (epoch seconds), in sending order
    samples: list[ProcessSample]
    log_errors: dict[str, int]
    bench_cpu_seconds: float  # this process (the senders) during the load
    load_average: tuple[float, float]  # the machine's 1-minute load average at the load's start and end
    unreported_states: dict[str, int]  # ledger states of the operations not reported by the end
    # Of those, operations the ledger holds as reported while MineOS still has no status call for them,
    # read after the ledger (so a report sent in between is not counted): must be 0.
    reported_without_status_call: int


CLOCK_TICKS_PER_SECOND = os.sysconf("SC_CLK_TCK")


def _process_groups() -> dict[int, list[tuple[int, float]]]:
    """Every process's pid and CPU seconds (user + system) by process group (Linux /proc)."""
    groups: dict[int, list[tuple[int, float]]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue  # exited meanwhile
        fields_after_name = stat[stat.rindex(")") + 2 :].split()  # from field 3 (state) on
        process_group = int(fields_after_name[2])  # field 5, pgrp
        cpu_seconds = (int(fields_after_name[11]) + int(fields_after_name[12])) / CLOCK_TICKS_PER_SECOND
        groups.setdefault(process_group, []).append((int(entry), cpu_seconds))
    return groups


def _vm_rss_kib(pid: int) -> int:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def sample_processes(leaders: Mapping[str, int], seconds: float) -> ProcessSample:
    """RSS and CPU time of each stack process and its group: each was started as its own session leader, so
    its group holds exactly what it forked (gunicorn's worker under functions-framework)."""
    groups = _process_groups()
    rss: dict[str, int] = {}
    cpu: dict[str, float] = {}
    sizes: dict[str, int] = {}
    for name, pid in leaders.items():
        members = groups.get(pid, [])
        rss[name] = sum(_vm_rss_kib(member) for member, _ in members)
        cpu[name] = sum(cpu_seconds for _, cpu_seconds in members)
        sizes[name] = len(members)
    return ProcessSample(seconds, rss, cpu, sizes)


class ProcessSampler:
    """Samples the stack's processes every `interval_seconds` on a thread, from `start()` until `stop()`."""

    def __init__(self, leaders: Mapping[str, int], interval_seconds: float) -> None:
        self._leaders = dict(leaders)
        self._interval = interval_seconds
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)
        self.started_at = 0.0
        self.samples: list[ProcessSample] = []

    def start(self) -> None:
        self.started_at = time.monotonic()
        self._thread.start()

    def _run(self) -> None:
        for _ in range(MAX_SAMPLES):
            self.samples.append(sample_processes(self._leaders, time.monotonic() - self.started_at))
            if self._stopped.wait(self._interval):
                return

    def stop(self) -> list[ProcessSample]:
        self._stopped.set()
        self._thread.join(timeout=30)
        self.samples.append(sample_processes(self._leaders, time.monotonic() - self.started_at))
        return self.samples


def call_for(index: int) -> MineCall:
    return copy_call(UNKNOWN if index % 4 == 3 else ADA)


def send_at_rate(sender: Sender, rate: float, seconds: float) -> tuple[list[SentCall], list[float]]:
    """Send `rate * seconds` calls, call i at start + i/rate (open loop); returns them and their due times."""
    total = round(rate * seconds)
    calls = [call_for(index) for index in range(total)]
    start_epoch, start = time.time(), time.monotonic()
    due_at = [start_epoch + index / rate for index in range(total)]
    with ThreadPoolExecutor(max_workers=MAX_IN_FLIGHT, thread_name_prefix="sender") as pool:
        futures = []
        for index, call in enumerate(calls):
            delay = start + index / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            futures.append(pool.submit(sender.send, call))
        sent = [future.result() for future in futures]  # each send is bounded by its HTTP timeouts
    return sent, due_at


def run(minutes: float = 5.0, rate: float = 20.0, sample_seconds: float = 5.0) -> SoakResults:
    load_seconds = minutes * 60
    with sample_stack() as stack:
        sender = Sender(stack)
        warm_up = [call_for(0), call_for(3)]
        warm_sent = [sender.send(call) for call in warm_up]
        wait_for_reports(
            stack.fake_mineos_url, [item.operation for item in warm_sent], WARM_UP_TIMEOUT_SECONDS
        )
        sampler = ProcessSampler(
            {name: process.pid for name, process in stack.processes.items()}, sample_seconds
        )
        sampler.start()
        load_started = os.getloadavg()[0]
        bench_cpu_started = time.process_time()
        try:
            sent, due_at = send_at_rate(sender, rate, load_seconds)
            bench_cpu_seconds = time.process_time() - bench_cpu_started
            load_average = (load_started, os.getloadavg()[0])
            drain_seconds = max(MIN_DRAIN_SECONDS, load_seconds * DRAIN_SECONDS_PER_LOAD_SECOND)
            calls = wait_for_reports(stack.fake_mineos_url, [item.operation for item in sent], drain_seconds)
        finally:
            samples = sampler.stop()
        figures = outcome(sent, calls)
        unreported = [
            item.call
            for item, seconds in zip(sent, figures.report_seconds_by_call, strict=True)
            if seconds is None
        ]
        states = ledger_states(stack, unreported) if unreported else {}
        # The stack still works through its backlog: read the ledger first, MineOS's calls after it.
        reported_since = {(c["ticketId"], c["integrationId"]) for c in status_calls(stack.fake_mineos_url)}
        reported_without_status_call = sum(
            1
            for operation, state in states.items()
            if state == "reported" and operation not in reported_since
        )
        log_errors = {
            name: count_log_errors(stack.processes[name].log_path) for name in ("ingress", "collector")
        }
    return SoakResults(
        minutes=minutes,
        rate=rate,
        load_seconds=load_seconds,
        outcome=figures,
        sent=sent,
        due_at=due_at,
        samples=samples,
        log_errors=log_errors,
        bench_cpu_seconds=bench_cpu_seconds,
        load_average=load_average,
        unreported_states=dict(Counter(states.values())),
        reported_without_status_call=reported_without_status_call,
    )


def _sample_at(samples: list[ProcessSample], seconds: float) -> ProcessSample:
    """The last sample taken at or before `seconds` (the first one if none was)."""
    before = [sample for sample in samples if sample.seconds <= seconds]
    return before[-1] if before else samples[0]


def _latencies_between(results: SoakResults, start: float, end: float) -> list[float]:
    """Times to report of the calls posted between `start` and `end` seconds into the load."""
    first = results.outcome.first_posted_at
    return [
        seconds
        for item, seconds in zip(results.sent, results.outcome.report_seconds_by_call, strict=True)
        if seconds is not None and start <= item.posted_at - first < end
    ]


def _p50_p99(values: list[float]) -> str:
    return f"p50 {percentile(values, 0.5):.2f} s, p99 {percentile(values, 0.99):.2f} s"


def _summary_lines(results: SoakResults, reference: float) -> list[str]:
    figures = results.outcome
    late = sum(
        1
        for item, due in zip(results.sent, results.due_at, strict=True)
        if item.posted_at - due > LATE_SECONDS
    )
    span = results.sent[-1].posted_at - figures.first_posted_at if results.sent else 0.0
    achieved = (len(results.sent) - 1) / span if span > 0 else 0.0
    first_window = _latencies_between(results, 0, reference)
    last_window = _latencies_between(results, results.load_seconds - reference, results.load_seconds + 1)
    log_errors = ", ".join(f"{name} {count}" for name, count in results.log_errors.items())
    return [
        f"soak: {results.rate:g} Copy requests/s for {results.minutes:g} min through the whole local stack "
        f"(3/4 Ada, 1/4 an unknown person), open loop, up to {MAX_IN_FLIGHT} in flight",
        f"sent {figures.sent} at {achieved:.1f}/s ({late} more than {LATE_SECONDS:g} s late); "
        f"not answered 202: {figures.not_accepted}; reported exactly once {figures.reported_once}, "
        f"twice or more {figures.reported_twice_or_more}, never {figures.never_reported}",
        "statuses: "
        + ", ".join(f"{status} {count}" for status, count in sorted(figures.statuses.items()))
        + f"; error lines in the service logs: {log_errors}",
        *(
            [
                "not reported by the end of the drain, by ledger state: "
                + ", ".join(f"{state} {count}" for state, count in sorted(results.unreported_states.items()))
                + "; of these, reported in the ledger without a status call at MineOS: "
                + str(results.reported_without_status_call)
            ]
            if results.unreported_states
            else []
        ),
        f"time to report (POST -> status call): {_p50_p99(figures.report_seconds)}, "
        f"max {max(figures.report_seconds, default=0):.2f} s",
        f"  first {reference:.0f} s: {_p50_p99(first_window)}; "
        f"last {reference:.0f} s: {_p50_p99(last_window)}",
        f"the senders took {results.bench_cpu_seconds / results.load_seconds * 100:.0f}% of a core; the "
        f"machine's load average: {results.load_average[0]:.1f} at the start, "
        f"{results.load_average[1]:.1f} at the end (2 cores, shared)",
    ]


def report(results: SoakResults) -> str:
    reference = min(REFERENCE_SECONDS, results.load_seconds / 2)
    samples = results.samples
    start, warm = samples[0], _sample_at(samples, reference)
    middle, end = _sample_at(samples, results.load_seconds / 2), _sample_at(samples, results.load_seconds)
    drained = samples[-1]
    during_load = [sample for sample in samples if sample.seconds <= results.load_seconds + 1]
    lines = [
        *_summary_lines(results, reference),
        f"RSS MiB of each stack process (VmRSS summed over its process group), {len(samples)} samples; "
        f"growth = end / at {reference:.0f} s; drained = after the last report; CPU % = of one core, "
        "start to end of the load",
        f"{'process':<20} {'procs':>5} {'start':>7} {f'{reference:.0f} s':>7} {'middle':>7} {'end':>7} "
        f"{'max':>7} {'drained':>7} {'growth':>6} {'CPU %':>6}",
    ]
    for name in start.rss_kib:
        peak = max(sample.rss_kib[name] for sample in during_load)
        growth = end.rss_kib[name] / warm.rss_kib[name] if warm.rss_kib[name] else float("nan")
        busy = (end.cpu_seconds[name] - start.cpu_seconds[name]) / max(end.seconds - start.seconds, 1e-9)
        figures = [start, warm, middle, end]
        lines.append(
            f"{name:<20} {end.group_sizes[name]:>5} "
            + " ".join(f"{sample.rss_kib[name] / 1024:>7.0f}" for sample in figures)
            + f" {peak / 1024:>7.0f} {drained.rss_kib[name] / 1024:>7.0f} {growth:>6.2f} {busy * 100:>6.0f}"
        )
    return "\n".join(lines)
