"""Benchmarks against the provider simulator: `python bench/run_all.py` runs them all (see docs/benchmarks.md)."""
