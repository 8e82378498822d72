"""Every status change of a job: one function per transition, and nothing else writes ``JobLog.status``.

Each transition writes the row and its timeline event in one transaction and tells live listeners once that
commits. A job handed to Redis is handed over after the commit, always the same way (``handoff.hand_over``): the
row says queued (or scheduled) before the push, and a push that fails puts it back to pending, where the reconciler
finds it. A worker never sees a job whose row is not committed, and an accepted job is never lost.

Outcomes of an attempt are conditional on the row still being in that attempt (running, same attempt count): the
reconciler may have taken a job over from a worker it thought lost, and a late outcome must not overwrite the
newer attempt's. Statements are the ORM's, but for the start and the success of a batch of attempts on PostgreSQL
(postgresql.py; bench/lifecycle_ab.py measures what it saves).

handoff: queue and queue again; batches: start and succeed; outcomes: the rest of an attempt's ends;
cancel: a user's cancel; rows: the event and the attempt guard every transition shares.
"""

from __future__ import annotations

from .batches import Success, start, succeed
from .cancel import cancel, cancel_waiting, send_cancel_marks
from .handoff import queue_new, repush, retry, submitted_data, waiting_status
from .outcomes import SHUTDOWN, Error, cancel_running, defer, fail, lost, retry_later, return_to_queue

__all__ = [
    "SHUTDOWN",
    "Error",
    "Success",
    "cancel",
    "cancel_running",
    "cancel_waiting",
    "defer",
    "fail",
    "lost",
    "queue_new",
    "repush",
    "retry",
    "retry_later",
    "return_to_queue",
    "send_cancel_marks",
    "start",
    "submitted_data",
    "succeed",
    "waiting_status",
]
