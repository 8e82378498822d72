"""The demo's own tables in the admin, next to the jobs that fill them."""

from __future__ import annotations

from django.contrib import admin

from .models import Contact, OutboxMessage


@admin.register(Contact)
class ContactAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    list_display = ["name", "email", "phone", "owner", "updated_at"]
    list_filter = ["owner"]
    search_fields = ["name", "email", "phone"]
    readonly_fields = ["source_job_id", "created_at", "updated_at"]


@admin.register(OutboxMessage)
class OutboxMessageAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    list_display = ["created_at", "channel", "recipient", "subject", "job_id"]
    list_filter = ["channel"]
    search_fields = ["recipient", "subject", "job_id"]
    readonly_fields = [f.name for f in OutboxMessage._meta.fields]

    def has_add_permission(self, request: object) -> bool:
        return False
