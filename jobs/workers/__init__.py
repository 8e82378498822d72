"""The worker engine: a supervisor, its worker processes, and in each the slots that run handlers.

supervisor (jobs_worker) -> process (claim, start, record) -> slots (threads, an event loop, forked children)
-> runner (one attempt's outcome, through jobs.lifecycle); guard stops handlers, isolation forks them.
"""
