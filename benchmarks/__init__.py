"""Benchmarks of taskq and its peers; run ``python -m benchmarks.run`` (never as tests)."""
