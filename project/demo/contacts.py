"""The contact-import job's work: read a CSV file, validate and de-duplicate its rows, insert them in batches."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import IO, Any, Literal

from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from jobs import PermanentError

from .models import Contact

BATCH_SIZE = 100
SAMPLE_CHARS = 8192  # enough of a file to find its delimiter and header
NOT_UTF8 = "The file is not UTF-8 text; save the spreadsheet as CSV UTF-8."
PHONE_PATTERN = re.compile(r"^\+?\d{10,15}$")
PHONE_PUNCTUATION = re.compile(r"[\s().\-/]")
HEADER_ALIASES = {
    "name": {"name", "full name", "full_name", "fullname", "contact", "contact name"},
    "email": {"email", "e-mail", "email address", "e-mail address", "mail"},
    "phone": {"phone", "phone number", "phone_number", "mobile", "mobile phone", "tel", "telephone"},
}


class InvalidRow(ValueError):
    """A row that cannot become a contact; its message says why."""


@dataclass(frozen=True)
class ContactRow:
    number: int  # the line number in the file, as a spreadsheet shows it
    name: str
    email: str
    phone: str


@dataclass
class ImportCounts:
    rows: int = 0
    imported: int = 0
    updated: int = 0
    skipped: int = 0
    failed: int = 0

    def as_dict(self) -> dict[str, int]:
        return {
            "rows": self.rows,
            "imported": self.imported,
            "updated": self.updated,
            "skipped": self.skipped,
            "failed": self.failed,
        }


def normalize_phone(raw: str) -> str:
    """``+<digits>`` or ``<digits>``, 10 to 15 digits; spaces, dots, dashes, slashes and parentheses dropped."""
    phone = PHONE_PUNCTUATION.sub("", raw.strip())
    if phone.startswith("00"):
        phone = "+" + phone[2:]  # the international prefix, written the other way
    if not PHONE_PATTERN.fullmatch(phone):
        raise InvalidRow(f"invalid phone {raw.strip()!r}: use 10 to 15 digits, optionally starting with +country")
    return phone


def normalize_email(raw: str) -> str:
    email = raw.strip().lower()
    try:
        validate_email(email)
    except ValidationError:
        raise InvalidRow(f"invalid email {raw.strip()!r}") from None
    return email


def parse_row(number: int, record: dict[str, str]) -> ContactRow:
    name = record.get("name", "").strip()
    email = normalize_email(record["email"]) if record.get("email", "").strip() else ""
    phone = normalize_phone(record["phone"]) if record.get("phone", "").strip() else ""
    if not email and not phone:
        raise InvalidRow("no email and no phone: a contact needs at least one")
    if len(name) > 200:
        raise InvalidRow("name longer than 200 characters")
    return ContactRow(number, name, email, phone)


class UnusableFile(ValueError):
    """The file cannot be imported at all; its message says why."""


def read_header(sample: str) -> tuple[Any, dict[str, int]]:
    """The CSV dialect of a file's start and where its name, email and phone columns are; UnusableFile if it has
    no header with an email or phone column."""
    try:
        dialect: Any = csv.Sniffer().sniff(sample, delimiters=",;\t")
    except csv.Error:
        dialect = csv.excel
    try:
        header = next(csv.reader(io.StringIO(sample, newline=""), dialect), None)
    except csv.Error as exc:
        raise UnusableFile(f"The file is not valid CSV: {exc}") from None
    if not header:
        raise UnusableFile("The file is empty.")
    columns: dict[str, int] = {}
    for index, title in enumerate(header):
        key = title.strip().lower()
        for column, aliases in HEADER_ALIASES.items():
            if key in aliases and column not in columns:
                columns[column] = index
    if "email" not in columns and "phone" not in columns:
        found = ", ".join(repr(t.strip()) for t in header[:10])
        raise UnusableFile(f"The header row needs an email or a phone column; it has {found}.")
    return dialect, columns


@dataclass
class CsvFile:
    """An opened contact CSV: its column mapping and its data rows as ``(line number, {name, email, phone})``.

    ``opener`` opens the file for binary reading (a path under MEDIA_ROOT, or an upload of the jobs app's storage);
    it is read more than once: the header, the count, the rows.
    """

    opener: Callable[[], IO[bytes]]
    columns: dict[str, int] = field(default_factory=dict)
    dialect: Any = csv.excel

    @classmethod
    def open(cls, opener: Callable[[], IO[bytes]]) -> CsvFile:
        """Check the file (exists, UTF-8, a header with an email or phone column); PermanentError otherwise."""
        try:
            with _text(opener) as handle:
                dialect, columns = read_header(handle.read(SAMPLE_CHARS))
        except FileNotFoundError:
            raise PermanentError("The uploaded file is gone.") from None
        except UnicodeDecodeError:
            raise PermanentError(NOT_UTF8) from None
        except UnusableFile as exc:
            raise PermanentError(str(exc)) from None
        return cls(opener, columns, dialect)

    def records(self) -> Iterator[tuple[int, dict[str, str]]]:
        try:
            with _text(self.opener) as handle:
                reader = csv.reader(handle, self.dialect)
                next(reader, None)
                for record in reader:
                    if not any(cell.strip() for cell in record):
                        continue
                    values = {
                        column: record[index] if index < len(record) else "" for column, index in self.columns.items()
                    }
                    yield reader.line_num, values
        except UnicodeDecodeError:
            raise PermanentError(NOT_UTF8) from None
        except csv.Error as exc:
            raise PermanentError(f"The file is not valid CSV: {exc}") from None

    def count(self) -> int:
        return sum(1 for _ in self.records())


def _text(opener: Callable[[], IO[bytes]]) -> io.TextIOWrapper:
    # utf-8-sig: spreadsheets save "CSV UTF-8" with a byte-order mark.
    return io.TextIOWrapper(opener(), encoding="utf-8-sig", newline="")


class ContactImporter:
    """Imports rows for one owner, one batch at a time, reporting every row that fails through ``item_failed``."""

    def __init__(
        self,
        *,
        owner_id: int,
        job_id: str,
        update_existing: bool,
        skip_duplicates: bool,
        item_failed: Callable[[str, str], None],
    ) -> None:
        self.owner_id = owner_id
        self.job_id = job_id
        self.update_existing = update_existing
        self.skip_duplicates = skip_duplicates
        self._item_failed = item_failed
        self.counts = ImportCounts()
        # First row of the file with each address: later rows with the same one are duplicates within the file.
        self.seen_emails: dict[str, int] = {}
        self.seen_phones: dict[str, int] = {}

    def fail(self, number: int, error: str) -> None:
        self.counts.failed += 1
        self._item_failed(f"row {number}", error)

    def import_batch(self, batch: list[tuple[int, dict[str, str]]]) -> None:
        self.counts.rows += len(batch)
        rows = [row for row in (self._valid(number, record) for number, record in batch) if row is not None]
        rows = [row for row in rows if not self._duplicate_in_file(row)]
        existing = self._existing(rows)
        new: list[tuple[ContactRow, Contact]] = []
        changed: list[tuple[ContactRow, Contact]] = []
        for row in rows:
            action, match = self._match(row, existing)
            if action == "new":
                new.append((row, self._new_contact(row)))
            elif action == "update" and match is not None:
                changed.append((row, match))
        self._save(new, changed)

    def _valid(self, number: int, record: dict[str, str]) -> ContactRow | None:
        try:
            return parse_row(number, record)
        except InvalidRow as exc:
            self.fail(number, str(exc))
            return None

    def _duplicate_in_file(self, row: ContactRow) -> bool:
        earlier = (row.email and self.seen_emails.get(row.email)) or (row.phone and self.seen_phones.get(row.phone))
        if earlier:
            if self.skip_duplicates:
                self.counts.skipped += 1
            else:
                what = "email" if row.email and self.seen_emails.get(row.email) else "phone"
                self.fail(row.number, f"duplicate {what} of row {earlier}")
            return True
        if row.email:
            self.seen_emails[row.email] = row.number
        if row.phone:
            self.seen_phones[row.phone] = row.number
        return False

    def _existing(self, rows: list[ContactRow]) -> tuple[dict[str, Contact], dict[str, Contact]]:
        emails = [row.email for row in rows if row.email]
        phones = [row.phone for row in rows if row.phone]
        if not emails and not phones:
            return {}, {}
        found = Contact.objects.filter(owner_id=self.owner_id).filter(Q(email__in=emails) | Q(phone__in=phones))
        by_email: dict[str, Contact] = {}
        by_phone: dict[str, Contact] = {}
        for contact in found:
            if contact.email:
                by_email[contact.email] = contact
            if contact.phone:
                by_phone[contact.phone] = contact
        return by_email, by_phone

    def _match(
        self, row: ContactRow, existing: tuple[dict[str, Contact], dict[str, Contact]]
    ) -> tuple[Literal["new", "update", "none"], Contact | None]:
        """What to do with the row: insert it, update the contact it matches, or nothing (skipped or failed)."""
        by_email = existing[0].get(row.email) if row.email else None
        by_phone = existing[1].get(row.phone) if row.phone else None
        if by_email is not None and by_phone is not None and by_email.pk != by_phone.pk:
            self.fail(row.number, f"email matches contact {by_email.pk} but phone matches contact {by_phone.pk}")
            return "none", None
        match = by_email or by_phone
        if match is None:
            return "new", None
        if match.source_job_id is not None and str(match.source_job_id) == self.job_id:
            self.counts.imported += 1  # inserted by an earlier attempt of this very job
            return "none", None
        if self.update_existing:
            return "update", match
        if self.skip_duplicates:
            self.counts.skipped += 1
        else:
            what = "email" if by_email is not None else "phone"
            self.fail(row.number, f"a contact with this {what} already exists")
        return "none", None

    def _new_contact(self, row: ContactRow) -> Contact:
        return Contact(
            owner_id=self.owner_id, name=row.name, email=row.email, phone=row.phone, source_job_id=self.job_id
        )

    def _save(self, new: list[tuple[ContactRow, Contact]], changed: list[tuple[ContactRow, Contact]]) -> None:
        now = timezone.now()  # bulk_update skips auto_now
        for row, contact in changed:
            contact.updated_at = now
            contact.name = row.name or contact.name
            contact.email = row.email or contact.email
            contact.phone = row.phone or contact.phone
        try:
            with transaction.atomic():
                Contact.objects.bulk_create([contact for _row, contact in new])
                Contact.objects.bulk_update([c for _row, c in changed], ["name", "email", "phone", "updated_at"])
        except IntegrityError:
            # Another import of the same owner inserted one of these addresses meanwhile: row by row, so only
            # the colliding rows fail.
            self._save_one_by_one(new, changed)
            return
        self.counts.imported += len(new)
        self.counts.updated += len(changed)

    def _save_one_by_one(
        self, new: list[tuple[ContactRow, Contact]], changed: list[tuple[ContactRow, Contact]]
    ) -> None:
        for row, contact in [*new, *changed]:
            is_new = contact.pk is None
            try:
                with transaction.atomic():
                    contact.save()
            except IntegrityError:
                contact.pk = None if is_new else contact.pk
                if self.skip_duplicates and not self.update_existing:
                    self.counts.skipped += 1
                else:
                    self.fail(row.number, "another contact with this email or phone was saved meanwhile")
                continue
            if is_new:
                self.counts.imported += 1
            else:
                self.counts.updated += 1


FIRST_NAMES = ["Ada", "Grace", "Linus", "Margaret", "Alan", "Barbara", "Dennis", "Frances", "Ken", "Radia"]
LAST_NAMES = [
    "Lovelace",
    "Hopper",
    "Torvalds",
    "Hamilton",
    "Turing",
    "Liskov",
    "Ritchie",
    "Allen",
    "Thompson",
    "Perlman",
]


def sample_rows(count: int, *, invalid_every: int = 0, duplicate_every: int = 0) -> list[list[str]]:
    """A header and ``count`` contact rows, the same every time: every ``invalid_every``-th row has a bad phone or
    email, every ``duplicate_every``-th repeats an earlier row's email; some rows have only an email or a phone."""
    rows = [["name", "email", "phone"]]
    good_emails: list[str] = []
    for i in range(count):
        first, last = FIRST_NAMES[i % 10], LAST_NAMES[(i // 10) % 10]
        email = f"{first}.{last}.{i}@example.com".lower()
        phone = f"+44 20 {7946_0000 + i:08d}"
        if i % 7 == 3:
            email = ""  # phone only
        elif i % 5 == 4:
            phone = ""  # email only
        if invalid_every and i % invalid_every == invalid_every - 1:
            if i // invalid_every % 2:
                email = email.replace("@", " at ") or "not-an-email"
            else:
                phone = "555-0199"
        elif duplicate_every and good_emails and i % duplicate_every == 0:
            email = good_emails[-1]
        elif email:
            good_emails.append(email)
        rows.append([f"{first} {last}", email, phone])
    return rows
