"""Benchmark tests: the harness's arithmetic, and one end-to-end smoke run."""
