"""Preview: a synchronous, read-only summary of where a person's data is, within a deadline.

MineOS shows it to internal staff before any workflow runs (contract.md §3): one record per source
that found the person, at most three string properties each, never the data itself.
"""

import logging
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import Any

from mineos_integration.contract import PrivacyRequest
from mineos_integration.logs import log
from mineos_integration.sources.base import DataSource, PreviewProperty

logger = logging.getLogger(__name__)

MAX_PROPERTIES = 3

# Shared by all previews of the process: a slow source's call may outlive its preview's deadline
# (each connector bounds its own calls), and must not hold the answer back.
_executor = ThreadPoolExecutor(max_workers=16, thread_name_prefix="preview")


def build_preview(
    sources: list[DataSource], request: PrivacyRequest, deadline_seconds: float
) -> dict[str, Any]:
    """`{"records": [...]}` for the sources that answered within the deadline and found the person."""
    if request.is_test:
        return {"records": []}
    futures: dict[Future[list[PreviewProperty]], str] = {
        _executor.submit(source.preview, request.identities[source.config.identity]): source.config.name
        for source in sources
        if source.config.identity in request.identities
    }
    _, late = wait(futures, timeout=deadline_seconds)
    records = []
    for future, name in futures.items():
        if future in late:
            log(logger, logging.WARNING, "preview source missed the deadline", source=name)
            continue
        if error := future.exception():
            log(logger, logging.WARNING, "preview source failed", source=name, error=type(error).__name__)
            continue
        properties = future.result()[:MAX_PROPERTIES]
        if properties:
            records.append(
                {
                    "name": name,
                    "properties": [{"name": str(p.name), "value": str(p.value)} for p in properties],
                }
            )
    return {"records": records}
