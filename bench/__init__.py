"""Benchmarks, run as modules from the repository root (``python -m bench.peers``); never timed tests."""
