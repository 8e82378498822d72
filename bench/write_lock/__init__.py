"""The lock file SQLite writers took turns through before the one engine (jobs/sqlite_writes.py at d4f76d0),
re-created for bench.sqlite_lock_ab only: the product does not have it. Installed by bench.settings when
BENCH_SQLITE_WRITE_LOCK=1."""
