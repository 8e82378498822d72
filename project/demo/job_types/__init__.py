"""The demo's job types: small, but each does real local work (files, HTTP, email, SQL).

The five that real sites move out of their requests (deploy, ai-generation, contact-import, bulk-message,
email-notification) plus report and csv-stats, which make and read a CSV file. The heavy lifting lives in
sitegen.py, llm.py, contacts.py and senders.py; these modules declare each type's payload and limits, and report
progress. Importing this package registers every type.
"""

from .ai_generation import AIGenerationPayload, ai_generation, ai_is_local
from .contact_import import ContactImportPayload, contact_import
from .deploy import DeployPayload, deploy, deploy_priority
from .messaging import (
    MIN_MESSAGES_PER_SECOND,
    BulkMessagePayload,
    EmailNotificationPayload,
    bulk_message,
    email_notification,
    refusal_message,
    refused_recipients,
)
from .reports import CsvStatsPayload, ReportPayload, csv_stats, report, reports_dir, uploads_dir

__all__ = [
    "MIN_MESSAGES_PER_SECOND",
    "AIGenerationPayload",
    "BulkMessagePayload",
    "ContactImportPayload",
    "CsvStatsPayload",
    "DeployPayload",
    "EmailNotificationPayload",
    "ReportPayload",
    "ai_generation",
    "ai_is_local",
    "bulk_message",
    "contact_import",
    "csv_stats",
    "deploy",
    "deploy_priority",
    "email_notification",
    "refusal_message",
    "refused_recipients",
    "report",
    "reports_dir",
    "uploads_dir",
]
