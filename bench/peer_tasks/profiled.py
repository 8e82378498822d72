"""Run ``python -m django ARGS...`` under cProfile with a chosen clock, for ``peers.py --profile``.

    python -m bench.peer_tasks.profiled OUT.prof {wall,cpu} jobs_worker --queues bench ...

``wall`` times the main thread by the wall clock (waits on Redis and PostgreSQL included); ``cpu`` by its own CPU
time (time.thread_time). peers.py uses ``wall``: reading the thread's CPU clock is a system call per profiler
event, which inflates code that makes many small calls far more than the work itself.
"""

from __future__ import annotations

import cProfile
import runpy
import sys
import time


def main() -> None:
    out, clock, *args = sys.argv[1:]
    profiler = cProfile.Profile(time.thread_time if clock == "cpu" else time.perf_counter)
    sys.argv = ["django", *args]
    profiler.enable()
    try:
        runpy.run_module("django", run_name="__main__", alter_sys=True)
    except SystemExit:
        pass
    finally:
        profiler.disable()
        profiler.dump_stats(out)


if __name__ == "__main__":
    main()
