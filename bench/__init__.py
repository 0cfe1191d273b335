"""Benchmark suite: ``python -m bench`` (see bench/README.md). Not tests: nothing here asserts on timings."""
