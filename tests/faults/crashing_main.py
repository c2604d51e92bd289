"""The services' functions-framework source, with a crash at one chosen step of the collector.

Serve it instead of `services/mineos_integration/main.py` (`StackConfig(function_source=...)` or
`start_function(..., source=...)`). It re-exports the real `collector` and `ingress` targets and, when
`CRASH_AT` names a step, wraps the function that ends that step so that the whole service process
group is SIGKILLed right there: no exception handler, `finally` or lease release runs, just as when a
Cloud Run instance disappears. `services/` itself has no fault hooks.

    CRASH_AT=after-claim        the lease is taken (state collecting), nothing is done yet
    CRASH_AT=mid-upload         the first export file is done and recorded; the second file's
                                upload is under way, part of its body sent
    CRASH_AT=after-upload       the first export file is complete in the bucket, the ledger does not
                                know it yet
    CRASH_AT=before-report      the reporting intent is written (state reporting), no status call yet
    CRASH_AT=after-status-call  MineOS accepted the status call, the ledger still says reporting

`CRASH_MARKER_FILE` (required with `CRASH_AT`) makes the crash happen once: the first process to reach
the step creates the file and dies; any later one, finding the file, carries on normally.
"""

import os
import signal
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from mineos_integration import export, main
from mineos_integration.export import SourceExport
from mineos_integration.ledger import Claim, Ledger, Step
from mineos_integration.mineos_client import MineOSClient, ReportOutcome, ReportResult

collector = main.collector
ingress = main.ingress

CRASH_POINTS = ("after-claim", "mid-upload", "after-upload", "before-report", "after-status-call")


def crash_once(marker_file: str) -> None:
    """Kill this service's process group (the server and its workers) unless the marker exists."""
    try:
        descriptor = os.open(marker_file, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except FileExistsError:
        return
    os.write(descriptor, f"{os.getpid()}\n".encode())
    os.close(descriptor)
    # The group, not just this process: a gunicorn worker killed alone would be replaced by its
    # arbiter at once, which is a restart in place, not the crash under test.
    os.killpg(os.getpgrp(), signal.SIGKILL)


def _install(crash_at: str, marker_file: str) -> None:
    def crash() -> None:
        crash_once(marker_file)

    if crash_at == "after-claim":
        claim = Ledger.claim

        def claim_then_crash(self: Ledger, *args: Any, **kwargs: Any) -> Claim:
            result = claim(self, *args, **kwargs)
            if result.step is Step.COLLECT:
                crash()
            return result

        Ledger.claim = claim_then_crash  # type: ignore[method-assign]
    elif crash_at == "mid-upload":
        upload_streamed = export.upload_streamed
        uploads_started = [0]

        def crash_after_first_chunk(chunks: Iterable[bytes]) -> Iterator[bytes]:
            for chunk in chunks:
                yield chunk
                crash()

        def upload_streamed_then_crash(blob: Any, chunks: Iterable[bytes], content_type: str) -> None:
            uploads_started[0] += 1
            if uploads_started[0] == 2:
                chunks = crash_after_first_chunk(chunks)
            upload_streamed(blob, chunks, content_type)

        export.upload_streamed = upload_streamed_then_crash
    elif crash_at == "after-upload":
        upload: Callable[..., None] = SourceExport._upload

        def upload_then_crash(self: SourceExport, *args: Any, **kwargs: Any) -> None:
            upload(self, *args, **kwargs)
            crash()

        SourceExport._upload = upload_then_crash  # type: ignore[method-assign]
    elif crash_at == "before-report":
        mark_reporting = Ledger.mark_reporting

        def mark_reporting_then_crash(self: Ledger, *args: Any, **kwargs: Any) -> dict[str, Any]:
            document = mark_reporting(self, *args, **kwargs)
            crash()
            return document

        Ledger.mark_reporting = mark_reporting_then_crash  # type: ignore[method-assign]
    elif crash_at == "after-status-call":
        report_status = MineOSClient.report_status

        def report_status_then_crash(self: MineOSClient, *args: Any, **kwargs: Any) -> ReportOutcome:
            outcome = report_status(self, *args, **kwargs)
            if outcome.result is ReportResult.ACCEPTED:
                crash()
            return outcome

        MineOSClient.report_status = report_status_then_crash  # type: ignore[method-assign]
    else:
        raise ValueError(f"CRASH_AT={crash_at!r} is not one of {', '.join(CRASH_POINTS)}")


if crash_at := os.environ.get("CRASH_AT", ""):
    marker = os.environ.get("CRASH_MARKER_FILE", "")
    if not marker:
        raise ValueError("CRASH_AT needs CRASH_MARKER_FILE (the crash happens once, then the file exists)")
    _install(crash_at, marker)
