"""The export benchmark's own correctness on a tiny size: both variants export the same bytes through
their own processes and servers, and the report says so. Its figures are not checked here: they are
measured on purpose with `python -m infra.bench export`."""

import pytest

from infra.bench import export as export_bench
from infra.emulators import EmulatorUnavailable, fake_gcs_server_binary

pytestmark = pytest.mark.emulators


def test_export_benchmark_variants_write_the_same_records_and_bytes():
    try:
        fake_gcs_server_binary()
    except EmulatorUnavailable as reason:
        pytest.skip(f"fake-gcs-server unavailable: {reason}")

    (size,) = export_bench.run([300])

    assert size.streaming.error is None
    assert size.baseline.error is None
    assert size.same_output  # records, bytes and SHA-256 equal, and the bucket holds all of them
    assert size.streaming.median is not None
    assert size.streaming.median.run.records == 300
    assert size.streaming.peak_rss_mib > 0
    report = export_bench.report([size])
    assert "same bytes and SHA-256: yes" in report
    assert "streaming throughput >= baseline at every size:" in report
