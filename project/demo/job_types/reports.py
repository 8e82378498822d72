"""report (writes a CSV of computed numbers) and csv-stats (reads one back): the demo's file jobs."""

from __future__ import annotations

import csv
import io
import math
import os
import statistics
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from django.conf import settings
from rest_framework import serializers

from jobs import PermanentError, job_type

from .. import files

REPORT_COLUMNS = ["n", "square", "sqrt", "is_prime", "collatz_steps", "digit_sum"]
CHUNK = 1000  # rows between progress reports and cancellation checks


def reports_dir() -> Path:
    return Path(settings.MEDIA_ROOT) / "reports"


def uploads_dir() -> Path:
    return Path(settings.MEDIA_ROOT) / "uploads"


class ReportPayload(serializers.Serializer[Any]):
    rows = serializers.IntegerField(min_value=1, max_value=100_000)
    title = serializers.CharField(max_length=100)


@job_type("report", payload=ReportPayload, max_attempts=2, timeout=600)
def report(ctx: Any, payload: dict[str, Any]) -> dict[str, Any] | None:
    """Compute a table of number facts and write it as a CSV file."""
    total = payload["rows"]
    rows: list[list[Any]] = []
    for start in range(1, total + 1, CHUNK):
        if ctx.is_canceled():
            return None
        rows.extend(_number_row(n) for n in range(start, min(start + CHUNK, total + 1)))
        ctx.progress(
            80 * len(rows) // total,
            f"Computed {len(rows)} of {total} rows",
            stage="generate",
            current=len(rows),
            total=total,
        )

    path = reports_dir() / f"{ctx.job_id}.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".csv.part")
    with partial.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow([f"# {payload['title']}"])
        writer.writerow(REPORT_COLUMNS)
        for start in range(0, total, CHUNK):
            if ctx.is_canceled():
                handle.close()
                partial.unlink(missing_ok=True)
                return None
            writer.writerows(rows[start : start + CHUNK])
            done = min(start + CHUNK, total)
            ctx.progress(
                80 + 20 * done // total, f"Wrote {done} of {total} rows", stage="write", current=done, total=total
            )
    # A reader never sees half a report: the file appears complete or not at all.
    os.replace(partial, path)
    relative = str(path.relative_to(settings.MEDIA_ROOT))
    files.record(relative, owner_id=ctx.owner_id, job_id=ctx.job_id)  # csv-stats may read it for its owner only
    return {"path": relative, "rows": total, "bytes": path.stat().st_size}


def _number_row(n: int) -> list[Any]:
    return [n, n * n, round(math.sqrt(n), 6), int(_is_prime(n)), _collatz_steps(n), sum(map(int, str(n)))]


def _is_prime(n: int) -> bool:
    if n < 2:
        return False
    if n % 2 == 0:
        return n == 2
    return all(n % d for d in range(3, math.isqrt(n) + 1, 2))


def _collatz_steps(n: int) -> int:
    steps = 0
    while n != 1:
        n = n // 2 if n % 2 == 0 else 3 * n + 1
        steps += 1
    return steps


class CsvStatsPayload(serializers.Serializer[Any]):
    upload = serializers.UUIDField(required=False, help_text="The id of a CSV file sent to POST /api/uploads/.")
    # A file the demo itself put under MEDIA_ROOT (an upload or a report), never a path from outside.
    file = serializers.RegexField(
        r"^(uploads|reports)/[0-9a-f-]{36}\.csv$",
        max_length=100,
        required=False,
        help_text="A CSV file the demo stored: a report's result path.",
    )

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        return files.one_input(attrs)


class CountingLines:
    """Iterates a text file's lines and counts the characters read, for progress (tell() is off while iterating)."""

    def __init__(self, handle: Iterator[str]) -> None:
        self.handle = handle
        self.chars = 0

    def __iter__(self) -> Iterator[str]:
        for line in self.handle:
            self.chars += len(line)
            yield line


# A file that is missing or is not CSV fails the same way every time: no point in retrying it.
@job_type("csv-stats", payload=CsvStatsPayload, timeout=300, give_up_on=(FileNotFoundError, csv.Error))
def csv_stats(ctx: Any, payload: dict[str, Any]) -> dict[str, Any] | None:
    """Read a CSV file and summarise each column; malformed rows become per-item failures."""
    opener = files.input_opener(ctx, payload, "csv-stats")
    columns: dict[str, list[float]] = {}
    texts: dict[str, set[str]] = {}
    header: list[str] | None = None
    rows = 0
    with io.TextIOWrapper(opener(), encoding="utf-8", errors="replace", newline="") as handle:
        size = handle.buffer.seek(0, io.SEEK_END) or 1
        handle.buffer.seek(0)
        lines = CountingLines(handle)
        for line_number, record in enumerate(csv.reader(lines), start=1):
            if not record or record[0].startswith("#"):
                continue
            if header is None:
                header = [name.strip() or f"column {i + 1}" for i, name in enumerate(record)]
                columns = {name: [] for name in header}
                texts = {name: set() for name in header}
                continue
            if len(record) != len(header):
                ctx.item_failed(f"line {line_number}", f"expected {len(header)} fields, found {len(record)}")
                continue
            rows += 1
            for name, value in zip(header, record, strict=True):
                try:
                    columns[name].append(float(value))
                except ValueError:
                    if len(texts[name]) <= 1000:
                        texts[name].add(value)
            if rows % CHUNK == 0:
                if ctx.is_canceled():
                    return None
                ctx.progress(min(95, 95 * lines.chars // size), f"Read {rows} rows", stage="read", current=rows)
    if header is None:
        raise PermanentError("The file has no header row.")
    ctx.progress(97, "Summarising", stage="summarise", current=rows)
    summary: dict[str, Any] = {}
    for name in header:
        numbers = columns[name]
        if numbers and not texts[name]:
            summary[name] = {
                "kind": "number",
                "min": min(numbers),
                "max": max(numbers),
                "mean": round(statistics.fmean(numbers), 4),
                "sum": round(math.fsum(numbers), 4),
            }
        else:
            distinct = texts[name] | {str(v) for v in numbers[:1000]}
            summary[name] = {"kind": "text", "distinct": len(distinct) if len(distinct) <= 1000 else "1000+"}
    named = {"upload": str(payload["upload"])} if payload.get("upload") else {"file": payload["file"]}
    return {**named, "rows": rows, "columns": summary}
