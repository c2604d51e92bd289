"""End to end: a burst of signed Copy requests through the whole local stack (ingress -> Pub/Sub push ->
collector -> fake MineOS) with the sample data seeded, from concurrent senders: the time from each
POST to its status call, throughput, and how many status calls each operation got (exactly one).

Baseline, in the same run and stack: as many MineOS "test your integration" Copy calls (`isTest`),
which take the same path (signature, ledger, publish, push, claim, report) but touch no data source:
the pipeline's own cost. The ratio is what reading five sources and exporting costs on top.
"""

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from infra.bench.stack_load import (
    Outcome,
    Sender,
    SentCall,
    copy_call,
    count_log_errors,
    outcome,
    percentile,
    sample_stack,
    wait_for_reports,
)
from infra.fake_mineos import MineCall
from infra.sample.seed import ADA
from infra.stack import LocalStack

# The burst drains at a few operations a second on a 2-core machine: a generous bound that grows with it.
MIN_REPORT_TIMEOUT_SECONDS = 300.0
REPORT_TIMEOUT_SECONDS_PER_REQUEST = 0.5
WARM_UP_TIMEOUT_SECONDS = 60.0


@dataclass(frozen=True)
class E2EResults:
    requests: int
    concurrency: int
    baseline: Outcome  # isTest Copy calls: no data source is touched
    copy: Outcome  # Copy calls for Ada: every source read, files exported, URLs signed
    log_errors: dict[str, int]  # ERROR lines and tracebacks in each service's log


def send_burst(sender: Sender, calls: Sequence[MineCall], concurrency: int) -> list[SentCall]:
    """POST every call, `concurrency` at a time; each sender thread waits for its 202 before the next."""
    with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="sender") as pool:
        return list(pool.map(sender.send, calls))


def measure(stack: LocalStack, sender: Sender, calls: Sequence[MineCall], concurrency: int) -> Outcome:
    sent = send_burst(sender, calls, concurrency)
    operations = [item.operation for item in sent]
    timeout_seconds = max(MIN_REPORT_TIMEOUT_SECONDS, len(calls) * REPORT_TIMEOUT_SECONDS_PER_REQUEST)
    return outcome(sent, wait_for_reports(stack.fake_mineos_url, operations, timeout_seconds))


def run(requests: int = 500, concurrency: int = 16) -> E2EResults:
    with sample_stack() as stack:
        sender = Sender(stack)
        # The first call of each kind builds the services' clients and data sources: not measured.
        warm_up = [copy_call(ADA), copy_call(ADA, is_test=True)]
        warmed = outcome(
            [sender.send(call) for call in warm_up],
            wait_for_reports(
                stack.fake_mineos_url,
                [(c.ticket_id, c.integration_id) for c in warm_up],
                WARM_UP_TIMEOUT_SECONDS,
            ),
        )
        if warmed.reported_once != len(warm_up):
            collector_log = stack.processes["collector"].log_tail()
            raise RuntimeError(f"the warm-up calls were not reported; the collector's log:\n{collector_log}")
        baseline = measure(
            stack, sender, [copy_call(ADA, is_test=True) for _ in range(requests)], concurrency
        )
        copy = measure(stack, sender, [copy_call(ADA) for _ in range(requests)], concurrency)
        log_errors = {
            name: count_log_errors(stack.processes[name].log_path) for name in ("ingress", "collector")
        }
    return E2EResults(requests, concurrency, baseline, copy, log_errors)


def _ratio(numerator: float, denominator: float) -> str:
    return f"{numerator / denominator:.2f}" if numerator and denominator else "-"


def report(results: E2EResults) -> str:
    lines = [
        f"e2e: {results.requests} Copy requests through ingress -> Pub/Sub push -> collector -> fake MineOS, "
        f"{results.concurrency} concurrent senders, sample data seeded",
        "copy = Copy for Ada (5 sources: 3 SQL tables, Firestore, Cloud Storage; exported, manifest, signed "
        "URLs); baseline = isTest Copy (same path, no source read)",
        f"{'variant':<9} {'sent':>5} {'202':>5} | {'once':>5} {'twice+':>6} {'never':>5} | "
        f"{'202 p50 ms':>10} {'p99 ms':>7} | {'report p50 s':>12} {'p99 s':>6} {'max s':>6} | "
        f"{'ops/s':>6} | statuses",
    ]
    for name, figures in (("baseline", results.baseline), ("copy", results.copy)):
        lines.append(
            f"{name:<9} {figures.sent:>5} {figures.accepted:>5} | {figures.reported_once:>5} "
            f"{figures.reported_twice_or_more:>6} {figures.never_reported:>5} | "
            f"{percentile(figures.answer_seconds, 0.5) * 1000:>10.0f} "
            f"{percentile(figures.answer_seconds, 0.99) * 1000:>7.0f} | "
            f"{percentile(figures.report_seconds, 0.5):>12.2f} "
            f"{percentile(figures.report_seconds, 0.99):>6.2f} "
            f"{max(figures.report_seconds, default=float('nan')):>6.2f} | "
            f"{figures.operations_per_second:>6.1f} | "
            + ", ".join(f"{status} {count}" for status, count in sorted(figures.statuses.items()))
        )
    baseline, copy = results.baseline, results.copy
    lines.append(
        f"{'ratio':<9} {'':>5} {'':>5} | {'':>5} {'':>6} {'':>5} | "
        f"{_ratio(percentile(copy.answer_seconds, 0.5), percentile(baseline.answer_seconds, 0.5)):>10} "
        f"{_ratio(percentile(copy.answer_seconds, 0.99), percentile(baseline.answer_seconds, 0.99)):>7} | "
        f"{_ratio(percentile(copy.report_seconds, 0.5), percentile(baseline.report_seconds, 0.5)):>12} "
        f"{_ratio(percentile(copy.report_seconds, 0.99), percentile(baseline.report_seconds, 0.99)):>6} "
        f"{'':>6} | {_ratio(copy.operations_per_second, baseline.operations_per_second):>6} | copy/baseline"
    )
    for name, figures in (("baseline", baseline), ("copy", copy)):
        verdict = "yes" if figures.exactly_once else "NO"
        lines.append(
            f"{name}: reported exactly once {figures.reported_once}/{figures.sent} ({verdict}); "
            f"twice or more {figures.reported_twice_or_more}; never {figures.never_reported}; "
            f"not answered 202: {figures.not_accepted}"
        )
    lines.append(
        "error lines in the service logs: "
        + ", ".join(f"{name} {count}" for name, count in results.log_errors.items())
    )
    lines.append(
        "report = from the POST to the fake MineOS receiving the status call (the burst queues in Pub/Sub, "
        "so p99 is about the time to drain it); ops/s = operations reported / (last report - first POST)"
    )
    return "\n".join(lines)
