"""Schedule ticks: JobSchedule rows (cron with timezone, interval, once) become jobs, each tick exactly once."""

from __future__ import annotations

import logging
import re
import threading
import time
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter
from django.db import close_old_connections, transaction
from django.utils import timezone

from . import reconciler, rollup
from .conf import jobs_settings
from .exceptions import InvalidSchedule, JobsError, JobTypeForbidden
from .models import TERMINAL_STATUSES, JobLog, JobSchedule, OverlapPolicy, ScheduleKind
from .transport.connections import TransportError

logger = logging.getLogger(__name__)


# The column holds a 32-bit integer on every database (PositiveIntegerField): about 68 years.
MAX_INTERVAL_SECONDS = 2**31 - 1
# Moments the engine can do arithmetic on in any time zone (and rq can store as a timestamp).
EARLIEST_RUN_AT = datetime(1970, 1, 2, tzinfo=UTC)
LATEST_RUN_AT = datetime(9999, 1, 1, tzinfo=UTC)
# What croniter and datetime raise for a valid-looking expression or moment they cannot compute.
UNCOMPUTABLE = (ValueError, KeyError, OverflowError)


def validate_timing(kind: str, cron: str, interval_seconds: int | None, run_at: datetime | None, tz: str) -> None:
    """Raise InvalidSchedule with a message a person can act on."""
    try:
        ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidSchedule(f"Unknown time zone {tz!r}; use an IANA name such as 'Europe/Paris'.") from None
    if kind == ScheduleKind.CRON:
        if not cron or len(cron.split()) != 5 or not croniter.is_valid(cron):
            raise InvalidSchedule(f"{cron!r} is not a cron expression of five fields, e.g. '*/5 * * * *'.")
        # No field goes past 59: a bigger number is out of its field's range, or a step croniter quietly reads as
        # "once" (or cannot count at all).
        if any(len(number) > 2 or int(number) > 59 for number in re.findall(r"\d+", cron)):
            raise InvalidSchedule(f"{cron!r} has a number out of range (no cron field goes past 59).")
        try:
            croniter(cron, timezone.now()).get_next(datetime)
        except (ValueError, KeyError):  # croniter's answer for a valid expression with no date, e.g. "0 0 31 2 *"
            raise InvalidSchedule(f"{cron!r} never fires: no date matches it.") from None
        except OverflowError:  # a step or range beyond what croniter can count, e.g. "*/99999999999999999999"
            raise InvalidSchedule(f"{cron!r} has a number out of range.") from None
    elif kind == ScheduleKind.INTERVAL:
        if interval_seconds is None or interval_seconds < 1:
            raise InvalidSchedule("An interval schedule needs interval_seconds of at least 1.")
        if interval_seconds > MAX_INTERVAL_SECONDS:
            raise InvalidSchedule(f"interval_seconds may be at most {MAX_INTERVAL_SECONDS} (about 68 years).")
    elif kind == ScheduleKind.ONCE:
        if run_at is None:
            raise InvalidSchedule("A once schedule needs run_at.")
        if not EARLIEST_RUN_AT <= run_at < LATEST_RUN_AT:
            raise InvalidSchedule("run_at must be between 1970-01-02 and 9999-01-01 (UTC).")
    else:
        raise InvalidSchedule(f"kind must be cron, interval or once, not {kind!r}.")


def following_tick(schedule: JobSchedule, tick: datetime) -> datetime | None:
    """The tick after ``tick`` (any moment for cron); None for a once schedule."""
    if schedule.kind == ScheduleKind.CRON:
        # croniter walks wall-clock time in the schedule's zone, so "9:00" stays 9:00 across DST changes.
        local = tick.astimezone(ZoneInfo(schedule.timezone or "UTC"))
        nxt: datetime = croniter(schedule.cron, local).get_next(datetime)
        return nxt.astimezone(UTC)
    if schedule.kind == ScheduleKind.INTERVAL:
        return tick + timedelta(seconds=schedule.interval_seconds or 1)
    return None


def initial_next_run(schedule: JobSchedule, now: datetime | None = None) -> datetime | None:
    """When a new (or re-enabled) schedule first runs."""
    now = now or timezone.now()
    if schedule.kind == ScheduleKind.ONCE:
        return schedule.run_at if schedule.last_run_at is None else None
    return following_tick(schedule, now)


def upcoming_runs(schedule: JobSchedule, count: int = 5, now: datetime | None = None) -> list[datetime]:
    """The next ``count`` ticks, for people reading a schedule (admin, API)."""
    now = now or timezone.now()
    tick = schedule.next_run_at if schedule.next_run_at and schedule.next_run_at > now else None
    tick = tick or initial_next_run(schedule, now)
    runs: list[datetime] = []
    while tick is not None and len(runs) < count:
        runs.append(tick)
        tick = following_tick(schedule, tick)
    return runs


MAX_TICKS_WALKED = 10_000


def due_ticks(schedule: JobSchedule, now: datetime, catch_up: int) -> tuple[list[datetime], datetime | None]:
    """The missed ticks to run now (the latest ``catch_up`` of them) and the first tick after ``now``."""
    assert schedule.next_run_at is not None
    missed: list[datetime] = []
    tick: datetime | None = schedule.next_run_at
    if schedule.kind == ScheduleKind.INTERVAL and schedule.interval_seconds:
        # Arithmetic, not a walk: a week down on a per-second schedule is 604,800 ticks.
        step = timedelta(seconds=schedule.interval_seconds)
        count = (now - schedule.next_run_at) // step + 1
        missed = [schedule.next_run_at + i * step for i in range(max(0, count - catch_up), count)]
        return (missed if catch_up > 0 else []), schedule.next_run_at + count * step
    for _ in range(MAX_TICKS_WALKED):
        if tick is None or tick > now:
            break
        missed.append(tick)
        tick = following_tick(schedule, tick)
    else:
        tick = following_tick(schedule, now)
    return (missed[-catch_up:] if catch_up > 0 else []), tick


def _disable_broken(schedule: JobSchedule, exc: Exception) -> None:
    # One schedule whose timing cannot be computed (saved around validation) must not stop every other one.
    logger.error("Schedule %s disabled: its next run cannot be computed (%s)", schedule.name, exc)
    JobSchedule.objects.filter(pk=schedule.pk).update(enabled=False, next_run_at=None)


def run_schedule_now(schedule: JobSchedule, *, user: object = None) -> JobLog:
    """Submit the schedule's job at once (a "run now" button); the regular ticks go on unchanged."""
    from .services import submit

    with transaction.atomic():
        job = submit(
            schedule.job_type,
            schedule.payload,
            user=user if user is not None else schedule.owner,
            priority=schedule.priority,  # type: ignore[arg-type]
            schedule=schedule,
        )
        JobSchedule.objects.filter(pk=schedule.pk).update(last_run_at=timezone.now(), last_job=job)
    return job


def set_enabled(schedule: JobSchedule, enabled: bool) -> JobSchedule:
    """Enable (from its next tick after now) or disable a schedule; raises InvalidSchedule if it can never run."""
    if not enabled:
        JobSchedule.objects.filter(pk=schedule.pk).update(enabled=False, next_run_at=None)
        schedule.enabled, schedule.next_run_at = False, None
        return schedule
    if schedule.enabled and schedule.next_run_at is not None:
        return schedule
    try:
        next_run = initial_next_run(schedule)
    except UNCOMPUTABLE:
        raise InvalidSchedule("This schedule's timing never fires; fix it before enabling it.") from None
    if next_run is None:
        raise InvalidSchedule("This one-off schedule has already run; give it a new run_at to run it again.")
    JobSchedule.objects.filter(pk=schedule.pk).update(enabled=True, next_run_at=next_run)
    schedule.enabled, schedule.next_run_at = True, next_run
    return schedule


def tick(now: datetime | None = None) -> list[JobLog]:
    """Run every due schedule once. Safe on several hosts at once: a tick is claimed by a conditional UPDATE."""
    from .services import submit

    now = now or timezone.now()
    catch_up = jobs_settings().SCHEDULE_CATCH_UP
    submitted: list[JobLog] = []
    for schedule in JobSchedule.objects.filter(enabled=True, next_run_at__isnull=True):
        # New, or edited without a next run: set it (one already due runs below, in this same tick).
        try:
            first = initial_next_run(schedule, now)
        except UNCOMPUTABLE as exc:
            _disable_broken(schedule, exc)
            continue
        JobSchedule.objects.filter(pk=schedule.pk, next_run_at__isnull=True).update(next_run_at=first)
    for schedule in JobSchedule.objects.filter(enabled=True, next_run_at__lte=now).select_related("last_job"):
        try:
            ticks, next_run = due_ticks(schedule, now, catch_up)
        except UNCOMPUTABLE as exc:
            _disable_broken(schedule, exc)
            continue
        with transaction.atomic():
            # Only the scheduler whose UPDATE still sees the old next_run_at owns these ticks.
            claimed = JobSchedule.objects.filter(pk=schedule.pk, next_run_at=schedule.next_run_at).update(
                next_run_at=next_run, enabled=next_run is not None
            )
            if not claimed:
                continue
            last_job = schedule.last_job
            for due in ticks:
                if (
                    schedule.overlap == OverlapPolicy.SKIP
                    and last_job is not None
                    and last_job.status not in TERMINAL_STATUSES
                ):
                    logger.info("Schedule %s: tick %s skipped, job %s still active", schedule.name, due, last_job.id)
                    continue
                try:
                    last_job = submit(
                        schedule.job_type,
                        schedule.payload,
                        user=schedule.owner,
                        priority=schedule.priority,  # type: ignore[arg-type]
                        schedule=schedule,
                        run_at=due,  # the tick it belongs to; already due, so it is queued at once
                    )
                except JobTypeForbidden as exc:
                    # Its owner may not submit this type (staff-only, owner not staff: saved around the API's and
                    # the admin's check, or the owner lost staff status). Never run it as someone else: disable it,
                    # so the refusal shows in the admin, until a staff user edits and re-enables it.
                    logger.error("Schedule %s disabled: %s", schedule.name, exc)
                    JobSchedule.objects.filter(pk=schedule.pk).update(enabled=False, next_run_at=None)
                    break
                except JobsError as exc:
                    # A schedule whose type or payload went bad must not stop the others.
                    logger.error("Schedule %s could not submit its job: %s", schedule.name, exc)
                    break
                submitted.append(last_job)
            JobSchedule.objects.filter(pk=schedule.pk).update(last_run_at=now, last_job=last_job)
    return submitted


# Short: a scheduler waiting out an outage delays every schedule's tick by as much.
MAX_REDIS_BACKOFF_SECONDS = 5.0


def roll_up_counts() -> None:
    """The dashboard's finished-job counts (jobs.rollup): SQL only, so it runs before the reconciler, whose Redis may be
    down; a failure is logged and leaves the charts counting more of JobLog live until the next run succeeds."""
    try:
        rollup.roll_up()
    except Exception:
        logger.exception("Rolling up the finished-job counts failed")


def run_scheduler(stop: threading.Event, *, once: bool = False) -> None:
    """Tick every SCHEDULER_INTERVAL, and roll up the finished-job counts and reconcile every RECONCILE_EVERY seconds,
    until ``stop`` is set."""
    settings = jobs_settings()
    next_reconcile = 0.0
    backoff = 1.0
    while not stop.is_set():
        started = time.monotonic()
        try:
            close_old_connections()
            tick()
            if started >= next_reconcile:
                roll_up_counts()
                reconciler.reconcile()
                next_reconcile = started + settings.RECONCILE_EVERY
            backoff = 1.0
        except TransportError as exc:
            # Ride out a Redis outage: submissions stay pending in SQL and are pushed once it is back.
            logger.warning("Scheduler: Redis unavailable (%s); retrying in %.0f s", exc, backoff)
            stop.wait(backoff)
            backoff = min(backoff * 2, MAX_REDIS_BACKOFF_SECONDS)
            continue
        except Exception:
            logger.exception("Scheduler tick failed")
        if once:
            return
        stop.wait(max(0.0, settings.SCHEDULER_INTERVAL - (time.monotonic() - started)))
