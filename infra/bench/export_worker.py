"""One measured export, run in a fresh process by `infra.bench.export` so that its peak RSS is its own.

    python -m infra.bench.export_worker {streaming|baseline} DATABASE PERSON BUCKET

Prints one JSON line: records, bytes, seconds, SHA-256 and the process's peak RSS. It imports only
what the collector needs for an export, so the RSS floor is the service's, not the benchmark's.
Cloud Storage is found through STORAGE_EMULATOR_HOST, as the collector finds it.
"""

import hashlib
import json
import resource
import sys
import time
import uuid
from dataclasses import asdict, dataclass
from typing import Any

import sqlalchemy as sa
from google.cloud import storage  # type: ignore[attr-defined]

from mineos_integration.contract import Identity
from mineos_integration.export import JSONL, STORAGE_TIMEOUT_SECONDS, SourceExport
from mineos_integration.sources.base import SourceContext
from mineos_integration.sources.sql import SqlSource, SqlSourceConfig
from mineos_integration.sources.values import json_safe

PROJECT = "bench-export"
TABLE = "events"
MATCH_COLUMN = "customer_id"
VARIANTS = ("streaming", "baseline")


@dataclass(frozen=True)
class ExportRun:
    """What one export did, as measured inside its own process."""

    variant: str
    records: int
    bytes: int
    seconds: float  # the export alone: query, serialisation, hashing, upload
    cpu_seconds: float  # this process's own CPU time (all threads) during the export
    floor_rss_mib: float  # peak RSS after imports and clients, before the export
    peak_rss_mib: float
    sha256: str
    stored_bytes: int  # the object's size as Cloud Storage reports it afterwards


def peak_rss_mib() -> float:
    """This process's peak resident set so far (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def build_source(database: str) -> SqlSource:
    """The connector exactly as a data map builds it: `type: sql`, matched by `$internalId`."""
    config = SqlSourceConfig(
        name=TABLE,
        identity=Identity.INTERNAL_ID,
        url=f"sqlite:///{database}",
        table=TABLE,
        match_column=MATCH_COLUMN,
        order_by="id",
    )
    context = SourceContext(firestore_client=lambda: None, storage_client=lambda: None, anonymisation_key=b"")
    return config.build(context)


def export_streaming(
    source: SqlSource, person: str, bucket: storage.Bucket, prefix: str
) -> tuple[int, int, str]:
    """The real path: the SQL connector streams rows into `SourceExport`'s streamed upload."""
    sink = SourceExport(bucket, prefix, TABLE)
    source.export(person, sink)
    (exported,) = sink.files
    return exported.records or 0, exported.bytes, exported.sha256


def export_baseline(
    source: SqlSource, person: str, bucket: storage.Bucket, prefix: str
) -> tuple[int, int, str]:
    """The naive way: every row in memory, the whole file as one bytes object, one upload call.

    The per-record work (the same query, `json_safe`, the same `json.dumps`, SHA-256) matches the
    streaming path, so the two differ only in how much they hold at once.
    """
    table = sa.table(TABLE, sa.column(MATCH_COLUMN), sa.column("id"))
    statement: sa.Select[Any] = (
        sa.select(sa.literal_column("*"))
        .select_from(table)
        .where(table.c[MATCH_COLUMN] == person)
        .order_by(table.c.id)
    )
    with source.engine.connect() as connection:
        rows = connection.execute(statement).mappings().fetchall()
    lines = [
        json.dumps(
            {str(key): json_safe(value) for key, value in row.items()},
            ensure_ascii=False,
            separators=(",", ":"),
            default=str,
        ).encode()
        + b"\n"
        for row in rows
    ]
    body = b"".join(lines)
    digest = hashlib.sha256(body).hexdigest()
    blob = bucket.blob(f"{prefix}{TABLE}.jsonl")
    blob.upload_from_string(body, content_type=JSONL, if_generation_match=0, timeout=STORAGE_TIMEOUT_SECONDS)
    return len(rows), len(body), digest


def run_export(variant: str, database: str, person: str, bucket_name: str) -> ExportRun:
    client = storage.Client(project=PROJECT)
    bucket = client.bucket(bucket_name)
    source = build_source(database)
    prefix = f"exports/bench-{uuid.uuid4().hex}/"
    export = export_streaming if variant == "streaming" else export_baseline
    floor = peak_rss_mib()
    started, cpu_started = time.perf_counter(), time.process_time()
    records, size, digest = export(source, person, bucket, prefix)
    seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
    peak = peak_rss_mib()
    stored = bucket.get_blob(f"{prefix}{TABLE}.jsonl", timeout=STORAGE_TIMEOUT_SECONDS)
    source.close()
    return ExportRun(
        variant=variant,
        records=records,
        bytes=size,
        seconds=seconds,
        cpu_seconds=cpu_seconds,
        floor_rss_mib=floor,
        peak_rss_mib=peak,
        sha256=digest,
        stored_bytes=stored.size if stored is not None else -1,
    )


def main(argv: list[str]) -> int:
    if len(argv) != 4 or argv[0] not in VARIANTS:
        print(__doc__, file=sys.stderr)
        return 2
    variant, database, person, bucket_name = argv
    result: dict[str, Any] = asdict(run_export(variant, database, person, bucket_name))
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
