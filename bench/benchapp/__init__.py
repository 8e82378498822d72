"""Bench-only Django app: the job types the benchmarks run."""
