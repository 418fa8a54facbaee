"""Benchmarks and the naive reference implementations they time."""
