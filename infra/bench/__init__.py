"""Benchmarks: commands that print figures, run on purpose (`make bench`), never part of the tests.

The machine is shared and noisy, so every benchmark measures its baseline in the same run and
reports ratios against it.
"""
