"""Benchmarks (not installed): `python -m benchmarks.bench` from the
repository's root; see docs/performance.md."""
