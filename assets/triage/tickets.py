"""Ticket intake: support tickets as a dynamic partition set, one partition per ticket file.

The first stage of the support-triage pipeline. A partition key names a file in one of
the ticket folders (`samples/T001.json` for the bundled tickets, `inbox/<file>` for
tickets dropped by users or a mail gateway), so an edited ticket is the same partition
with new content, exactly as for documents (resources/documents/files.py). Files are read only
through the documents' secure reader: regular files inside their folder, never a link
out of it, a FIFO or a device, and never more than `max_ticket_bytes`.

A ticket is customer input, so nothing about it is trusted: a file that is not UTF-8,
not JSON, not a ticket (missing or empty ids, a `received_at` that is not an ISO-8601
time with a timezone, a body over 20,000 characters), or that repeats a ticket id
already received in the same run, becomes a row with status "quarantined" and a reason
that starts with its kind ("invalid_json: ...", "duplicate: ..."). One bad ticket never
stops the others; the blocking check `tickets_mostly_readable` stops the pipeline only
when a large share of a run's tickets is unreadable, which says the intake itself is
broken rather than one customer's file.
"""

import hashlib
import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal, Mapping, Sequence

import pandas as pd
from dagster import (
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetExecutionContext,
    MetadataValue,
    Output,
    asset,
    asset_check,
)
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from assets.components.asset_spec import PipelineAssetSpec
from assets.components.check_results import share_within_limit
from assets.components.partitions import TICKETS, partition_column
from resources.documents.files import FileState, UnsafeFile, locate_in, read_regular_file, scan_folders, sha256_of
from resources.metadata.markdown_tables import markdown_table
from resources.pipeline_config import TriageConfig
from resources.tables import to_frame

# The column of every per-ticket table that holds the partition key.
PARTITION_COLUMN = partition_column(TICKETS)
GROUP = "triage_intake"
CODE_VERSION = "1"
MAX_BODY_CHARS = 20_000
MAX_SUBJECT_CHARS = 1_000
MAX_QUARANTINED_SHARE = 0.25
# Ids end up in run keys, file names and per-customer memory: letters, digits, '.', '_', '-'.
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
# What `content_hash` holds (16 hex digits of the file's SHA-256), the key the run command compares.
CONTENT_HASH = "content_hash"


def scan_tickets(triage: TriageConfig, known: Mapping[str, FileState] | None = None) -> dict[str, FileState]:
    """Every entry of both ticket folders by partition key (see `resources.documents.files.scan`)."""
    return scan_folders(triage.ticket_folders(), known)


def locate_ticket(triage: TriageConfig, key: str) -> tuple[Path, Path]:
    """The ticket folder of a partition key and the path it names, lexically inside it."""
    return locate_in(triage.ticket_folders(), key, noun="ticket")


class TicketFile(BaseModel):
    """One ticket file as users and the mail gateway write it. Unknown keys are ignored."""

    model_config = ConfigDict(extra="ignore")

    ticket_id: str = Field(pattern=ID_PATTERN, description="Unique per ticket, e.g. T001.")
    customer_id: str = Field(
        pattern=ID_PATTERN, description="The customer whose history and account the reply may use."
    )
    subject: str = Field(max_length=MAX_SUBJECT_CHARS)
    body: str = Field(max_length=MAX_BODY_CHARS)
    received_at: str = Field(description="ISO-8601 with a timezone; stored as UTC, e.g. 2026-11-27T09:14:00Z.")

    @field_validator("ticket_id", "customer_id", mode="before")
    @classmethod
    def _strip_id(cls, value: object) -> object:
        if isinstance(value, str) and not value.strip():
            raise ValueError("is empty")
        return value.strip() if isinstance(value, str) else value

    @field_validator("ticket_id", "customer_id", "subject", "body", "received_at")
    @classmethod
    def _no_nul(cls, value: str) -> str:
        # JSON may spell a NUL as "\u0000"; a lone surrogate ("\ud800") pydantic refuses itself.
        if "\x00" in value:
            raise ValueError("contains a NUL character")
        return value

    @field_validator("received_at")
    @classmethod
    def _iso_8601(cls, value: str) -> str:
        try:
            moment = datetime.fromisoformat(value.strip())
        except ValueError:
            raise ValueError(f"not an ISO-8601 date and time: {value[:40]!r}") from None
        if moment.tzinfo is None:
            raise ValueError(f"has no timezone (write e.g. {value.strip()[:19]}Z): {value[:40]!r}")
        return moment.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")

    @model_validator(mode="after")
    def _says_something(self) -> "TicketFile":
        if not (self.subject.strip() or self.body.strip()):
            raise ValueError("subject and body are both empty")
        return self


class Ticket(BaseModel):
    ticket: str = Field(default="", description="The tickets partition: the file's key in its ticket folder.")
    ticket_id: str = Field(default="", description="From the file; empty when quarantined.")
    customer_id: str = Field(default="", description="From the file; empty when quarantined.")
    subject: str = ""
    body: str = ""
    received_at: str = Field(default="", description="UTC, ISO-8601 (…Z); empty when quarantined.")
    content_hash: str = Field(
        default="", description="First 16 hex digits of the SHA-256 of the file; empty when it could not be opened."
    )
    status: Literal["received", "quarantined"]
    quarantine_reason: str = Field(default="", description="'<kind>: <detail>' when quarantined, else empty.")


def _validation_reason(error: ValidationError, limit: int = 4) -> str:
    problems = []
    for item in error.errors()[:limit]:
        where = ".".join(str(part) for part in item["loc"]) or "ticket"
        message = "missing" if item["type"] == "missing" else item["msg"].removeprefix("Value error, ")
        problems.append(f"{where}: {message}")
    more = error.error_count() - limit
    return "; ".join(problems) + (f"; and {more} more" if more > 0 else "")


def read_ticket(root: Path, path: Path, key: str, max_bytes: int) -> Ticket:
    """Read one ticket file inside `root`, or say precisely why it is quarantined."""

    def quarantine(kind: str, detail: str, content_hash: str = "") -> Ticket:
        return Ticket(
            ticket=key, content_hash=content_hash, status="quarantined", quarantine_reason=f"{kind}: {detail}"
        )

    try:
        raw, size = read_regular_file(root, path, max_bytes)
    except UnsafeFile as unsafe:
        return quarantine(unsafe.kind, unsafe.reason)
    if size > max_bytes or len(raw) > max_bytes:
        try:
            whole = sha256_of(root, path)[:16]
        except UnsafeFile:
            whole = ""
        return quarantine("too_large", f"{max(size, len(raw))} bytes exceeds max_ticket_bytes={max_bytes}", whole)
    digest = hashlib.sha256(raw).hexdigest()[:16]
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return quarantine("encoding", f"not UTF-8 text (byte {raw[exc.start]:#04x} at offset {exc.start})", digest)
    try:
        data = json.loads(text.removeprefix("\ufeff"))
    except json.JSONDecodeError as exc:
        return quarantine("invalid_json", f"{exc.msg} at line {exc.lineno} column {exc.colno}", digest)
    except RecursionError:
        return quarantine("invalid_json", "nested too deeply", digest)
    if not isinstance(data, dict):
        return quarantine("invalid_json", f"top level is {type(data).__name__}, not an object", digest)
    try:
        parsed = TicketFile.model_validate(data)
    except ValidationError as exc:
        return quarantine("invalid_ticket", _validation_reason(exc), digest)
    return Ticket(ticket=key, **parsed.model_dump(), content_hash=digest, status="received")


def read_tickets(triage: TriageConfig, keys: Sequence[str]) -> list[Ticket]:
    """One row per key, in order. A ticket id already received earlier in `keys` is a duplicate."""
    rows: list[Ticket] = []
    first_with_id: dict[str, str] = {}
    for key in keys:
        try:
            root, path = locate_ticket(triage, key)
        except ValueError as exc:
            rows.append(Ticket(ticket=key, status="quarantined", quarantine_reason=f"unsafe_path: {exc}"))
            continue
        row = read_ticket(root, path, key, triage.max_ticket_bytes)
        if row.status == "received":
            if row.ticket_id in first_with_id:
                row = Ticket(
                    ticket=key,
                    content_hash=row.content_hash,
                    status="quarantined",
                    quarantine_reason=f"duplicate: ticket_id {row.ticket_id} is also in {first_with_id[row.ticket_id]}",
                )
            else:
                first_with_id[row.ticket_id] = key
        rows.append(row)
    return rows


def _preview(rows: Sequence[Ticket]) -> MetadataValue:
    return MetadataValue.md(
        markdown_table(
            [
                {
                    "ticket": r.ticket,
                    "customer": r.customer_id,
                    "subject": r.subject,
                    "status": r.status,
                    "reason": r.quarantine_reason,
                }
                for r in rows[:20]
            ],
            width=80,
        )
    )


def ticket_metadata(row: Ticket) -> dict[str, object]:
    """A partition's metadata: its own counts, so that sums over partitions are run totals."""
    return {
        "received": int(row.status == "received"),
        "quarantined": int(row.status == "quarantined"),
        "status": row.status if row.status == "received" else f"quarantined: {row.quarantine_reason.split(':', 1)[0]}",
        "quarantine_reason": row.quarantine_reason,
        CONTENT_HASH: row.content_hash,
        "preview": _preview([row]),
    }


@asset(
    **PipelineAssetSpec(
        group=GROUP, code_version=CODE_VERSION, rows=Ticket, partitions=TICKETS, kinds={"json"}
    ).asset_keywords()
)
def support_tickets(context: AssetExecutionContext, triage: TriageConfig) -> Output[pd.DataFrame]:
    """Customer tickets read from their JSON files, one row per tickets partition: received,
    or quarantined with the reason (unreadable, not a ticket, or a duplicate ticket id)."""
    rows = read_tickets(triage, context.partition_keys)
    for row in rows:
        if row.status == "quarantined":
            context.log.warning(f"Quarantined ticket {row.ticket}: {row.quarantine_reason}")
        context.add_asset_metadata(ticket_metadata(row), partition_key=row.ticket)
    received = sum(r.status == "received" for r in rows)
    context.log.info(f"Tickets: {received} received, {len(rows) - received} quarantined of {len(rows)}")
    return Output(to_frame(rows, Ticket))


@asset_check(
    asset=support_tickets,
    blocking=True,
    description=f"At most {MAX_QUARANTINED_SHARE:.0%} of the run's tickets (of all tickets, outside a partitioned run) "
    "are quarantined: more says the intake is broken (a gateway writing another format, a wrong folder), "
    "not one customer's file.",
)
def tickets_mostly_readable(context: AssetCheckExecutionContext, support_tickets: pd.DataFrame) -> AssetCheckResult:
    # The input is the whole table; in a run over some tickets, judge that run's tickets.
    run = context.op_execution_context
    if run.has_partition_key or run.has_partition_key_range:
        support_tickets = support_tickets[support_tickets[PARTITION_COLUMN].isin(run.partition_keys)]
    total = len(support_tickets)
    bad = support_tickets[support_tickets["status"] == "quarantined"]
    return share_within_limit(
        len(bad),
        total,
        MAX_QUARANTINED_SHARE,
        blocking=True,
        description=f"{len(bad)} of {total} tickets quarantined",
        share_key="quarantined_share",
        limit_key="max_quarantined_share",
        empty_passes=True,
        metadata={
            "tickets": total,
            "received": total - len(bad),
            "quarantined": len(bad),
            "quarantined_tickets": MetadataValue.md(
                markdown_table(
                    [{"ticket": t, "reason": r} for t, r in zip(bad["ticket"][:50], bad["quarantine_reason"][:50])],
                    width=160,
                )
            ),
        },
    )
