"""Export throughput and peak memory: one person's SQL rows exported to Cloud Storage through the real
path (the SQL connector streaming into `SourceExport`) against a naive export (fetchall, the whole file
as one bytes object, one `upload_from_string`), at 10k, 100k and 1M records of ~1 KB.

Each variant runs in its own fresh process (`infra.bench.export_worker`) against its own fresh
fake-gcs-server, so its peak RSS is its own and the server starts empty. The SQLite databases are
built once per size under `.local/bench/` and reused by later runs.
"""

import json
import os
import random
import sqlite3
import string
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from infra.bench.export_worker import MATCH_COLUMN, PROJECT, TABLE, ExportRun
from infra.emulators import REPO_ROOT, create_bucket, free_port, read_log_tail, start_fake_gcs, stop_all

CACHE_DIR = REPO_ROOT / ".local" / "bench"
DATABASE_FORMAT_VERSION = 1  # bump when the rows change, so cached databases are rebuilt
PERSON = "bench-customer-1"
BUCKET = "bench-exports"
RECORD_TARGET_BYTES = 1024  # one exported JSON line, newline included
NOTE_POOL_SIZE = 64
INSERT_BATCH_ROWS = 10_000
DEFAULT_SIZES = (10_000, 100_000, 1_000_000)
WORKER_TIMEOUT_SECONDS = 1800.0
MEGABYTE = 1_000_000
STREAMING_PEAK_TARGET_MIB = 150


@dataclass(frozen=True)
class MeasuredRun:
    """One worker's own figures, and what fake-gcs-server spent meanwhile (its CPU is not ours)."""

    run: ExportRun
    storage_cpu_seconds: float
    storage_peak_mib: float


@dataclass(frozen=True)
class VariantFigures:
    """A variant's runs at one size (or why it failed); rates are those of the median run."""

    variant: str
    runs: list[MeasuredRun] = field(default_factory=list)
    error: str | None = None

    @property
    def median(self) -> MeasuredRun | None:
        if not self.runs:
            return None
        return sorted(self.runs, key=lambda measured: measured.run.seconds)[len(self.runs) // 2]

    @property
    def records_per_second(self) -> float:
        measured = self.median
        return measured.run.records / measured.run.seconds if measured else 0.0

    @property
    def megabytes_per_second(self) -> float:
        measured = self.median
        return measured.run.bytes / MEGABYTE / measured.run.seconds if measured else 0.0

    @property
    def cpu_seconds(self) -> float:
        measured = self.median
        return measured.run.cpu_seconds if measured else 0.0

    @property
    def peak_rss_mib(self) -> float:
        return max((measured.run.peak_rss_mib for measured in self.runs), default=0.0)

    @property
    def floor_rss_mib(self) -> float:
        return max((measured.run.floor_rss_mib for measured in self.runs), default=0.0)


@dataclass(frozen=True)
class SizeFigures:
    records: int
    database_bytes: int
    streaming: VariantFigures
    baseline: VariantFigures

    @property
    def same_output(self) -> bool:
        """Both variants wrote the same bytes (size and SHA-256), and the bucket holds all of them."""
        if self.streaming.median is None or self.baseline.median is None:
            return False
        streaming, baseline = self.streaming.median.run, self.baseline.median.run
        return (
            streaming.sha256 == baseline.sha256
            and streaming.bytes == baseline.bytes == streaming.stored_bytes == baseline.stored_bytes
            and streaming.records == baseline.records == self.records
        )


# --- The databases ---------------------------------------------------------------------------------


def _notes(length: int) -> list[str]:
    generator = random.Random(DATABASE_FORMAT_VERSION)  # deterministic: the same database every build
    alphabet = string.ascii_letters + string.digits + "     "
    return ["".join(generator.choices(alphabet, k=length)) for _ in range(NOTE_POOL_SIZE)]


def _row(row_id: int, note: str) -> tuple[object, ...]:
    return (
        row_id,
        PERSON,
        f"2026-{1 + row_id % 12:02d}-{1 + row_id % 28:02d}T{row_id % 24:02d}:{row_id % 60:02d}:00Z",
        ("page_view", "purchase", "login", "support_ticket")[row_id % 4],
        (row_id * 7919) % 100_000,
        f"https://shop.example.com/products/{row_id % 5000}",
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36",
        note,
    )


COLUMNS = ("id", MATCH_COLUMN, "occurred_at", "kind", "amount_cents", "page_url", "user_agent", "note")


def _note_length() -> int:
    """The note length that makes an exported line ~RECORD_TARGET_BYTES (as the connector writes it)."""
    empty = json.dumps(dict(zip(COLUMNS, _row(500_000, ""), strict=True)), separators=(",", ":"))
    return RECORD_TARGET_BYTES - len(empty) - 1  # the newline


def _rows(count: int) -> Iterator[tuple[object, ...]]:
    notes = _notes(_note_length())
    for row_id in range(1, count + 1):
        yield _row(row_id, notes[row_id % NOTE_POOL_SIZE])


def database_for(records: int, cache_dir: Path = CACHE_DIR) -> Path:
    """The SQLite database with `records` rows of one person, built once and then reused."""
    path = cache_dir / f"export-v{DATABASE_FORMAT_VERSION}-{records}.sqlite"
    if path.exists():
        return path
    cache_dir.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    partial.unlink(missing_ok=True)
    connection = sqlite3.connect(partial)
    try:
        connection.execute("PRAGMA journal_mode=OFF")  # a throw-away build: no journal, no fsync
        connection.execute("PRAGMA synchronous=OFF")
        connection.execute(
            f"CREATE TABLE {TABLE} (id INTEGER PRIMARY KEY, {MATCH_COLUMN} TEXT NOT NULL, occurred_at TEXT,"
            " kind TEXT, amount_cents INTEGER, page_url TEXT, user_agent TEXT, note TEXT)"
        )
        placeholders = ", ".join("?" for _ in COLUMNS)
        connection.executemany(f"INSERT INTO {TABLE} VALUES ({placeholders})", _rows(records))  # noqa: S608
        connection.execute(f"CREATE INDEX {TABLE}_{MATCH_COLUMN} ON {TABLE} ({MATCH_COLUMN})")
        connection.commit()
    finally:
        connection.close()
    partial.rename(path)  # only a finished database is ever found under the final name
    return path


# --- The runs --------------------------------------------------------------------------------------


def _proc_fields(pid: int) -> list[str]:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat[stat.rindex(")") + 2 :].split()  # the fields after the command name, from field 3 on


def _cpu_seconds(pid: int) -> float:
    """A process's user + system CPU time so far (Linux /proc), 0 if it is gone."""
    try:
        fields_after_name = _proc_fields(pid)
    except OSError:
        return 0.0
    return (int(fields_after_name[11]) + int(fields_after_name[12])) / os.sysconf("SC_CLK_TCK")


def _vm_hwm_mib(pid: int) -> float:
    """A process's peak resident set (VmHWM) from /proc, 0 if it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0.0
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def run_variant(variant: str, database: Path, log_dir: Path) -> MeasuredRun | str:
    """One export in a fresh worker process against a fresh fake-gcs-server; or why it failed."""
    storage = start_fake_gcs(free_port(), log_dir)
    try:
        create_bucket(storage.url, PROJECT, BUCKET)
        env = {**os.environ, "STORAGE_EMULATOR_HOST": storage.url, "PYTHONUNBUFFERED": "1"}
        storage_cpu_before = _cpu_seconds(storage.pid)
        try:
            completed = subprocess.run(
                [sys.executable, "-m", "infra.bench.export_worker", variant, str(database), PERSON, BUCKET],
                capture_output=True,
                text=True,
                timeout=WORKER_TIMEOUT_SECONDS,
                env=env,
                cwd=REPO_ROOT,
                check=False,
            )
        except subprocess.TimeoutExpired:
            return f"no result within {WORKER_TIMEOUT_SECONDS:.0f} s"
        if completed.returncode != 0:
            tail = " | ".join(completed.stderr.splitlines()[-3:])
            return f"worker exit code {completed.returncode}: {tail}"
        return MeasuredRun(
            ExportRun(**json.loads(completed.stdout.splitlines()[-1])),
            storage_cpu_seconds=_cpu_seconds(storage.pid) - storage_cpu_before,
            storage_peak_mib=_vm_hwm_mib(storage.pid),
        )
    finally:
        errors = stop_all([storage])
        if errors:
            print(f"warning: {errors}; log: {read_log_tail(storage.log_path, 5)}", file=sys.stderr)


def _repeats(records: int) -> int:
    # Small exports take well under a second, where a noisy neighbour moves the figure most: take the
    # median of three. One run of the large ones says enough and takes minutes.
    return 3 if records <= 100_000 else 1


def run_size(records: int, log_dir: Path) -> SizeFigures:
    database = database_for(records)
    runs: dict[str, list[MeasuredRun]] = {"baseline": [], "streaming": []}
    errors: dict[str, str | None] = {"baseline": None, "streaming": None}
    for _ in range(_repeats(records)):
        for variant in runs:  # alternated, so that a slow spell of the machine hits both alike
            if errors[variant] is not None:
                continue
            outcome = run_variant(variant, database, log_dir)
            if isinstance(outcome, str):
                errors[variant] = outcome
            else:
                runs[variant].append(outcome)
    figures = {variant: VariantFigures(variant, runs[variant], errors[variant]) for variant in runs}
    return SizeFigures(records, database.stat().st_size, figures["streaming"], figures["baseline"])


def run(sizes: Sequence[int] = DEFAULT_SIZES) -> list[SizeFigures]:
    with tempfile.TemporaryDirectory(prefix="bench-export-") as folder:
        return [run_size(records, Path(folder)) for records in sizes]


def _ratio(numerator: float, denominator: float) -> str:
    return f"{numerator / denominator:.2f}" if numerator and denominator else "-"


def report(results: list[SizeFigures]) -> str:
    lines = [
        "export: one person's ~1 KB rows, SQLite -> fake-gcs-server. streaming = SqlSource + SourceExport",
        "(the real path); baseline = fetchall + one bytes object + upload_from_string. A fresh process each.",
        f"{'records':>9} {'variant':<9} {'runs':>4} {'rec/s':>7} {'MB/s':>5} {'CPU s':>6} "
        f"{'peak RSS MiB':>12} {'floor MiB':>9} {'gcs CPU s':>9} {'gcs MiB':>7}",
    ]
    for size in results:
        for figures in (size.baseline, size.streaming):
            measured = figures.median
            if measured is None:
                lines.append(f"{size.records:>9} {figures.variant:<9} FAILED: {figures.error}")
                continue
            lines.append(
                f"{size.records:>9} {figures.variant:<9} {len(figures.runs):>4} "
                f"{figures.records_per_second:>7.0f} {figures.megabytes_per_second:>5.1f} "
                f"{figures.cpu_seconds:>6.1f} {figures.peak_rss_mib:>12.0f} {figures.floor_rss_mib:>9.0f} "
                f"{measured.storage_cpu_seconds:>9.1f} {measured.storage_peak_mib:>7.0f}"
            )
        streaming, baseline = size.streaming, size.baseline
        lines.append(
            f"{'':>9} {'ratio':<9} {'':>4} "
            f"{_ratio(streaming.records_per_second, baseline.records_per_second):>7} "
            f"{_ratio(streaming.megabytes_per_second, baseline.megabytes_per_second):>5} "
            f"{_ratio(streaming.cpu_seconds, baseline.cpu_seconds):>6} "
            f"{_ratio(streaming.peak_rss_mib, baseline.peak_rss_mib):>12}"
            f"   streaming/baseline; same bytes and SHA-256: {'yes' if size.same_output else 'NO'}"
        )
    streaming_peaks = [size.streaming.peak_rss_mib for size in results if size.streaming.runs]
    if streaming_peaks:
        verdict = "met" if max(streaming_peaks) <= STREAMING_PEAK_TARGET_MIB else "MISSED"
        lines.append(
            f"streaming peak RSS {min(streaming_peaks):.0f}-{max(streaming_peaks):.0f} MiB over "
            f"{', '.join(f'{size.records:,}' for size in results)} records "
            f"(target <= {STREAMING_PEAK_TARGET_MIB} MiB: {verdict})"
        )
    measured_sizes = [size for size in results if size.streaming.runs and size.baseline.runs]
    if measured_sizes:
        slowest = min(
            size.streaming.records_per_second / size.baseline.records_per_second for size in measured_sizes
        )
        verdict = "met" if slowest >= 1 else "MISSED"
        lines.append(
            f"streaming throughput >= baseline at every size: {verdict} (lowest ratio {slowest:.2f})"
        )
    lines.append(
        "rec/s, MB/s: median run, the export alone (query, JSON, SHA-256, upload), wall clock. CPU: the "
        "worker's own. peak RSS: its ru_maxrss; floor: its RSS after imports and clients. gcs: "
        "fake-gcs-server's CPU time during the run and its VmHWM (it keeps objects in memory; the "
        "baseline's upload_from_string sends 100 MiB resumable chunks, and the server re-hashes the whole "
        "object received so far on every chunk)"
    )
    return "\n".join(lines)
