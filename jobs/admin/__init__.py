"""The jobs admin: jobs (read-only, with retry, cancel and delete), schedules (editable) and the queues page."""

from __future__ import annotations

from django.contrib import admin

from ..models import JobLog, JobSchedule, Queue
from .jobs import JobLogAdmin
from .queues import QueueAdmin
from .schedules import JobScheduleAdmin

admin.site.register(JobLog, JobLogAdmin)
admin.site.register(JobSchedule, JobScheduleAdmin)
admin.site.register(Queue, QueueAdmin)
