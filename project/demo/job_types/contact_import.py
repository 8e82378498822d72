"""contact-import: reads an uploaded CSV of contacts in batches, saving the valid rows, listing the bad ones."""

from __future__ import annotations

from typing import Any

from django.db import OperationalError
from rest_framework import serializers

from jobs import PermanentError, job_type

from .. import contacts, files
from .reports import uploads_dir


class ContactImportPayload(serializers.Serializer[Any]):
    # The file itself never travels in the payload: either an upload's id (API clients), or a file the demo's form
    # stored under MEDIA_ROOT.
    upload = serializers.UUIDField(required=False, help_text="The id of a CSV file sent to POST /api/uploads/.")
    file = serializers.RegexField(
        r"^uploads/[0-9a-f-]{36}\.csv$",
        max_length=100,
        required=False,
        error_messages={"invalid": "Not an uploaded CSV file."},
        help_text="A CSV file the demo's form stored (the form sets it).",
    )
    update_existing = serializers.BooleanField(default=False, help_text="Rows matching a contact update it.")
    skip_duplicates = serializers.BooleanField(default=True, help_text="Duplicates are skipped, not failed rows.")

    def validate_file(self, value: str) -> str:
        if not (uploads_dir().parent / value).is_file():
            raise serializers.ValidationError("No uploaded file with this name.")
        return value

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        return files.one_input(attrs)


@job_type(
    "contact-import",
    payload=ContactImportPayload,
    max_attempts=3,
    timeout=1800,
    concurrency=2,
    # A busy or restarting database is worth another attempt; a bad file is not (PermanentError).
    retry_on=(OperationalError,),
)
def contact_import(ctx: Any, payload: dict[str, Any]) -> dict[str, Any] | None:
    """Import contacts from an uploaded CSV file in batches of 100; rows that fail are reported one by one."""
    if ctx.owner_id is None:
        raise PermanentError("contact-import needs a user to own the contacts.")
    opener = files.input_opener(ctx, payload, "contact-import")
    ctx.progress(1, "Reading the file", stage="read")
    source = contacts.CsvFile.open(opener)
    total = source.count()
    importer = contacts.ContactImporter(
        owner_id=ctx.owner_id,
        job_id=ctx.job_id,
        update_existing=payload["update_existing"],
        skip_duplicates=payload["skip_duplicates"],
        item_failed=ctx.item_failed,
    )
    ctx.progress(3, f"Importing {total} rows", stage="import", current=0, total=total)
    batch: list[tuple[int, dict[str, str]]] = []
    for record in source.records():
        batch.append(record)
        if len(batch) == contacts.BATCH_SIZE:
            if ctx.is_canceled():
                return {**importer.counts.as_dict(), "total": total, "canceled": True}
            _import_batch(ctx, importer, batch, total)
            batch = []
    if batch:
        _import_batch(ctx, importer, batch, total)
    return {**importer.counts.as_dict(), "total": total}


def _import_batch(
    ctx: Any, importer: contacts.ContactImporter, batch: list[tuple[int, dict[str, str]]], total: int
) -> None:
    importer.import_batch(batch)
    counts = importer.counts
    ctx.progress(
        3 + 97 * counts.rows // max(total, 1),
        f"{counts.rows} of {total} rows: {counts.imported} new, {counts.updated} updated, "
        f"{counts.skipped} skipped, {counts.failed} failed",
        stage="import",
        data=counts.as_dict(),
        current=counts.rows,
        total=total,
    )
