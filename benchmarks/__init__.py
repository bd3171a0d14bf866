"""Benchmarks: speed and memory figures, printed with ratios against a baseline.

Run all with ``make bench`` (``python -m benchmarks``) or one with
``python -m benchmarks funnel``. Never part of the unit tests.
"""
